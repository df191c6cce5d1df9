"""Argument checks shared by the functional API, the surrogates and the Flax modules."""

from __future__ import annotations

import math
import numbers

import numpy as np
from jax import Array

from jaxqif._jax import Tracer


def static_float(name: str, value) -> float:
    """A static, finite Python number; tracers are refused (parameters are compile-time)."""
    if isinstance(value, Tracer):
        raise TypeError(
            f"{name} must be a static Python number, got a JAX tracer: neuron parameters are "
            "compile-time constants of the kernel, not traced values"
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, np.ndarray, Array)
    ):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if isinstance(value, (np.ndarray, Array)):
        if np.shape(value) != ():
            raise TypeError(f"{name} must be a scalar, got shape {np.shape(value)}")
        value = np.asarray(value)
        if not np.issubdtype(value.dtype, np.floating) and not np.issubdtype(
            value.dtype, np.integer
        ):
            raise TypeError(f"{name} must be a real number, got dtype {value.dtype}")
    try:
        value = float(value)
    except OverflowError:  # a Python int beyond any float
        raise ValueError(f"{name} must be finite, got an integer too large for a float") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def static_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)
