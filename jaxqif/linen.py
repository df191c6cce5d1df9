"""Flax Linen layers of QIF neurons.

- `QIF` runs a whole sequence through the fused multi-step kernel (`jaxqif.qif_multistep`).
  Use it wherever the input of every step is known up front: after a `Dense` or `Conv` applied
  to the whole sequence, which is the common case in feed-forward spiking networks.
- `QIFCell` is one step (`jaxqif.qif_step`) for `nn.RNN`, or for your own recurrent cell, when a
  step's input depends on earlier outputs (recurrent weights). On the same input,
  `nn.RNN(QIFCell(...))` gives the spikes of `QIF`, one step at a time (bit for bit, but for
  the pure-JAX path's rounding caveat in the README).

Both are parameter-free and elementwise: every input element is one neuron. Their neuron
settings are `jaxqif.qif_multistep`'s keyword arguments and are checked by the functional API
when the layer is called (a bad value fails at the first call, not at construction).

Example::

    import flax.linen as nn
    from jaxqif.linen import QIF

    class SpikingMLP(nn.Module):
        @nn.compact
        def __call__(self, x_seq):                      # [time, batch, features]
            spikes = QIF()(nn.Dense(128)(x_seq))
            return nn.Dense(10)(spikes).mean(axis=0)   # mean readout over time
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxqif._checks import static_bool
from jaxqif._layers import (
    check_carry_dtype, check_learnable, feature_count, initial_carry, learned_values,
    neuron_params, unconstrained_start,
)
from jaxqif.api import qif_multistep, qif_step
from jaxqif.surrogate import Sigmoid, Surrogate

__all__ = ["QIF", "QIFCell"]


class QIF(nn.Module):
    """QIF neurons run over a whole sequence by the fused multi-step kernel.

    `__call__(x_seq, v_init=None, *, return_state=False)` returns the spikes (x_seq's dtype and
    shape). Every run starts from `v_init` (None: v_reset, 0 for the soft reset); to carry the
    membrane potential across calls (streaming, truncated BPTT), pass `return_state=True` to get
    `(spikes, v_final)` and feed `v_final` back as the next call's `v_init`.

    With `store_v_seq=True` the potential after every step's reset is sown as
    `intermediates/v_seq` (read it with `apply(..., mutable=["intermediates"])`).

    With `learnable=("tau", "v_threshold")`, say, those parameters are trained, one value per
    feature (along `param_axis` of x_seq), and the fused kernels compute their gradients. They
    live in `params` under their own names, stored unconstrained and mapped to valid values at
    every call (tau = 1 + exp(-w), a0 = softplus(w), v_threshold and v_rest = v_reset +
    softplus(w) with the hard reset; jaxqif/_layers.py), starting at the configured numbers.

    Example::

        layer = QIF(learnable=("tau", "v_threshold"))      # per feature, the last axis
        variables = layer.init(jax.random.key(0), x_seq)  # params: {"tau": (F,), ...}
        spikes = layer.apply(variables, x_seq)

    Attributes:
      tau, v_c, a0, v_threshold, v_rest, v_reset: neuron parameters (`v_reset=None`: soft
        reset), as in `jaxqif.qif_multistep`; the starting values of learnable ones.
      surrogate: a `jaxqif.surrogate` instance, the spike's gradient.
      detach_reset: drop the spike's gradient in the reset.
      time_axis: the time axis of x_seq (default 0: time-major).
      store_v_seq: sow the membrane-potential trajectory into `intermediates`.
      backend: None (the platform's fused kernel), "ffi" or "jax", as in `qif_multistep`.
      learnable: names of the neuron parameters to train (default none).
      param_axis: the axis of x_seq the learnable parameters vary along (default -1, the
        features); None for one value shared by every neuron.
      param_dtype: dtype of the stored learnable parameters (float32).
    """

    tau: float = 2.0
    v_c: float = 0.8
    a0: float = 1.0
    v_threshold: float = 1.0
    v_rest: float = 0.0
    v_reset: float | None = -0.1
    surrogate: Surrogate = Sigmoid(alpha=4.0)
    detach_reset: bool = False
    time_axis: int = 0
    store_v_seq: bool = False
    backend: str | None = None
    learnable: tuple[str, ...] = ()
    param_axis: int | None = -1
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_seq, v_init=None, *, return_state: bool = False):
        """Runs the neurons over x_seq from v_init; returns spikes, or (spikes, v_final)."""
        return_state = static_bool("return_state", return_state)
        spikes, v_final, v_seq = qif_multistep(
            x_seq,
            v_init,
            **_with_learned(self, jnp.shape(x_seq), self.time_axis),
            store_v_seq=self.store_v_seq,
            time_axis=self.time_axis,
            backend=self.backend,
        )
        if self.store_v_seq:
            self.sow("intermediates", "v_seq", v_seq)
        return (spikes, v_final) if return_state else spikes


class QIFCell(nn.RNNCellBase):
    """One step of QIF neurons, for `nn.RNN` or a hand-written recurrent cell.

    `__call__(carry, x_t) -> (carry, spike)`: the carry is the membrane potential, x_t's shape,
    in the state dtype (float32 for float16/bfloat16/float32 inputs, float64 for float64); the
    spike has x_t's dtype. `nn.RNN(QIFCell())` on `[batch, time, features]` input (its default,
    batch-major layout) gives the spikes of `QIF(time_axis=1)`.

    Attributes:
      tau, v_c, a0, v_threshold, v_rest, v_reset, surrogate, detach_reset: as in `QIF`.
      carry_dtype: dtype of the carry `initialize_carry` makes: float32, or float64 for float64
        inputs (the state dtype must match the inputs, and `nn.RNN` only tells the cell their
        shape).
      learnable, param_axis, param_dtype: as in `QIF` (param_axis counts the axes of one
        step's input).
    """

    tau: float = 2.0
    v_c: float = 0.8
    a0: float = 1.0
    v_threshold: float = 1.0
    v_rest: float = 0.0
    v_reset: float | None = -0.1
    surrogate: Surrogate = Sigmoid(alpha=4.0)
    detach_reset: bool = False
    carry_dtype: Any = jnp.float32
    learnable: tuple[str, ...] = ()
    param_axis: int | None = -1
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, carry, x_t):
        """One step from membrane potential `carry` with input `x_t`: returns (carry, spike)."""
        spike, v_next = qif_step(x_t, carry, **_with_learned(self, jnp.shape(x_t), None))
        check_carry_dtype(carry, v_next)
        return v_next, spike

    @nn.nowrap
    def initialize_carry(self, rng, input_shape: tuple[int, ...]) -> jax.Array:
        """The resting carry: v_reset everywhere (0 for the soft reset), in `carry_dtype`.

        `rng` is unused (the carry is deterministic); it is part of `nn.RNNCellBase`'s signature.
        """
        del rng
        return initial_carry(self, input_shape)

    @property
    def num_feature_axes(self) -> int:
        """One: `nn.RNN` finds time just before the last axis (batch-major) or first
        (`time_major=True`, which also suits inputs with several feature axes)."""
        return 1


def _with_learned(layer: nn.Module, x_shape: tuple, time_axis: int | None) -> dict:
    """The layer's neuron parameters, its learnable ones (created in `params` on first use)
    given as arrays."""
    params = neuron_params(layer)
    learnable = check_learnable(layer)
    if not learnable:
        return params
    features = feature_count(x_shape, layer.param_axis, time_axis)
    shape = () if features is None else (features,)
    stored = {name: layer.param(name, lambda key, shape, name=name: jnp.full(
        shape, unconstrained_start(layer, name), layer.param_dtype), shape)
        for name in learnable}
    return params | learned_values(layer, stored, x_shape, time_axis)
