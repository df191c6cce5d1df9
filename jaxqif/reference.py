"""The pure-JAX QIF neuron: `qif_step` and a `lax.scan` over time.

This is the independent reference the kernels are tested against, and the `backend="jax"` path:
gradients come from JAX's autodiff through the surrogate's custom JVP, with no hand-written
backward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxqif._config import NeuronConfig, state_dtype


def step(config: NeuronConfig, x: jax.Array, v: jax.Array, constants: dict | None = None):
    """One QIF step in the state dtype. Returns (spike, v_next), spike in the state dtype.
    `constants`: `config.constants(...)`, where some parameters are arrays."""
    k = config.constants(v.dtype) if constants is None else constants
    # H = v + (x + a0 (v - v_rest)(v - v_c)) / tau, expanded in v as cuda/qif_math.h's
    # qif_charge evaluates it (there as fused multiply-adds, which XLA may or may not form).
    h = (k["charge_v2"] * v + k["charge_v1"]) * v + (x * k["inv_tau"] + k["charge_v0"])
    spike = config.surrogate(h - k["v_threshold"])
    spike_in_reset = lax.stop_gradient(spike) if config.detach_reset else spike
    if config.hard_reset:
        # A neuron that fires starts again at v_reset, whatever H was: SpikingJelly's
        # S v_reset + (1 - S) H, but for H = +-inf, where that is 0 * inf = NaN. Its gradient
        # is the formula's, (1 - S) + (v_reset - H) sigma', with the reset term 0 where H is
        # not finite (sigma' is 0 there: the limit), as in the kernels (qif_dv_dh).
        fired = lax.stop_gradient(spike) > 0
        reset_gap = jnp.where(jnp.isfinite(h), k["v_reset"] - h, 0)
        v_next = (jnp.where(fired, k["v_reset"], h)
                  + (spike_in_reset - lax.stop_gradient(spike_in_reset)) * reset_gap)
    else:
        v_next = h - spike_in_reset * k["v_threshold"]
    return spike, v_next


def multistep(config: NeuronConfig, x_seq, v_init, time_axis: int, store_v_seq: bool,
              arrays: dict | None = None):
    """Runs the neuron over `time_axis` of x_seq (already validated; v_init in the state dtype;
    `arrays`: the parameters given as arrays, broadcastable to the neurons, state dtype).

    Returns (spike_seq in x's dtype, v_final, v_seq or None), v in the state dtype.
    """
    in_dtype = x_seq.dtype
    st = state_dtype(in_dtype)
    xs = jnp.moveaxis(x_seq, time_axis, 0).astype(st)
    constants = config.constants(st, arrays)

    def body(v, x):
        spike, v = step(config, x, v, constants)
        return v, (spike.astype(in_dtype), v if store_v_seq else None)

    v_final, (spikes, v_seq) = lax.scan(body, v_init, xs)
    spikes = jnp.moveaxis(spikes, 0, time_axis)
    if store_v_seq:
        v_seq = jnp.moveaxis(v_seq, 0, time_axis)
    return spikes, v_final, v_seq
