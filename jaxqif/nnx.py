"""Flax NNX layers of QIF neurons: the NNX twins of `jaxqif.linen`'s `QIF` and `QIFCell`.

- `QIF` runs a whole sequence through the fused multi-step kernel (`jaxqif.qif_multistep`).
- `QIFCell` is one step (`jaxqif.qif_step`) for `nnx.RNN`, or for your own recurrent cell, when a
  step's input depends on earlier outputs. On the same input, `nnx.RNN(QIFCell())` gives the
  spikes of `QIF`, one step at a time (bit for bit, but for the pure-JAX path's rounding caveat
  in the README).

Both hold no parameters: every input element is one neuron, and the membrane potential
is carried explicitly (`return_state=True`, or the RNN carry). Their neuron settings are
`jaxqif.qif_multistep`'s keyword arguments and are checked by the functional API when the layer
is called (a bad value fails at the first call, not at construction).

Example::

    from flax import nnx
    from jaxqif.nnx import QIF

    class SpikingMLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.hidden = nnx.Linear(64, 128, rngs=rngs)
            self.qif = QIF()
            self.readout = nnx.Linear(128, 10, rngs=rngs)

        def __call__(self, x_seq):                      # [time, batch, features]
            spikes = self.qif(self.hidden(x_seq))
            return self.readout(spikes).mean(axis=0)    # mean readout over time
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxqif._checks import static_bool
from jaxqif._layers import (
    check_carry_dtype, check_learnable, feature_count, initial_carry, learned_values,
    neuron_params, unconstrained_start,
)
from jaxqif.api import qif_multistep, qif_step
from jaxqif.surrogate import Sigmoid, Surrogate

__all__ = ["QIF", "QIFCell"]

_DEFAULT_SURROGATE = Sigmoid(alpha=4.0)


class QIF(nnx.Module):
    """QIF neurons run over a whole sequence by the fused multi-step kernel.

    `__call__(x_seq, v_init=None, *, return_state=False)` returns the spikes (x_seq's dtype and
    shape). Every run starts from `v_init` (None: v_reset, 0 for the soft reset); to carry the
    membrane potential across calls (streaming, truncated BPTT), pass `return_state=True` to get
    `(spikes, v_final)` and feed `v_final` back as the next call's `v_init`.

    With `store_v_seq=True` the potential after every step's reset is sown as an
    `nnx.Intermediate` named `v_seq`: collect it with `nnx.capture(model, nnx.Intermediate)`
    (Flax versions before `nnx.capture`: `nnx.pop(model, nnx.Intermediate)` after the call).

    Args:
      tau, v_c, a0, v_threshold, v_rest, v_reset: neuron parameters (`v_reset=None`: soft
        reset), as in `jaxqif.qif_multistep`.
      surrogate: a `jaxqif.surrogate` instance, the spike's gradient.
      detach_reset: drop the spike's gradient in the reset.
      time_axis: the time axis of x_seq (default 0: time-major).
      store_v_seq: sow the membrane-potential trajectory.
      backend: None (the platform's fused kernel), "ffi" or "jax", as in `qif_multistep`.
      learnable: names of the neuron parameters to train, one value per feature (see
        `jaxqif.linen.QIF`); they are `nnx.Param`s in `self.learned`, stored unconstrained.
      num_features: the size of x_seq's axis `param_axis`, needed with `learnable`.
      param_axis: the axis of x_seq the learnable parameters vary along (default -1); None for
        one value shared by every neuron.
      param_dtype: dtype of the stored learnable parameters (float32).
    """

    def __init__(
        self,
        *,
        tau: float = 2.0,
        v_c: float = 0.8,
        a0: float = 1.0,
        v_threshold: float = 1.0,
        v_rest: float = 0.0,
        v_reset: float | None = -0.1,
        surrogate: Surrogate = _DEFAULT_SURROGATE,
        detach_reset: bool = False,
        time_axis: int = 0,
        store_v_seq: bool = False,
        backend: str | None = None,
        learnable: tuple[str, ...] = (),
        num_features: int | None = None,
        param_axis: int | None = -1,
        param_dtype: Any = jnp.float32,
    ):
        self.tau = tau
        self.v_c = v_c
        self.a0 = a0
        self.v_threshold = v_threshold
        self.v_rest = v_rest
        self.v_reset = v_reset
        self.surrogate = surrogate
        self.detach_reset = detach_reset
        self.time_axis = time_axis
        self.store_v_seq = store_v_seq
        self.backend = backend
        _init_learnable(self, learnable, num_features, param_axis, param_dtype)

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
            self.sow(nnx.Intermediate, "v_seq", v_seq)
        return (spikes, v_final) if return_state else spikes


class QIFCell(nnx.RNNCellBase):
    """One step of QIF neurons, for `nnx.RNN` or a hand-written recurrent cell.

    `__call__(carry, x_t) -> (carry, spike)`: the carry is the membrane potential, x_t's shape,
    in the state dtype (float32 for float16/bfloat16/float32 inputs, float64 for float64); the
    spike has x_t's dtype. `nnx.RNN(QIFCell())` on `[batch, time, features]` input (its default,
    batch-major layout) gives the spikes of `QIF(time_axis=1)`.

    Args:
      tau, v_c, a0, v_threshold, v_rest, v_reset, surrogate, detach_reset: as in `QIF`.
      carry_dtype: dtype of the carry `initialize_carry` makes: float32, or float64 for float64
        inputs (the state dtype must match the inputs, and `nnx.RNN` only tells the cell their
        shape).
      learnable, num_features, param_axis, param_dtype: as in `QIF` (param_axis counts the
        axes of one step's input).
    """

    def __init__(
        self,
        *,
        tau: float = 2.0,
        v_c: float = 0.8,
        a0: float = 1.0,
        v_threshold: float = 1.0,
        v_rest: float = 0.0,
        v_reset: float | None = -0.1,
        surrogate: Surrogate = _DEFAULT_SURROGATE,
        detach_reset: bool = False,
        carry_dtype: Any = jnp.float32,
        learnable: tuple[str, ...] = (),
        num_features: int | None = None,
        param_axis: int | None = -1,
        param_dtype: Any = jnp.float32,
    ):
        self.tau = tau
        self.v_c = v_c
        self.a0 = a0
        self.v_threshold = v_threshold
        self.v_rest = v_rest
        self.v_reset = v_reset
        self.surrogate = surrogate
        self.detach_reset = detach_reset
        self.carry_dtype = carry_dtype
        _init_learnable(self, learnable, num_features, param_axis, param_dtype)

    def __call__(self, carry, x_t):
        """One step from membrane potential `carry` with input `x_t`: returns (carry, spike)."""
        spike, v_next = qif_step(x_t, carry, **_with_learned(self, jnp.shape(x_t), None))
        check_carry_dtype(carry, v_next)
        return v_next, spike

    def initialize_carry(self, input_shape: tuple[int, ...], rngs=None) -> jax.Array:
        """The resting carry: v_reset everywhere (0 for the soft reset), in `carry_dtype`.

        `rngs` is unused (the carry is deterministic); `nnx.RNN` passes it.
        """
        del rngs
        return initial_carry(self, input_shape)

    @property
    def num_feature_axes(self) -> int:
        """One: `nnx.RNN` finds time just before the last axis (batch-major) or first
        (`time_major=True`, which also suits inputs with several feature axes)."""
        return 1


def _init_learnable(layer, learnable, num_features, param_axis, param_dtype) -> None:
    """The learnable parameters as `nnx.Param`s in `layer.learned`, at their starting values."""
    layer.learnable = tuple(learnable) if not isinstance(learnable, str) else learnable
    layer.param_axis = param_axis
    names = check_learnable(layer)
    if names and param_axis is not None and (
            not isinstance(num_features, int) or num_features < 1):
        raise ValueError("learnable parameters vary along param_axis: pass num_features, the "
                         f"size of that axis, got num_features={num_features!r}")
    shape = () if param_axis is None else (num_features,)
    learned = {name: nnx.Param(jnp.full(shape, unconstrained_start(layer, name), param_dtype))
               for name in names}
    layer.learned = nnx.Dict(learned) if hasattr(nnx, "Dict") else learned


def _with_learned(layer, x_shape: tuple, time_axis: int | None) -> dict:
    """The layer's neuron parameters, its learnable ones given as arrays."""
    params = neuron_params(layer)
    if not layer.learnable:
        return params
    features = feature_count(x_shape, layer.param_axis, time_axis)
    stored = {name: param[...] for name, param in layer.learned.items()}
    if features is not None and features != next(iter(stored.values())).shape[0]:
        raise ValueError(f"the learnable parameters have {next(iter(stored.values())).shape[0]} "
                         f"values (num_features), but axis {layer.param_axis} of the input has "
                         f"{features}")
    return params | learned_values(layer, stored, x_shape, time_axis)
