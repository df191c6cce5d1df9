"""Neuron parameters given as arrays: one value per feature, per neuron, or any shape that
broadcasts to the neurons (x_seq's shape without the time axis), traced or not.

A parameter given as a Python number stays a static constant of the kernels (`NeuronConfig`);
one given as an array travels as an operand and gets a gradient. The kernels read an array
parameter of n elements at neuron i's index modulo n, so the array they get is *compact*: the
smallest trailing block of the neuron shape that it varies over (a scalar, the feature axis,
... the whole neuron shape). A per-feature parameter of a [T, batch, features] input is then
read from cache for every batch row, and shards like the feature axis.

Concrete arrays are checked elementwise against the rules for numbers; traced ones cannot be
checked before running. `checking_parameters()` is the checked mode for them: calls traced
inside it add `checkify.debug_check`s of every rule, which report violations when the
computation runs under `jax.experimental.checkify.checkify`. It is a mode, not the default: a
check is an effect in the program, which `jax.export` cannot serialize.
"""

from __future__ import annotations

import contextlib
import contextvars

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from jaxqif._jax import Tracer

# The neuron parameters that may be arrays, in the kernels' operand order.
NAMES = ("tau", "v_c", "a0", "v_threshold", "v_rest", "v_reset")


class PerNeuron:
    """Marks, in a `NeuronConfig`, a parameter given as an array operand."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self):
        return "<array>"

    def __reduce__(self):
        return (PerNeuron, ())


PER_NEURON = PerNeuron()


def is_array(value) -> bool:
    """Whether a parameter value is an array parameter: any JAX array (a 0-d one too, and
    tracers) and NumPy arrays of rank >= 1. Python numbers, NumPy scalars and 0-d NumPy arrays
    are static numbers."""
    if isinstance(value, (jax.Array, Tracer)) or hasattr(value, "__jax_array__"):
        return True
    return isinstance(value, np.ndarray) and value.ndim > 0


def as_array(name: str, value, state_dtype) -> jax.Array:
    """An array parameter in the state dtype (the kernels' arithmetic type)."""
    dtype = np.dtype(value.dtype) if hasattr(value, "dtype") else None
    if dtype is None or dtype == np.bool_ or not (
            np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
            or dtype == jnp.bfloat16):
        raise TypeError(f"{name} must be a real number or a real array, got "
                        f"{type(value).__name__}{f' of dtype {dtype}' if dtype else ''}")
    return jnp.asarray(value).astype(state_dtype)


def check_broadcast(name: str, value, neuron_shape: tuple) -> None:
    try:
        fits = np.broadcast_shapes(np.shape(value), neuron_shape) == tuple(neuron_shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} of shape {np.shape(value)} does not broadcast to the neurons' shape "
            f"{tuple(neuron_shape)} (x_seq's shape without the time axis)"
        )


def compact_rank(shape: tuple, neuron_shape: tuple) -> int:
    """How many trailing neuron axes an array of `shape` (broadcastable to `neuron_shape`)
    varies over, counted from its first axis of size > 1."""
    padded = (1,) * (len(neuron_shape) - len(shape)) + tuple(shape)
    varying = [a for a, n in enumerate(padded) if n != 1]
    return len(neuron_shape) - varying[0] if varying else 0


def compact(value: jax.Array, neuron_shape: tuple) -> jax.Array:
    """`value` as the trailing block of `neuron_shape` it varies over (see the module doc)."""
    rank = compact_rank(value.shape, neuron_shape)
    block = tuple(neuron_shape[len(neuron_shape) - rank:])
    padded = value.reshape((1,) * (len(neuron_shape) - value.ndim) + value.shape)
    return jnp.broadcast_to(padded.reshape(padded.shape[len(neuron_shape) - rank:]), block)


def sum_to_compact(grad: jax.Array, block_shape: tuple) -> jax.Array:
    """A gradient over a trailing block of the neurons (all of them, or a larger compact
    block) summed over its leading axes, which a compact array of `block_shape` is shared by."""
    leading = grad.ndim - len(block_shape)
    return grad.sum(axis=tuple(range(leading))) if leading else grad


# --- checks ----------------------------------------------------------------------------------

# (parameter, rule, predicate of the value) for single parameters; the hard reset adds the
# relations below. Static numbers are checked by NeuronConfig with the same rules.
_RULES = (("tau", "> 1", lambda v: v > 1), ("a0", "> 0", lambda v: v > 0))
_HARD_RESET_RELATIONS = (("v_threshold", "v_reset", ">", lambda a, b: a > b),
                         ("v_rest", "v_reset", ">=", lambda a, b: a >= b))


def _first_index(bad: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(bad)[0])


def check_concrete(name: str, value: np.ndarray, state_dtype) -> None:
    """Finite in the state dtype (after rounding to it), and the parameter's own rule."""
    bad = ~np.isfinite(value)
    if bad.any():
        index = _first_index(bad)
        raise ValueError(f"{name} must be finite in {np.dtype(state_dtype).name}, got "
                         f"{name}[{', '.join(map(str, index))}] = {float(value[index]):.6g}")
    for rule_name, rule, holds in _RULES:
        if rule_name == name and not np.all(holds(value)):
            index = _first_index(~holds(value))
            raise ValueError(f"{name} must be {rule} everywhere, got "
                             f"{name}[{', '.join(map(str, index))}] = {float(value[index]):.6g}")


def check_relations(values: dict, hard_reset: bool, neuron_shape: tuple) -> None:
    """The hard reset's rules between two parameters, one of them (at least) an array, both
    concrete: `values` maps names to NumPy arrays or Python numbers."""
    if not hard_reset:
        return
    for left, right, op, holds in _HARD_RESET_RELATIONS:
        if left not in values or right not in values:
            continue
        a, b = np.broadcast_arrays(values[left], values[right], np.empty(neuron_shape))[:2]
        if not np.all(holds(a, b)):
            index = _first_index(~holds(a, b))
            at = ", ".join(map(str, index))
            raise ValueError(f"{left} must be {op} {right} for every neuron, got {left} = "
                             f"{float(a[index]):.6g} and {right} = {float(b[index]):.6g} at "
                             f"neuron [{at}]")


_CHECKING = contextvars.ContextVar("jaxqif_checking_parameters", default=False)


@contextlib.contextmanager
def checking_parameters():
    """The checked mode for neuron parameters given as traced arrays: calls traced inside this
    context check every rule at run time, under `jax.experimental.checkify.checkify`::

        with jaxqif.checking_parameters():
            error, out = checkify.checkify(jax.jit(train_step))(params, x)
        error.throw()   # e.g. "jaxqif: tau must be > 1"

    (Numbers and concrete arrays are always checked before anything runs.)
    """
    token = _CHECKING.set(True)
    try:
        yield
    finally:
        _CHECKING.reset(token)


def debug_checks(arrays: dict, static: dict, hard_reset: bool) -> None:
    """In the checked mode (`checking_parameters`), the rules for traced parameters, reported
    under `checkify.checkify`; nothing otherwise."""
    if not _CHECKING.get():
        return
    values = {**static, **arrays}
    for name, value in arrays.items():
        checkify.debug_check(jnp.all(jnp.isfinite(value)), f"jaxqif: {name} must be finite")
        for rule_name, rule, holds in _RULES:
            if rule_name == name:
                checkify.debug_check(jnp.all(holds(value)), f"jaxqif: {name} must be {rule}")
    if hard_reset:
        for left, right, op, holds in _HARD_RESET_RELATIONS:
            if (left in arrays or right in arrays) and left in values and right in values:
                checkify.debug_check(jnp.all(holds(values[left], values[right])),
                                     f"jaxqif: {left} must be {op} {right}")


def is_concrete(value) -> bool:
    return not isinstance(value, Tracer)
