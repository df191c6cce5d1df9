"""What the Flax Linen and NNX layers share (`jaxqif/linen.py`, `jaxqif/nnx.py`), free of either
Flax API, so that each imports only its own."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxqif._config import NeuronConfig

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
