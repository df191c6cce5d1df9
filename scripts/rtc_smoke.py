"""One forward and one gradient through the run-time compiled CUDA kernels, timed: the first call
compiles (NVRTC), the second runs. Run by scripts/gpu_check.sh's `rtc` stage before the tests.

    JAXQIF_CUDA_KERNELS=runtime python3 scripts/rtc_smoke.py
"""
import time

import jax
import jax.numpy as jnp

import jaxqif
from jaxqif import _library, _rtc

print("CUDA kernels:", _library.kernel_source("cuda"), _library.library_path("cuda"))
x = jax.random.normal(jax.random.key(0), (64, 8, 1024), jnp.float32) * 0.8 + 0.45
forward = jax.jit(lambda x: jaxqif.qif_multistep(x, backend="ffi")[0])
grad = jax.jit(jax.grad(lambda x: jnp.sum(jaxqif.qif_multistep(x, backend="ffi")[0] * x)))
for what, f in (("forward", forward), ("gradient", grad)):
    for call in ("first", "second"):
        start = time.perf_counter()
        out = f(x).block_until_ready()
        print(f"{what} {call} call: {time.perf_counter() - start:.3f} s, sum {float(out.sum()):.6g}")
reference = jaxqif.qif_multistep(x, backend="jax")[0]
print("forward equals the pure-JAX path:", bool((forward(x) == reference).all()))
print("compiled:", {name.split("<")[0]: round(s, 2) for name, s in _rtc.compile_seconds.items()})
