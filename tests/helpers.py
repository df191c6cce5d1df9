"""Shared test helpers: inputs, tolerances and the two paths side by side."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxqif
from jaxqif import surrogate as sg

DTYPES = (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64)
SURROGATES = tuple(cls() for cls in sg.ALL)

# (forward v and gradients) relative tolerances, per input dtype. Half inputs keep float32
# state, so only their grad_x (rounded to the input dtype) is coarse.
TOLERANCES = {
    jnp.dtype(jnp.float16): dict(v=1e-5, grad=2e-3),
    jnp.dtype(jnp.bfloat16): dict(v=1e-5, grad=1e-2),
    jnp.dtype(jnp.float32): dict(v=1e-5, grad=1e-5),
    jnp.dtype(jnp.float64): dict(v=1e-12, grad=1e-12),
}


def make_inputs(shape, time_axis, dtype, seed=0):
    """Input currents that make neurons fire now and then, and a random v_init.

    The currents are clipped so that the soft reset stays bounded too: with a large input the
    quadratic term outruns the reset and V grows without limit, a regime where no two
    implementations can agree."""
    kx, kv = jax.random.split(jax.random.key(seed))
    x = jnp.clip(jax.random.normal(kx, shape, jnp.float64) * 0.8 + 0.4, -1.0, 1.2).astype(dtype)
    v_shape = tuple(np.delete(shape, time_axis % len(shape)))
    v = jax.random.uniform(kv, v_shape, jnp.float64, -0.1, 0.9)
    state = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    return x, v.astype(state)


def loss_and_grads(backend, x, v, weights, **params):
    """A scalar loss that uses every output, and its gradients w.r.t. x and v_init; with
    v=None (the default start), the gradient w.r.t. x alone (and None for v_init)."""

    def loss(x, v):
        spikes, v_final, v_seq = jaxqif.qif_multistep(x, v, backend=backend, **params)
        total = jnp.sum(spikes.astype(jnp.float64) * weights) + jnp.sum(jnp.sin(v_final))
        if v_seq is not None:
            total = total + jnp.sum(v_seq * weights)
        return total, (spikes, v_final, v_seq)

    if v is None:
        grad_x, outs = jax.jit(jax.grad(lambda x: loss(x, None), has_aux=True))(x)
        return (grad_x, None), outs
    return jax.jit(jax.grad(loss, argnums=(0, 1), has_aux=True))(x, v)


def assert_close(actual, expected, rtol, what):
    actual = np.asarray(jnp.asarray(actual, jnp.float64))
    expected = np.asarray(jnp.asarray(expected, jnp.float64))
    assert np.all(np.abs(expected) < 1e3), f"{what}: inputs left the bounded regime"
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=what)
