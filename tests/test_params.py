"""Neuron parameters given as arrays: per feature, per neuron, any broadcastable shape, traced;
their checks, their gradients (from the fused kernels and from JAX's autodiff of the pure-JAX
path), and the transformations."""

import math

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
    run(good_tau, good_th)  # outside the checked mode: no check in the program
    assert "check[debug" not in str(jax.make_jaxpr(run)(good_tau, good_th))
    with jaxqif.checking_parameters():
        checked = checkify.checkify(jax.jit(lambda tau, th: jaxqif.qif_multistep(
            x, tau=tau, v_threshold=th, backend=backend)[1]))
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


# --- the fused kernels against the pure-JAX path ---------------------------------------------

# On the CPU and, where there is one, on a GPU (the CUDA kernels; tests/test_gpu.py has the
# launch plans of large layouts).
@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def device(request):
    with jax.default_device(jax.devices(request.param)[0]):
        yield request.param


# (parameter shape, as given) against neurons (3, 4): a scalar array, per feature, per
# neuron, per batch row (broadcast over the features: not a trailing block, so it is expanded)
PARAM_SHAPES = [(), (4,), (1, 4), (3, 4), (3, 1)]


def _loss_and_grads(backend, x, v, names_shapes, weights, seed=0, **kwargs):
    """Every output's weighted sum and its gradients w.r.t. x, v_init and each array
    parameter."""
    state = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    arrays = {n: jnp.asarray(_values(n, shape, seed), state) for n, shape in names_shapes}

    def loss(x, v, arrays):
        spikes, v_final, v_seq = jaxqif.qif_multistep(x, v, backend=backend, **arrays, **kwargs)
        total = jnp.sum(spikes.astype(jnp.float64) * weights) + jnp.sum(jnp.sin(v_final))
        if v_seq is not None:
            total = total + jnp.sum(v_seq * weights)
        return total, (spikes, v_final, v_seq)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(x, v, arrays)


def _assert_parity(x, v, names_shapes, dtype, seed=0, **kwargs):
    weights = jax.random.normal(jax.random.key(seed + 9), x.shape, jnp.float64)
    (gx, gv, gp), out = _loss_and_grads("ffi", x, v, names_shapes, weights, seed, **kwargs)
    (gx_r, gv_r, gp_r), out_r = _loss_and_grads("jax", x, v, names_shapes, weights, seed,
                                                **kwargs)
    tol = TOLERANCES[jnp.dtype(dtype)]
    np.testing.assert_array_equal(np.asarray(out[0], np.float64), np.asarray(out_r[0], np.float64))
    assert_close(out[1], out_r[1], tol["v"], "v_final")
    if out[2] is not None:
        assert_close(out[2], out_r[2], tol["v"], "v_seq")
    assert_close(gx, gx_r, tol["grad"], "grad x")
    assert_close(gv, gv_r, tol["grad"], "grad v_init")
    for name, _ in names_shapes:
        assert gp[name].shape == gp_r[name].shape
        # a parameter's gradient sums over every step (and over neurons that share it): its
        # rounding grows with the sum; compare relative to the sum of magnitudes
        assert_close(gp[name], gp_r[name], max(tol["grad"], 1e-5) * 4, f"grad {name}")


@pytest.mark.parametrize("shape", PARAM_SHAPES, ids=str)
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
def test_every_parameter_as_an_array(shape, v_reset, device):
    x, v = make_inputs(SHAPE, TIME_AXIS, jnp.float32, seed=11)
    names = PARAMS if v_reset is not None else PARAMS[:-1]
    _assert_parity(x, v, [(n, shape) for n in names], jnp.float32,
                   **({} if v_reset is not None else dict(v_reset=None)))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("store_v_seq", [False, True], ids=["", "store_v_seq"])
@pytest.mark.parametrize("detach_reset", [False, True], ids=["", "detach"])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
def test_learnable_pair_parity(surrogate, v_reset, detach_reset, store_v_seq, dtype, device):
    """The common case, tau and v_threshold per feature, over every setting."""
    x, v = make_inputs(SHAPE, TIME_AXIS, dtype, seed=13)
    _assert_parity(x, v, [("tau", (4,)), ("v_threshold", (4,))], dtype, surrogate=surrogate,
                   v_reset=v_reset, detach_reset=detach_reset, store_v_seq=store_v_seq)


@pytest.mark.parametrize("layout", [((9, 4), 0, (4,)), ((3, 9, 4), 1, (4,)),
                                    ((4, 3, 9), -1, (4, 3)), ((2, 20, 3, 5), 1, (5,)),
                                    ((2, 3, 9, 4), 2, (3, 4)), ((6, 300, 5), 0, (5,))],
                         ids=lambda l: f"{len(l[0])}d-axis{l[1]}-{l[0][-1]}")
def test_array_parameters_in_other_layouts(layout, device):
    """Including gradient blocks of several rows of the layout ((3, 4) over rows of 4), and
    many copies of a small block ((5,) over 300 rows: the CPU kernel sums them in groups)."""
    shape, time_axis, param_shape = layout
    x, v = make_inputs(shape, time_axis, jnp.float32, seed=17)
    _assert_parity(x, v, [("tau", param_shape), ("a0", param_shape), ("v_rest", ())],
                   jnp.float32, time_axis=time_axis, store_v_seq=True)


@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
def test_parameter_gradients_equal_finite_differences(v_reset, device):
    """float64, detach_reset=True, v outputs: the true derivative (no surrogate) w.r.t. every
    parameter given as an array, per feature."""
    x, v = make_inputs((8, 3, 4), 0, jnp.float64, seed=19)
    names = PARAMS if v_reset is not None else PARAMS[:-1]
    arrays = _arrays(names, (4,), jnp.float64, seed=3)

    def v_outputs(arrays):
        _, v_final, v_seq = jaxqif.qif_multistep(
            x, v, backend="ffi", detach_reset=True, store_v_seq=True,
            **(arrays if v_reset is not None else arrays | {"v_reset": None}))
        return v_final, v_seq

    # (spikes must not flip under the perturbation: the inputs keep H away from threshold)
    check_grads(v_outputs, (arrays,), order=1, modes=["rev"], eps=1e-7, atol=1e-5, rtol=1e-5)


def test_vmap_over_the_parameters(device):
    """An ensemble of neuron types: vmap over tau and v_threshold (and over x or not)."""
    x, v = make_inputs(SHAPE, TIME_AXIS, jnp.float32, seed=23)
    taus = jnp.asarray(_values("tau", (5, 4)), jnp.float32)
    thresholds = jnp.asarray(_values("v_threshold", (5, 1)), jnp.float32)
    for backend in BACKENDS:
        run = lambda tau, th: jaxqif.qif_multistep(x, v, tau=tau, v_threshold=th,
                                                   backend=backend)[1]
        batched = jax.vmap(run)(taus, thresholds)
        looped = jnp.stack([run(taus[e], thresholds[e]) for e in range(5)])
        np.testing.assert_allclose(batched, looped, rtol=1e-6)
        grad = jax.vmap(jax.grad(lambda tau, th: jnp.sum(run(tau, th)), argnums=(0, 1)))(
            taus, thresholds)
        grad_loop = [jax.grad(lambda tau, th: jnp.sum(run(tau, th)), argnums=(0, 1))(
            taus[e], thresholds[e]) for e in range(5)]
        for k in range(2):
            np.testing.assert_allclose(grad[k], jnp.stack([g[k] for g in grad_loop]), rtol=1e-5)
    # batched x too, with a parameter batched at another position
    xs = jnp.stack([x] * 3, axis=1)  # (T, 3, 3, 4)
    run = lambda x, tau: jaxqif.qif_multistep(x, v, tau=tau, backend="ffi")[0]
    batched = jax.vmap(run, in_axes=(1, 1), out_axes=1)(xs, jnp.stack([taus[0]] * 3, axis=1))
    np.testing.assert_array_equal(batched, jnp.stack([run(x, taus[0])] * 3, axis=1))


@pytest.mark.parametrize("layout", [((6, 300, 5), 0, (5,)), ((2, 3, 9, 4), 2, (3, 4))],
                         ids=["per-feature", "block-of-rows"])
def test_gradients_summed_by_the_lowering_equal_the_kernels_sums(layout, monkeypatch):
    """The CUDA kernels write one parameter gradient per neuron, which the lowering sums over
    the gradient block's copies; the CPU kernel sums them itself. The lowering's way, run with
    the CPU kernel (its handler takes either), gives the same gradients."""
    from jaxqif import primitives

    shape, time_axis, param_shape = layout
    x, v = make_inputs(shape, time_axis, jnp.float64, seed=19)
    tau = jnp.linspace(1.5, 3.0, math.prod(param_shape), dtype=jnp.float64).reshape(param_shape)

    def grads():
        loss = lambda x, v, tau: jnp.sum(jaxqif.qif_multistep(
            x, v, tau=tau, v_threshold=tau / 2, time_axis=time_axis, backend="ffi")[1] ** 2)
        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return step(x, v, tau), step.lower(x, v, tau).as_text()

    summed_by_kernel, text = grads()
    assert f"tensor<{'x'.join(map(str, param_shape))}xf64>" in text.split(
        primitives._library.BACKWARD_TARGET_V3)[1].split("\n")[0]
    monkeypatch.setattr(primitives, "KERNELS_SUMMING_COPIES", frozenset())
    summed_by_lowering, text = grads()
    assert " reduce(" in text or "stablehlo.reduce" in text
    for a, b in zip(summed_by_kernel, summed_by_lowering):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("axes", [(0, None, None), (None, 0, 0), (0, 0, 0), (2, 0, None)],
                         ids=["x", "params", "both", "x-at-2-and-tau"])
@pytest.mark.parametrize("size", [1, 3])
def test_vmapped_parameter_gradients_keep_the_examples_apart(axes, size, device):
    """The kernel sums parameter gradients over the batch rows: under vmap, over each
    example's rows only, whichever operands are batched (a vmap of size 1 too)."""
    x, _ = make_inputs((7, 5, 3), 0, jnp.float64, seed=29)
    xs = jnp.stack([x * (1 + 0.1 * e) for e in range(size)])
    taus = jnp.linspace(1.5, 3.0, size * 3, dtype=jnp.float64).reshape(size, 3)
    ths = jnp.linspace(0.8, 1.2, size * 3, dtype=jnp.float64).reshape(size, 3)

    def grads(x, tau, th):
        def loss(x, tau, th):
            spikes, v_final, _ = jaxqif.qif_multistep(x, tau=tau, v_threshold=th, backend="ffi")
            return jnp.sum(spikes * x) + jnp.sum(v_final ** 2)
        return jax.grad(loss, argnums=(0, 1, 2))(x, tau, th)

    def args(e):  # example e's operands, batched where `axes` says so
        return (xs[e] if axes[0] is not None else xs[0], taus[e] if axes[1] is not None
                else taus[0], ths[e] if axes[2] is not None else ths[0])

    batched_args = [xs if axes[0] is not None else xs[0], taus if axes[1] is not None else taus[0],
                    ths if axes[2] is not None else ths[0]]
    if axes[0] == 2:
        batched_args[0] = jnp.moveaxis(xs, 0, 2)
    batched = jax.jit(jax.vmap(grads, in_axes=axes))(*batched_args)
    for k in (1, 2):
        looped = jnp.stack([grads(*args(e))[k] for e in range(size)])
        np.testing.assert_allclose(batched[k], looped, rtol=1e-10, atol=1e-12)


def test_unused_parameter_gradients_are_not_written():
    """Under jit, dead-code elimination drops the backward's results nobody uses: an array
    parameter that is not differentiated gets no gradient output."""
    from jaxqif import _library

    x, v = make_inputs(SHAPE, TIME_AXIS, jnp.float32)
    tau = jnp.full((4,), 2.0, jnp.float32)
    th = jnp.full((4,), 1.0, jnp.float32)
    loss = lambda x, tau, th: jnp.sum(jaxqif.qif_multistep(x, v, tau=tau, v_threshold=th,
                                                           backend="ffi")[1])
    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, tau, th).as_text()
    call = next(l for l in text.splitlines() if _library.BACKWARD_TARGET_V3 in l)
    results = call.split("->")[-1]
    # grad_x, grad_v_init, grad_tau (over the gradient block: per feature, summed over the
    # batch rows in the kernel), and an absent grad_v_threshold (and the four numbers')
    assert results.strip().startswith(
        "(tensor<11x3x4xf32>, tensor<3x4xf32>, tensor<4xf32>, " + "tensor<0xf32>, " * 4), results


def test_export_with_array_parameters(tmp_path):
    from jaxqif import _library

    x, v = make_inputs(SHAPE, TIME_AXIS, jnp.float32)
    tau = jnp.asarray(_values("tau", (4,)), jnp.float32)
    step = jax.jit(jax.value_and_grad(lambda tau: jnp.sum(jaxqif.qif_multistep(
        x, v, tau=tau, backend="ffi")[1])))
    checks = [jax.export.DisabledSafetyCheck.custom_call(t)
              for t in (_library.FORWARD_TARGET_V3, _library.BACKWARD_TARGET_V3)]
    restored = jax.export.deserialize(jax.export.export(step, disabled_checks=checks)(
        tau).serialize())
    for a, b in zip(restored.call(tau), step(tau)):
        np.testing.assert_array_equal(a, b)
