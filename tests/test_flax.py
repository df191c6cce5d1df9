"""The Flax layers (jaxqif.linen, jaxqif.nnx) against the functional API and each other."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import jaxqif
from helpers import make_inputs
from jaxqif import linen as qif_linen
from jaxqif import nnx as qif_nnx

BACKENDS = ("ffi", "jax")
# Away from every default, soft reset included, to check each field reaches the neuron.
CUSTOM = dict(tau=3.0, v_c=0.6, a0=0.9, v_threshold=1.2, v_rest=0.05, v_reset=None,
              surrogate=jaxqif.surrogate.ATan(alpha=3.0), detach_reset=True)
NEURON_SETTINGS = [{}, CUSTOM]
SETTINGS_IDS = ["defaults", "custom"]
# A linear loss of the three class scores: its gradient is not zero where the scores are.
CLASS_WEIGHTS = jnp.array([1.0, -2.0, 0.5], jnp.float32)


def assert_same(actual, expected):
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected))


def sequence(shape=(6, 3, 5), time_axis=0, dtype=jnp.float32, seed=0):
    """Input currents that make neurons fire now and then (time on time_axis)."""
    x, _ = make_inputs(shape, time_axis, dtype, seed)
    return x


# --- Linen ------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", NEURON_SETTINGS, ids=SETTINGS_IDS)
@pytest.mark.parametrize("time_axis", [0, 1, -1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_linen_qif_matches_functional(backend, time_axis, settings):
    x, v_init = make_inputs((6, 3, 5), time_axis, jnp.float32, seed=1)
    layer = qif_linen.QIF(time_axis=time_axis, backend=backend, **settings)
    spikes, v_final = layer.apply({}, x, v_init, return_state=True)
    expected = jaxqif.qif_multistep(x, v_init, time_axis=time_axis, backend=backend, **settings)
    assert spikes.dtype == jnp.float32 and v_final.dtype == jnp.float32
    assert_same(spikes, expected[0])
    assert_same(v_final, expected[1])
    assert 0 < float(spikes.mean()) < 1, "inputs should make some spikes"
    assert_same(layer.apply({}, x, v_init), spikes)  # return_state=False: the spikes alone


@pytest.mark.parametrize("settings", NEURON_SETTINGS, ids=SETTINGS_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_linen_rnn_of_cell_matches_qif(backend, settings):
    x = sequence((3, 7, 5), time_axis=1)  # nn.RNN's default layout: [batch, time, features]
    rnn = nn.RNN(qif_linen.QIFCell(**settings), return_carry=True)
    v_final, spikes = rnn.apply(rnn.init(jax.random.key(0), x), x)
    expected_spikes, expected_v = qif_linen.QIF(time_axis=1, backend=backend, **settings).apply(
        {}, x, return_state=True
    )
    assert_same(spikes, expected_spikes)
    np.testing.assert_allclose(v_final, expected_v, rtol=1e-6, atol=1e-6)


def test_linen_rnn_of_cell_float64():
    x = sequence((2, 6, 4), time_axis=1, dtype=jnp.float64)
    rnn = nn.RNN(qif_linen.QIFCell(carry_dtype=jnp.float64), return_carry=True)
    v_final, spikes = rnn.apply({}, x)
    expected_spikes, expected_v = qif_linen.QIF(time_axis=1).apply({}, x, return_state=True)
    assert v_final.dtype == jnp.float64 and spikes.dtype == jnp.float64
    assert_same(spikes, expected_spikes)
    np.testing.assert_allclose(v_final, expected_v, rtol=1e-12, atol=1e-12)


def test_linen_cell_carry():
    cell = qif_linen.QIFCell()
    carry = cell.initialize_carry(jax.random.key(0), (2, 3))
    assert carry.shape == (2, 3) and carry.dtype == jnp.float32
    assert_same(carry, np.full((2, 3), -0.1, np.float32))
    soft = qif_linen.QIFCell(v_reset=None, carry_dtype=jnp.float64)
    carry = soft.initialize_carry(jax.random.key(0), (4,))
    assert carry.dtype == jnp.float64
    assert_same(carry, np.zeros(4))
    assert cell.num_feature_axes == 1
    # One step by hand is qif_step.
    x = sequence((4,), seed=2)
    v = jnp.linspace(-0.1, 0.9, 4, dtype=jnp.float32)
    v_next, spike = cell.apply({}, v, x)
    expected_spike, expected_v = jaxqif.qif_step(x, v)
    assert_same(spike, expected_spike)
    assert_same(v_next, expected_v)


def test_linen_cell_errors():
    with pytest.raises(TypeError, match="carry_dtype=jnp.float64"):
        qif_linen.QIFCell().apply({}, jnp.zeros(3, jnp.float32), jnp.ones(3, jnp.float64))
    with pytest.raises(ValueError, match="carry_dtype must be float32"):
        qif_linen.QIFCell(carry_dtype=jnp.float16).initialize_carry(jax.random.key(0), (3,))
    with pytest.raises(ValueError, match="tau must be > 1"):
        qif_linen.QIFCell(tau=0.5).initialize_carry(jax.random.key(0), (3,))


def test_linen_fields_checked_when_called():
    x = sequence()
    layer = qif_linen.QIF(tau=0.5)  # building the layer checks nothing yet
    with pytest.raises(ValueError, match="tau must be > 1"):
        layer.apply({}, x)
    with pytest.raises(ValueError, match="backend must be one of"):
        qif_linen.QIF(backend="cuda").apply({}, x)
    with pytest.raises(TypeError, match="return_state must be a bool"):
        qif_linen.QIF().apply({}, x, return_state="yes")


class LinenSpikingMLP(nn.Module):
    backend: str = "ffi"

    @nn.compact
    def __call__(self, x_seq):  # [time, batch, features]
        spikes = qif_linen.QIF(backend=self.backend)(nn.Dense(8)(x_seq))
        spikes = qif_linen.QIF(backend=self.backend)(nn.Dense(8)(spikes))
        return nn.Dense(3)(spikes).mean(axis=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linen_gradients_finite_and_nonzero(backend):
    model = LinenSpikingMLP(backend=backend)
    x = 4.0 * sequence((5, 4, 6))  # strong enough for the second layer to spike too
    params = model.init(jax.random.key(0), x)["params"]

    def loss(params):
        return jnp.sum(model.apply({"params": params}, x) * CLASS_WEIGHTS)

    grads = jax.jit(jax.grad(loss))(params)
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert jnp.all(jnp.isfinite(g)), path
        assert jnp.any(g != 0), path


def test_linen_jit_and_vmap_of_apply():
    model = LinenSpikingMLP()
    x = 2.0 * sequence((5, 4, 6))
    variables = model.init(jax.random.key(0), x)
    eager = model.apply(variables, x)
    np.testing.assert_allclose(jax.jit(model.apply)(variables, x), eager, rtol=1e-6, atol=1e-6)
    # vmap over an extra leading axis: three independent sequences.
    xs = jnp.stack([x, 0.5 * x, -x + 1.0])
    batched = jax.vmap(model.apply, in_axes=(None, 0))(variables, xs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], model.apply(variables, xs[i]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("time_axis", [0, 1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_linen_streaming_equals_one_call(backend, time_axis):
    x = sequence((9, 4, 3) if time_axis == 0 else (4, 9, 3), time_axis)
    first, second = jnp.split(x, [4], axis=time_axis)
    layer = qif_linen.QIF(time_axis=time_axis, backend=backend)
    spikes_1, v = layer.apply({}, first, return_state=True)
    spikes_2, v = layer.apply({}, second, v, return_state=True)
    whole_spikes, whole_v = layer.apply({}, x, return_state=True)
    assert_same(jnp.concatenate([spikes_1, spikes_2], axis=time_axis), whole_spikes)
    assert_same(v, whole_v)


def test_linen_sows_v_seq():
    x = sequence((6, 3, 5), time_axis=1)
    layer = qif_linen.QIF(time_axis=1, store_v_seq=True)
    (spikes, v_final), state = layer.apply(
        {}, x, return_state=True, mutable=["intermediates"]
    )
    (v_seq,) = state["intermediates"]["v_seq"]
    expected = jaxqif.qif_multistep(x, time_axis=1, store_v_seq=True)
    assert_same(v_seq, expected[2])
    assert_same(v_seq[:, -1], v_final)
    # Without store_v_seq nothing is sown.
    _, state = qif_linen.QIF(time_axis=1).apply({}, x, mutable=["intermediates"])
    assert not state.get("intermediates")


# --- NNX --------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", NEURON_SETTINGS, ids=SETTINGS_IDS)
@pytest.mark.parametrize("time_axis", [0, -1])
@pytest.mark.parametrize("backend", BACKENDS)
def test_nnx_qif_matches_functional(backend, time_axis, settings):
    x, v_init = make_inputs((6, 3, 5), time_axis, jnp.float32, seed=1)
    layer = qif_nnx.QIF(time_axis=time_axis, backend=backend, **settings)
    spikes, v_final = layer(x, v_init, return_state=True)
    expected = jaxqif.qif_multistep(x, v_init, time_axis=time_axis, backend=backend, **settings)
    assert_same(spikes, expected[0])
    assert_same(v_final, expected[1])
    assert_same(layer(x, v_init), spikes)


@pytest.mark.parametrize("settings", NEURON_SETTINGS, ids=SETTINGS_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nnx_rnn_of_cell_matches_qif(backend, settings):
    x = sequence((3, 7, 5), time_axis=1)  # nnx.RNN's default layout: [batch, time, features]
    v_final, spikes = nnx.RNN(qif_nnx.QIFCell(**settings), return_carry=True)(x)
    expected_spikes, expected_v = qif_nnx.QIF(time_axis=1, backend=backend, **settings)(
        x, return_state=True
    )
    assert_same(spikes, expected_spikes)
    np.testing.assert_allclose(v_final, expected_v, rtol=1e-6, atol=1e-6)


def test_nnx_cell_carry_and_errors():
    cell = qif_nnx.QIFCell()
    carry = cell.initialize_carry((2, 3))
    assert carry.dtype == jnp.float32
    assert_same(carry, np.full((2, 3), -0.1, np.float32))
    carry = qif_nnx.QIFCell(v_reset=None, carry_dtype=jnp.float64).initialize_carry((4,))
    assert carry.dtype == jnp.float64
    assert_same(carry, np.zeros(4))
    assert cell.num_feature_axes == 1
    x = sequence((2, 6, 4), time_axis=1, dtype=jnp.float64)
    spikes = nnx.RNN(qif_nnx.QIFCell(carry_dtype=jnp.float64))(x)
    assert_same(spikes, qif_nnx.QIF(time_axis=1)(x))
    with pytest.raises(TypeError, match="carry_dtype=jnp.float64"):
        nnx.RNN(qif_nnx.QIFCell())(x)
    with pytest.raises(ValueError, match="tau must be > 1"):
        qif_nnx.QIF(tau=0.5)(x)


class NnxSpikingMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, backend: str = "ffi"):
        self.hidden_1 = nnx.Linear(6, 8, rngs=rngs)
        self.qif_1 = qif_nnx.QIF(backend=backend)
        self.hidden_2 = nnx.Linear(8, 8, rngs=rngs)
        self.qif_2 = qif_nnx.QIF(backend=backend)
        self.readout = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x_seq):  # [time, batch, features]
        spikes = self.qif_2(self.hidden_2(self.qif_1(self.hidden_1(x_seq))))
        return self.readout(spikes).mean(axis=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nnx_gradients_finite_and_nonzero(backend):
    model = NnxSpikingMLP(nnx.Rngs(0), backend=backend)
    x = 4.0 * sequence((5, 4, 6))  # strong enough for the second layer to spike too
    grads = nnx.jit(nnx.grad(lambda model: jnp.sum(model(x) * CLASS_WEIGHTS)))(model)
    leaves = jax.tree_util.tree_leaves_with_path(grads)
    assert len(leaves) == 6  # kernel and bias of three Linear layers
    for path, g in leaves:
        assert jnp.all(jnp.isfinite(g)), path
        assert jnp.any(g != 0), path


def test_nnx_jit_and_vmap():
    model = NnxSpikingMLP(nnx.Rngs(0))
    x = 2.0 * sequence((5, 4, 6))
    eager = model(x)
    jitted = nnx.jit(lambda model, x: model(x))(model, x)
    np.testing.assert_allclose(jitted, eager, rtol=1e-6, atol=1e-6)
    xs = jnp.stack([x, 0.5 * x, -x + 1.0])
    batched = nnx.vmap(lambda model, x: model(x), in_axes=(None, 0))(model, xs)
    for i in range(3):
        np.testing.assert_allclose(batched[i], model(xs[i]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nnx_streaming_equals_one_call(backend):
    x = sequence((9, 4, 3))
    layer = qif_nnx.QIF(backend=backend)
    spikes_1, v = layer(x[:4], return_state=True)
    spikes_2, v = layer(x[4:], v, return_state=True)
    whole_spikes, whole_v = layer(x, return_state=True)
    assert_same(jnp.concatenate([spikes_1, spikes_2]), whole_spikes)
    assert_same(v, whole_v)


def test_nnx_sows_v_seq():
    x = sequence((6, 3, 5))
    layer = qif_nnx.QIF(store_v_seq=True)
    if hasattr(nnx, "capture"):  # newer Flax: sow outside nnx.capture is deprecated
        _, intermediates = nnx.capture(layer, nnx.Intermediate)(x)
    else:
        layer(x)
        intermediates = nnx.pop(layer, nnx.Intermediate)
    (v_seq,) = jax.tree.leaves(intermediates)
    assert_same(v_seq, jaxqif.qif_multistep(x, store_v_seq=True)[2])


def test_every_entry_point_has_the_model_defaults():
    """The neuron defaults are spelled out in every signature (for readers and IDEs): they must
    all be the model's (SpikingJelly 2.0's QIFNode), as NeuronConfig holds them."""
    import dataclasses
    import inspect

    from jaxqif._config import NeuronConfig

    model = dict(tau=2.0, v_c=0.8, a0=1.0, v_threshold=1.0, v_rest=0.0, v_reset=-0.1,
                 surrogate=jaxqif.surrogate.Sigmoid(alpha=4.0), detach_reset=False)
    config = NeuronConfig()
    assert {name: getattr(config, name) for name in model} == model
    signatures = {"qif_multistep": jaxqif.qif_multistep, "qif_step": jaxqif.qif_step,
                  "nnx.QIF": qif_nnx.QIF.__init__, "nnx.QIFCell": qif_nnx.QIFCell.__init__}
    for where, fn in signatures.items():
        parameters = inspect.signature(fn).parameters
        assert {name: parameters[name].default for name in model} == model, where
    for module in (qif_linen.QIF, qif_linen.QIFCell):
        fields = {f.name: f.default for f in dataclasses.fields(module)}
        assert {name: fields[name] for name in model} == model, module.__name__


@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_take_a_broadcast_v_init(backend):
    """A scalar or per-feature v_init, as in qif_multistep, for Linen and NNX alike."""
    x = sequence((6, 3, 5), time_axis=0)
    for v_init in (jnp.float32(0.2), jnp.linspace(-0.1, 0.5, 5, dtype=jnp.float32)):
        full = jnp.broadcast_to(v_init, (3, 5))
        linen_layer = qif_linen.QIF(backend=backend)
        assert_same(linen_layer.apply({}, x, v_init), linen_layer.apply({}, x, full))
        nnx_layer = qif_nnx.QIF(backend=backend)
        assert_same(nnx_layer(x, v_init), nnx_layer(x, full))


# --- learnable neuron parameters -------------------------------------------------------------

LEARNABLE = ("tau", "v_threshold", "a0", "v_rest", "v_c", "v_reset")


@pytest.mark.parametrize("backend", BACKENDS)
def test_linen_learnable_parameters_start_at_the_numbers_and_train(backend):
    x = sequence((6, 3, 5), time_axis=0)
    layer = qif_linen.QIF(learnable=LEARNABLE, backend=backend)
    variables = layer.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables) == {"params": {n: (5,) for n in LEARNABLE}}
    # at their starting values they are the numbers: the layer gives what it gives without them
    assert_same(layer.apply(variables, x), qif_linen.QIF(backend=backend).apply({}, x))
    loss = lambda params: jnp.sum(jnp.sin(layer.apply({"params": params}, x,
                                                      return_state=True)[1]))
    grads = jax.grad(loss)(variables["params"])
    for name, grad in grads.items():
        assert grad.shape == (5,) and bool(jnp.all(jnp.isfinite(grad))), name
        assert bool(jnp.any(grad != 0)), name


def test_linen_learnable_values_stay_valid_whatever_the_stored_numbers():
    x = sequence((6, 3, 5), time_axis=0)
    layer = qif_linen.QIF(learnable=("tau", "a0", "v_threshold", "v_rest"), backend="jax")
    params = {name: jnp.linspace(-30.0, 30.0, 5) for name in ("tau", "a0", "v_threshold",
                                                              "v_rest")}
    from jaxqif._layers import constrained
    values = constrained(layer, params)
    assert bool(jnp.all(values["tau"] > 1)) and bool(jnp.all(values["a0"] > 0))
    assert bool(jnp.all(values["v_threshold"] > layer.v_reset))
    assert bool(jnp.all(values["v_rest"] >= layer.v_reset))
    layer.apply({"params": params}, x)  # accepted: every rule holds


def test_linen_learnable_param_axis():
    x = sequence((3, 5, 6), time_axis=1)  # [batch, time, features]
    per_feature = qif_linen.QIF(learnable=("tau",), time_axis=1, backend="jax")
    assert per_feature.init(jax.random.key(0), x)["params"]["tau"].shape == (6,)
    per_batch_row = qif_linen.QIF(learnable=("tau",), time_axis=1, param_axis=0, backend="jax")
    variables = per_batch_row.init(jax.random.key(0), x)
    assert variables["params"]["tau"].shape == (3,)
    assert_same(per_batch_row.apply(variables, x),
                qif_linen.QIF(time_axis=1, backend="jax").apply({}, x))
    shared = qif_linen.QIF(learnable=("tau",), time_axis=1, param_axis=None, backend="jax")
    assert shared.init(jax.random.key(0), x)["params"]["tau"].shape == ()
    with pytest.raises(ValueError, match="param_axis 1 is the time axis"):
        qif_linen.QIF(learnable=("tau",), time_axis=1, param_axis=1).init(jax.random.key(0), x)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(learnable=("tau", "tau")), ValueError, "at most once"),
    (dict(learnable=("beta",)), ValueError, "at most once"),
    (dict(learnable="tau"), TypeError, "tuple of parameter names"),
    (dict(learnable=("v_reset",), v_reset=None), ValueError, "soft reset"),
    (dict(learnable=("tau",), tau=0.5), ValueError, "tau must be > 1"),
])
def test_learnable_errors(kwargs, error, match):
    x = sequence((4, 2, 3))
    with pytest.raises(error, match=match):
        qif_linen.QIF(**kwargs).init(jax.random.key(0), x)
    with pytest.raises(error, match=match):
        qif_nnx.QIF(num_features=3, **kwargs)


def test_linen_rnn_of_learnable_cell():
    x = sequence((3, 7, 5), time_axis=1)
    rnn = nn.RNN(qif_linen.QIFCell(learnable=("tau", "v_threshold")))
    variables = rnn.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables["params"]) == {
        "cell": {"tau": (5,), "v_threshold": (5,)}}
    assert_same(rnn.apply(variables, x), qif_linen.QIF(time_axis=1).apply({}, x))
    grads = jax.grad(lambda p: rnn.apply({"params": p}, x).sum() * 0 + jnp.sum(
        nn.RNN(qif_linen.QIFCell(learnable=("tau", "v_threshold")), return_carry=True).apply(
            {"params": p}, x)[0]))(variables["params"])
    assert all(bool(jnp.any(g != 0)) for g in jax.tree.leaves(grads))


@pytest.mark.parametrize("backend", BACKENDS)
def test_nnx_learnable_parameters(backend):
    x = sequence((6, 3, 5), time_axis=0)
    layer = qif_nnx.QIF(learnable=("tau", "v_threshold"), num_features=5, backend=backend)
    params = nnx.state(layer, nnx.Param)
    assert {k: v[...].shape for k, v in params["learned"].items()} == {
        "tau": (5,), "v_threshold": (5,)}
    assert_same(layer(x), qif_nnx.QIF(backend=backend)(x))
    grads = nnx.grad(lambda m: jnp.sum(jnp.sin(m(x, return_state=True)[1])))(layer)
    for name, grad in grads["learned"].items():
        assert bool(jnp.any(grad[...] != 0)), name
    with pytest.raises(ValueError, match="pass num_features"):
        qif_nnx.QIF(learnable=("tau",))
    with pytest.raises(ValueError, match="has 4"):
        qif_nnx.QIF(learnable=("tau",), num_features=5)(sequence((6, 3, 4)))
