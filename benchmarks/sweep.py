"""How the benchmark measures: the timing method, and a sweep over shapes, dtypes, modes and
implementations (plus the examples' training steps).

Why this module exists: one timing method for every implementation and both benchmarks
(bench.py on a GPU, cpu_bench.py on the CPU), so their numbers compare; the CLIs only choose
what to sweep.

Timing (the same for every implementation): warm-up calls first (compilation, autotuning); then
``ms (1 call)`` = median over single calls, each followed by a full synchronization (so it
includes dispatch and sync latency); then ``ms`` = median over repeated batches of k calls
issued back to back and synchronized once, per call (k chosen so a batch lasts ~20 ms),
which amortizes the dispatch latency the way a training loop does. Torch batches are timed
with CUDA events, JAX batches with the host clock around block_until_ready. Each call reads
one of several input sets in rotation (together >= 256 MiB), so inputs are not served from
the 50 MB L2 cache.

A jitted call also costs its host dispatch, measured in the same run as ``dispatch ms`` (a
jitted copy of a tiny array, back to back; tens of microseconds on some hosts): no jitted call
is faster end to end, however fast its kernel (NOTES.md, "Measuring the kernels, not the
host"). ``kernel_profile.py --table`` gives the kernels' own times, read by Nsight Compute.
"""

from __future__ import annotations

import importlib.util
import math
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from implementations import JAXQIF, SJ
from problem import FLOOR_BYTES, make_inputs
from report import fmt

REPO = Path(__file__).resolve().parent.parent

ROTATE_BYTES = 256 << 20  # input sets per shape together at least this large (>> 50 MB L2)
MAX_SETS = 8


@dataclass(frozen=True)
class Timing:
    """How long to measure each configuration."""

    warmup: int = 3        # untimed calls first
    single_calls: int = 10  # single synchronized calls -> "ms (1 call)"
    reps: int = 15          # batches -> "ms" (median of per-call batch times)
    batch_ms: float = 20.0  # target duration of one batch
    max_batch: int = 200    # at most this many calls per batch


FULL = Timing()
QUICK = Timing(warmup=2, single_calls=5, reps=5, batch_ms=10.0)
CPU_SMOKE = Timing(warmup=1, single_calls=3, reps=3, batch_ms=5.0, max_batch=20)


def measure(launch, sync, timing: Timing, event_timer=None) -> dict:
    """Times ``launch(i)`` (asynchronous; i indexes the input set to use) per module docstring.

    ``sync(out)`` waits until ``out`` (and all work before it) is done. ``event_timer()``, when
    given, returns (begin, finish) closures timing the device between them in ms; otherwise the
    host clock around a final sync times the batches. Returns ms, ms_sync (medians), the batch
    size k and the output of the first call (for checksums)."""
    first = launch(0)
    sync(first)
    out = first
    for i in range(1, timing.warmup):
        out = launch(i)
        sync(out)

    single = []
    for i in range(timing.single_calls):
        sync(out)
        start = time.perf_counter()
        out = launch(i)
        sync(out)
        single.append(time.perf_counter() - start)
    ms_sync = statistics.median(single) * 1e3

    k = max(1, min(timing.max_batch, round(timing.batch_ms / max(ms_sync, 1e-3))))
    batched = []
    call = 0
    for _ in range(timing.reps):
        sync(out)
        if event_timer is not None:
            begin, finish = event_timer()
            begin()
        else:
            start = time.perf_counter()
        for _ in range(k):
            out = launch(call)
            call += 1
        if event_timer is not None:
            elapsed_ms = finish()
        else:
            sync(out)
            elapsed_ms = (time.perf_counter() - start) * 1e3
        batched.append(elapsed_ms / k)
    sync(out)
    return dict(ms=statistics.median(batched), ms_sync=ms_sync, batch=k,
                ms_min=min(batched), ms_max=max(batched), first=first)


def dispatch_ms(jax, jnp, timing: Timing) -> float:
    """Per-call time of a jitted copy of a tiny array, back to back: the host's dispatch."""
    tiny = jnp.ones((1024,), jnp.float32)
    copy = jax.jit(jnp.copy)
    return measure(lambda i: copy(tiny), jax.block_until_ready, timing)["ms"]


def copy_bandwidth_jax(jax, jnp, n_bytes: int, timing: Timing) -> float:
    """Device-to-device copy rate of a jitted jnp.copy, bytes read + written per second."""
    src = jax.random.uniform(jax.random.key(123), (n_bytes // 4,), jnp.float32)
    copy = jax.jit(jnp.copy)
    result = measure(lambda i: copy(src), jax.block_until_ready,
                     Timing(warmup=3, single_calls=3, reps=max(5, timing.reps), batch_ms=50))
    del src
    return 2 * n_bytes / (result["ms"] / 1e3)


def rel_diff(a, b):
    if a is None or b is None:
        return None
    return abs(a - b) / max(abs(b), 1e-30)


def run_sweep(args, jax, jnp, impls: dict, sj_impl, bandwidth: float, deadline: float,
              unavailable: dict[str, str]) -> list:
    """Measures every (shape, dtype, mode, impl) in order; returns result rows. ``unavailable``
    says why a requested implementation missing from ``impls`` could not be set up."""
    rows = []
    for t, n in args.shapes:
        for dtype in args.dtypes:
            elem_bytes = jnp.dtype(dtype).itemsize
            sets = max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / (t * n * elem_bytes))))
            if time.time() > deadline:
                data = None
            else:
                data = make_inputs(jax, jnp, t, n, dtype, sets)
                if sj_impl is not None and SJ in args.impls:
                    try:
                        sj_impl.set_data(*data, dtype, n)
                    except Exception as error:  # noqa: BLE001
                        print(f"  SpikingJelly data for {t}x{n} {dtype}: {error}", file=sys.stderr)
                        sj_impl.clear()
            for mode in args.modes:
                floor_ms = t * n * FLOOR_BYTES[(mode, dtype)] / bandwidth * 1e3
                group = []
                for impl in args.impls:
                    row = measure_row(dict(T=t, N=n, dtype=dtype, mode=mode, impl=impl,
                                           floor_ms=floor_ms, input_sets=sets),
                                      data, impls, unavailable, (SJ, sj_impl), args.timing)
                    if row["ms"] is not None:
                        row["x_floor"] = row["ms"] / floor_ms
                    group.append(row)
                finish_group(group)
                rows.extend(group)
                for row in group:
                    print(f"  T={row['T']:5d} N={row['N']:8d} {dtype:8s} {mode:7s} "
                          f"{row['impl']:20s} {fmt(row['ms'], 4):>9s} ms  "
                          f"x{fmt(row['x_floor'], 2)} floor  {row['note'] or ''}", flush=True)
            if sj_impl is not None:
                sj_impl.clear()
            del data
    return rows


def measure_row(row: dict, data, impls: dict, unavailable: dict, torch_impl: tuple,
                timing: Timing) -> dict:
    """Times one implementation on one configuration (shape, dtype, mode: `row`'s keys) and
    returns `row` completed with the result's fields, or with a note saying why there is none
    (`data` None: the time budget ran out; an implementation missing from `impls`; an error,
    recorded and printed, so that one failure does not end the sweep). `torch_impl`: (its name,
    the SjImpl or None): SpikingJelly's cases, timed on torch data."""
    row = dict(ms=None, ms_sync=None, ms_min=None, ms_max=None, batch=None, x_floor=None,
               speedup=None, checksum=None, checksum_rel_diff=None, note=None, **row)
    impl, (torch_name, torch_cases) = row["impl"], torch_impl
    if data is None:
        row["note"] = "skipped: --max-seconds reached"
    elif impl not in impls:
        row["note"] = unavailable.get(impl, "unavailable")
    elif impl == torch_name and not torch_cases.xs:
        row["note"] = "no torch data"
    else:
        try:
            launch, sync, timer, checksum = (torch_cases.case(row["mode"]) if impl == torch_name
                                             else impls[impl].case(row["mode"], *data))
            result = measure(launch, sync, timing, timer)
            row.update(ms=result["ms"], ms_sync=result["ms_sync"], ms_min=result["ms_min"],
                       ms_max=result["ms_max"], batch=result["batch"],
                       checksum=checksum(result["first"]))
        except Exception as error:  # noqa: BLE001 - record and go on
            row["note"] = f"error: {type(error).__name__}: {str(error)[:300]}"
            print(f"  {impl} {row['T']}x{row['N']} {row['dtype']} {row['mode']}: {row['note']}",
                  file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
    return row


def finish_group(group: list) -> None:
    """Speedups of jaxqif over each baseline, and the checksum agreement, within one config."""
    ours = next((r for r in group if r["impl"] == JAXQIF), None)
    for row in group:
        if ours is None or row is ours:
            continue
        if row["ms"] is not None and ours["ms"] is not None:
            row["speedup"] = row["ms"] / ours["ms"]
        row["checksum_rel_diff"] = rel_diff(row["checksum"], ours["checksum"])
        limit = 1e-4 if row["mode"] == "fwd" else 1e-2
        if row["checksum_rel_diff"] is not None and row["checksum_rel_diff"] > limit:
            print(f"  WARNING: {row['impl']} disagrees with jaxqif on T={row['T']} N={row['N']} "
                  f"{row['dtype']} {row['mode']}: sum|out| {row['checksum']:.6g} vs "
                  f"{ours['checksum']:.6g}", file=sys.stderr)


# End-to-end training steps of the examples (optional, bench.py --examples)

EXAMPLES = ("train_digits.py", "temporal_task.py")
EXAMPLE_HOOK = "benchmark_step"


def time_examples(jax, timing: Timing) -> list:
    """Times one training step of each example, with the fused kernel and with pure JAX.

    Contract (for the examples' authors): the example module defines, at top level,
    ``benchmark_step(backend: str) -> (step, state)`` where ``backend`` is "ffi" or "jax",
    ``step`` is a jitted function ``state -> state`` performing one full training step (it may
    donate its argument) and ``state`` is the initial state (parameters, optimizer state, a
    fixed batch...). Importing the module must not start training (``if __name__ ==
    "__main__"`` guard). Modules without the hook are skipped with a message: the source is
    checked for the hook's name before anything is imported."""
    rows = []
    for filename in EXAMPLES:
        path = REPO / "examples" / filename
        if not path.is_file():
            print(f"  examples/{filename}: not found, skipped")
            continue
        if f"def {EXAMPLE_HOOK}" not in path.read_text():
            print(f"  examples/{filename}: no {EXAMPLE_HOOK}(backend) -> (step, state); skipped")
            continue
        try:
            sys.path.insert(0, str(path.parent))
            spec = importlib.util.spec_from_file_location(f"_bench_example_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up while it loads
            spec.loader.exec_module(module)
        except Exception as error:  # noqa: BLE001
            print(f"  examples/{filename}: import failed ({type(error).__name__}: {error})")
            continue
        finally:
            sys.path.remove(str(path.parent))
        results = {}
        for backend in ("ffi", "jax"):
            row = dict(example=path.stem, backend=backend, ms=None, ms_sync=None, note=None)
            try:
                step, state = getattr(module, EXAMPLE_HOOK)(backend)
                holder = [state]

                def launch(i, step=step, holder=holder):
                    holder[0] = step(holder[0])
                    return holder[0]

                result = measure(launch, jax.block_until_ready, timing)
                row.update(ms=result["ms"], ms_sync=result["ms_sync"])
                results[backend] = result["ms"]
            except Exception as error:  # noqa: BLE001
                row["note"] = f"error: {type(error).__name__}: {str(error)[:300]}"
            rows.append(row)
            print(f"  {path.stem:14s} {backend:4s} {fmt(row['ms'], 3):>9s} ms/step "
                  f"{row['note'] or ''}", flush=True)
        if "ffi" in results and "jax" in results:
            rows[-1]["speedup_ffi_vs_jax"] = results["jax"] / results["ffi"]
    return rows
