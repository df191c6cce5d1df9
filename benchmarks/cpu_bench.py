"""CPU benchmark: jaxqif's fused CPU kernels against lax.scan and SpikingJelly 2.0's CPU path.

Why this module exists: the issue "The CPU kernels as fast, relative to their machine, as the
GPU ones" asks for a CPU section with the three implementations side by side in one run, on a
grid of its own. bench.py stays the GPU benchmark (its flags and outputs unchanged); this is
its CPU counterpart on the same modules: the problem and inputs of problem.py, the wrappers of
implementations.py and sj_baseline.py, the timing method of sweep.py. A fourth column,
jaxqif-arrays (tau and v_threshold per feature, and their gradients in fwd+bwd, as in
bench.py), gives what learnable parameters cost on the CPU.

Run (on any machine; it always runs on JAX's CPU backend and torch's CPU tensors)::

    python3 benchmarks/cpu_bench.py                     # the full grid, ~10 min on 2 cores
    python3 benchmarks/cpu_bench.py --shapes 64x16384 --dtypes float32 --impls jaxqif,pure-jax
    python3 benchmarks/cpu_bench.py --render benchmarks/results/cpu.json   # rewrite cpu.md

SpikingJelly comes from its wheels (``pip install --no-index --no-deps
/work/shared/wheels/*.whl`` beside a CPU torch); without it its column says why it is missing.

One thread each (the XLA CPU client otherwise uses one intra-op thread per core, torch
likewise; jaxqif's CPU kernels themselves run on the calling thread)::

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python3 benchmarks/cpu_bench.py --torch-threads 1 --name cpu_1thread

Grid: x[T, N] = 16x65536, 64x16384, 256x4096, 1024x256, 4096x64; float32, float64, bfloat16,
float16 (the 16-bit types and float64 for a per-element comparison with float32); modes fwd
(the spikes, jitted) and fwd+bwd (a jitted vjp returning the spikes and grad_x of
sum(spikes * g), as in bench.py, so XLA cannot drop the forward); the problem of problem.py
(hard reset, Sigmoid(4)). float64 needs ``jax_enable_x64``, which this script turns on when
float64 is requested (it changes no float32/16-bit computation; recorded in the JSON).

Timing: sweep.py's method with CPU settings: 2 warm-up calls (compilation), then ``ms`` = the
median of 7 batches of k back-to-back calls (k ~ 20 ms / call time, at most 50; 1 for slow
calls), per call, host clock around block_until_ready (torch's CPU operations are
synchronous); ``ms (1 call)`` (JSON only) = median of 3 synchronized single calls. Each call
reads one of several input sets in rotation, together >= 64 MiB of x, twice the 32 MiB L3 of
the machine this was written on, so inputs come from memory rather than cache.

Outputs in --out-dir (default benchmarks/results): <name>.json (every number, the machine:
CPU model, cores, L3, load average before and after, versions, XLA_FLAGS, thread counts) and
<name>.md (per dtype: ms of each implementation, lax.scan / fused, SpikingJelly / fused, the
fused path's fwd+bwd / fwd; geometric means over the shapes; each dtype against float32).
The machine is shared with others' builds: the load average is part of the result.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the modules below, sj_baseline

from implementations import JAXQIF, JAXQIF_ARRAYS, PURE_JAX, JaxImpl, SjImpl  # noqa: E402
from problem import MODES, make_inputs, parse_shape, shape_n  # noqa: E402
from report import fmt, geometric_mean, versions  # noqa: E402
from sweep import Timing, finish_group, measure_row  # noqa: E402

SJ_CPU = "spikingjelly-cpu"
CPU_IMPLS = (JAXQIF, PURE_JAX, SJ_CPU, JAXQIF_ARRAYS)
IMPL_TITLES = {JAXQIF: "fused", PURE_JAX: "lax.scan", SJ_CPU: "SpikingJelly",
               JAXQIF_ARRAYS: "fused, per-feature tau and v_threshold"}
CPU_SHAPES = [(16, 65536), (64, 16384), (256, 4096), (1024, 256), (4096, 64)]
CPU_DTYPES = ("float32", "float64", "bfloat16", "float16")
CPU_TIMING = Timing(warmup=2, single_calls=3, reps=7, batch_ms=20.0, max_batch=50)
ROTATE_BYTES = 64 << 20  # x's input sets together at least this large (2x a 32 MiB L3)
MAX_SETS = 64


class CpuSjImpl(SjImpl):
    """SjImpl on SpikingJelly's CPU path: v in the state dtype (float64 for float64 inputs)."""

    def set_data(self, xs_jax, gs_jax, dtype: str, n: int):
        super().set_data(xs_jax, gs_jax, dtype, n)
        self.v = self.sj.v_init(n, dtype)


# ----------------------------------------------------------------------------------------------
# The machine
# ----------------------------------------------------------------------------------------------

def machine() -> dict:
    """What the numbers depend on: the CPU, its cores and cache, the threads allowed."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        info["cores_available"] = len(os.sched_getaffinity(0))
    except AttributeError:
        info["cores_available"] = os.cpu_count()
    try:
        info["l3"] = Path("/sys/devices/system/cpu/cpu0/cache/index3/size").read_text().strip()
    except OSError:
        info["l3"] = None
    try:
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
        info["memory_GiB"] = round(kib / (1 << 20), 1)
    except (OSError, StopIteration):
        info["memory_GiB"] = None
    info["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    info["xla_cpu_threads"] = (
        "as XLA_FLAGS says" if "intra_op_parallelism_threads" in info["XLA_FLAGS"]
        else f"XLA's default: one intra-op thread per available core ({info['cores_available']})")
    return info


def load_average() -> list | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=HERE / "results",
                   help="where <name>.md/.json go (default benchmarks/results)")
    p.add_argument("--name", default="cpu", help="output file stem (default cpu)")
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")],
                   default=CPU_SHAPES, help="comma-separated TxN (default: the issue's grid)")
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=list(CPU_DTYPES),
                   help=f"subset of {','.join(CPU_DTYPES)}")
    p.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES),
                   help=f"subset of {','.join(MODES)}")
    p.add_argument("--impls", type=lambda s: s.split(","), default=list(CPU_IMPLS),
                   help=f"subset of {','.join(CPU_IMPLS)}")
    p.add_argument("--reps", type=int, default=CPU_TIMING.reps,
                   help=f"batches per configuration: the median's sample (default "
                        f"{CPU_TIMING.reps})")
    p.add_argument("--torch-threads", type=int, help="torch.set_num_threads (default torch's)")
    p.add_argument("--max-seconds", type=float, default=840.0,
                   help="stop starting new configurations after this long (default 840)")
    p.add_argument("--render", type=Path, metavar="JSON",
                   help="measure nothing: write <name>.md from an earlier run's JSON")
    args = p.parse_args(argv)
    for name, given, allowed in (("dtype", args.dtypes, CPU_DTYPES), ("mode", args.modes, MODES),
                                 ("impl", args.impls, CPU_IMPLS)):
        unknown = set(given) - set(allowed)
        if unknown:
            p.error(f"unknown {name}(s) {sorted(unknown)}; choose from {allowed}")
    args.timing = Timing(**{**CPU_TIMING.__dict__, "reps": args.reps})
    return args


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------

def run(args, jax, jnp, impls: dict, unavailable: dict, deadline: float) -> list:
    """Measures every (shape, dtype, mode, impl); returns rows like bench.py's, without a floor.
    ``speedup`` is this implementation's ms over the fused kernel's (lax.scan / fused, ...)."""
    rows = []
    sj = impls.get(SJ_CPU)
    for t, n in args.shapes:
        for dtype in args.dtypes:
            itemsize = jnp.dtype(dtype).itemsize
            sets = max(1, min(MAX_SETS, math.ceil(ROTATE_BYTES / (t * n * itemsize))))
            data = None
            if time.time() <= deadline:
                data = make_inputs(jax, jnp, t, n, dtype, sets)
                if sj is not None:
                    try:
                        sj.set_data(*data, dtype, n)
                    except Exception as error:  # noqa: BLE001
                        print(f"  SpikingJelly data for {t}x{n} {dtype}: {error}", file=sys.stderr)
                        sj.clear()
            for mode in args.modes:
                group = []
                for impl in args.impls:
                    group.append(measure_row(
                        dict(T=t, N=n, dtype=dtype, mode=mode, impl=impl, input_sets=sets),
                        data, impls, unavailable, (SJ_CPU, sj), args.timing))
                finish_group(group)  # speedup = row ms / fused ms; checksums against fused
                rows.extend(group)
                for row in group:
                    ratio = f"{row['speedup']:.2f}x fused" if row.get("speedup") else ""
                    print(f"  T={t:5d} N={n:6d} {dtype:8s} {mode:7s} {row['impl']:16s} "
                          f"{fmt(row['ms'], 3):>9s} ms  {ratio:12s} {row['note'] or ''}",
                          flush=True)
            if sj is not None:
                sj.clear()
            del data
    return rows


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

def derived(rows: list) -> dict:
    """The ratios the issue asks for, per shape, and their geometric means over the shapes:
    lax.scan / fused and SpikingJelly / fused (per dtype and mode), the fused path's
    fwd+bwd / fwd (per dtype), and the fused path's ms in each dtype over its float32 ms (the
    grid's shapes hold the same elements in every dtype)."""
    ms = {(r["T"], r["N"], r["dtype"], r["mode"], r["impl"]): r["ms"] for r in rows
          if r["ms"] is not None}
    shapes = list(dict.fromkeys((r["T"], r["N"]) for r in rows))
    dtypes = list(dict.fromkeys(r["dtype"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    out: dict = {"bwd_over_fwd": {}, "over_float32": {}, "geomean": []}
    for t, n in shapes:
        for dtype in dtypes:
            fwd = ms.get((t, n, dtype, "fwd", JAXQIF))
            both = ms.get((t, n, dtype, "fwd+bwd", JAXQIF))
            if fwd and both:
                out["bwd_over_fwd"][f"{t}x{n} {dtype}"] = both / fwd
            for mode in modes:
                base = ms.get((t, n, "float32", mode, JAXQIF))
                here = ms.get((t, n, dtype, mode, JAXQIF))
                if base and here and dtype != "float32":
                    out["over_float32"][f"{t}x{n} {dtype} {mode}"] = here / base
    for dtype in dtypes:
        for mode in modes:
            entry = {"dtype": dtype, "mode": mode}
            for impl in CPU_IMPLS:
                values = [ms[(t, n, dtype, mode, impl)] for t, n in shapes
                          if (t, n, dtype, mode, impl) in ms]
                entry[f"{impl}_ms"] = geometric_mean(values)
                if impl != JAXQIF:
                    ratios = [ms[(t, n, dtype, mode, impl)] / ms[(t, n, dtype, mode, JAXQIF)]
                              for t, n in shapes if (t, n, dtype, mode, impl) in ms
                              and (t, n, dtype, mode, JAXQIF) in ms]
                    entry[f"{impl}_over_fused"] = geometric_mean(ratios)
                    entry[f"{impl}_shapes"] = len(ratios)
            if mode == "fwd+bwd":
                entry["fused_bwd_over_fwd"] = geometric_mean(
                    [v for k, v in out["bwd_over_fwd"].items() if k.endswith(f" {dtype}")])
            if dtype != "float32":
                entry["fused_over_float32"] = geometric_mean(
                    [v for k, v in out["over_float32"].items() if k.endswith(f" {dtype} {mode}")])
            out["geomean"].append(entry)
    return out


def ratio(value) -> str:
    return "—" if value is None else f"{value:.2f}x"


def markdown(results: dict) -> str:
    m, rows = results["machine"], results["rows"]
    d = derived(rows)
    load_before, load_after = results.get("load_before"), results.get("load_after")
    v = results["versions"]
    lines = [
        f"# jaxqif CPU benchmark: {m['cpu']} ({results['date']})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['cores_available']} available to the "
        f"process), L3 {m['l3']}, {m['memory_GiB']} GiB; load average (1, 5, 15 min) "
        f"{load_before} before, {load_after} after (the cores are shared with other work: "
        "medians, and still noisy).",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        f"Threads: XLA CPU: {m['xla_cpu_threads']} (XLA_FLAGS='{m['XLA_FLAGS']}'); torch "
        f"{results.get('torch_threads') or '—'}; jax_enable_x64 {results['x64']}.",
        f"SpikingJelly: {results['spikingjelly']}.",
        f"Problem: {results['problem']}.",
        f"Timing: {results['timing_method']}",
        "",
        "ms per call (median); ratios = that implementation's ms / the fused kernel's ms (above "
        "1: the fused kernel is faster); fwd+bwd / fwd = the fused path's training step over its "
        "inference forward.",
    ]
    impls = [i for i in CPU_IMPLS if any(r["impl"] == i for r in rows)]
    baselines = [i for i in impls if i != JAXQIF]
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        header = ["T", "N", "mode", *(f"{IMPL_TITLES[i]} ms" for i in impls),
                  *(f"{IMPL_TITLES[b]} / fused" for b in baselines), "fused fwd+bwd / fwd"]
        lines += ["", f"## {dtype}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        groups: dict = {}
        for r in rows:
            if r["dtype"] == dtype:
                groups.setdefault((r["T"], r["N"], r["mode"]), {})[r["impl"]] = r
        for (t, n, mode), group in groups.items():
            cells = [fmt(group[i]["ms"], 3) if i in group and group[i]["ms"] is not None
                     else "—" for i in impls]
            ratios = [ratio(group[b].get("speedup")) if b in group else "—" for b in baselines]
            bwd = (ratio(d["bwd_over_fwd"].get(f"{t}x{n} {dtype}")) if mode == "fwd+bwd"
                   else "")
            lines.append("| " + " | ".join([str(t), shape_n(n), mode, *cells, *ratios, bwd])
                         + " |")
    notes = sorted({f"{r['impl']}: {r['note']}" for r in rows if r["note"]})
    if notes:
        lines += ["", "Not measured:", *(f"* {note}" for note in notes)]

    header = ["dtype", "mode", *(f"{IMPL_TITLES[i]} ms" for i in impls),
              *(f"{IMPL_TITLES[b]} / fused" for b in baselines), "fused fwd+bwd / fwd",
              "fused / fused float32"]
    lines += ["", "## Geometric means over the shapes", "",
              "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in d["geomean"]:
        cells = [fmt(e.get(f"{i}_ms"), 3) for i in impls]
        ratios = [ratio(e.get(f"{b}_over_fused")) for b in baselines]
        lines.append("| " + " | ".join([e["dtype"], e["mode"], *cells, *ratios,
                                         ratio(e.get("fused_bwd_over_fwd")),
                                         ratio(e.get("fused_over_float32"))]) + " |")

    others = [dt for dt in dict.fromkeys(r["dtype"] for r in rows) if dt != "float32"]
    if others and d["over_float32"]:
        header = ["T", "N", "mode", *others]
        lines += ["", "## Each dtype against float32 (the fused kernel, same elements)", "",
                  "fused ms in that dtype / fused ms in float32.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for t, n in dict.fromkeys((r["T"], r["N"]) for r in rows):
            for mode in dict.fromkeys(r["mode"] for r in rows):
                cells = [ratio(d["over_float32"].get(f"{t}x{n} {dt} {mode}")) for dt in others]
                lines.append("| " + " | ".join([str(t), shape_n(n), mode, *cells]) + " |")
    return "\n".join(lines) + "\n"


def write(results: dict, args) -> str:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (args.out_dir / f"{args.name}.md").write_text(table)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    return table


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        results = json.loads(args.render.read_text())
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / f"{args.name}.md").write_text(markdown(results))
        print(f"wrote {args.out_dir}/{args.name}.md from {args.render}")
        return 0
    os.environ["JAX_PLATFORMS"] = "cpu"
    started = time.time()
    deadline = started + args.max_seconds
    load_before = load_average()

    import jax

    x64 = "float64" in args.dtypes
    if x64:
        jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    import jaxqif

    device = jax.devices()[0]
    print(f"device: {device.device_kind} ({device.platform}); jax {jax.__version__}; "
          f"load average {load_before}", flush=True)

    impls, unavailable = {}, {}
    if JAXQIF in args.impls:
        try:  # fails when jaxqif was installed without its CPU library
            jax.block_until_ready(jaxqif.qif_multistep(jnp.zeros((2, 8)), backend="ffi"))
            impls[JAXQIF] = JaxImpl(jax, jnp, jaxqif, "ffi")
            if JAXQIF_ARRAYS in args.impls:
                impls[JAXQIF_ARRAYS] = JaxImpl(jax, jnp, jaxqif, "ffi", per_feature=True)
        except Exception as error:  # noqa: BLE001
            for impl in (JAXQIF, JAXQIF_ARRAYS):
                unavailable[impl] = f"unavailable: {type(error).__name__}: {error}"
            print(f"jaxqif fused kernel {unavailable[JAXQIF]}", file=sys.stderr)
    if PURE_JAX in args.impls:
        impls[PURE_JAX] = JaxImpl(jax, jnp, jaxqif, "jax")

    sj_text, sj_versions, torch_threads = "not requested", {}, None
    if SJ_CPU in args.impls:
        import sj_baseline

        sj, reason = sj_baseline.load_cpu()
        if sj is None:
            unavailable[SJ_CPU] = f"unavailable: {reason}"
            sj_text = f"unavailable ({reason})"
            print(f"SpikingJelly {sj_text}", flush=True)
        else:
            if args.torch_threads:
                sj.torch.set_num_threads(args.torch_threads)
            torch_threads = sj.torch.get_num_threads()
            impls[SJ_CPU] = CpuSjImpl(sj)
            sj_versions = sj.versions
            sj_text = ("spikingjelly.activation_based.functional.qif_multi_step on torch CPU "
                       f"tensors, v in the state dtype; {sj.implementation()}")

    rows = run(args, jax, jnp, impls, unavailable, deadline)

    t = args.timing
    results = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        machine=machine(),
        load_before=load_before,
        load_after=load_average(),
        device=device.device_kind,
        platform=device.platform,
        x64=x64,
        torch_threads=torch_threads,
        versions=versions(jax) | {k: val for k, val in sj_versions.items() if k != "triton"},
        spikingjelly=sj_text,
        problem="QIF multistep, hard reset v_reset=-0.1, tau=2, v_c=0.8, a0=1, v_th=1, "
                "v_rest=0, Sigmoid(4); x[T, N] = clip(0.8 normal + 0.4, -1, 1.2); "
                "fwd: spikes; fwd+bwd: spikes and grad_x of sum(spikes * g), g normal",
        timing_method=(
            f"{t.warmup} warm-up calls; 'ms' = median over {t.reps} batches of k back-to-back "
            f"calls (k ~ {t.batch_ms:g} ms / call time, <= {t.max_batch}) per call, host clock "
            f"around block_until_ready; 'ms (1 call)' = median of {t.single_calls} synchronized "
            f"single calls (JSON); inputs rotate over >= {ROTATE_BYTES >> 20} MiB of x."),
        args={k: (str(val) if isinstance(val, Path) else val) for k, val in vars(args).items()
              if k != "timing"} | {"timing": t.__dict__},
        rows=rows,
        wall_seconds=None,
    )
    results["wall_seconds"] = time.time() - started
    results["derived"] = derived(rows)
    table = write(results, args)
    print()
    print(table)
    print(f"wrote {args.out_dir}/{args.name}.{{md,json}} in {results['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
