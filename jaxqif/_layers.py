"""What the Flax Linen and NNX layers share (`jaxqif/linen.py`, `jaxqif/nnx.py`), free of either
Flax API, so that each imports only its own: their neuron fields, the resting carry, and the
learnable parameters.

Learnable parameters are stored unconstrained, under the neuron parameter's own name, one value
per feature, and mapped to a valid value at every call, so that no optimizer step can break a
rule (the maps of `CONSTRAINTS`; each starts at the number the layer was configured with):

- tau = 1 + exp(-w), i.e. 1 / tau = sigmoid(w), as the Parametric LIF neuron does: tau > 1;
- a0 = softplus(w): a0 > 0;
- v_threshold = v_reset + softplus(w) and v_rest = v_reset + softplus(w) with the hard reset
  (so v_threshold > v_reset, v_rest > v_reset); w itself with the soft reset;
- v_c = w, v_reset = w.

For the constrained ones w is first clipped to +-W_LIMIT, so that the rule still holds after
rounding to float32 (1 + exp(-w) and v_reset + softplus(w) stay at least ~1e-6 away from the
bound), rather than sliding onto it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxqif._config import NeuronConfig
from jaxqif._params import NAMES as LEARNABLE

W_LIMIT = 13.8  # exp(-13.8) ~ softplus(-13.8) ~ 1e-6

# The fields shared by every QIF layer and cell, passed on as they are to the functional API.
NEURON_PARAMS = (
    "tau", "v_c", "a0", "v_threshold", "v_rest", "v_reset", "surrogate", "detach_reset"
)


def neuron_params(layer) -> dict:
    """The neuron fields of a QIF layer or cell (Linen or NNX), as keyword arguments of
    `qif_multistep` and `qif_step`."""
    return {name: getattr(layer, name) for name in NEURON_PARAMS}


def initial_carry(cell, input_shape) -> jax.Array:
    """The resting potential, v_reset (0 for the soft reset), in the shape of one step's input
    and the cell's carry_dtype."""
    config = NeuronConfig(**neuron_params(cell))  # checks the fields, as a step would
    carry_dtype = np.dtype(cell.carry_dtype)
    if carry_dtype not in (np.float32, np.float64):
        raise ValueError(
            "carry_dtype must be float32 (the state of float16/bfloat16/float32 inputs) or "
            f"float64 (the state of float64 inputs), got {carry_dtype}"
        )
    return jnp.full(tuple(input_shape), config.default_v_init, carry_dtype)


def check_carry_dtype(carry, v_next) -> None:
    """Refuses a step that changed the carry's dtype (a float32 carry with float64 inputs, say):
    a scan over time would reject it with a far less clear error."""
    carry_dtype, expected = jnp.asarray(carry).dtype, v_next.dtype
    if carry_dtype != expected:
        raise TypeError(
            f"QIFCell carry must be the inputs' state dtype {expected}, got {carry_dtype}; "
            f"build the cell with carry_dtype=jnp.{expected.name} or pass a matching initial carry"
        )


def _softplus_inverse(y: float) -> float:
    return float(np.log(np.expm1(y))) if y < 30 else float(y)


def check_learnable(layer) -> tuple[str, ...]:
    """The layer's `learnable` names, checked: neuron parameters given as numbers, each once;
    v_reset only with the hard reset."""
    learnable = layer.learnable
    if isinstance(learnable, str) or not all(isinstance(n, str) for n in learnable):
        raise TypeError(f"learnable must be a tuple of parameter names, got {learnable!r}")
    learnable = tuple(learnable)
    unknown = [n for n in learnable if n not in LEARNABLE]
    if unknown or len(set(learnable)) != len(learnable):
        raise ValueError(f"learnable must name each of {LEARNABLE} at most once, got {learnable}")
    if "v_reset" in learnable and layer.v_reset is None:
        raise ValueError("v_reset cannot be learnable with the soft reset (v_reset=None)")
    for name in learnable:
        value = getattr(layer, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise TypeError(f"a learnable {name} starts at a number, got {type(value).__name__}")
    if learnable:
        NeuronConfig(**neuron_params(layer))  # the starting values obey the rules
    return learnable


def unconstrained_start(layer, name: str) -> float:
    """The stored value w that maps to the layer's configured number (see CONSTRAINTS)."""
    value = float(getattr(layer, name))
    hard = layer.v_reset is not None
    if name == "tau":
        return 0.0 - float(np.log(value - 1.0))  # (0.0 - : no -0.0 for tau = 2)
    if name == "a0":
        return _softplus_inverse(value)
    if name in ("v_threshold", "v_rest") and hard:
        # (v_rest = v_reset, allowed, starts a hair above: softplus never reaches 0)
        return _softplus_inverse(max(value - float(layer.v_reset), 1e-6))
    return value


def constrained(layer, stored: dict) -> dict:
    """The neuron parameters the stored (unconstrained) values stand for; `stored` maps the
    learnable names to arrays of one value per feature."""
    hard = layer.v_reset is not None
    v_reset = stored.get("v_reset", layer.v_reset)
    out = {}
    clip = lambda w: jnp.clip(w, -W_LIMIT, W_LIMIT)
    for name, w in stored.items():
        if name == "tau":
            out[name] = 1.0 + jnp.exp(-clip(w))
        elif name == "a0":
            out[name] = jax.nn.softplus(clip(w))
        elif name in ("v_threshold", "v_rest") and hard:
            out[name] = v_reset + jax.nn.softplus(clip(w))
        else:
            out[name] = w
    return out


def feature_count(x_shape: tuple, param_axis: int | None, time_axis: int | None) -> int | None:
    """How many values a learnable parameter has along `param_axis` of inputs of `x_shape`
    (None: a single one)."""
    if param_axis is None:
        return None
    if not isinstance(param_axis, int) or not -len(x_shape) <= param_axis < len(x_shape):
        raise ValueError(f"param_axis {param_axis!r} is out of range for inputs of shape "
                         f"{tuple(x_shape)}")
    per_feature_shape(1, len(x_shape), param_axis, time_axis)  # not the time axis
    return x_shape[param_axis]


def per_feature_shape(features: int, ndim: int, param_axis: int | None,
                      time_axis: int | None) -> tuple:
    """The shape, broadcastable to the neurons of an input of rank `ndim` (time on `time_axis`,
    or None for one step), of one value per entry of axis `param_axis` (None: one value)."""
    if param_axis is None:
        return ()
    axis = param_axis % ndim
    if time_axis is not None and axis == time_axis % ndim:
        raise ValueError(f"param_axis {param_axis} is the time axis; learnable parameters "
                         "vary along a neuron (feature) axis")
    trailing = sum(1 for a in range(axis + 1, ndim) if time_axis is None or a != time_axis % ndim)
    return (features,) + (1,) * trailing


def learned_values(layer, stored: dict, x_shape: tuple, time_axis: int | None) -> dict:
    """The learnable parameters as arrays for `qif_multistep`/`qif_step` on inputs of
    `x_shape`: the stored per-feature values, constrained and shaped to broadcast."""
    values = constrained(layer, stored)
    shape = per_feature_shape(
        next(iter(stored.values())).shape[0] if layer.param_axis is not None else 0,
        len(x_shape), layer.param_axis, time_axis)
    return {name: value.reshape(shape) for name, value in values.items()}
