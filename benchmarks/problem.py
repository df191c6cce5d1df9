"""The benchmark problem: what every script in benchmarks/ measures, and nothing about how.

Why this module exists: bench.py (the GPU benchmark), cpu_bench.py (the CPU section) and
kernel_profile.py (Nsight Compute per-kernel times) all need the same shapes, the same inputs,
the same shape names and the same memory floor. They used to take them from bench.py, which in
turn imported kernel_profile.py: an import cycle. This module imports nothing of theirs, so
every other module here can import it.

Problem: multi-step QIF with hard reset (v_reset=-0.1), Sigmoid(alpha=4) surrogate, jaxqif's
default neuron (tau=2, v_c=0.8, a0=1, v_threshold=1, v_rest=0), input x[T, N], loss
sum(spikes * g):
  fwd      forward only (inference: nothing saved, no gradient), returns the spikes;
  fwd+bwd  forward saving what the backward needs + BPTT backward: the spikes and grad_x of
           sum(spikes * g).

Floor (the issue's and the performance anchors' definition): the bytes an implementation that
saves one residual per element must move, over the device-to-device copy bandwidth measured in
the same run (bytes read + bytes written):
  fwd      read x, write spikes                              f32: 8 B/elem,  bf16/f16: 4
  fwd+bwd  fwd: read x, write spikes + a float32 residual;   f32: 24 B/elem, bf16/f16: 16
           bwd: read grad_spikes + residual, write grad_x
jaxqif saves no per-step residual (NOTES.md, "No per-step residual: checkpoints every few
steps, H recomputed in the backward"): its training forward writes a float32 checkpoint every
8 steps (4 for 16-bit inputs) and its backward reads x again, 21 B/elem in float32 and 12 in
16-bit for long sequences (20 and 10 up to one interval), so it can run below 1.0x this floor.
"""

from __future__ import annotations

# The GPU benchmark's grid (bench.py, kernel_profile.py): from a short sequence of many neurons
# to a long one of few.
SHAPES = [(4, 1 << 23), (16, 1 << 22), (64, 1 << 21), (256, 1 << 16), (1024, 1 << 14)]
QUICK_SHAPES = [(16, 1 << 22), (1024, 1 << 14)]
CPU_SMOKE_SHAPES = [(8, 1 << 12), (64, 1 << 10)]
DTYPES = ("float32", "bfloat16", "float16")
MODES = ("fwd", "fwd+bwd")

# Bytes per element of the memory floor, per (mode, dtype): see the module docstring.
FLOOR_BYTES = {
    ("fwd", "float32"): 8, ("fwd", "bfloat16"): 4, ("fwd", "float16"): 4,
    ("fwd+bwd", "float32"): 24, ("fwd+bwd", "bfloat16"): 16, ("fwd+bwd", "float16"): 16,
}


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


def shape_n(n: int) -> str:
    """N for a table: '4,096 (2^12)' when a power of two, else '4,000'."""
    exponent = n.bit_length() - 1
    return f"{n:,} (2^{exponent})" if n == 1 << exponent else f"{n:,}"


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
