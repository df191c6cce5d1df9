"""Runs every CUDA kernel variant once on small, odd shapes: the workload for
`compute-sanitizer` (memcheck, racecheck) in scripts/gpu_check.sh. Not a pytest module."""

import itertools
import sys

import jax
import jax.numpy as jnp

import jaxqif
from jaxqif import surrogate as sg

jax.config.update("jax_enable_x64", True)

DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)
# T = 11 is not a multiple of the kernels' chunks; N = 37 leaves a partial block. Layouts for
# every launch plan: staged deep (the first three; an odd innermost size sends 16-bit types to
# the narrow plan), staged deep with the shared-memory ring wrapping around (T = 150), staged
# shallow, narrow (many neurons, odd innermost size) and wide.
LAYOUTS = (((11, 37), 0), ((3, 11, 6), 1), ((37, 11), -1), ((150, 64), 0), ((5, 40000), 0),
           ((5, 150001), 0), ((5, 1 << 20), 0))
SMALL = 5  # the layouts with few neurons: every plan that uses shared memory


def main(layouts=LAYOUTS):
    runs = 0
    for dtype, surrogate_cls, v_reset in itertools.product(DTYPES, sg.ALL, (-0.1, None)):
        for store_v_seq, (shape, time_axis) in zip((False, True) * 4, layouts):
            x = (jax.random.normal(jax.random.key(runs), shape, jnp.float32) + 0.6).astype(dtype)
            params = dict(v_reset=v_reset, surrogate=surrogate_cls(), store_v_seq=store_v_seq,
                          time_axis=time_axis, backend="ffi")

            def loss(x):
                spikes, v_final, v_seq = jaxqif.qif_multistep(x, **params)
                total = jnp.sum(spikes.astype(jnp.float32)) + jnp.sum(v_final)
                return total + (jnp.sum(v_seq) if store_v_seq else 0.0)

            jax.block_until_ready(jax.jit(jax.grad(loss))(x))  # training forward + backward
            jax.block_until_ready(jax.jit(lambda x: jaxqif.qif_multistep(x, **params))(x))
            # a spikes-only loss: the backward without v cotangents
            jax.block_until_ready(jax.jit(jax.grad(
                lambda x: jnp.sum(jaxqif.qif_multistep(x, **params)[0].astype(jnp.float32))))(x))
            runs += 1
    print(f"gpu_sanitize: {runs} configurations ran")


if __name__ == "__main__":
    # --small: only the layouts whose launch plans stage inputs in shared memory, which is
    # what racecheck examines.
    main(LAYOUTS[:SMALL] if "--small" in sys.argv else LAYOUTS)
