"""Neuron parameters given as arrays: per feature, per neuron, any broadcastable shape, traced;
their checks, their gradients (from the fused kernels and from JAX's autodiff of the pure-JAX
path), and the transformations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import checkify
from jax.test_util import check_grads

import jaxqif
from helpers import DTYPES, SURROGATES, TOLERANCES, assert_close, make_inputs

BACKENDS = ("ffi", "jax")
PARAMS = ("tau", "v_c", "a0", "v_threshold", "v_rest", "v_reset")
SHAPE, TIME_AXIS = (11, 3, 4), 0  # [T, batch, features]: neurons (3, 4)


def _values(name, shape, seed=0):
    """Valid values of a parameter, varied over `shape`, around the defaults."""
    rng = np.random.default_rng(seed + PARAMS.index(name))
    low, high = dict(tau=(1.5, 3.0), v_c=(0.6, 1.0), a0=(0.7, 1.3), v_threshold=(0.9, 1.2),
                     v_rest=(-0.05, 0.1), v_reset=(-0.2, -0.1))[name]
    return rng.uniform(low, high, shape)


def _arrays(names, shape, dtype, seed=0):
    return {n: jnp.asarray(_values(n, shape, seed), dtype) for n in names}


# --- checks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs, match", [
    (dict(tau=np.array([2.0, 0.5, 2.0, 2.0])), r"tau must be > 1 everywhere, got tau\[1\] = 0.5"),
    (dict(a0=np.array([[1.0], [0.0], [1.0]])), r"a0 must be > 0 everywhere, got a0\[1, 0\]"),
    (dict(v_c=np.array([0.1, np.nan, 0.2, 0.3])), r"v_c must be finite .* v_c\[1\] = nan"),
    (dict(v_threshold=np.array([1.0, -0.5, 1.0, 1.0])),
     r"v_threshold must be > v_reset for every neuron, .* at neuron \[0, 1\]"),
    (dict(v_reset=np.array([-0.1, 0.2, -0.1, -0.1]), v_rest=0.1),
     r"v_rest must be >= v_reset for every neuron, got v_rest = 0.1 and v_reset = 0.2"),
    (dict(tau=np.full(5, 2.0)), r"tau of shape \(5,\) does not broadcast to the neurons' shape "
                                r"\(3, 4\)"),
    (dict(tau=np.full((2, 4), 2.0)), r"tau of shape \(2, 4\) does not broadcast"),
    (dict(a0=np.array([3e38, 1.0, 1.0, 1.0]), v_c=1.5),
     r"folded constant charge_v1 is not finite"),
    (dict(tau=np.array(["2.0"] * 4)), r"tau must be a real number or a real array"),
])
def test_array_parameters_are_checked(backend, kwargs, match):
    x = jnp.ones(SHAPE, jnp.float32)
    error = TypeError if "real number" in match else ValueError
    with pytest.raises(error, match=match):
        jaxqif.qif_multistep(x, backend=backend, **kwargs)


def test_soft_reset_cannot_take_an_array_v_reset_of_none():
    """v_reset=None (the soft reset) is a static choice; v_reset arrays mean the hard reset."""
    x, _ = make_inputs(SHAPE, TIME_AXIS, jnp.float32)
    spikes, v_final, _ = jaxqif.qif_multistep(x, v_reset=jnp.full((4,), -0.1), backend="jax")
    ref = jaxqif.qif_multistep(x, v_reset=-0.1, backend="jax")
    np.testing.assert_array_equal(spikes, ref[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_traced_parameters_are_checked_under_checkify(backend):
    x, _ = make_inputs(SHAPE, TIME_AXIS, jnp.float32)
    run = jax.jit(lambda tau, th: jaxqif.qif_multistep(x, tau=tau, v_threshold=th,
                                                       backend=backend)[1])
    good_tau, good_th = jnp.full((4,), 2.0), jnp.full((4,), 1.0)
    run(good_tau, good_th)  # no checkify: the checks cost nothing and say nothing
    checked = checkify.checkify(run)
    error, _ = checked(good_tau, good_th)
    error.throw()
    error, _ = checked(jnp.array([2.0, 1.0, 2.0, 2.0]), good_th)
    with pytest.raises(checkify.JaxRuntimeError, match="tau must be > 1"):
        error.throw()
    error, _ = checked(good_tau, jnp.array([1.0, -0.2, 1.0, 1.0]))
    with pytest.raises(checkify.JaxRuntimeError, match="v_threshold must be > v_reset"):
        error.throw()


# --- the pure-JAX path: arrays are numbers, neuron by neuron ---------------------------------


@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
def test_per_feature_parameters_are_the_scalar_model_per_feature(v_reset):
    """float64: every feature's neurons with array parameters give exactly what the scalar
    path gives with that feature's values (the array fold in float64 is the double fold)."""
    x, v = make_inputs(SHAPE, TIME_AXIS, jnp.float64, seed=2)
    names = PARAMS if v_reset is not None else PARAMS[:-1]
    arrays = _arrays(names, (4,), jnp.float64)
    if v_reset is None:
        arrays["v_reset"] = None
    spikes, v_final, v_seq = jaxqif.qif_multistep(x, v, backend="jax", store_v_seq=True,
                                                  **arrays)
    for f in range(4):
        numbers = {n: (None if a is None else float(a[f])) for n, a in arrays.items()}
        s, vf, vs = jaxqif.qif_multistep(x[..., f], v[..., f], backend="jax", store_v_seq=True,
                                         **numbers)
        np.testing.assert_array_equal(spikes[..., f], s)
        np.testing.assert_array_equal(v_final[..., f], vf)
        np.testing.assert_array_equal(v_seq[..., f], vs)


def test_array_v_reset_is_the_default_start():
    x, _ = make_inputs(SHAPE, TIME_AXIS, jnp.float64, seed=3)
    v_reset = jnp.asarray(_values("v_reset", (4,)), jnp.float64)
    for backend in BACKENDS:
        got = jaxqif.qif_multistep(x, v_reset=v_reset, backend=backend)
        want = jaxqif.qif_multistep(x, jnp.broadcast_to(v_reset, (3, 4)), v_reset=v_reset,
                                    backend=backend)
        for a, b in zip(got[:2], want[:2]):
            np.testing.assert_array_equal(a, b)
