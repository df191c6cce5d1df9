"""The custom VJP against finite differences (float64), where it must be the true derivative:
v outputs with detach_reset=True, so no surrogate enters. Includes d/dv_init, which the seed
CuPy kernel got 1/tau too small."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxqif
from jaxqif import reference
from jaxqif._config import NeuronConfig

EPS = 1e-6


def _inputs_away_from_threshold(shape, config, seed):
    """Inputs whose H stays > 100 EPS from v_threshold, so finite differences never flip a spike."""
    for s in range(seed, seed + 200):
        kx, kv = jax.random.split(jax.random.key(s))
        x = jax.random.normal(kx, shape, jnp.float64) * 1.5 + 0.6
        v = jax.random.uniform(kv, shape[1:], jnp.float64, -0.1, 0.9)
        # H[t] - v_threshold via the reference: the spike output's pre-activation.
        h = []
        def body(v, x_t):
            c = config
            h_t = v + (x_t + c.a0 * (v - c.v_rest) * (v - c.v_c)) / c.tau
            return reference.step(config, x_t, v)[1], h_t
        _, h = jax.lax.scan(body, v, x)
        spikes = (h >= config.v_threshold).mean()
        if jnp.min(jnp.abs(h - config.v_threshold)) > 100 * EPS and 0.05 < spikes < 0.6:
            return x, v
    raise AssertionError("no suitable inputs found")


@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("params",
                         [{}, dict(tau=3.0, v_c=0.6, a0=0.8, v_threshold=1.2, v_rest=0.05)],
                         ids=["defaults", "custom"])
def test_vjp_equals_finite_differences(v_reset, params):
    config = NeuronConfig(v_reset=v_reset, detach_reset=True, **params)
    x, v = _inputs_away_from_threshold((8, 6), config, seed=11)

    def v_outputs(x, v):
        _, v_final, v_seq = jaxqif.qif_multistep(
            x, v, v_reset=v_reset, detach_reset=True, store_v_seq=True, backend="ffi", **params)
        return v_final, v_seq

    check_grads(v_outputs, (x, v), order=1, modes=["rev"], eps=EPS, atol=1e-6, rtol=1e-6)


def test_v_init_gradient_is_exact():
    """One step, no spike, reset detached: V[0] = H[0] = v + (x + a0 (v - v_rest)(v - v_c)) / tau,
    so dV[0]/dv = 1 + a0 (2 v - v_rest - v_c) / tau exactly."""
    v = jnp.array([0.1, 0.3, -0.05], jnp.float64)
    x = jnp.zeros((1, 3), jnp.float64)
    grad = jax.grad(lambda v: jaxqif.qif_multistep(
        x, v, detach_reset=True, backend="ffi")[1].sum())(v)
    np.testing.assert_allclose(grad, 1 + (2 * v - 0.0 - 0.8) / 2.0, rtol=1e-15)
