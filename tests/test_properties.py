"""Property-based parity of the fused kernels (forward and backward) with the pure-JAX path:
random shapes, ranks, time axes, parameters within the rules, surrogates, dtypes and inputs
that put H right at the threshold. Runs on the default device (the CPU kernel here, the CUDA
kernels on a GPU machine). Derandomized, so every run tries the same examples.

Spikes may differ only where H lies within rounding of v_threshold: the kernels evaluate the
charge with fused multiply-adds, XLA may or may not fuse the reference's, and an ulp of H decides
a spike there. After such a flip the two trajectories of that neuron part, so a neuron is
compared only up to its first flip, which must be at such a step; the rest are compared in
full.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import jaxqif
from jaxqif import surrogate as sg
from helpers import DTYPES, TOLERANCES

# Relative closeness of H to v_threshold, in units of the state dtype's epsilon, within which
# the two paths may disagree on a spike.
ROUNDING_ULPS = 8


@st.composite
def cases(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    time_axis = draw(st.integers(-rank, rank - 1))
    shape = list(shape)
    shape[time_axis] = draw(st.integers(1, 17))
    dtype = draw(st.sampled_from(DTYPES))
    surrogate_class = draw(st.sampled_from(sg.ALL))
    alpha = draw(st.floats(0.5, 5.0))
    v_threshold = draw(st.floats(0.3, 2.0))
    hard = draw(st.booleans())
    v_reset = draw(st.floats(-0.5, v_threshold - 0.1)) if hard else None
    low_rest = v_reset if hard else -0.5
    params = dict(
        # (a soft reset leaves V at H - v_threshold, from where a strong quadratic term can run
        # away to infinity: such examples are not compared, see `assume` below)
        tau=draw(st.floats(1.2, 5.0)), v_c=draw(st.floats(0.0, 1.5)), a0=draw(st.floats(0.2, 2.0)),
        v_threshold=v_threshold, v_rest=draw(st.floats(low_rest, low_rest + 0.5)),
        v_reset=v_reset, surrogate=surrogate_class(alpha=alpha),
        detach_reset=draw(st.booleans()), store_v_seq=draw(st.booleans()),
        time_axis=time_axis)
    seed = draw(st.integers(0, 2**31 - 1))
    at_threshold = draw(st.booleans())  # step 0's H placed right at v_threshold
    give_v_init = draw(st.booleans())
    return tuple(shape), dtype, params, seed, at_threshold, give_v_init


def _inputs(shape, dtype, params, seed, at_threshold, give_v_init):
    time_axis = params["time_axis"] % len(shape)
    state = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    rng = np.random.default_rng(seed)
    x = np.clip(rng.normal(0.4, 0.8, shape), -1.0, 1.2)
    neuron_shape = tuple(np.delete(shape, time_axis))
    v_start = params["v_reset"] if params["v_reset"] is not None else 0.0
    v = rng.uniform(-0.1, 0.9, neuron_shape) if give_v_init else np.full(neuron_shape, v_start)
    if at_threshold:  # x[0] such that H[0] = v_threshold, up to the rounding of x
        p = params
        charge = p["a0"] * (v - p["v_rest"]) * (v - p["v_c"])
        first = np.moveaxis(x, time_axis, 0)
        first[0] = p["tau"] * (p["v_threshold"] - v) - charge
    x = jnp.asarray(x, dtype)
    return x, (jnp.asarray(v, state) if give_v_init else None)


def _pre_activations(x, v_init, v_seq, params):
    """H[t] of the reference trajectory in float64, time first: charge(V[t-1], x[t])."""
    p = params
    time_axis = p["time_axis"] % x.ndim
    xs = np.moveaxis(np.asarray(x, np.float64), time_axis, 0)
    vs = np.moveaxis(np.asarray(v_seq, np.float64), time_axis, 0)
    v_prev = np.concatenate([np.asarray(v_init, np.float64)[None], vs[:-1]])
    return v_prev + (xs + p["a0"] * (v_prev - p["v_rest"]) * (v_prev - p["v_c"])) / p["tau"]


SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@SETTINGS
@given(cases())
def test_fused_kernels_match_the_pure_jax_path(case):
    _check(case)


@pytest.mark.gpu
@SETTINGS
@given(cases())
def test_cuda_kernels_match_the_pure_jax_path(case):
    with jax.default_device(jax.devices("gpu")[0]):
        _check(case)


def _check(case):
    shape, dtype, params, seed, at_threshold, give_v_init = case
    x, v = _inputs(*case)
    state = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    v_for_h = v if v is not None else jnp.full(
        np.delete(shape, params["time_axis"] % len(shape)),
        params["v_reset"] if params["v_reset"] is not None else 0.0, state)
    rng = np.random.default_rng(seed + 1)
    ct_spikes = jnp.asarray(rng.normal(size=shape), dtype)
    ct_v_final = jnp.asarray(rng.normal(size=v_for_h.shape), state)
    ct_v_seq = jnp.asarray(rng.normal(size=shape), state)

    results = {}
    for backend in ("ffi", "jax"):
        run_params = dict(params, store_v_seq=True)  # v_seq for H; its cotangent as asked

        def f(x, v):
            spikes, v_final, v_seq = jaxqif.qif_multistep(x, v, backend=backend, **run_params)
            return spikes, v_final, v_seq

        args = (x,) if v is None else (x, v)
        outs, vjp = jax.vjp(lambda *a: f(a[0], v if len(a) == 1 else a[1]), *args)
        grads = vjp((ct_spikes, ct_v_final,
                     ct_v_seq if params["store_v_seq"] else jnp.zeros_like(ct_v_seq)))
        results[backend] = (*outs, *grads)
    spikes, v_final, v_seq, grad_x, *grad_v = results["ffi"]
    spikes_r, v_final_r, v_seq_r, grad_x_r, *grad_v_r = results["jax"]
    # The bounded regime only: where V runs away, no two implementations agree (inf vs NaN
    # gradients, or just the rounding of huge numbers); tests/test_hardening.py covers
    # non-finite values on their own.
    assume(bool(np.all(np.abs(np.asarray(v_seq_r, np.float64)) < 1e3)))

    # Neurons whose spikes differ: the first difference must be where H is at the threshold.
    time_axis = params["time_axis"] % len(shape)
    flips = np.moveaxis(np.asarray(spikes, np.float64) != np.asarray(spikes_r, np.float64),
                        time_axis, 0)
    h = _pre_activations(x, v_for_h, v_seq_r, params)
    eps = float(jnp.finfo(state).eps)
    near = np.abs(h - params["v_threshold"]) <= ROUNDING_ULPS * eps * max(
        1.0, abs(params["v_threshold"]))
    first_flip = np.argmax(flips, axis=0)
    flipped = flips.any(axis=0)
    assert np.all(np.take_along_axis(near, first_flip[None], 0)[0][flipped]), (
        "spikes differ where H is not within rounding of v_threshold")

    # Everything else, neuron by neuron, for the neurons that never flipped.
    same = ~flipped
    tol = TOLERANCES[jnp.dtype(dtype)]
    in_time = lambda a: np.moveaxis(np.asarray(a, np.float64), time_axis, 0)[:, same]
    pairs = [(in_time(v_seq), in_time(v_seq_r), tol["v"], "v_seq"),
             (np.asarray(v_final, np.float64)[same], np.asarray(v_final_r, np.float64)[same],
              tol["v"], "v_final")]
    # A flip changes every earlier gradient of that neuron too (BPTT runs backwards).
    pairs.append((in_time(grad_x), in_time(grad_x_r), tol["grad"], "grad_x"))
    if grad_v:
        pairs.append((np.asarray(grad_v[0], np.float64)[same],
                      np.asarray(grad_v_r[0], np.float64)[same], tol["grad"], "grad_v_init"))
    for got, want, rtol, what in pairs:
        if want.size == 0:
            continue
        scale = max(1.0, float(np.max(np.abs(want))))
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)
