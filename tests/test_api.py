"""Argument checking, edge cases, and the basic transformations."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxqif
from jaxqif import surrogate as sg
from helpers import make_inputs


X = jnp.ones((4, 3), jnp.float32)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(x_seq=jnp.ones((4, 3), jnp.int32)), TypeError, "x_seq must be float16"),
        (dict(x_seq=np.ones((4, 3), np.complex64)), TypeError, "x_seq must be float16"),
        (dict(x_seq=jnp.float32(1.0)), ValueError, "rank >= 1"),
        (dict(x_seq=jnp.ones((0, 3))), ValueError, "at least one time step"),
        (dict(v_init=jnp.ones((4,))), ValueError, "v_init must broadcast to x_seq's shape"),
        (dict(v_init=jnp.ones((2, 3))), ValueError, r"v_init must broadcast to .*\(3,\)"),
        (dict(v_init=jnp.ones((3,), jnp.int32)), TypeError, "v_init must be float16"),
        (dict(time_axis=2), ValueError, "time_axis 2 is out of range"),
        (dict(time_axis=-3), ValueError, "time_axis -3 is out of range"),
        (dict(time_axis=1.0), TypeError, "time_axis must be an int"),
        (dict(tau=1.0), ValueError, "tau must be > 1"),
        (dict(tau=float("nan")), ValueError, "tau must be finite"),
        (dict(v_c=float("inf")), ValueError, "v_c must be finite"),
        (dict(a0=0.0), ValueError, "a0 must be > 0"),
        (dict(v_threshold=-0.2), ValueError, "v_threshold must be > v_reset"),
        (dict(v_rest=-0.2), ValueError, "v_rest must be >= v_reset"),
        (dict(tau="2"), TypeError, "tau must be a real number"),
        (dict(v_reset=True), TypeError, "v_reset must be a real number"),
        (dict(surrogate=lambda x: x), TypeError, "surrogate must be a jaxqif.surrogate"),
        (dict(backend="triton"), ValueError, "backend must be one of"),
        (dict(store_v_seq=1), TypeError, "store_v_seq must be a bool"),
        (dict(detach_reset="yes"), TypeError, "detach_reset must be a bool"),
    ],
)
def test_bad_input_is_refused(kwargs, error, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x_seq", X)
    with pytest.raises(error, match=match):
        jaxqif.qif_multistep(x, **kwargs)


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan")])
def test_bad_surrogate_alpha(alpha):
    with pytest.raises(ValueError, match="alpha must be"):
        sg.Sigmoid(alpha=alpha)


def test_traced_alpha_is_refused():
    """The surrogate's alpha is a static constant of the kernels (neuron parameters may be
    traced: they are array parameters, tests/test_params.py)."""
    with pytest.raises(TypeError, match="alpha must be a static Python number"):
        jax.jit(lambda a: jaxqif.qif_multistep(X, surrogate=sg.ATan(alpha=a)))(2.0)


def test_soft_reset_ignores_hard_reset_rules():
    # v_threshold <= v_reset is only a rule for the hard reset; soft reset has no v_reset.
    spikes, v_final, _ = jaxqif.qif_multistep(X * 3, v_reset=None, v_threshold=0.5, v_rest=-5.0)
    assert spikes.shape == X.shape


def test_ffi_backend_refuses_custom_surrogate():
    class Linear(sg.Surrogate):
        def derivative(self, x):
            return jnp.full_like(x, self.alpha)

    with pytest.raises(ValueError, match="no fused-kernel formula"):
        jaxqif.qif_multistep(X, surrogate=Linear(alpha=1.0), backend="ffi")
    # The pure-JAX path takes any surrogate, and uses its derivative.
    grad = jax.grad(lambda x: jaxqif.qif_multistep(
        x, surrogate=Linear(alpha=0.25), backend="jax")[0].sum())(X[:1])
    np.testing.assert_allclose(grad, 0.25 / 2.0)


def test_no_neurons_returns_empty_outputs_without_a_kernel():
    x = jnp.ones((5, 0, 3), jnp.float32)
    f = lambda x: jaxqif.qif_multistep(x, store_v_seq=True, backend="ffi")
    spikes, v_final, v_seq = f(x)
    assert spikes.shape == (5, 0, 3) and v_final.shape == (0, 3) and v_seq.shape == (5, 0, 3)
    assert "qif_forward" not in str(jax.make_jaxpr(f)(x))


def test_default_v_init():
    x = jnp.full((1, 2), 0.0, jnp.float64)
    # hard reset starts at v_reset: H = -0.1 + (0 + (-0.1)(-0.9)) / 2
    _, v_hard, _ = jaxqif.qif_multistep(x, v_reset=-0.1)
    np.testing.assert_allclose(v_hard, -0.1 + 0.09 / 2)
    # soft reset starts at 0: H = 0 + (0 + 0) / 2
    _, v_soft, _ = jaxqif.qif_multistep(x, v_reset=None)
    np.testing.assert_allclose(v_soft, 0.0)


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64])
def test_output_dtypes(dtype):
    x = jnp.ones((3, 2), dtype)
    spikes, v_final, v_seq = jaxqif.qif_multistep(x, store_v_seq=True)
    state = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    assert spikes.dtype == dtype and v_final.dtype == state and v_seq.dtype == state


@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("params", [{}, dict(tau=3.7, v_c=0.55, a0=0.7, v_threshold=1.3,
                                             v_rest=0.1)], ids=["defaults", "custom"])
def test_qif_step_is_the_model_formula(v_reset, params):
    """The pure-JAX step (and the kernels) evaluate the charge expanded in v; in float64 it is
    the formula as written, H = v + (x + a0 (v - v_rest)(v - v_c)) / tau, then fire and reset."""
    p = dict(tau=2.0, v_c=0.8, a0=1.0, v_threshold=1.0, v_rest=0.0) | params
    x = np.random.default_rng(0).uniform(-1.0, 3.0, 4096)
    v = np.random.default_rng(1).uniform(-0.5, 1.0, 4096)
    spike, v_next = jaxqif.qif_step(x, v, v_reset=v_reset, **params)
    h = v + (x + p["a0"] * (v - p["v_rest"]) * (v - p["v_c"])) / p["tau"]
    fired = h >= p["v_threshold"]
    expected = np.where(fired, v_reset, h) if v_reset is not None else h - fired * p["v_threshold"]
    assert 0.05 < fired.mean() < 0.95
    np.testing.assert_array_equal(spike, fired)
    np.testing.assert_allclose(v_next, expected, rtol=1e-15, atol=1e-15)


def test_qif_step_matches_multistep():
    x, v = make_inputs((6, 4), 0, jnp.float32)
    spikes, v_final, v_seq = jaxqif.qif_multistep(x, v, store_v_seq=True)
    for t in range(6):
        spike, v = jaxqif.qif_step(x[t], v)
        np.testing.assert_array_equal(spike, spikes[t])
        np.testing.assert_allclose(v, v_seq[t], rtol=1e-6, atol=1e-6)


def test_jit_grad_vmap_basics():
    x, v = make_inputs((6, 5, 4), 0, jnp.float32)
    f = lambda x, v: jaxqif.qif_multistep(x, v, store_v_seq=True)
    eager = f(x, v)
    jitted = jax.jit(f)(x, v)
    for a, b in zip(eager, jitted):
        np.testing.assert_array_equal(a, b)
    # vmap over the middle axis of x (and v_init's first) equals a Python loop.
    g = lambda x, v: jaxqif.qif_multistep(x, v)[0]
    batched = jax.vmap(g, in_axes=(1, 0), out_axes=1)(x, v)
    looped = jnp.stack([g(x[:, b], v[b]) for b in range(5)], axis=1)
    np.testing.assert_array_equal(batched, looped)
    # grad under vmap equals grad per member.
    loss = lambda x, v: jaxqif.qif_multistep(x, v)[1].sum()
    gx = jax.vmap(jax.grad(loss), in_axes=(1, 0), out_axes=1)(x, v)
    gx_loop = jnp.stack([jax.grad(loss)(x[:, b], v[b]) for b in range(5)], axis=1)
    np.testing.assert_allclose(gx, gx_loop, rtol=1e-6)


def test_vmap_with_unbatched_v_init():
    x, v = make_inputs((6, 3, 4), 0, jnp.float32)
    v0 = v[0]
    f = lambda x: jaxqif.qif_multistep(x, v0)
    batched = jax.vmap(f, in_axes=1, out_axes=(1, 0, None))(x)
    for b in range(3):
        s, vf, _ = f(x[:, b])
        np.testing.assert_array_equal(batched[0][:, b], s)
        np.testing.assert_array_equal(batched[1][b], vf)


def test_unused_outputs_are_not_read_by_the_backward():
    """A loss on spikes alone passes symbolic zeros for v; the backward gets only grad_spikes."""
    x, v = make_inputs((6, 4), 0, jnp.float32)
    jaxpr = str(jax.make_jaxpr(jax.grad(
        lambda x: jaxqif.qif_multistep(x, v, store_v_seq=True)[0].sum()))(x))
    assert "has_grad_spikes=True" in jaxpr
    assert "has_grad_v_seq=False" in jaxpr and "has_grad_v_final=False" in jaxpr


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
def test_only_x_checkpoints_and_v_init_are_saved_for_the_backward(dtype):
    """Autodiff keeps x, v_init and the forward's checkpoints: one state-dtype V per neuron
    every 8 steps (4 for 16-bit inputs) after the first interval; no per-step residual."""
    x, v = make_inputs((21, 4), 0, dtype)
    _, vjp = jax.vjp(lambda x, v: jaxqif.qif_multistep(x, v)[0], x, v)
    saved = [leaf for leaf in jax.tree_util.tree_leaves(vjp) if hasattr(leaf, "shape")]
    shapes = sorted((tuple(s.shape), jnp.dtype(s.dtype).name) for s in saved)
    checkpoints = 2 if dtype == jnp.float32 else 5  # (21 - 1) // 8, (21 - 1) // 4
    assert shapes == sorted([((4,), "float32"), ((21, 4), jnp.dtype(dtype).name),
                             ((checkpoints, 4), "float32")]), shapes


def test_inference_writes_no_checkpoints():
    x, v = make_inputs((6, 4), 0, jnp.float32)
    jaxpr = str(jax.make_jaxpr(lambda x: jaxqif.qif_multistep(x, v))(x))
    assert "save_checkpoints=False" in jaxpr


def _forward_result_types(f, *args) -> list[str] | None:
    """The result types of the fused forward's custom call in f's lowered program (None if
    there is no forward call)."""
    from jaxqif import _library

    text = jax.jit(f).lower(*args).as_text()
    call = next((line for line in text.splitlines() if _library.FORWARD_TARGET in line), None)
    return call and re.findall(r"tensor<[^>]*>", call.split("->")[-1])


@pytest.mark.parametrize("v_given", [False, True], ids=["default_start", "v_init"])
def test_results_nobody_uses_are_not_written(v_given):
    """Under jit, dead-code elimination drops v_final (and an unused v_seq) from the kernel
    call, through custom_vjp and the partitioning wrapper; results are unchanged."""
    x, v = make_inputs((6, 4), 0, jnp.float32)
    v = v if v_given else None
    run = lambda x, **kw: jaxqif.qif_multistep(x, v, backend="ffi", **kw)
    absent = "tensor<0xf32>"
    spikes_only = _forward_result_types(lambda x: run(x)[0], x)
    assert spikes_only == ["tensor<6x4xf32>", absent, absent, absent], spikes_only
    assert _forward_result_types(lambda x: run(x)[:2], x)[1] == "tensor<4xf32>"
    v_seq_unused = _forward_result_types(lambda x: run(x, store_v_seq=True)[:2], x)
    assert v_seq_unused[1:3] == ["tensor<4xf32>", absent], v_seq_unused
    # A sequence of one checkpoint interval saves no checkpoints, and the backward recomputes
    # everything from x: a gradient alone needs no forward call at all.
    assert _forward_result_types(jax.grad(lambda x: run(x)[0].sum()), x) is None
    training = _forward_result_types(
        lambda x: jax.value_and_grad(lambda x: run(x)[0].sum())(x), x)
    assert training == ["tensor<6x4xf32>", absent, absent, absent], training
    long_x = jnp.concatenate([x] * 3)  # 18 steps: checkpoints after steps 7 and 15
    training = _forward_result_types(jax.grad(lambda x: run(x)[0].sum()), long_x)
    assert training == ["tensor<18x4xf32>", absent, absent, "tensor<2x4xf32>"], training
    batched = _forward_result_types(jax.vmap(lambda x: run(x)[0], in_axes=1, out_axes=1),
                                    jnp.stack([x] * 3, axis=1))
    assert batched[1] == absent, batched

    spikes, _, _ = run(x)
    np.testing.assert_array_equal(jax.jit(lambda x: run(x)[0])(x), spikes)
    np.testing.assert_array_equal(jax.jit(lambda x: run(x, store_v_seq=True)[0])(x), spikes)
    grad = jax.grad(lambda x: jnp.sum(run(x)[0] * jnp.cos(x)))
    np.testing.assert_array_equal(jax.jit(grad)(x), grad(x))


def test_missing_kernel_for_platform_warns_and_uses_jax(monkeypatch):
    from jaxqif import _library, api

    monkeypatch.setattr(_library, "load", lambda platform: False)
    monkeypatch.setattr(api, "_warned", set())
    with pytest.warns(RuntimeWarning, match="pure-JAX path on cpu: jaxqif's cpu library"):
        spikes, _, _ = jaxqif.qif_multistep(X)
    assert "qif_forward" not in str(jax.make_jaxpr(lambda x: jaxqif.qif_multistep(x)[0])(X))
    with pytest.raises(RuntimeError, match="backend='ffi', but jaxqif's cpu library .* is missing"):
        jaxqif.qif_multistep(X, backend="ffi")
    # One warning, not one per call.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jaxqif.qif_multistep(X)


def test_surrogates_are_hashable_static_heavisides():
    s = sg.ATan()
    assert hash(s) == hash(sg.ATan(alpha=2.0)) and s != sg.ATan(alpha=3.0)
    out = jax.jit(lambda x, s: s(x), static_argnums=1)(jnp.array([-0.5, 0.0, 0.5]), s)
    np.testing.assert_array_equal(out, [0.0, 1.0, 1.0])
    g = jax.grad(lambda x: s(x).sum())(jnp.array([0.3]))
    np.testing.assert_allclose(g, s.derivative(jnp.array([0.3])))
    defaults = {type(s): s.alpha for s in (cls() for cls in sg.ALL)}
    assert defaults == {sg.Sigmoid: 4.0, sg.ATan: 2.0, sg.PiecewiseQuadratic: 1.0,
                        sg.PiecewiseExp: 1.0, sg.SoftSign: 2.0, sg.SuperSpike: 1.0, sg.Erf: 2.0}


def test_handler_errors_become_python_exceptions():
    """Bypassing the Python checks, a malformed call is refused by the handler, not crashed."""
    from jaxqif.primitives import forward_p
    from jaxqif._config import NeuronConfig

    x = jnp.ones((4, 3), jnp.float32)
    bad_v = jnp.ones((5,), jnp.float32)  # 5 neurons instead of 3
    with pytest.raises(Exception, match="v_init has 5 elements, expected 3"):
        jax.block_until_ready(forward_p.bind(
            x, bad_v, config=NeuronConfig(), time_axis=0, store_v_final=True, store_v_seq=False,
            save_checkpoints=False, v_init_value=None))


def test_handler_refuses_another_checkpoint_interval(monkeypatch):
    """The interval the Python side assumes is checked by the handler that saves the
    checkpoints (a package and a library from different builds would disagree)."""
    from jaxqif import primitives

    monkeypatch.setattr(primitives, "checkpoint_interval", lambda dtype: 5)
    x = jnp.ones((12, 3), jnp.float32)
    with pytest.raises(Exception, match="checkpoints every 5 steps, the kernels save one every 8"):
        jax.block_until_ready(jax.grad(lambda x: jaxqif.qif_multistep(
            x, backend="ffi")[0].sum())(x))
