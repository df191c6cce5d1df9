"""Per-kernel view of one jitted inference forward and one training step (forward + backward):
every GPU kernel they launch, with its duration, DRAM bytes and registers, read by Nsight
Compute. Shows where time goes inside the end-to-end numbers of bench.py (the v_init fill,
any copy XLA adds around the custom calls, forward vs backward).

    ncu --clock-control none --profile-from-start off --csv --metrics <see METRICS> \\
        python3 benchmarks/kernel_profile.py [--shapes 4x2^23,...] [--dtypes float32,...]

(scripts/gpu_check.sh's `profile` stage runs exactly that.) Only the calls after warm-up are
profiled, between cudaProfilerStart/Stop (through CuPy, which shares JAX's CUDA context).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import SHAPES, make_inputs, parse_shape  # noqa: E402

METRICS = ("gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,"
           "launch__registers_per_thread,launch__grid_size,launch__block_size,"
           "sm__warps_active.avg.pct_of_peak_sustained_active")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", type=lambda s: [parse_shape(x) for x in s.split(",")],
                   default=SHAPES)
    p.add_argument("--dtypes", type=lambda s: s.split(","), default=["float32", "bfloat16"])
    args = p.parse_args(argv)

    import cupy
    import jax
    import jax.numpy as jnp

    import jaxqif

    infer = jax.jit(lambda x: jaxqif.qif_multistep(x, backend="ffi")[0])
    train = jax.jit(jax.grad(
        lambda x, g: jnp.sum(jaxqif.qif_multistep(x, backend="ffi")[0] * g)))
    for t, n in args.shapes:
        for dtype in args.dtypes:
            (x,), (g,) = make_inputs(jax, jnp, t, n, dtype, 1)
            for name, fn, fn_args in (("fwd", infer, (x,)), ("fwd+bwd", train, (x, g))):
                jax.block_until_ready(fn(*fn_args))  # compile and warm up outside the profile
                print(f"PROFILE {name} T={t} N={n} {dtype}", flush=True)
                cupy.cuda.runtime.profilerStart()
                jax.block_until_ready(fn(*fn_args))
                cupy.cuda.runtime.profilerStop()
            del x, g


if __name__ == "__main__":
    main()
