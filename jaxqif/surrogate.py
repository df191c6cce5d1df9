"""Surrogate gradients: a Heaviside step forward, a smooth derivative backward.

Each surrogate is a frozen, hashable dataclass, so it can be a static argument of `jax.jit` or a
field of a Flax module. Called on an array it is a Heaviside step whose gradient is the surrogate
derivative, for use in pure-JAX code; `derivative` is the formula itself, and `kernel_id` names
the same formula in the fused kernels (cuda/qif_math.h), for these classes only (not subclasses:
`has_kernel_formula`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxqif._checks import static_float

__all__ = [
    "Surrogate",
    "Sigmoid",
    "ATan",
    "PiecewiseQuadratic",
    "PiecewiseExp",
    "SoftSign",
    "SuperSpike",
    "Erf",
]


@dataclasses.dataclass(frozen=True)
class Surrogate:
    """Base class. Subclasses set `kernel_id` and implement `derivative`."""

    alpha: float
    kernel_id: ClassVar[int]

    def __post_init__(self):
        alpha = static_float(f"{type(self).__name__}.alpha", self.alpha)
        if alpha <= 0:
            raise ValueError(f"{type(self).__name__}.alpha must be > 0, got {alpha}")
        object.__setattr__(self, "alpha", alpha)

    def derivative(self, x: jax.Array) -> jax.Array:
        """sigma'(x), the gradient the spike passes back."""
        raise NotImplementedError

    def __call__(self, x: jax.Array) -> jax.Array:
        """Heaviside step (x >= 0) in x's dtype, with `derivative` as its gradient."""
        return _spike(self, x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _spike(surrogate: Surrogate, x):
    return (x >= 0).astype(x.dtype)


@_spike.defjvp
def _spike_jvp(surrogate, primals, tangents):
    (x,), (dx,) = primals, tangents
    return _spike(surrogate, x), surrogate.derivative(x) * dx


@dataclasses.dataclass(frozen=True)
class Sigmoid(Surrogate):
    """alpha * s * (1 - s), s = sigmoid(alpha * x)."""

    alpha: float = 4.0
    kernel_id: ClassVar[int] = 0

    def derivative(self, x):
        s = 1 / (1 + jnp.exp(-self.alpha * x))
        return self.alpha * s * (1 - s)


@dataclasses.dataclass(frozen=True)
class ATan(Surrogate):
    """(alpha / 2) / (1 + (pi / 2 * alpha * x)^2)."""

    alpha: float = 2.0
    kernel_id: ClassVar[int] = 1

    def derivative(self, x):
        u = (math.pi / 2) * self.alpha * x
        return (self.alpha / 2) / (1 + u * u)


@dataclasses.dataclass(frozen=True)
class PiecewiseQuadratic(Surrogate):
    """max(0, alpha - alpha^2 |x|)."""

    alpha: float = 1.0
    kernel_id: ClassVar[int] = 2

    def derivative(self, x):
        return jnp.maximum(self.alpha - self.alpha * self.alpha * jnp.abs(x), 0)


@dataclasses.dataclass(frozen=True)
class PiecewiseExp(Surrogate):
    """(alpha / 2) * exp(-alpha |x|)."""

    alpha: float = 1.0
    kernel_id: ClassVar[int] = 3

    def derivative(self, x):
        return (self.alpha / 2) * jnp.exp(-self.alpha * jnp.abs(x))


@dataclasses.dataclass(frozen=True)
class SoftSign(Surrogate):
    """1 / (2 alpha (1 / alpha + |x|)^2)."""

    alpha: float = 2.0
    kernel_id: ClassVar[int] = 4

    def derivative(self, x):
        d = 1 / self.alpha + jnp.abs(x)
        return 1 / (2 * self.alpha * d * d)


@dataclasses.dataclass(frozen=True)
class SuperSpike(Surrogate):
    """alpha / (1 + |x|)^2."""

    alpha: float = 1.0
    kernel_id: ClassVar[int] = 5

    def derivative(self, x):
        d = 1 + jnp.abs(x)
        return self.alpha / (d * d)


@dataclasses.dataclass(frozen=True)
class Erf(Surrogate):
    """(alpha / sqrt(pi)) * exp(-(alpha x)^2)."""

    alpha: float = 2.0
    kernel_id: ClassVar[int] = 6

    def derivative(self, x):
        u = self.alpha * x
        return (self.alpha / math.sqrt(math.pi)) * jnp.exp(-u * u)


ALL = (Sigmoid, ATan, PiecewiseQuadratic, PiecewiseExp, SoftSign, SuperSpike, Erf)


def has_kernel_formula(surrogate: Surrogate) -> bool:
    """Whether the fused kernels compute this surrogate's derivative: only for the classes above
    themselves. A subclass inherits `kernel_id` but may override `derivative`, which the kernels
    would silently ignore, so it takes the pure-JAX path like any custom surrogate."""
    return type(surrogate) in ALL
