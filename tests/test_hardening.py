"""Odd but legal uses, and ways to misuse the API, each closed: transformations that used to crash,
non-finite values, parameters beyond the state dtype, surrogate subclasses, unbounded caches,
broadcasting of v_init, and the errors for what the fused path does not support."""

import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxqif
from jaxqif import surrogate as sg
from helpers import DTYPES, SURROGATES, make_inputs

BACKENDS = ("ffi", "jax")
X = jnp.ones((4, 3), jnp.float32)


def _run_in_fresh_process(code: str) -> str:
    """Runs `code` in a new Python process (a fresh JAX and jaxqif); returns its stdout. `-P`:
    the working directory (a source checkout, say) stays off sys.path, as in conftest.py."""
    result = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# --- transformations -------------------------------------------------------------------------


def test_disable_jit_runs_and_equals_jit():
    x, v = make_inputs((7, 3), 0, jnp.float32)
    loss = lambda x, v: jnp.sum(jaxqif.qif_multistep(x, v, backend="ffi")[0] * x) + jnp.sum(
        jaxqif.qif_multistep(x, v, backend="ffi")[1])
    grad = jax.grad(loss, argnums=(0, 1))
    with jax.disable_jit():
        eager_out = jaxqif.qif_multistep(jnp.ones((4, 3)), backend="ffi")
        eager_grads = grad(x, v)
    for a, b in zip(eager_out[:2], jax.jit(lambda x: jaxqif.qif_multistep(x)[:2])(
            jnp.ones((4, 3)))):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(eager_grads, jax.jit(grad)(x, v)):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_forward_mode_says_what_to_do():
    with pytest.raises(TypeError, match="forward mode .* needs backend='jax'"):
        jax.jvp(lambda x: jaxqif.qif_multistep(x, backend="ffi")[0], (X,), (X,))
    with pytest.raises(TypeError, match="needs backend='jax'"):
        jax.jacfwd(lambda x: jaxqif.qif_multistep(x, backend="ffi")[1])(X)
    # The pure-JAX path does forward mode.
    jax.jvp(lambda x: jaxqif.qif_multistep(x, backend="jax")[1], (X,), (X,))


def test_grad_of_grad_says_what_to_do():
    loss = lambda x: jnp.sum(jnp.sin(jaxqif.qif_multistep(x, backend="ffi")[1]))
    with pytest.raises(NotImplementedError, match="gradients of gradients .* backend='jax'"):
        jax.grad(lambda x: jnp.sum(jax.grad(loss)(x)))(X)
    reference = lambda x: jnp.sum(jnp.sin(jaxqif.qif_multistep(x, backend="jax")[1]))
    jax.hessian(reference)(X[:2, :1])


# --- surrogates ------------------------------------------------------------------------------


class _SteeperSigmoid(sg.Sigmoid):
    """A subclass that changes the derivative: it inherits Sigmoid's kernel id, which must not
    make the kernels run Sigmoid's formula instead."""

    def derivative(self, x):
        return 2 * super().derivative(x)


def test_surrogate_subclass_takes_the_pure_jax_path(monkeypatch):
    from jaxqif import api

    monkeypatch.setattr(api, "_warned", set())
    x, v = make_inputs((6, 5), 0, jnp.float32)
    steeper = _SteeperSigmoid()
    loss = lambda x, surrogate, backend: jnp.sum(jaxqif.qif_multistep(
        x, v, surrogate=surrogate, backend=backend)[0] * x)
    with pytest.warns(RuntimeWarning, match="_SteeperSigmoid has no fused-kernel formula"):
        grad_default = jax.grad(loss)(x, steeper, None)
    grad_reference = jax.grad(loss)(x, steeper, "jax")
    np.testing.assert_array_equal(grad_default, grad_reference)
    # ... which is the override's, not Sigmoid's.
    grad_sigmoid = jax.grad(loss)(x, sg.Sigmoid(), "ffi")
    assert not np.allclose(grad_default, grad_sigmoid)
    with pytest.raises(ValueError, match="no fused-kernel formula .* not their subclasses"):
        jaxqif.qif_multistep(x, surrogate=steeper, backend="ffi")


# --- non-finite values -----------------------------------------------------------------------


def _nonfinite_cases(dtype):
    big = {jnp.dtype(jnp.float16): 6e4, jnp.dtype(jnp.bfloat16): 1e30,
           jnp.dtype(jnp.float32): 1e30, jnp.dtype(jnp.float64): 1e200}[jnp.dtype(dtype)]
    return {  # value placed in x (at step 1) or in v_init
        "+inf": np.inf, "-inf": -np.inf, "nan": np.nan, "+big": big, "-big": -big}


@pytest.mark.parametrize("where", ["x", "v_init"])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_non_finite_values_agree_across_backends(dtype, v_reset, where):
    """±inf, NaN, and finite values whose square overflows the state dtype, in x or v_init:
    every backend gives the same outputs (the same non-finite entries, the finite ones close)
    and gradients finite at the same entries and close there. (Where a potential stays
    infinite, a gradient through it is inf or NaN depending on the order in which a backend
    multiplies an infinite cotangent by a zero surrogate derivative.) A neuron that fires
    resets to v_reset whatever H was, also for H = inf."""
    cases = _nonfinite_cases(dtype)
    x, v = make_inputs((12, len(cases) + 1), 0, dtype, seed=4)
    for column, value in enumerate(cases.values()):  # the last column stays ordinary
        if where == "x":
            x = x.at[1, column].set(value)
        else:
            v = v.at[column].set(value)
    cotangents = (jnp.ones(x.shape, x.dtype), jnp.full(v.shape, 0.5, v.dtype),
                  jnp.full(x.shape, 0.25, v.dtype))
    results = {}
    for backend in BACKENDS:
        f = lambda x, v: jaxqif.qif_multistep(x, v, v_reset=v_reset, store_v_seq=True,
                                              backend=backend)
        outs, vjp = jax.vjp(f, x, v)
        results[backend] = [*outs, *vjp(cotangents)]
    names = ("spikes", "v_final", "v_seq", "grad_x", "grad_v_init")
    for name, got, want in zip(names, results["ffi"], results["jax"]):
        got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
        tests = (np.isfinite,) if name.startswith("grad") else (np.isnan, np.isposinf, np.isneginf)
        for test in tests:
            np.testing.assert_array_equal(test(got), test(want), err_msg=f"{name}: {test.__name__}")
        finite = np.isfinite(want)
        scale = np.maximum(np.abs(want[finite]), 1.0)
        rtol = 1e-12 if dtype == jnp.float64 else 2e-2 if name == "grad_x" else 1e-5
        assert np.all(np.abs(got[finite] - want[finite]) <= rtol * scale), name


def test_hard_reset_of_an_infinite_potential_is_v_reset():
    x = jnp.float32([[np.inf, -np.inf, 1e30]])  # one step: H = +inf, -inf, 5e29
    expected = np.float32([-0.1, -np.inf, -0.1])
    for backend in BACKENDS:
        spikes, v_final, _ = jaxqif.qif_multistep(x, backend=backend)
        np.testing.assert_array_equal(spikes[0], [1, 0, 1])
        np.testing.assert_array_equal(v_final, expected)
    np.testing.assert_array_equal(jaxqif.qif_step(x[0])[1], expected)


# --- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, dtype, match", [
    (dict(a0=1e39), jnp.float32, "charge_v2 .* not finite in float32"),
    (dict(a0=1e39), jnp.bfloat16, "not finite in float32"),
    (dict(v_threshold=1e39), jnp.float32, "v_threshold .* not finite in float32"),
    (dict(surrogate=sg.PiecewiseQuadratic(alpha=1e20)), jnp.float32, "alpha\\^2"),
    (dict(surrogate=sg.SoftSign(alpha=1e-39)), jnp.float32, "1/alpha"),
])
def test_parameters_beyond_the_state_dtype_are_refused(kwargs, dtype, match):
    x = jnp.ones((3, 2), dtype)
    for backend in BACKENDS:
        with pytest.raises(ValueError, match=match):
            jaxqif.qif_multistep(x, backend=backend, **kwargs)
    with pytest.raises(ValueError, match=match):
        jaxqif.qif_step(x[0], **kwargs)


def test_the_same_parameters_fit_float64_state():
    spikes, v_final, _ = jaxqif.qif_multistep(jnp.ones((3, 2), jnp.float64), a0=1e39)
    assert np.all(np.isfinite(v_final))


def test_huge_python_int_is_a_value_error():
    with pytest.raises(ValueError, match="tau must be finite.*too large"):
        jaxqif.qif_multistep(X, tau=10**400)


# --- accuracy of the surrogate gradient at large thresholds ----------------------------------


@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("v_threshold", [1.0, 1e3, 1e4, 1e5])
def test_surrogate_gradient_accuracy_does_not_degrade_with_the_threshold(surrogate, v_threshold):
    """One step from v_init = 0, no spike: grad_x = sigma'(H - v_threshold) / tau for a spike
    loss. H is the kernel's own (v_final), so the float64 expectation sees the same argument;
    the float32 gradient must be within float32 rounding of it."""
    offsets = np.linspace(-1.5, -0.05, 30) / surrogate.alpha
    # v_init = 0, v_rest = 0: H = x / tau exactly in float32 (tau a power of two)
    x = jnp.asarray((v_threshold + offsets) * 2.0, jnp.float32)[None]
    params = dict(v_threshold=v_threshold, v_reset=0.0, v_rest=0.0, surrogate=surrogate)
    grad = jax.grad(lambda x: jaxqif.qif_multistep(
        x, jnp.zeros(30, jnp.float32), backend="ffi", **params)[0].sum())(x)
    h = np.asarray(jaxqif.qif_multistep(x, jnp.zeros(30, jnp.float32), backend="ffi",
                                        **params)[1], np.float64)
    assert np.all(h < v_threshold)
    expected = np.asarray(surrogate.derivative(jnp.asarray(h - v_threshold, jnp.float64))) / 2.0
    np.testing.assert_allclose(np.asarray(grad[0], np.float64), expected, rtol=1e-5)


# --- caches ----------------------------------------------------------------------------------


def test_eager_calls_with_many_parameter_values_keep_memory_flat():
    """Each distinct static parameter compiles once; the caches behind eager calls are bounded,
    so a sweep over hundreds of values does not grow the process without limit."""
    out = _run_in_fresh_process("""
        import resource, jax.numpy as jnp, jaxqif
        x = jnp.ones((4, 3))
        rss = lambda: int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()
        def sweep(values):
            for tau in values:
                jaxqif.qif_multistep(x, tau=float(tau))[0].block_until_ready()
        sweep(1.5 + 0.001 * i for i in range(150))      # fills the caches
        before = rss()
        sweep(2.5 + 0.001 * i for i in range(300))
        print((rss() - before) / 2**20)
    """)
    growth_mib = float(out.split()[-1])
    assert growth_mib < 120, f"{growth_mib:.0f} MiB for 300 more distinct tau values"


# --- v_init broadcasting ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("v_shape", [(), (4,), (1, 4), (3, 1)], ids=str)
def test_v_init_broadcasts_to_the_neurons(v_shape, backend):
    x, _ = make_inputs((7, 3, 4), 0, jnp.float32, seed=5)
    v = jax.random.uniform(jax.random.key(6), v_shape, jnp.float32, -0.1, 0.9)
    full = jnp.broadcast_to(v, (3, 4))
    run = lambda x, v: jaxqif.qif_multistep(x, v, backend=backend)
    for a, b in zip(run(x, v)[:2], run(x, full)[:2]):
        np.testing.assert_array_equal(a, b)
    loss = lambda v: jnp.sum(jnp.sin(run(x, v)[1]))
    grad = jax.grad(loss)(v)
    assert grad.shape == v_shape
    np.testing.assert_allclose(grad, _sum_to_shape(jax.grad(loss)(full), v_shape), rtol=1e-6)


def _sum_to_shape(g, shape):
    """g summed over the axes that broadcasting `shape` to g's shape added or stretched."""
    g = np.asarray(g)
    g = g.sum(axis=tuple(range(g.ndim - len(shape))))
    stretched = tuple(a for a, n in enumerate(shape) if n == 1 and g.shape[a] != 1)
    return g.sum(axis=stretched, keepdims=True).reshape(shape)


def test_qif_step_v_broadcasts():
    x = jnp.linspace(0.0, 3.0, 6, dtype=jnp.float32).reshape(2, 3)
    spike, v_next = jaxqif.qif_step(x, 0.2)
    spike_full, v_full = jaxqif.qif_step(x, jnp.full((2, 3), 0.2, jnp.float32))
    np.testing.assert_array_equal(v_next, v_full)
    with pytest.raises(ValueError, match=r"v must broadcast to x's shape, \(2, 3\)"):
        jaxqif.qif_step(x, jnp.zeros((3, 3)))


# --- module attributes -----------------------------------------------------------------------


def test_flax_modules_are_attributes_imported_on_first_touch():
    out = _run_in_fresh_process("""
        import sys, jaxqif
        print("flax" in sys.modules)
        print(jaxqif.linen.QIF.__name__, jaxqif.nnx.QIFCell.__name__)
        print("flax" in sys.modules)
    """)
    assert out.split() == ["False", "QIF", "QIFCell", "True"]
    with pytest.raises(AttributeError, match="no attribute 'lenin'"):
        jaxqif.lenin


# --- the handlers themselves -----------------------------------------------------------------


def test_handler_refuses_a_sequence_of_no_steps():
    """A direct call of the forward target with T = 0 (which the Python API refuses) is an
    error, not v_final left unwritten."""
    from jaxqif import _library
    from jaxqif._config import NeuronConfig
    from jaxqif.primitives import _neuron_attrs

    x = jnp.ones((0, 3), jnp.float32)
    empty = jax.ShapeDtypeStruct((0,), jnp.float32)
    call = jax.ffi.ffi_call(_library.FORWARD_TARGET, (
        jax.ShapeDtypeStruct((0, 3), jnp.float32), jax.ShapeDtypeStruct((3,), jnp.float32),
        empty, jax.ShapeDtypeStruct((0, 3), jnp.float32)))
    attrs = _neuron_attrs(NeuronConfig(), 0, 0.25, jnp.float32)
    with pytest.raises(Exception, match=r"no time steps \(T = 0\)"):
        jax.block_until_ready(jax.jit(lambda x: call(x, jnp.zeros((0,), jnp.float32),
                                                     **attrs))(x))


def test_backward_handler_refuses_a_gradient_block_that_splits_rows():
    """A direct call of the backward target whose parameter gradient has a count that neither
    tiles the layout's rows nor is tiled by them (the API never asks for one) is an error, not
    a column of the CPU kernel read across a row's end."""
    from jaxqif import _library
    from jaxqif._config import NeuronConfig
    from jaxqif.primitives import _neuron_attrs

    x = jnp.ones((3, 5, 4), jnp.float32)  # time axis 1: rows of 4 neurons, 12 in all
    tau = jnp.full((2,), 2.0, jnp.float32)
    none = jnp.zeros((0,), jnp.float32)
    shape = lambda *dims: jax.ShapeDtypeStruct(dims, jnp.float32)
    # grad_x, no grad_v_init, grad_tau of 6 (rows of 4: neither tiles the other), no others
    grads = [shape(*x.shape), shape(0), shape(6)] + [shape(0)] * 5
    call = jax.ffi.ffi_call(_library.BACKWARD_TARGET_V3, grads)
    attrs = _neuron_attrs(NeuronConfig(tau=2.0), 1, 0.0, jnp.float32)
    attrs.update(detach_reset=np.bool_(False), surrogate=np.int64(0), alpha=np.float64(4.0))
    operands = (x, none, none, x, none, none, tau, none, none, none, none, none)
    with pytest.raises(Exception, match="not a trailing block"):
        jax.block_until_ready(jax.jit(lambda *ops: call(*ops, **attrs))(*operands))
