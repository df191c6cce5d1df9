"""The CUDA kernels on a GPU: against the pure-JAX reference on the GPU, against the CPU FFI
kernel, and past 2^31 elements. Skipped where there is no GPU or no CUDA library
(see conftest.py); run on a GPU machine with `python -m pytest -m gpu tests`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxqif
import test_hardening
from helpers import DTYPES, SURROGATES, TOLERANCES, assert_close, loss_and_grads, make_inputs

pytestmark = pytest.mark.gpu

# T = 21: not a chunk multiple. Few neurons: the staged launch plans; an even innermost size
# (the first) lets 16-bit types use them too, odd ones (the others) send those to the narrow plan.
LAYOUTS = [((21, 38, 3), 0), ((5, 21, 37), 1), ((37, 3, 21), -1)]


def _on(device, *arrays):
    return [jax.device_put(a, device) for a in arrays]


def _gpu():
    return jax.devices("gpu")[0]


def _cpu():
    return jax.devices("cpu")[0]


def _assert_outputs_equal(outputs, expected):
    """spikes, v_final and v_seq (or None) bit for bit: the forwards compute the same
    operations."""
    (spikes, v_final, v_seq), (spikes_e, v_final_e, v_seq_e) = outputs, expected
    np.testing.assert_array_equal(np.asarray(spikes, np.float64), np.asarray(spikes_e, np.float64))
    np.testing.assert_array_equal(v_final, v_final_e)
    np.testing.assert_array_equal(v_seq, v_seq_e)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("store_v_seq", [False, True], ids=["", "store_v_seq"])
@pytest.mark.parametrize("detach_reset", [False, True], ids=["", "detach"])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: f"axis{l[1]}")
def test_cuda_matches_reference_and_cpu_kernel(layout, surrogate, v_reset, detach_reset,
                                               store_v_seq, dtype):
    shape, time_axis = layout
    x, v = make_inputs(shape, time_axis, dtype, seed=5)
    weights = jax.random.normal(jax.random.key(6), shape, jnp.float64)
    params = dict(surrogate=surrogate, v_reset=v_reset, detach_reset=detach_reset,
                  store_v_seq=store_v_seq, time_axis=time_axis)
    tol = TOLERANCES[jnp.dtype(dtype)]

    (gx, gv), (spikes, vf, vs) = loss_and_grads("ffi", *_on(_gpu(), x, v, weights), **params)
    assert next(iter(spikes.devices())).platform == "gpu"

    # One header, its fused multiply-adds explicit and no other contraction: bit-identical.
    (gx_c, gv_c), (spikes_c, vf_c, vs_c) = loss_and_grads("ffi", *_on(_cpu(), x, v, weights),
                                                          **params)
    _assert_outputs_equal((spikes, vf, vs), (spikes_c, vf_c, vs_c))  # (v_seq: None or both)
    # The surrogates' exp differs by an ulp or so between libm and CUDA.
    assert_close(gx, gx_c, tol["grad"], "grad x_seq vs CPU kernel")
    assert_close(gv, gv_c, tol["grad"], "grad v_init vs CPU kernel")

    (gx_r, gv_r), (spikes_r, vf_r, vs_r) = loss_and_grads("jax", *_on(_gpu(), x, v, weights),
                                                          **params)
    np.testing.assert_array_equal(np.asarray(spikes, np.float64), np.asarray(spikes_r, np.float64))
    assert_close(vf, vf_r, tol["v"], "v_final vs reference")
    if store_v_seq:
        assert_close(vs, vs_r, tol["v"], "v_seq vs reference")
    assert_close(gx, gx_r, tol["grad"], "grad x_seq vs reference")
    assert_close(gv, gv_r, tol["grad"], "grad v_init vs reference")


def test_backend_none_uses_the_cuda_kernel():
    x = jax.device_put(jnp.ones((4, 8), jnp.float32), _gpu())
    hlo = jax.jit(lambda x: jaxqif.qif_multistep(x)[0]).lower(x).as_text()
    assert "jaxqif_forward_v2" in hlo


def test_more_than_2_31_elements():
    """T x N > 2^31 in bfloat16: 64-bit indexing in forward and backward. The last neurons
    (the ones a 32-bit index would get wrong) are checked against the reference."""
    steps, neurons = 4, (1 << 29) + 3
    assert steps * neurons > 2**31
    key = jax.random.key(0)
    with jax.default_device(_gpu()):
        x = (jax.random.normal(key, (steps, neurons), jnp.float32) * 1.5 + 0.6).astype(jnp.bfloat16)
        g = jnp.ones((steps, neurons), jnp.bfloat16)

        def loss(x, g):
            spikes, v_final, _ = jaxqif.qif_multistep(x, backend="ffi")
            return jnp.sum(spikes.astype(jnp.float32) * g) + jnp.sum(v_final), (spikes, v_final)

        grad_x, (spikes, v_final) = jax.jit(jax.grad(loss, has_aux=True))(x, g)
        tail = slice(neurons - 4096, neurons)
        x_tail = x[:, tail]

        def loss_tail(x):
            spikes, v_final, _ = jaxqif.qif_multistep(x, backend="jax")
            return jnp.sum(spikes.astype(jnp.float32)) + jnp.sum(v_final), (spikes, v_final)

        grad_ref, (spikes_ref, v_final_ref) = jax.jit(jax.grad(loss_tail, has_aux=True))(x_tail)
        np.testing.assert_array_equal(np.asarray(spikes[:, tail], np.float32),
                                      np.asarray(spikes_ref, np.float32))
        assert_close(v_final[tail], v_final_ref, 1e-5, "v_final tail")
        assert_close(grad_x[:, tail], grad_ref, 1e-2, "grad_x tail")
        # and the first neurons, which any indexing gets right
        assert_close(grad_x[:, :4096], jax.jit(jax.grad(lambda x: loss_tail(x)[0]))(x[:, :4096]),
                     1e-2, "grad_x head")


# Each launch plan of the CUDA handlers (cuda/launch/plan.h, choose_plan), for every
# dtype: wide (16-byte groups; also with the time axis in the middle; a short sequence of 3
# steps), narrow (many neurons, odd innermost size), bulk shallow and bulk deep forward with
# the segmented backward (3 or 6 warps per 32 groups; 16), T long enough for the shared-memory
# rings to wrap around several times; two rows of 200 neurons (bulk deep, partial last boxes of
# neurons and of steps); staged shallow (more blocks than the bulk forward holds resident). The
# staged deep forward takes rows that are not whole 16-byte units (LAYOUTS, 16-bit types). No T
# but 3 is a multiple of a chunk or checkpoint interval.
LARGE_LAYOUTS = [((6, 1 << 21), 0), ((3, 6, 1 << 19), 1), ((3, 1 << 21), 0), ((5, 150001), 0),
                 ((50, 2, 20000), 0), ((301, 1000), 0), ((2, 70, 200), 1), ((9, 100000), 0)]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("layout", LARGE_LAYOUTS, ids=lambda l: f"{l[0]}")
def test_every_launch_configuration_matches_cpu_kernel(layout, v_reset, dtype):
    shape, time_axis = layout
    x, v = make_inputs(shape, time_axis, dtype, seed=12)
    weights = jax.random.normal(jax.random.key(13), shape, jnp.float64)
    params = dict(surrogate=jaxqif.surrogate.Erf(), v_reset=v_reset, store_v_seq=True,
                  time_axis=time_axis)
    (gx, gv), (spikes, vf, vs) = loss_and_grads("ffi", *_on(_gpu(), x, v, weights), **params)
    (gx_c, gv_c), (spikes_c, vf_c, vs_c) = loss_and_grads("ffi", *_on(_cpu(), x, v, weights),
                                                          **params)
    _assert_outputs_equal((spikes, vf, vs), (spikes_c, vf_c, vs_c))
    tol = TOLERANCES[jnp.dtype(dtype)]["grad"]
    assert_close(gx, gx_c, tol, "grad x_seq")
    assert_close(gv, gv_c, tol, "grad v_init")


@pytest.mark.parametrize("layout", [((9, 40), 0), ((301, 1000), 0), ((5, 150001), 0),
                                    ((6, 1 << 20), 0)],
                         ids=["staged", "staged-long", "narrow", "wide"])
def test_backward_without_spike_cotangent(layout):
    """A loss on v_final alone: the backward runs with no grad_spikes and no grad_v_seq."""
    shape, time_axis = layout
    x, v = make_inputs(shape, time_axis, jnp.float32, seed=14)
    loss = lambda x, v, backend: jnp.sum(jnp.sin(jaxqif.qif_multistep(x, v, backend=backend)[1]))
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)), static_argnums=2)
    gx, gv = grad(*_on(_gpu(), x, v), "ffi")
    gx_r, gv_r = grad(*_on(_gpu(), x, v), "jax")
    assert_close(gx, gx_r, 1e-5, "grad x_seq")
    assert_close(gv, gv_r, 1e-5, "grad v_init")


def _per_feature_loss_and_grads(device, x, v, weights, tau, v_threshold, **params):
    """loss_and_grads with tau and v_threshold given per feature, and their gradients too."""
    x, v, weights, tau, v_threshold = _on(device, x, v, weights, tau, v_threshold)

    def loss(x, v, tau, v_threshold):
        spikes, v_final, v_seq = jaxqif.qif_multistep(x, v, tau=tau, v_threshold=v_threshold,
                                                      backend="ffi", **params)
        total = jnp.sum(spikes.astype(jnp.float64) * weights) + jnp.sum(jnp.sin(v_final))
        return total + jnp.sum(v_seq * weights), (spikes, v_final, v_seq)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(x, v, tau, v_threshold)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("layout", LAYOUTS[:1] + LARGE_LAYOUTS, ids=lambda l: f"{l[0]}")
def test_every_launch_configuration_with_per_feature_parameters(layout, v_reset, dtype):
    """The per-neuron kernels in every launch plan they take (the wide layouts run narrow,
    launch/plan.h's per_neuron_plan), against the CPU kernel, parameter gradients included."""
    shape, time_axis = layout
    x, v = make_inputs(shape, time_axis, dtype, seed=21)
    weights = jax.random.normal(jax.random.key(22), shape, jnp.float64)
    features = shape[-1] if time_axis % len(shape) != len(shape) - 1 else shape[-2]
    state = jnp.float64 if dtype == jnp.float64 else jnp.float32
    rng = np.random.default_rng(23)
    tau = jnp.asarray(rng.uniform(1.5, 3.0, features), state)
    v_threshold = jnp.asarray(rng.uniform(0.9, 1.2, features), state)
    params = dict(v_reset=v_reset, store_v_seq=True, time_axis=time_axis)
    (gx, gv, gt, gth), (spikes, vf, vs) = _per_feature_loss_and_grads(
        _gpu(), x, v, weights, tau, v_threshold, **params)
    (gx_c, gv_c, gt_c, gth_c), (spikes_c, vf_c, vs_c) = _per_feature_loss_and_grads(
        _cpu(), x, v, weights, tau, v_threshold, **params)
    _assert_outputs_equal((spikes, vf, vs), (spikes_c, vf_c, vs_c))
    tol = TOLERANCES[jnp.dtype(dtype)]["grad"]
    assert_close(gx, gx_c, tol, "grad x_seq")
    assert_close(gv, gv_c, tol, "grad v_init")
    # (sums over every step and batch row: compared relative to their largest magnitude)
    assert_close(gt, gt_c, max(tol, 1e-5) * 4, "grad tau")
    assert_close(gth, gth_c, max(tol, 1e-5) * 4, "grad v_threshold")


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("layout", LAYOUTS[:1] + LARGE_LAYOUTS, ids=lambda l: f"{l[0]}")
def test_default_start_matches_cpu_kernel(layout, v_reset, dtype):
    """v_init=None in every launch plan: the kernels start from the default value themselves,
    with no v_init read and no grad_v_init written."""
    shape, time_axis = layout
    x, _ = make_inputs(shape, time_axis, dtype, seed=15)
    weights = jax.random.normal(jax.random.key(16), shape, jnp.float64)
    params = dict(v_reset=v_reset, store_v_seq=True, time_axis=time_axis)
    (gx, _), (spikes, vf, vs) = loss_and_grads("ffi", *_on(_gpu(), x), None,
                                               *_on(_gpu(), weights), **params)
    (gx_c, _), (spikes_c, vf_c, vs_c) = loss_and_grads("ffi", *_on(_cpu(), x), None,
                                                       *_on(_cpu(), weights), **params)
    _assert_outputs_equal((spikes, vf, vs), (spikes_c, vf_c, vs_c))
    assert_close(gx, gx_c, TOLERANCES[jnp.dtype(dtype)]["grad"], "grad x_seq")


@pytest.mark.parametrize("where", ["x", "v_init"])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: jnp.dtype(d).name)
def test_non_finite_values_agree_across_backends_on_gpu(dtype, v_reset, where):
    with jax.default_device(_gpu()):
        test_hardening.test_non_finite_values_agree_across_backends(dtype, v_reset, where)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("v_threshold", [1.0, 1e4, 1e5])
def test_surrogate_gradient_accuracy_on_gpu(surrogate, v_threshold):
    with jax.default_device(_gpu()):
        test_hardening.test_surrogate_gradient_accuracy_does_not_degrade_with_the_threshold(
            surrogate, v_threshold)
