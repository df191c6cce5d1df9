"""Per-kernel view of one jitted inference forward and one training step (forward + backward):
every GPU kernel they launch, with its duration, DRAM bytes and registers, read by Nsight
Compute. Shows where time goes inside the end-to-end numbers of bench.py (the v_init fill,
any copy XLA adds around the custom calls, forward vs backward).

    ncu --clock-control none --profile-from-start off --csv --metrics <see METRICS> \\
        python3 benchmarks/kernel_profile.py [--shapes 4x2^23,...] [--dtypes float32,...] [--arrays]

(--arrays: also the calls with tau and v_threshold per feature, bench.py's jaxqif-arrays.)

(scripts/gpu_check.sh's `profile` stage runs exactly that.) Only the calls after warm-up are
profiled, between cudaProfilerStart/Stop (through CuPy, which shares JAX's CUDA context).

    python3 benchmarks/kernel_profile.py --table profile.csv [--bench bench.json]

renders that output as a markdown table: per call, the sum of its kernels' durations (a call
starts at an empty marker kernel launched before it), DRAM bytes, and the ratio to bench.py's
floor at the copy bandwidth of the given bench.py results; `--kernels profile.csv` lists its
kernels one by one (time, registers). Nsight Compute runs each kernel alone with its caches
flushed first, so these are the kernels' own times, without the host's dispatch.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from implementations import (  # noqa: E402
    JAXQIF, JAXQIF_ARRAYS, per_feature_parameters, spikes_with_parameters)
from problem import FLOOR_BYTES, SHAPES, make_inputs, parse_shape, shape_n  # noqa: E402

METRICS = ("gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,"
           "launch__registers_per_thread,launch__grid_size,launch__block_size,"
           "sm__warps_active.avg.pct_of_peak_sustained_active")


def kernels(csv_path: Path) -> list[dict]:
    """Every kernel ncu profiled, in launch order: its name and its metrics' values."""
    lines = csv_path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    by_id: dict = {}
    for row in csv.DictReader(lines[start:]):
        try:
            value = float(row["Metric Value"].replace(",", ""))
        except ValueError:
            value = row["Metric Value"]
        by_id.setdefault(row["ID"], {"name": row["Kernel Name"]})[row["Metric Name"]] = value
    return list(by_id.values())


# An empty kernel this script launches at the start of each profiled call: where a call's
# kernels begin. (XLA may launch a training call's backward before its forward, which does not
# feed it when T is one checkpoint interval or less, so a forward kernel does not mark the start.)
MARKER = "jaxqif_profile_call"


def calls(csv_path: Path) -> list[dict]:
    """The profiled calls, in order: the PROFILE lines this script printed, each with the
    kernels (name, ns, DRAM bytes) that ncu listed for it."""
    labels = [line.split()[1:] for line in csv_path.read_text().splitlines()
              if line.startswith("PROFILE ")]
    listed = kernels(csv_path)  # in launch order
    marked = any(MARKER in k["name"] for k in listed)
    grouped: list[list] = []
    for kernel in listed:
        # (CSVs of before the marker: a call starts at its forward kernel)
        if MARKER in kernel["name"] or not grouped or (
                not marked and "forward_kernel<" in kernel["name"]):
            grouped.append([])
        if MARKER not in kernel["name"]:
            grouped[-1].append(kernel)
    if len(grouped) != len(labels):
        raise ValueError(f"{len(labels)} PROFILE lines but {len(grouped)} calls in {csv_path}")
    result = []
    for (mode, t, n, dtype, *impl), group in zip(labels, grouped):
        impl = impl[0] if impl else JAXQIF  # (the label of the scalar path's calls, before --arrays)
        result.append(dict(
            mode=mode, T=int(t.split("=")[1]), N=int(n.split("=")[1]), dtype=dtype, impl=impl,
            kernels=len(group), us=sum(k["gpu__time_duration.sum"] for k in group) / 1e3,
            dram_mb=sum(k["dram__bytes_read.sum"] + k["dram__bytes_write.sum"]
                        for k in group) / 1e6))
    return result


def table(csv_path: Path, bench_json: Path | None) -> str:
    bandwidth = None
    if bench_json is not None:
        bandwidth = json.loads(bench_json.read_text())["bandwidth"]["copy_GBps"] * 1e9
    lines = ["| T | N | dtype | mode | impl | kernels | kernel us | DRAM MB | floor us | × floor |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in calls(csv_path):
        floor = (c["T"] * c["N"] * FLOOR_BYTES[(c["mode"], c["dtype"])] / bandwidth * 1e6
                 if bandwidth else None)
        ratio = f"{c['us'] / floor:.2f}x" if floor else "—"
        lines.append(f"| {c['T']} | {shape_n(c['N'])} | {c['dtype']} | {c['mode']} | {c['impl']} "
                     f"| {c['kernels']} | {c['us']:.1f} | {c['dram_mb']:.0f} "
                     f"| {f'{floor:.1f}' if floor else '—'} | {ratio} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")],
                   default=SHAPES)
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=["float32", "bfloat16"])
    p.add_argument("--arrays", action="store_true",
                   help="also jaxqif-arrays: tau and v_threshold per feature, as bench.py's")
    p.add_argument("--table", type=Path, metavar="CSV",
                   help="profile nothing: print the markdown table of an earlier ncu CSV")
    p.add_argument("--bench", type=Path, metavar="JSON",
                   help="with --table: bench.py results whose copy bandwidth sets the floor")
    p.add_argument("--kernels", type=Path, metavar="CSV",
                   help="profile nothing: list each kernel of an earlier ncu CSV (time, registers)")
    args = p.parse_args(argv)
    if args.table:
        print(table(args.table, args.bench), end="")
        return
    if args.kernels:
        for i, k in enumerate(kernels(args.kernels)):
            print(f"{i} {k['gpu__time_duration.sum']:,.0f} ns "
                  f"{k['launch__registers_per_thread']:.0f} registers {k['name'][:110]}")
        return

    import cupy
    import jax
    import jax.numpy as jnp

    import jaxqif

    # As bench.py's calls, with the per-feature parameters as arguments: computed inside, they
    # would add a kernel of their own to each call.
    def spikes(x, *params):
        if not params:
            return jaxqif.qif_multistep(x, backend="ffi")[0]
        return spikes_with_parameters(jaxqif, "ffi", x, *params)

    infer = jax.jit(spikes)

    def train(x, g, *params):  # the spikes, grad_x of sum(spikes * g), and the parameters'
        out, vjp = jax.vjp(spikes, x, *params)
        return out, *vjp(g)

    train = jax.jit(train)
    marker = cupy.RawKernel(f'extern "C" __global__ void {MARKER}() {{}}', MARKER)
    impls = (JAXQIF, JAXQIF_ARRAYS) if args.arrays else (JAXQIF,)
    for t, n in args.shapes:
        for dtype in args.dtypes:
            (x,), (g,) = make_inputs(jax, jnp, t, n, dtype, 1)
            for impl in impls:
                params = per_feature_parameters(jnp, n) if impl == JAXQIF_ARRAYS else ()
                for name, fn, fn_args in (("fwd", infer, (x, *params)),
                                          ("fwd+bwd", train, (x, g, *params))):
                    jax.block_until_ready(fn(*fn_args))  # compile and warm up outside
                    print(f"PROFILE {name} T={t} N={n} {dtype} {impl}", flush=True)
                    cupy.cuda.runtime.profilerStart()
                    marker((1,), (1,), ())  # (launched before the call's kernels)
                    jax.block_until_ready(fn(*fn_args))
                    cupy.cuda.runtime.profilerStop()
            del x, g


if __name__ == "__main__":
    main()
