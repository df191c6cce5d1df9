"""The fused FFI kernel against the pure-JAX reference: outputs and gradients."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxqif
from helpers import DTYPES, SURROGATES, TOLERANCES, assert_close, loss_and_grads, make_inputs

# time_axis and rank: every layout the kernel's [outer, T, inner] view must handle.
LAYOUTS = [((7, 3, 4), 0), ((3, 7, 4), 1), ((3, 4, 7), -1)]
EXTRA_LAYOUTS = [((9,), 0), ((9,), -1), ((9, 5), 0), ((5, 9), 1), ((2, 3, 9, 2), 2)]


def _compare(shape, time_axis, dtype, surrogate, v_reset, detach_reset, store_v_seq, seed=0):
    x, v = make_inputs(shape, time_axis, dtype, seed)
    weights = jax.random.normal(jax.random.key(seed + 1), shape, jnp.float64)
    params = dict(surrogate=surrogate, v_reset=v_reset, detach_reset=detach_reset,
                  store_v_seq=store_v_seq, time_axis=time_axis)
    (gx_ref, gv_ref), out_ref = loss_and_grads("jax", x, v, weights, **params)
    (gx, gv), out = loss_and_grads("ffi", x, v, weights, **params)
    tol = TOLERANCES[jnp.dtype(dtype)]
    spikes_ref, vf_ref, vs_ref = out_ref
    spikes, vf, vs = out
    assert spikes.dtype == x.dtype and spikes.shape == x.shape
    assert vf.dtype == v.dtype and vf.shape == v.shape
    assert gx.dtype == x.dtype and gv.dtype == v.dtype
    np.testing.assert_array_equal(np.asarray(spikes, np.float64),
                                  np.asarray(spikes_ref, np.float64))
    assert 0 < float(jnp.mean(spikes.astype(jnp.float32))) < 1, "inputs should make some spikes"
    assert_close(vf, vf_ref, tol["v"], "v_final")
    if store_v_seq:
        assert vs.shape == x.shape and vs.dtype == v.dtype
        assert_close(vs, vs_ref, tol["v"], "v_seq")
    else:
        assert vs is None and vs_ref is None
    assert_close(gx, gx_ref, tol["grad"], "grad x_seq")
    assert_close(gv, gv_ref, tol["grad"], "grad v_init")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("store_v_seq", [False, True], ids=["", "store_v_seq"])
@pytest.mark.parametrize("detach_reset", [False, True], ids=["", "detach"])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: f"axis{l[1]}")
def test_ffi_matches_reference(layout, surrogate, v_reset, detach_reset, store_v_seq, dtype):
    shape, time_axis = layout
    _compare(shape, time_axis, dtype, surrogate, v_reset, detach_reset, store_v_seq)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("layout", EXTRA_LAYOUTS, ids=lambda l: f"{len(l[0])}d-axis{l[1]}")
def test_ffi_matches_reference_other_ranks(layout, dtype):
    shape, time_axis = layout
    _compare(shape, time_axis, dtype, jaxqif.surrogate.ATan(), -0.1, False, True, seed=3)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
def test_non_default_parameters(surrogate):
    """Every parameter away from its default, in float64, at 1e-12."""
    x, v = make_inputs((12, 5), 0, jnp.float64, seed=7)
    weights = jax.random.normal(jax.random.key(8), x.shape, jnp.float64)
    params = dict(tau=3.7, v_c=0.55, a0=0.7, v_threshold=1.3, v_rest=0.1, v_reset=-0.3,
                  surrogate=type(surrogate)(alpha=surrogate.alpha * 1.7), store_v_seq=True)
    (gx_ref, gv_ref), out_ref = loss_and_grads("jax", x, v, weights, **params)
    (gx, gv), out = loss_and_grads("ffi", x, v, weights, **params)
    np.testing.assert_array_equal(out[0], out_ref[0])
    for a, b, what in [(out[1], out_ref[1], "v_final"), (out[2], out_ref[2], "v_seq"),
                       (gx, gx_ref, "grad x"), (gv, gv_ref, "grad v_init")]:
        assert_close(a, b, 1e-12, what)


def test_surrogate_formulas_match_kernel_gradients():
    """A single step isolates sigma': grad_x = sigma'(H - v_th) / tau for a spike-only loss."""
    h_minus_th = jnp.linspace(-1.5, 1.5, 61, dtype=jnp.float64)
    # v_init = 0 with default parameters: H = 0 + (x + 0) / 2, so x = 2 (H).
    x = (2 * (h_minus_th + 1.0))[None, :]
    for surrogate in SURROGATES:
        grad = jax.grad(lambda x: jaxqif.qif_multistep(
            x, jnp.zeros(61, jnp.float64), surrogate=surrogate, backend="ffi")[0].sum())(x)
        expected = surrogate.derivative(h_minus_th) / 2.0
        assert_close(grad[0], expected, 1e-12, type(surrogate).__name__)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("store_v_seq", [False, True], ids=["", "store_v_seq"])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
def test_default_start(v_reset, store_v_seq, dtype):
    """v_init=None: the kernels start every neuron at the default themselves (no array of it).
    The same as an explicit v_init of that value in the kernel, and as the reference."""
    shape, time_axis = (9, 5, 4), 0
    x, _ = make_inputs(shape, time_axis, dtype, seed=21)
    weights = jax.random.normal(jax.random.key(22), shape, jnp.float64)
    params = dict(v_reset=v_reset, store_v_seq=store_v_seq, time_axis=time_axis)
    st = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    explicit = jnp.full((5, 4), -0.1 if v_reset is not None else 0.0, st)
    tol = TOLERANCES[jnp.dtype(dtype)]

    (gx, gv), (spikes, vf, vs) = loss_and_grads("ffi", x, None, weights, **params)
    assert gv is None
    (gx_e, _), (spikes_e, vf_e, vs_e) = loss_and_grads("ffi", x, explicit, weights, **params)
    np.testing.assert_array_equal(np.asarray(spikes, np.float64), np.asarray(spikes_e, np.float64))
    np.testing.assert_array_equal(vf, vf_e)
    np.testing.assert_array_equal(gx, gx_e)
    if store_v_seq:
        np.testing.assert_array_equal(vs, vs_e)

    (gx_r, _), (spikes_r, vf_r, _) = loss_and_grads("jax", x, None, weights, **params)
    np.testing.assert_array_equal(np.asarray(spikes, np.float64), np.asarray(spikes_r, np.float64))
    assert_close(vf, vf_r, tol["v"], "v_final vs reference")
    assert_close(gx, gx_r, tol["grad"], "grad x_seq vs reference")


def test_default_start_adds_no_work_around_the_kernels():
    """No fill of v_init, no copy: the compiled inference and backward programs hold only the
    custom calls, their zero-element placeholder operands and tuple plumbing."""
    x = jnp.ones((8, 6), jnp.float32)
    infer = jax.jit(lambda x: jaxqif.qif_multistep(x, backend="ffi")[0])
    vjp = jax.jit(lambda x, g: jax.vjp(
        lambda x: jaxqif.qif_multistep(x, backend="ffi")[0], x)[1](g))
    for compiled in (infer.lower(x).compile(), vjp.lower(x, x).compile()):
        entry = compiled.as_text().split("ENTRY", 1)[1]
        ops = {re.search(r"\s([a-z][a-z0-9-]*)\(", line.split(" = ", 1)[1]).group(1)
               for line in entry.splitlines() if " = " in line}
        assert ops <= {"parameter", "constant", "custom-call", "get-tuple-element", "tuple"}, ops
        assert "custom-call" in ops
