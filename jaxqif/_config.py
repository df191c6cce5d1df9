"""The static description of a QIF neuron, checked once, shared by every backend.

A neuron parameter given as an array (`jaxqif/_params.py`) is marked `PER_NEURON` here; its
values travel beside the config, as operands.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxqif._checks import static_bool, static_float
from jaxqif._params import NAMES, PerNeuron
from jaxqif.surrogate import Surrogate


@dataclasses.dataclass(frozen=True)
class NeuronConfig:
    """QIF parameters (SpikingJelly 2.0's QIFNode). `v_reset=None` selects the soft reset;
    `PER_NEURON` marks a parameter given as an array.

    Hashable, so it can be a primitive parameter and a cache key.
    """

    tau: float = 2.0
    v_c: float = 0.8
    a0: float = 1.0
    v_threshold: float = 1.0
    v_rest: float = 0.0
    v_reset: float | None = -0.1
    surrogate: Surrogate = dataclasses.field(default_factory=lambda: _default_surrogate())
    detach_reset: bool = False

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)
        for name in NAMES:
            value = getattr(self, name)
            if not isinstance(value, PerNeuron) and not (name == "v_reset" and value is None):
                set_(name, static_float(name, value))
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError(
                "surrogate must be a jaxqif.surrogate.Surrogate (e.g. jaxqif.surrogate.Sigmoid()), "
                f"got {type(self.surrogate).__name__}"
            )
        set_("detach_reset", static_bool("detach_reset", self.detach_reset))
        # The rules between numbers; those involving an array are checked on its values.
        static = self.static_values()
        if "tau" in static and self.tau <= 1:
            raise ValueError(f"tau must be > 1, got {self.tau}")
        if "a0" in static and self.a0 <= 0:
            raise ValueError(f"a0 must be > 0, got {self.a0}")
        if self.hard_reset and "v_reset" in static:
            if "v_threshold" in static and self.v_threshold <= self.v_reset:
                raise ValueError(
                    f"v_threshold must be > v_reset, got v_threshold={self.v_threshold}, "
                    f"v_reset={self.v_reset}"
                )
            if "v_rest" in static and self.v_rest < self.v_reset:
                raise ValueError(
                    f"v_rest must be >= v_reset, got v_rest={self.v_rest}, v_reset={self.v_reset}"
                )

    def static_values(self) -> dict:
        """The parameters given as numbers (the soft reset's v_reset=None excluded)."""
        return {name: getattr(self, name) for name in NAMES
                if not isinstance(getattr(self, name), PerNeuron)
                and not (name == "v_reset" and not self.hard_reset)}

    @property
    def array_names(self) -> tuple[str, ...]:
        """The parameters given as arrays, in the kernels' operand order."""
        return tuple(n for n in NAMES if isinstance(getattr(self, n), PerNeuron))

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def default_v_init(self) -> float | PerNeuron:
        """v_init=None starts at v_reset (0 for the soft reset); PER_NEURON where v_reset is an
        array (the start is then that array)."""
        return self.v_reset if self.hard_reset else 0.0

    def _folded(self) -> dict:
        """The forward's constants in double, as cuda/qif_math.h's QifParams folds them from
        numbers (QifParams's constructor). The charge is a polynomial in v:
        H = (charge_v2 v + charge_v1) v + (x inv_tau + charge_v0)."""
        return fold(self.tau, self.v_c, self.a0, self.v_threshold, self.v_rest,
                    self.v_reset if self.hard_reset else 0.0)

    def constants(self, state_dtype, arrays: dict | None = None) -> dict:
        """The forward's constants, exactly as the kernels use them. With numbers only, they
        are folded in double and rounded once to the state dtype. Where any parameter is an
        array (`arrays`: name -> array broadcastable to the neurons, in the state dtype),
        every parameter is rounded to the state dtype first and folded there, neuron by
        neuron, as the kernels do (cuda/qif_math.h, QifParams's per-neuron fold)."""
        if not arrays:
            return {name: jnp.asarray(np.float64(value).astype(state_dtype))
                    for name, value in self._folded().items()}
        static = self.static_values()
        number = lambda name: jnp.asarray(np.float64(static.get(name, 0.0)).astype(state_dtype))
        return fold(*(arrays[name] if name in arrays else number(name) for name in NAMES))

    def check_representable(self, state_dtype) -> None:
        """Refuses parameters whose folded constants (the kernels' and the pure-JAX path's,
        backward ones included) are not finite in the state dtype: `a0=1e39` with float32
        state, say, would make every potential NaN. The surrogate's constants are alpha,
        alpha^2 and 1/alpha times factors below 2 (cuda/qif_math.h's SurrogateTraits<...>::constants)."""
        info = np.finfo(state_dtype)
        alpha = self.surrogate.alpha
        folded = {"surrogate alpha^2": 2 * alpha * alpha, "surrogate 1/alpha": 2 / alpha}
        if not self.array_names:  # (arrays are checked on their values: jaxqif/_params.py)
            folded |= self._folded() | dict(dh_dv_slope=2 * self.a0 / self.tau)
        for name, value in folded.items():
            if not abs(value) <= float(info.max):
                raise ValueError(
                    f"neuron parameters out of range for {np.dtype(state_dtype).name} state: "
                    f"the folded constant {name} = {value:.6g} is not finite in "
                    f"{np.dtype(state_dtype).name} (tau={self.tau}, v_c={self.v_c}, a0={self.a0}, "
                    f"v_threshold={self.v_threshold}, v_rest={self.v_rest}, "
                    f"v_reset={self.v_reset}, surrogate={self.surrogate})"
                )


def fold(tau, v_c, a0, v_threshold, v_rest, v_reset) -> dict:
    """The forward's constants from the neuron parameters, numbers or arrays, in this order of
    operations (the kernels' own, cuda/qif_math.h)."""
    return dict(
        inv_tau=1 / tau,
        charge_v2=a0 / tau,
        charge_v1=1 - a0 * (v_rest + v_c) / tau,
        charge_v0=a0 * v_rest * v_c / tau,
        v_threshold=v_threshold,
        v_reset=v_reset,
    )


def _default_surrogate():
    from jaxqif.surrogate import Sigmoid

    return Sigmoid()


def state_dtype(input_dtype) -> np.dtype:
    """float16/bfloat16/float32 inputs keep float32 state; float64 keeps float64."""
    return np.dtype(np.float64) if np.dtype(input_dtype) == np.float64 else np.dtype(np.float32)


def checkpoint_interval(input_dtype) -> int:
    """Steps between the potentials the forward saves for the backward (cuda/qif_math.h's
    checkpoint_interval, which the handlers check against): 4 for 16-bit inputs, else 8."""
    return 4 if np.dtype(input_dtype).itemsize == 2 else 8


def checkpoint_count(steps: int, input_dtype) -> int:
    """How many checkpoints a sequence of `steps` steps saves: one per interval but the first."""
    return (steps - 1) // checkpoint_interval(input_dtype) if steps > 0 else 0
