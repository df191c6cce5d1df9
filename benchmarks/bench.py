"""Benchmark: jaxqif's fused kernel against the pure-JAX reference and SpikingJelly 2.0's Triton QIF.

Problem (see the project's performance anchors): multi-step QIF with hard reset (v_reset=-0.1),
Sigmoid(alpha=4) surrogate, input x[T, N], loss = sum(spikes * g).
  fwd      forward only (inference: nothing saved, no gradient), returns the spikes;
  fwd+bwd  forward saving what the backward needs + BPTT backward: the spikes and grad_x of
           sum(spikes * g).

Floor (the issue's and the performance anchors' definition): the bytes an implementation that
saves one residual per element must move, over the device-to-device copy bandwidth measured in
the same run (bytes read + bytes written):
  fwd      read x, write spikes                              f32: 8 B/elem,  bf16/f16: 4
  fwd+bwd  fwd: read x, write spikes + a float32 residual;   f32: 24 B/elem, bf16/f16: 16
           bwd: read grad_spikes + residual, write grad_x
jaxqif saves no per-step residual: its training forward writes a float32 checkpoint every 8
steps (4 for 16-bit inputs) and its backward reads x again, 21 B/elem in float32 and 12 in
16-bit for long sequences (20 and 10 up to one interval), so it can run below 1.0x this floor.

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
is faster end to end, however fast its kernel. ``kernel_profile.py --table`` gives the kernels'
own times, read by Nsight Compute.

Run on a GPU machine (SpikingJelly from its wheels, if present)::

    pip install --no-index --no-deps --target /tmp/sj _carry/wheels/*.whl
    PYTHONPATH=/tmp/sj python3 benchmarks/bench.py --out-dir benchmarks/results

``--quick`` (2 shapes, float32) is a smoke run; ``--cpu-smoke`` runs tiny shapes on the CPU
(jaxqif's CPU kernel and pure JAX) to test this script without a GPU. Outputs, in --out-dir:
<name>.md (tables, with geometric means over the shapes), <name>.json (every number, versions,
bandwidth), <name>.png (plot); ``--render <json>`` rewrites them from an earlier run's JSON.
``--kernels <csv>`` adds jaxqif's kernel times from a ``kernel_profile.py`` Nsight Compute CSV
of the same build (``scripts/gpu_check.sh profile``) as a column of their own.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))  # sj_baseline, plot

SHAPES = [(4, 1 << 23), (16, 1 << 22), (64, 1 << 21), (256, 1 << 16), (1024, 1 << 14)]
QUICK_SHAPES = [(16, 1 << 22), (1024, 1 << 14)]
CPU_SMOKE_SHAPES = [(8, 1 << 12), (64, 1 << 10)]
DTYPES = ("float32", "bfloat16", "float16")
MODES = ("fwd", "fwd+bwd")
JAXQIF, SJ, PURE_JAX = "jaxqif", "spikingjelly-triton", "pure-jax"
IMPLS = (JAXQIF, SJ, PURE_JAX)
BASELINES = (SJ, PURE_JAX)

# Bytes per element of the memory floor, per (mode, dtype): see the module docstring.
FLOOR_BYTES = {
    ("fwd", "float32"): 8, ("fwd", "bfloat16"): 4, ("fwd", "float16"): 4,
    ("fwd+bwd", "float32"): 24, ("fwd+bwd", "bfloat16"): 16, ("fwd+bwd", "float16"): 16,
}
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


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def parse_shape(text: str) -> tuple[int, int]:
    """'64x2097152' or '64x2^21' -> (64, 2097152)."""
    def number(part: str) -> int:
        part = part.strip()
        if "^" in part:
            base, exponent = part.split("^")
            return int(base) ** int(exponent)
        return int(part)

    t, n = text.lower().split("x")
    return number(t), number(n)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=HERE / "results",
                   help="where <name>.md/.json/.png go (default benchmarks/results)")
    p.add_argument("--name", help="output file stem (default bench, bench_quick, bench_cpu_smoke)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 shapes, float32 only, few repetitions")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="tiny shapes on the CPU (JAX_PLATFORMS=cpu), to test the script")
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")],
                   help="comma-separated TxN, e.g. 4x2^23,1024x16384")
    p.add_argument("--dtypes", type=lambda s: s.split(","), help=f"subset of {','.join(DTYPES)}")
    p.add_argument("--modes", type=lambda s: s.split(","), help=f"subset of {','.join(MODES)}")
    p.add_argument("--impls", type=lambda s: s.split(","), help=f"subset of {','.join(IMPLS)}")
    p.add_argument("--reps", type=int, help="batches per configuration (overrides the mode's)")
    p.add_argument("--max-seconds", type=float, default=270.0,
                   help="stop starting new configurations after this long (default 270)")
    p.add_argument("--examples", action="store_true",
                   help="also time the examples' training steps (see time_examples)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--kernels", type=Path, metavar="CSV",
                   help="jaxqif's kernel times from kernel_profile.py's ncu CSV, as a column")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: write <name>.md (and the plot) from a results JSON")
    args = p.parse_args(argv)

    if args.cpu_smoke:
        args.shapes = args.shapes or CPU_SMOKE_SHAPES
        timing = CPU_SMOKE
    elif args.quick:
        args.shapes = args.shapes or QUICK_SHAPES
        args.dtypes = args.dtypes or ["float32"]
        timing = QUICK
    else:
        args.shapes = args.shapes or SHAPES
        timing = FULL
    if args.reps:
        timing = Timing(**{**timing.__dict__, "reps": args.reps})
    args.timing = timing
    args.dtypes = args.dtypes or list(DTYPES)
    args.modes = args.modes or list(MODES)
    args.impls = args.impls or list(IMPLS)
    for name, given, allowed in (("dtype", args.dtypes, DTYPES), ("mode", args.modes, MODES),
                                 ("impl", args.impls, IMPLS)):
        unknown = set(given) - set(allowed)
        if unknown:
            p.error(f"unknown {name}(s) {sorted(unknown)}; choose from {allowed}")
    args.name = args.name or ("bench_cpu_smoke" if args.cpu_smoke
                              else "bench_quick" if args.quick else "bench")
    return args


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Implementations
# ----------------------------------------------------------------------------------------------

class JaxImpl:
    """jaxqif.qif_multistep with one backend: "ffi" (the fused kernel) or "jax" (lax.scan)."""

    def __init__(self, jax, jnp, jaxqif, backend: str):
        self.jax, self.jnp, self.backend = jax, jnp, backend

        def spikes(x):
            return jaxqif.qif_multistep(x, backend=backend)[0]

        def spikes_and_grad(x, g):
            # A training step needs the spikes (the next layer's input) as well as grad_x of
            # sum(spikes * g): returning them keeps XLA from dropping a forward whose results
            # the gradient alone would not need (jaxqif's backward recomputes from x).
            out, vjp = jax.vjp(spikes, x)
            return out, vjp(g)[0]

        self.fns = {"fwd": jax.jit(spikes), "fwd+bwd": jax.jit(spikes_and_grad)}

    def case(self, mode: str, xs, gs):
        """(launch, sync, event_timer, checksum) for ``measure`` over the input sets."""
        fn, jnp = self.fns[mode], self.jnp
        if mode == "fwd":
            def launch(i):
                return fn(xs[i % len(xs)])
        else:
            def launch(i):
                return fn(xs[i % len(xs)], gs[i % len(gs)])

        def checksum(out):
            out = out if mode == "fwd" else out[1]  # grad_x
            return float(jnp.sum(jnp.abs(out.astype(jnp.float32))))

        return launch, self.jax.block_until_ready, None, checksum


class SjImpl:
    """SpikingJelly 2.0's Triton QIF on torch tensors (see sj_baseline.py)."""

    def __init__(self, sj):
        self.sj = sj
        self.xs, self.gs, self.v = [], [], None

    def set_data(self, xs_jax, gs_jax, dtype: str, n: int):
        """Torch copies of the JAX input sets (leaves that require grad) and a v_init."""
        self.clear()
        self.xs = [self.sj.from_jax(x, dtype).requires_grad_(True) for x in xs_jax]
        self.gs = [self.sj.from_jax(g, dtype) for g in gs_jax]
        self.v = self.sj.v_init(n)

    def clear(self):
        self.xs, self.gs, self.v = [], [], None
        try:
            self.sj.torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def case(self, mode: str):
        sj, xs, gs, v = self.sj, self.xs, self.gs, self.v
        if mode == "fwd":
            def launch(i):
                return sj.forward(xs[i % len(xs)], v)
        else:
            def launch(i):
                return sj.forward_backward(xs[i % len(xs)], v, gs[i % len(gs)])

        def checksum(out):
            return float(out.detach().float().abs().sum())

        return launch, lambda out: sj.synchronize(), sj.event_timer, checksum


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------

def make_inputs(jax, jnp, t: int, n: int, dtype: str, sets: int):
    """``sets`` input sets: x (currents that make neurons fire now and then, as in the tests)
    and g (the loss weights, i.e. the spikes' cotangent), both [T, N] in ``dtype``."""
    xs, gs = [], []
    for s in range(sets):
        kx, kg = jax.random.split(jax.random.fold_in(jax.random.key(0), s))
        x = jnp.clip(jax.random.normal(kx, (t, n), jnp.float32) * 0.8 + 0.4, -1.0, 1.2)
        xs.append(x.astype(dtype))
        gs.append(jax.random.normal(kg, (t, n), jnp.float32).astype(dtype))
    jax.block_until_ready((xs, gs))
    return xs, gs


def rel_diff(a, b):
    if a is None or b is None:
        return None
    return abs(a - b) / max(abs(b), 1e-30)


def run_sweep(args, jax, jnp, impls: dict, sj_impl, bandwidth: float, deadline: float) -> list:
    """Measures every (shape, dtype, mode, impl) in order; returns result rows."""
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
                    row = dict(T=t, N=n, dtype=dtype, mode=mode, impl=impl, ms=None,
                               ms_sync=None, ms_min=None, ms_max=None, batch=None,
                               floor_ms=floor_ms, x_floor=None, speedup=None, checksum=None, checksum_rel_diff=None,
                               input_sets=sets, note=None)
                    group.append(row)
                    if data is None:
                        row["note"] = "skipped: --max-seconds reached"
                        continue
                    if impl not in impls:
                        row["note"] = impls_unavailable.get(impl, "unavailable")
                        continue
                    if impl == SJ and not sj_impl.xs:
                        row["note"] = "no torch data"
                        continue
                    try:
                        launch, sync, timer, checksum = (
                            sj_impl.case(mode) if impl == SJ else impls[impl].case(mode, *data))
                        result = measure(launch, sync, args.timing, timer)
                        row.update(ms=result["ms"], ms_sync=result["ms_sync"],
                                   ms_min=result["ms_min"], ms_max=result["ms_max"],
                                   batch=result["batch"], x_floor=result["ms"] / floor_ms,
                                   checksum=checksum(result["first"]))
                        del result
                    except Exception as error:  # noqa: BLE001 - record and go on
                        row["note"] = f"error: {type(error).__name__}: {str(error)[:300]}"
                        print(f"  {impl} {t}x{n} {dtype} {mode}: {row['note']}", file=sys.stderr)
                        traceback.print_exc(file=sys.stderr)
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


impls_unavailable: dict[str, str] = {}


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


# ----------------------------------------------------------------------------------------------
# End-to-end training steps of the examples (optional, --examples)
# ----------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------

def fmt(value, digits=3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def shape_n(n: int) -> str:
    exponent = n.bit_length() - 1
    return f"{n:,} (2^{exponent})" if n == 1 << exponent else f"{n:,}"


def geometric_mean(values: list) -> float | None:
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def attach_kernel_times(results: dict, csv_path: Path) -> None:
    """Adds kernel_ms (the sum of a call's kernels under Nsight Compute) and its ratio to the
    floor to jaxqif's rows, from kernel_profile.py's CSV."""
    import kernel_profile

    kernels = {(c["T"], c["N"], c["dtype"], c["mode"]): c["us"] / 1e3
               for c in kernel_profile.calls(csv_path)}
    for row in results["rows"]:
        ms = kernels.get((row["T"], row["N"], row["dtype"], row["mode"]))
        if row["impl"] == JAXQIF and ms is not None:
            row.update(kernel_ms=ms, x_floor_kernels=ms / row["floor_ms"])
    results["kernels_source"] = (f"{csv_path.name}: Nsight Compute, each kernel alone after a "
                                 "cache flush, summed per call (kernel_profile.py)")


def geometric_means(groups: dict, baselines: list) -> list:
    """Markdown lines: per dtype and mode, the geometric mean over the shapes of jaxqif's
    multiple of the floor and of its speedup over each baseline (where both were measured)."""
    per_kind: dict = {}
    for (_, _, dtype, mode), group in groups.items():
        if JAXQIF not in group or group[JAXQIF]["ms"] is None:
            continue
        kind = per_kind.setdefault((dtype, mode),
                                   {"kernels": [], "floor": [], **{b: [] for b in baselines}})
        kind["floor"].append(group[JAXQIF]["x_floor"])
        if group[JAXQIF].get("x_floor_kernels"):
            kind["kernels"].append(group[JAXQIF]["x_floor_kernels"])
        for b in baselines:
            if b in group and group[b].get("speedup"):
                kind[b].append(group[b]["speedup"])
    if not per_kind:
        return []
    header = ["dtype", "mode", "jaxqif kernels × floor", "jaxqif × floor",
              *(f"vs {b}" for b in baselines)]
    lines = ["", "Geometric means over the shapes:", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dtype, mode), kind in per_kind.items():
        cells = [geometric_mean(kind[k]) for k in ("kernels", "floor", *baselines)]
        lines.append("| " + " | ".join([dtype, mode, *(f"{fmt(c, 2)}x" if c else "—"
                                                        for c in cells)]) + " |")
    return lines


def markdown(results: dict) -> str:
    """Header, the long table (one row per implementation) and a wide summary table."""
    rows = results["rows"]
    bw = results["bandwidth"]
    lines = [
        f"# jaxqif benchmark: {results['device']} ({results['date']})",
        "",
        f"jax {results['versions'].get('jax')}, jaxlib {results['versions'].get('jaxlib')}; "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()
                    if k not in ("jax", "jaxlib")),
        f"Copy bandwidth (read + write): {bw['copy_GBps']:.0f} GB/s "
        f"({', '.join(f'{k} {v:.0f}' for k, v in bw['measured_GBps'].items())}). "
        f"Floor = bytes / that rate (fwd 8|4 B/elem, fwd+bwd 24|16 B/elem for f32|half).",
        f"SpikingJelly: {results['spikingjelly']}.",
        f"Timing: {results['timing_method']}",
        f"Dispatch: a jitted copy of a tiny array takes {fmt(results.get('dispatch_ms'), 4)} ms "
        "per call back to back on this host; no jitted call is faster end to end.",
        "",
        "| T | N | dtype | mode | impl | ms | ms (1 call) | floor ms | × floor | jaxqif speedup |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = fmt(r["ms"], 4) if r["ms"] is not None else (r["note"] or "—")
        speedup = f"{r['speedup']:.2f}x" if r.get("speedup") else "—"
        lines.append(f"| {r['T']} | {shape_n(r['N'])} | {r['dtype']} | {r['mode']} | {r['impl']} "
                     f"| {ms} | {fmt(r['ms_sync'], 4)} | {fmt(r['floor_ms'], 4)} "
                     f"| {fmt(r['x_floor'], 2)} | {speedup} |")

    impls = list(dict.fromkeys(r["impl"] for r in rows))
    baselines = [i for i in impls if i != JAXQIF]
    header = ["T", "N", "dtype", "mode", "floor ms", f"{JAXQIF} kernels", *impls,
              *(f"vs {b}" for b in baselines)]
    lines += ["", "Summary: ms (× floor), end to end but for jaxqif's kernels alone "
              f"({results.get('kernels_source', 'not profiled')}); speedup = baseline ms / "
              "jaxqif ms, end to end.", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["T"], r["N"], r["dtype"], r["mode"]), {})[r["impl"]] = r
    for (t, n, dtype, mode), group in groups.items():
        floor = next(iter(group.values()))["floor_ms"]
        ours = group.get(JAXQIF, {})
        kernels = (f"{fmt(ours['kernel_ms'], 3)} ({fmt(ours['x_floor_kernels'], 2)}x)"
                   if ours.get("kernel_ms") is not None else "—")
        cells = [kernels] + [f"{fmt(group[i]['ms'], 3)} ({fmt(group[i]['x_floor'], 2)}x)"
                             if i in group and group[i]["ms"] is not None else "—"
                             for i in impls]
        speed = [f"{group[b]['speedup']:.2f}x" if b in group and group[b].get("speedup") else "—"
                 for b in baselines]
        lines.append("| " + " | ".join([str(t), shape_n(n), dtype, mode, fmt(floor, 3),
                                         *cells, *speed]) + " |")

    lines += geometric_means(groups, baselines)

    if results.get("examples"):
        lines += ["", "End-to-end training steps of the examples:", "",
                  "| example | backend | ms/step | ms (1 call) | speedup ffi vs jax |",
                  "|---|---|---|---|---|"]
        for e in results["examples"]:
            lines.append(f"| {e['example']} | {e['backend']} | {fmt(e['ms'])} | "
                         f"{fmt(e['ms_sync'])} | {fmt(e.get('speedup_ffi_vs_jax'), 2)} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def versions(jax) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {"jax": jax.__version__, "python": sys.version.split()[0]}
    for package in ("jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "jaxqif", "numpy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def write_results(results: dict, args: argparse.Namespace) -> str:
    """Writes <name>.md, .json and .png into args.out_dir; returns the markdown."""
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (args.out_dir / f"{args.name}.md").write_text(table)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    if not args.no_plot:
        try:
            import plot

            plot.plot(results, args.out_dir / f"{args.name}.png")
        except Exception as error:  # noqa: BLE001
            print(f"plot failed: {type(error).__name__}: {error}", file=sys.stderr)
    return table


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        if args.kernels:
            attach_kernel_times(results, args.kernels)
        write_results(results, args)
        print(f"wrote {args.out_dir}/{args.name}.md from {args.render}")
        return 0
    if args.cpu_smoke:
        os.environ["JAX_PLATFORMS"] = "cpu"
    # Allocate on demand, leaving room for torch in the same process.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    started = time.time()
    deadline = started + args.max_seconds

    import jax
    import jax.numpy as jnp

    import jaxqif

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}); jax {jax.__version__}", flush=True)

    impls = {}
    if JAXQIF in args.impls:
        try:  # fails when no fused kernel was built for this platform
            jax.block_until_ready(jaxqif.qif_multistep(jnp.zeros((2, 8)), backend="ffi"))
            impls[JAXQIF] = JaxImpl(jax, jnp, jaxqif, "ffi")
        except Exception as error:  # noqa: BLE001
            impls_unavailable[JAXQIF] = f"unavailable: {type(error).__name__}: {error}"
            print(f"jaxqif fused kernel {impls_unavailable[JAXQIF]}", file=sys.stderr)
    if PURE_JAX in args.impls:
        impls[PURE_JAX] = JaxImpl(jax, jnp, jaxqif, "jax")

    sj_impl, sj_text = None, "not requested"
    if SJ in args.impls:
        if args.cpu_smoke:
            sj_reason = "skipped (--cpu-smoke)"
        else:
            import sj_baseline

            sj, sj_reason = sj_baseline.load()
            if sj is not None:
                sj_impl = SjImpl(sj)
                impls[SJ] = sj_impl
        if sj_impl is None:
            impls_unavailable[SJ] = f"unavailable: {sj_reason}"
            sj_text = f"unavailable ({sj_reason})"
            print(f"SpikingJelly {sj_text}", flush=True)

    # Copy bandwidth: 1 GiB buffers on a GPU (>> L2), 64 MiB on the CPU.
    copy_bytes = (64 << 20) if device.platform == "cpu" else (1 << 30)
    measured = {"jax_copy": copy_bandwidth_jax(jax, jnp, copy_bytes, args.timing) / 1e9}
    if sj_impl is not None:
        measured["torch_copy"] = sj_impl.sj.copy_bandwidth(copy_bytes) / 1e9
    bandwidth = max(measured.values()) * 1e9  # the best copy: the most demanding floor
    print("copy bandwidth GB/s: " + ", ".join(f"{k} {v:.0f}" for k, v in measured.items()),
          flush=True)
    dispatch = dispatch_ms(jax, jnp, args.timing)
    print(f"dispatch of a tiny jitted copy: {dispatch * 1e3:.1f} us per call", flush=True)

    rows = run_sweep(args, jax, jnp, impls, sj_impl, bandwidth, deadline)
    if sj_impl is not None:
        sj_text = (f"spikingjelly.activation_based.functional.qif_multi_step, CUDA implementation "
                   f"'{sj_impl.sj.implementation()}' (SJ_QIF_CUDA_IMPLEMENTATION="
                   f"{os.environ.get('SJ_QIF_CUDA_IMPLEMENTATION')}); "
                   + ", ".join(f"{k} {v}" for k, v in sj_impl.sj.versions.items()))

    examples = []
    if args.examples:
        print("examples:", flush=True)
        examples = time_examples(jax, args.timing)

    t = args.timing
    results = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        device=device.device_kind,
        platform=device.platform,
        versions=versions(jax) | ({} if sj_impl is None else sj_impl.sj.versions),
        spikingjelly=sj_text,
        bandwidth=dict(copy_GBps=bandwidth / 1e9, measured_GBps=measured, copy_bytes=copy_bytes),
        dispatch_ms=dispatch,
        floor_bytes_per_element={f"{m} {d}": b for (m, d), b in FLOOR_BYTES.items()},
        problem="QIF multistep, hard reset v_reset=-0.1, tau=2, v_c=0.8, a0=1, v_th=1, "
                "v_rest=0, Sigmoid(4); x[T, N] = clip(0.8 normal + 0.4, -1, 1.2); "
                "fwd: spikes; fwd+bwd: spikes and grad_x of sum(spikes * g), g normal",
        timing_method=(
            f"{t.warmup} warm-up calls; 'ms (1 call)' = median of {t.single_calls} synchronized "
            f"single calls; 'ms' = median over {t.reps} batches of k back-to-back calls "
            f"(k ~ {t.batch_ms:g} ms / call time, <= {t.max_batch}) per call; inputs rotate over "
            f">= {ROTATE_BYTES >> 20} MiB of input sets; torch timed with CUDA events, JAX with "
            f"the host clock around block_until_ready."),
        args={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k != "timing"} | {"timing": t.__dict__},
        rows=rows,
        examples=examples,
        wall_seconds=None,
    )
    results["wall_seconds"] = time.time() - started
    if args.kernels:
        attach_kernel_times(results, args.kernels)

    table = write_results(results, args)
    print()
    print(table)
    print(f"wrote {args.out_dir}/{args.name}.{{md,json,png}} in {results['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
