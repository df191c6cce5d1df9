"""The functional API: `qif_multistep` (a whole sequence) and `qif_step` (one step)."""

from __future__ import annotations

import operator
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxqif import _library, _params, reference
from jaxqif._checks import static_bool
from jaxqif._config import NeuronConfig, fold, state_dtype
from jaxqif._jax import Tracer, vary_alike
from jaxqif.surrogate import Sigmoid, Surrogate, has_kernel_formula

BACKENDS = (None, "ffi", "jax")
_DEFAULT_SURROGATE = Sigmoid(alpha=4.0)
_warned: set[str] = set()


def qif_multistep(
    x_seq,
    v_init=None,
    *,
    tau: float | jax.Array = 2.0,
    v_c: float | jax.Array = 0.8,
    a0: float | jax.Array = 1.0,
    v_threshold: float | jax.Array = 1.0,
    v_rest: float | jax.Array = 0.0,
    v_reset: float | jax.Array | None = -0.1,
    surrogate: Surrogate = _DEFAULT_SURROGATE,
    detach_reset: bool = False,
    store_v_seq: bool = False,
    time_axis: int = 0,
    backend: str | None = None,
):
    """Runs quadratic integrate-and-fire neurons over a whole sequence.

    Per neuron, from V[-1] = v_init, for each step t along `time_axis`:
      H[t] = V[t-1] + (X[t] + a0 (V[t-1] - v_rest)(V[t-1] - v_c)) / tau
      S[t] = H[t] >= v_threshold          (backward: surrogate'(H[t] - v_threshold))
      V[t] = v_reset if S[t] else H[t]    (hard reset), or H[t] - S[t] v_threshold (v_reset=None)

    Args:
      x_seq: input current, rank >= 1, float16/bfloat16/float32/float64, time on `time_axis`;
        every other axis is an independent neuron.
      v_init: initial membrane potential: an array that broadcasts to x_seq's shape without the
        time axis (a scalar, one value per feature, or one per neuron); None starts at v_reset
        (0 for the soft reset).
      tau, v_c, a0, v_threshold, v_rest, v_reset: neuron parameters, each a Python number (a
        static constant of the kernel) or an array that broadcasts to the neurons (x_seq's shape
        without the time axis: one value per feature, per neuron, ...), which may be traced
        and gets a gradient. Rules: finite, tau > 1, a0 > 0, and for the hard reset
        v_threshold > v_reset, v_rest >= v_reset; concrete arrays are checked elementwise,
        traced ones under `jax.experimental.checkify.checkify`. v_reset=None (a number, not
        an array) selects the soft reset.
      surrogate: a `jaxqif.surrogate` instance; its derivative replaces dS/dH in the backward.
      detach_reset: drop the spike's gradient in the reset (not in the output spikes).
      store_v_seq: also return V after every step's reset.
      time_axis: the time axis of x_seq (negative counts from the end).
      backend: None = the fused kernel of the platform the computation runs on (the pure-JAX
        path with a warning where no kernel was built); "ffi" = the fused kernel or an error;
        "jax" = the pure-JAX `lax.scan` reference, differentiated by JAX.

    Returns:
      (spike_seq, v_final, v_seq): spikes in x_seq's dtype; v_final and v_seq (None unless
      store_v_seq) in float32 for float16/bfloat16/float32 inputs, float64 for float64.
    """
    config, raw_arrays = _neuron(dict(tau=tau, v_c=v_c, a0=a0, v_threshold=v_threshold,
                                      v_rest=v_rest, v_reset=v_reset), surrogate, detach_reset)
    store_v_seq = static_bool("store_v_seq", store_v_seq)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    x_seq = _check_input("x_seq", x_seq)
    if x_seq.ndim == 0:
        raise ValueError("x_seq must have rank >= 1 (time plus neuron axes), got a scalar")
    time_axis = _normalize_axis(time_axis, x_seq.ndim)
    if x_seq.shape[time_axis] == 0:
        raise ValueError(f"x_seq must have at least one time step, got T = 0 on axis {time_axis}")
    st = state_dtype(x_seq.dtype)
    config.check_representable(st)
    neuron_shape = x_seq.shape[:time_axis] + x_seq.shape[time_axis + 1 :]
    arrays = _prepare_arrays(config, raw_arrays, neuron_shape, st)
    if v_init is not None:
        v_init = _broadcast_state("v_init", v_init, neuron_shape,
                                  "x_seq's shape without the time axis", st)
    elif "v_reset" in arrays:  # the default start is v_reset, here an array with a gradient
        v_init = jnp.broadcast_to(arrays["v_reset"], neuron_shape)
    # (made like x_seq, so that inside shard_map it varies over the same mesh axes)
    default_start = lambda: lax.full_like(x_seq, config.default_v_init, st, neuron_shape)

    if np.prod(neuron_shape, dtype=np.int64) == 0:  # no neurons: nothing to launch
        v_seq = jnp.zeros(x_seq.shape, st) if store_v_seq else None
        v_final = default_start() if v_init is None else v_init
        return jnp.zeros(x_seq.shape, x_seq.dtype), v_final, v_seq

    if _resolve_backend(backend, config.surrogate, x_seq) == "jax":
        v_init = default_start() if v_init is None else v_init
        # one carry type for the scan in shard_map
        x_seq, v_init, *values = vary_alike(x_seq, v_init, *arrays.values())
        return reference.multistep(config, x_seq, v_init, time_axis, store_v_seq,
                                   dict(zip(arrays, values)))
    from jaxqif.autodiff import fused_multistep

    # The kernels start from the default themselves: no array of it is filled or read.
    compact = [_params.compact(arrays[name], neuron_shape) for name in config.array_names]
    return fused_multistep(config, time_axis, store_v_seq)(x_seq, v_init, *compact)


def qif_step(
    x,
    v=None,
    *,
    tau: float = 2.0,
    v_c: float = 0.8,
    a0: float = 1.0,
    v_threshold: float = 1.0,
    v_rest: float = 0.0,
    v_reset: float | None = -0.1,
    surrogate: Surrogate = _DEFAULT_SURROGATE,
    detach_reset: bool = False,
):
    """One QIF step in pure JAX: (x, v) -> (spike in x's dtype, v_next in the state dtype).

    `v=None` starts from v_reset (0 for the soft reset); `v` broadcasts to x's shape. Same
    parameters (numbers or arrays that broadcast to x's shape) and semantics as
    `qif_multistep`; the surrogate's derivative is the spike's gradient.
    """
    config, raw_arrays = _neuron(dict(tau=tau, v_c=v_c, a0=a0, v_threshold=v_threshold,
                                      v_rest=v_rest, v_reset=v_reset), surrogate, detach_reset)
    x = _check_input("x", x)
    st = state_dtype(x.dtype)
    config.check_representable(st)
    arrays = _prepare_arrays(config, raw_arrays, x.shape, st)
    if v is not None:
        v = _broadcast_state("v", v, x.shape, "x's shape", st)
    elif "v_reset" in arrays:
        v = jnp.broadcast_to(arrays["v_reset"], x.shape)
    else:
        v = lax.full_like(x, config.default_v_init, st)
    x, v, *values = vary_alike(x, v, *arrays.values())
    constants = config.constants(st, dict(zip(arrays, values)))
    spike, v_next = reference.step(config, x.astype(st), v, constants)
    return spike.astype(x.dtype), v_next


def _check_input(name: str, value):
    if not isinstance(value, (jax.Array, np.ndarray)) and not hasattr(value, "__jax_array__"):
        value = np.asarray(value)
    dtype = np.dtype(value.dtype)
    if dtype not in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64):
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got {dtype}"
        )
    return jnp.asarray(value)


def _neuron(values: dict, surrogate, detach_reset) -> tuple[NeuronConfig, dict]:
    """The static config, and the parameters given as arrays (as given)."""
    arrays = {name: value for name, value in values.items() if _params.is_array(value)}
    if "v_reset" in arrays and arrays["v_reset"] is None:
        arrays.pop("v_reset")
    static = {name: _params.PER_NEURON if name in arrays else value
              for name, value in values.items()}
    return NeuronConfig(**static, surrogate=surrogate, detach_reset=detach_reset), arrays


def _prepare_arrays(config: NeuronConfig, raw: dict, neuron_shape: tuple, st) -> dict:
    """The array parameters in the state dtype, their shapes checked against the neurons and
    their values against the rules: elementwise where concrete, under checkify where traced."""
    arrays = {}
    for name, value in raw.items():
        array = _params.as_array(name, value, st)
        _params.check_broadcast(name, array, neuron_shape)
        arrays[name] = array
    concrete = {n: np.asarray(a) for n, a in arrays.items() if _params.is_concrete(a)}
    for name, value in concrete.items():
        _params.check_concrete(name, value, st)
    static = {n: np.asarray(v, st) for n, v in config.static_values().items()}
    _params.check_relations({**static, **concrete}, config.hard_reset, neuron_shape)
    if arrays and len(concrete) == len(arrays):  # the folded constants, finite in st
        with np.errstate(all="ignore"):
            values = {**static, **concrete}
            folded = fold(*(values.get(n, np.zeros((), st)) for n in _params.NAMES))
        for name, value in folded.items():
            if not np.all(np.isfinite(value)):
                raise ValueError(
                    f"neuron parameters out of range for {np.dtype(st).name} state: the folded "
                    f"constant {name} is not finite in {np.dtype(st).name} for some neurons "
                    f"(first at {np.argwhere(~np.isfinite(np.broadcast_to(value, neuron_shape)))[0]})")
    traced = {n: a for n, a in arrays.items() if n not in concrete}
    if traced:
        _params.debug_checks(traced, {**static, **concrete}, config.hard_reset)
    return arrays


def _broadcast_state(name: str, value, shape: tuple, shape_name: str, st):
    """A membrane potential given by the user: checked, in the state dtype, broadcast
    numpy-style to `shape` (autodiff sums its gradient back to the shape it had)."""
    value = _check_input(name, value)
    try:
        fits = np.broadcast_shapes(value.shape, shape) == tuple(shape)
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{name} must broadcast to {shape_name}, {tuple(shape)}, got shape {value.shape}"
        )
    return jnp.broadcast_to(value.astype(st), shape)


def _normalize_axis(time_axis, ndim: int) -> int:
    if isinstance(time_axis, (bool, np.bool_)) or not isinstance(time_axis, (int, np.integer)):
        if isinstance(time_axis, Tracer):
            raise TypeError("time_axis must be a static Python int, got a JAX tracer")
        raise TypeError(f"time_axis must be an int, got {type(time_axis).__name__}")
    time_axis = operator.index(time_axis)
    if not -ndim <= time_axis < ndim:
        raise ValueError(f"time_axis {time_axis} is out of range for x_seq of rank {ndim}")
    return time_axis % ndim


def _platform_of(x) -> str:
    """The platform the computation will run on: x's device if it is a concrete array, else
    JAX's default backend. ("gpu" means CUDA here: the only GPU kernels are CUDA ones.)"""
    platform = None
    if isinstance(x, jax.Array) and not isinstance(x, Tracer):
        try:
            platform = next(iter(x.devices())).platform
        except Exception:  # deleted or abstract arrays: fall back to the default backend
            platform = None
    platform = platform or jax.default_backend()
    return "cuda" if platform == "gpu" else platform


def _warn_once(key: str, message: str):
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _resolve_backend(backend, surrogate: Surrogate, x) -> str:
    if backend == "jax":
        return "jax"
    kernel_formula = has_kernel_formula(surrogate)
    platform = _platform_of(x)
    built = _library.load(platform)
    if backend == "ffi":
        if not kernel_formula:
            raise ValueError(
                f"surrogate {type(surrogate).__name__} has no fused-kernel formula (only "
                "jaxqif.surrogate's own classes have one, not their subclasses); use "
                "backend='jax' for custom surrogates"
            )
        if not built:
            raise RuntimeError(f"jaxqif: backend='ffi', but {_library.unavailable_reason(platform)}")
        return "ffi"
    if not kernel_formula:
        _warn_once(
            f"surrogate:{type(surrogate).__qualname__}",
            f"jaxqif: surrogate {type(surrogate).__name__} has no fused-kernel formula; "
            "running the (much slower) pure-JAX path. Pass backend='jax' to silence this.",
        )
        return "jax"
    if not built:
        _warn_once(
            f"platform:{platform}",
            f"jaxqif: running the (much slower) pure-JAX path on {platform}: "
            f"{_library.unavailable_reason(platform)}. Pass backend='jax' to silence this.",
        )
        return "jax"
    return "ffi"
