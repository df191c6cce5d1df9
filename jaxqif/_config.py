"""The static description of a QIF neuron, checked once, shared by every backend."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from jaxqif._checks import static_bool, static_float
from jaxqif.surrogate import Surrogate


@dataclasses.dataclass(frozen=True)
class NeuronConfig:
    """QIF parameters (SpikingJelly 2.0's QIFNode). `v_reset=None` selects the soft reset.

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
        for name in ("tau", "v_c", "a0", "v_threshold", "v_rest"):
            set_(name, static_float(name, getattr(self, name)))
        if self.v_reset is not None:
            set_("v_reset", static_float("v_reset", self.v_reset))
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError(
                "surrogate must be a jaxqif.surrogate.Surrogate (e.g. jaxqif.surrogate.Sigmoid()), "
                f"got {type(self.surrogate).__name__}"
            )
        set_("detach_reset", static_bool("detach_reset", self.detach_reset))
        if self.tau <= 1:
            raise ValueError(f"tau must be > 1, got {self.tau}")
        if self.a0 <= 0:
            raise ValueError(f"a0 must be > 0, got {self.a0}")
        if self.hard_reset:
            if self.v_threshold <= self.v_reset:
                raise ValueError(
                    f"v_threshold must be > v_reset, got v_threshold={self.v_threshold}, "
                    f"v_reset={self.v_reset}"
                )
            if self.v_rest < self.v_reset:
                raise ValueError(
                    f"v_rest must be >= v_reset, got v_rest={self.v_rest}, v_reset={self.v_reset}"
                )

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def default_v_init(self) -> float:
        """v_init=None starts at v_reset (0 for the soft reset)."""
        return self.v_reset if self.hard_reset else 0.0

    def _folded(self) -> dict:
        """The forward's constants in double, as cuda/qif_math.h's QifParams::from_double
        folds them. The charge is a polynomial in v:
        H = (charge_v2 v + charge_v1) v + (x inv_tau + charge_v0)."""
        return dict(
            inv_tau=1.0 / self.tau,
            charge_v2=self.a0 / self.tau,
            charge_v1=1.0 - self.a0 * (self.v_rest + self.v_c) / self.tau,
            charge_v0=self.a0 * self.v_rest * self.v_c / self.tau,
            v_threshold=self.v_threshold,
            v_reset=self.v_reset if self.hard_reset else 0.0,
        )

    def constants(self, state_dtype) -> dict:
        """The forward's constants, computed in double and rounded once to the state dtype:
        exactly what the kernels use."""
        return {name: jnp.asarray(np.float64(value).astype(state_dtype))
                for name, value in self._folded().items()}

    def check_representable(self, state_dtype) -> None:
        """Refuses parameters whose folded constants (the kernels' and the pure-JAX path's,
        backward ones included) are not finite in the state dtype: `a0=1e39` with float32
        state, say, would make every potential NaN. The surrogate's constants are alpha,
        alpha^2 and 1/alpha times factors below 2 (cuda/qif_math.h's surrogate_constants)."""
        info = np.finfo(state_dtype)
        alpha = self.surrogate.alpha
        folded = self._folded() | dict(dh_dv_slope=2 * self.a0 / self.tau)
        folded |= {"surrogate alpha^2": 2 * alpha * alpha, "surrogate 1/alpha": 2 / alpha}
        for name, value in folded.items():
            if not abs(value) <= float(info.max):
                raise ValueError(
                    f"neuron parameters out of range for {np.dtype(state_dtype).name} state: "
                    f"the folded constant {name} = {value:.6g} is not finite in "
                    f"{np.dtype(state_dtype).name} (tau={self.tau}, v_c={self.v_c}, a0={self.a0}, "
                    f"v_threshold={self.v_threshold}, v_rest={self.v_rest}, "
                    f"v_reset={self.v_reset}, surrogate={self.surrogate})"
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
