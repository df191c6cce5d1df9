"""Benchmark: jaxqif's fused kernel against the pure-JAX reference and SpikingJelly 2.0's Triton QIF.

This file is the command line only; the benchmark itself lives in modules beside it, one place
for each thing:
  problem.py          what is measured: shapes, dtypes, modes, inputs, the memory floor
                      (shared with cpu_bench.py and kernel_profile.py);
  implementations.py  who is measured: jaxqif fused, lax.scan, SpikingJelly (sj_baseline.py);
  sweep.py            how: the timing method (warm-up, single calls, batches), the sweep, the
                      examples' training steps;
  report.py           what is written: markdown tables, JSON, the plot (plot.py).
cpu_bench.py is the CPU section (jaxqif's CPU kernels against lax.scan and SpikingJelly's CPU
path), a command line of its own on the same modules.

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
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the modules below, sj_baseline, plot

from implementations import IMPLS, JAXQIF, JAXQIF_ARRAYS, PURE_JAX, SJ, JaxImpl, SjImpl  # noqa: E402
from problem import (CPU_SMOKE_SHAPES, DTYPES, FLOOR_BYTES, MODES, QUICK_SHAPES,  # noqa: E402
                     SHAPES, parse_shape)
from report import attach_kernel_times, versions, write_results  # noqa: E402
from sweep import (CPU_SMOKE, FULL, QUICK, ROTATE_BYTES, Timing, copy_bandwidth_jax,  # noqa: E402
                   dispatch_ms, run_sweep, time_examples)


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

    impls, unavailable = {}, {}  # unavailable: why a requested implementation is missing
    if JAXQIF in args.impls:
        try:  # fails when no fused kernel was built for this platform
            jax.block_until_ready(jaxqif.qif_multistep(jnp.zeros((2, 8)), backend="ffi"))
            impls[JAXQIF] = JaxImpl(jax, jnp, jaxqif, "ffi")
        except Exception as error:  # noqa: BLE001
            unavailable[JAXQIF] = f"unavailable: {type(error).__name__}: {error}"
            print(f"jaxqif fused kernel {unavailable[JAXQIF]}", file=sys.stderr)
    if JAXQIF_ARRAYS in args.impls:
        if JAXQIF in impls:
            impls[JAXQIF_ARRAYS] = JaxImpl(jax, jnp, jaxqif, "ffi", per_feature=True)
        else:
            unavailable[JAXQIF_ARRAYS] = unavailable.get(JAXQIF, "needs the jaxqif column")
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
            unavailable[SJ] = f"unavailable: {sj_reason}"
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

    rows = run_sweep(args, jax, jnp, impls, sj_impl, bandwidth, deadline, unavailable)
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
