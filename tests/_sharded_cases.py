"""Sharding cases that need 8 devices. XLA fixes the CPU device count when JAX starts, so
`test_transforms.py::test_sharded_cases` runs this file in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=8; on its own it skips.

A mesh of 4 x 2 CPU devices: "data" over a batch axis, "model" over a neuron axis."""

import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

import jaxqif
from jaxqif import _library
from helpers import make_inputs

COLLECTIVES = ("all-gather", "all-to-all", "all-reduce", "reduce-scatter", "collective-permute")


@pytest.fixture(autouse=True)
def _eight_devices():
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices; test_transforms.py runs this file with 8 CPU devices")


def _mesh(axis_types=AxisType.Auto):
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_types,) * 2)


def compiled_collectives(jitted, *args) -> list[str]:
    """The collective instructions in the optimized HLO of `jitted` for `args`."""
    hlo = jitted.lower(*args).compile().as_text()
    return [line.strip() for line in hlo.splitlines() if any(f" {c}(" in line for c in COLLECTIVES)]


def forward_and_backward(time_axis):
    """Every output, and a VJP that feeds every cotangent to the backward kernel."""
    def forward(x, v):
        return jaxqif.qif_multistep(x, v, store_v_seq=True, time_axis=time_axis)

    def backward(x, v, ct):
        (spikes, v_final, v_seq), vjp = jax.vjp(forward, x, v)
        return vjp((ct.astype(spikes.dtype), jnp.sin(v_final), ct.astype(v_seq.dtype)))

    return forward, backward


def assert_sharded_like_unsharded(mesh, shape, time_axis, x_spec, dtype=jnp.float32):
    """Forward and backward, jitted on inputs sharded by `x_spec` (and v_init by the same spec
    without time): no collective at all, outputs sharded like the inputs, and results equal to
    the unsharded ones, bit for bit (every neuron runs the same arithmetic either way)."""
    x, v = make_inputs(shape, time_axis, dtype)
    ct = jax.random.normal(jax.random.key(1), shape, jnp.float64).astype(dtype)
    v_spec = P(*(a for i, a in enumerate(x_spec) if i != time_axis % len(shape)))
    x_sh, v_sh = NamedSharding(mesh, x_spec), NamedSharding(mesh, v_spec)
    forward, backward = forward_and_backward(time_axis)
    for f, inputs, out_shardings in ((forward, (x, v), (x_sh, v_sh, x_sh)),
                                     (backward, (x, v, ct), (x_sh, v_sh))):
        jitted = jax.jit(f)
        placed = [jax.device_put(a, s) for a, s in zip(inputs, (x_sh, v_sh, x_sh))]
        assert compiled_collectives(jitted, *placed) == []
        for out, ref, sharding in zip(jitted(*placed), jitted(*inputs), out_shardings):
            assert out.sharding.is_equivalent_to(sharding, out.ndim), (out.sharding, sharding)
            np.testing.assert_array_equal(out, ref)


LAYOUTS = [  # (shape, time_axis, x spec): data parallel over a batch axis, model over neurons
    ((6, 8, 4), 0, P(None, "data", "model")),
    ((8, 6, 4), 1, P("data", None, "model")),
    ((8, 4, 6), -1, P("data", "model", None)),
    ((6, 16), 0, P(None, ("data", "model"))),  # one neuron axis over all 8 devices
    ((8, 6, 4), 1, P("data", None, None)),  # neurons replicated
    ((20, 8, 4), 0, P(None, "data", "model")),  # T > 8: the forward saves checkpoints
]


@pytest.mark.parametrize("axis_types", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: f"T{l[0][l[1]]}-axis{l[1]}-{l[2]}")
def test_neuron_sharding_needs_no_communication(layout, axis_types):
    shape, time_axis, x_spec = layout
    assert_sharded_like_unsharded(_mesh(axis_types), shape, time_axis, x_spec)


def test_bfloat16_and_float64():
    for dtype in (jnp.bfloat16, jnp.float64):
        assert_sharded_like_unsharded(_mesh(), (6, 8, 4), 0, P(None, "data", "model"), dtype)


def test_eager_calls_stay_sharded():
    mesh = _mesh()
    x, v = make_inputs((6, 8, 4), 0, jnp.float32)
    x_sh = NamedSharding(mesh, P(None, "data", "model"))
    v_sh = NamedSharding(mesh, P("data", "model"))
    spikes, v_final, _ = jaxqif.qif_multistep(jax.device_put(x, x_sh), jax.device_put(v, v_sh))
    assert spikes.sharding.is_equivalent_to(x_sh, 3) and v_final.sharding.is_equivalent_to(v_sh, 2)
    for out, ref in zip((spikes, v_final), jaxqif.qif_multistep(x, v)):
        np.testing.assert_array_equal(out, ref)


def test_sharded_time_axis_is_gathered_with_a_warning():
    mesh = _mesh()
    x, v = make_inputs((8, 6, 4), 0, jnp.float32)
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None, "model")))
    vs = jax.device_put(v, NamedSharding(mesh, P(None, "model")))
    forward, backward = forward_and_backward(0)
    with pytest.warns(RuntimeWarning, match=r"sharded along its time axis \(0\); it is gathered"):
        spikes, v_final, v_seq = jax.jit(forward)(xs, vs)
    ref = forward(x, v)
    for out, expected in zip((spikes, v_final, v_seq), ref):
        np.testing.assert_array_equal(out, expected)
    assert spikes.sharding.is_equivalent_to(NamedSharding(mesh, P(None, None, "model")), 3)
    with pytest.warns(RuntimeWarning, match="time axis"):
        grads = jax.jit(backward)(xs, vs, xs)
    for out, expected in zip(grads, backward(x, v, x)):
        np.testing.assert_array_equal(out, expected)


def test_time_sharded_output_leaves_the_kernel_alone():
    """Asking for outputs sharded along time does not shard the kernel's input along time (which
    would take a gather): each time axis of the sharding rule is a factor of its own."""
    mesh = _mesh()
    x, v = make_inputs((8, 6, 4), 0, jnp.float32)
    shard = lambda *spec: NamedSharding(mesh, P(*spec))
    f = jax.jit(lambda x, v: jnp.sin(x) + jaxqif.qif_multistep(2 * x, v)[0],
                out_shardings=shard("data", None, "model"))
    args = jax.device_put(x, shard(None, None, "model")), jax.device_put(v, shard(None, "model"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not [c for c in compiled_collectives(f, *args) if "all-gather" in c]
        np.testing.assert_array_equal(f(*args), jnp.sin(x) + jaxqif.qif_multistep(2 * x, v)[0])


def test_gspmd_partitioner_gathers_instead():
    """The sharding rule is Shardy's (JAX's default); under the deprecated GSPMD partitioner the
    kernel runs unpartitioned on gathered operands, with the same results."""
    x, v = make_inputs((6, 8, 4), 0, jnp.float32)
    mesh = _mesh()
    xs = jax.device_put(x, NamedSharding(mesh, P(None, "data", "model")))
    vs = jax.device_put(v, NamedSharding(mesh, P("data", "model")))
    forward, backward = forward_and_backward(0)
    jax.config.update("jax_use_shardy_partitioner", False)
    try:
        outs = jax.jit(forward)(xs, vs), jax.jit(backward)(xs, vs, xs)
    finally:
        jax.config.update("jax_use_shardy_partitioner", True)
    expected = forward(x, v), backward(x, v, x)
    for got, want in zip(jax.tree.leaves(outs), jax.tree.leaves(expected)):
        np.testing.assert_array_equal(got, want)


def test_vmap_and_scan_under_sharding():
    """vmap over a sharded batch axis, and a chunked lax.scan with v carried: still local."""
    mesh = _mesh()
    x, v = make_inputs((8, 6, 4), 1, jnp.float32)  # (batch, T, neurons)
    xs = jax.device_put(x, NamedSharding(mesh, P("data", None, "model")))
    vs = jax.device_put(v, NamedSharding(mesh, P("data", "model")))

    def per_example(x, v):  # x: (T, neurons)
        return jaxqif.qif_multistep(x, v)[0]

    batched = jax.jit(jax.vmap(per_example))
    assert compiled_collectives(batched, xs, vs) == []
    np.testing.assert_array_equal(batched(xs, vs), jax.vmap(per_example)(x, v))

    def chunked_loss(x, v):  # two chunks of 3 steps along time (axis 1)
        def chunk(v, x_chunk):
            spikes, v, _ = jaxqif.qif_multistep(x_chunk, v, time_axis=1)
            return v, spikes
        chunks = jnp.stack(jnp.split(x, 2, axis=1))
        v_final, spikes = jax.lax.scan(chunk, v, chunks)
        return jnp.sum(spikes * 0.5) + jnp.sum(jnp.sin(v_final))

    grad = jax.jit(jax.grad(chunked_loss, argnums=(0, 1)))
    gx, gv = grad(xs, vs)
    assert gx.sharding.spec == P("data", None, "model") and gv.sharding.spec == P("data", "model")
    for out, ref in zip((gx, gv), jax.grad(chunked_loss, argnums=(0, 1))(x, v)):
        np.testing.assert_allclose(out, ref, rtol=1e-6)


@pytest.mark.parametrize("steps", [6, 20], ids=["T6", "T20"])  # without and with checkpoints
@pytest.mark.parametrize("backend", ["ffi", "jax"])
@pytest.mark.parametrize("v_init", ["given", "none"])
def test_inside_shard_map(v_init, backend, steps):
    mesh = _mesh()
    x, v = make_inputs((steps, 8, 4), 0, jnp.float32)
    specs = (P(None, "data", "model"), P("data", "model"))

    def loss(x, v):
        spikes, v_final, _ = jaxqif.qif_multistep(x, v if v_init == "given" else None,
                                                  backend=backend)
        return jnp.sum(spikes * x) + jnp.sum(v_final ** 2)

    def local(x, v):  # the loss of this device's block, summed over devices
        return jax.lax.psum(loss(x, v), ("data", "model"))

    # (the pure-JAX path is compiled differently sharded and not, so its float32 rounding may
    # differ by a few ulp; the kernels' arithmetic is the same either way)
    rtol = 1e-6 if backend == "ffi" else 1e-5
    sharded = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P()))
    np.testing.assert_allclose(sharded(x, v), loss(x, v), rtol=rtol)
    grads = jax.jit(jax.grad(jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P()),
                             argnums=(0, 1)))(x, v)
    for out, ref in zip(grads, jax.grad(loss, argnums=(0, 1))(x, v)):
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol / 10)


def test_inside_shard_map_over_some_mesh_axes():
    """shard_map manual over "data" only, "model" left to the partitioner."""
    mesh = _mesh()
    x, v = make_inputs((6, 8, 4), 0, jnp.float32)
    sharded = lambda a, spec: jax.device_put(a, NamedSharding(mesh, spec))
    xs, vs = sharded(x, P(None, "data", "model")), sharded(v, P("data", "model"))

    def loss(x, v):
        spikes, v_final, _ = jaxqif.qif_multistep(x, v)
        return jnp.sum(spikes * x) + jnp.sum(v_final ** 2)

    local = jax.shard_map(lambda x, v: jax.lax.psum(loss(x, v), "data"), mesh=mesh,
                          in_specs=(P(None, "data"), P("data")), out_specs=P(),
                          axis_names={"data"})
    np.testing.assert_allclose(jax.jit(local)(xs, vs), loss(x, v), rtol=1e-6)
    grads = jax.jit(jax.grad(local, argnums=(0, 1)))(xs, vs)
    for out, ref in zip(grads, jax.grad(loss, argnums=(0, 1))(x, v)):
        np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend", ["ffi", "jax"])
def test_shared_v_init_gradient_is_summed_over_devices(backend):
    """Inside shard_map, a v_init that is the same on every device (here a scalar, broadcast
    to the neurons) gets the sum of the devices' gradients, as it would from any other op."""
    mesh = _mesh()
    x, _ = make_inputs((6, 8), 0, jnp.float32)
    v0 = jnp.float32(0.1)

    def loss(x, v0):
        return jnp.sum(jaxqif.qif_multistep(x, v0, backend=backend)[1])

    local = lambda x, v0: jax.lax.psum(loss(x, v0), "data")
    sharded = jax.shard_map(local, mesh=mesh, in_specs=(P(None, "data"), P()), out_specs=P())
    np.testing.assert_allclose(jax.jit(jax.grad(sharded, argnums=1))(x, v0),
                               jax.grad(loss, argnums=1)(x, v0), rtol=1e-6)


def test_sharded_export_through_shard_map():
    """A jit with sharded inputs partitions through a compile-time callback, which jax.export
    cannot serialize; the same computation written with shard_map exports and runs sharded."""
    mesh = _mesh()
    x, v = make_inputs((6, 8, 4), 0, jnp.float32)
    specs = (P(None, "data", "model"), P("data", "model"))
    shardings = [NamedSharding(mesh, s) for s in specs]
    f = jax.shard_map(lambda x, v: jaxqif.qif_multistep(x, v)[:2], mesh=mesh, in_specs=specs,
                      out_specs=specs)
    checks = [jax.export.DisabledSafetyCheck.custom_call(t)
              for t in (_library.FORWARD_TARGET, _library.BACKWARD_TARGET)]
    arg_types = [jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s)
                 for a, s in zip((x, v), shardings)]
    exported = jax.export.export(jax.jit(f), disabled_checks=checks, platforms=["cpu"])(*arg_types)
    restored = jax.export.deserialize(exported.serialize())
    assert restored.nr_devices == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs = restored.call(*(jax.device_put(a, s) for a, s in zip((x, v), shardings)))
    for out, ref in zip(outs, jaxqif.qif_multistep(x, v)[:2]):
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("axis_types", [AxisType.Auto, AxisType.Explicit], ids=["auto", "explicit"])
def test_per_feature_parameters_shard_like_the_features(axis_types):
    """x[T, batch, features] sharded data x model, tau and v_threshold per feature sharded over
    "model": no collective on x or the state (the parameter gradients are summed over the
    batch, which spans devices: that one reduction is the only collective), and every result
    equals the unsharded one."""
    mesh = _mesh(axis_types)
    x, v = make_inputs((20, 8, 4), 0, jnp.float32)
    tau = jnp.linspace(1.5, 3.0, 4, dtype=jnp.float32)
    th = jnp.linspace(0.9, 1.2, 4, dtype=jnp.float32)

    def loss(x, v, tau, th):
        spikes, v_final, _ = jaxqif.qif_multistep(x, v, tau=tau, v_threshold=th)
        return jnp.sum(spikes * x) + jnp.sum(v_final ** 2)

    specs = (P(None, "data", "model"), P("data", "model"), P("model"), P("model"))
    placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip((x, v, tau, th), specs)]
    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    hlo = grad.lower(*placed).compile().as_text()
    gathers = [l for l in hlo.splitlines() if " all-gather(" in l or " all-to-all(" in l]
    assert gathers == [], gathers
    # The one reduction adds each device's per-feature sums (2 features per device), never
    # anything per neuron: the kernel summed its batch rows itself.
    reduces = [l.split("=", 1)[1].split("all-reduce")[0] for l in hlo.splitlines()
               if " all-reduce(" in l or " all-reduce-start(" in l]
    assert reduces and all(re.findall(r"f32\[([\d,]*)\]", r) == ["2"] * r.count("f32[")
                           for r in reduces), reduces
    for out, ref in zip(grad(*placed), grad(x, v, tau, th)):
        np.testing.assert_allclose(out, ref, rtol=2e-6, atol=1e-6)
    sharded_tau_grad = grad(*placed)[2]
    assert sharded_tau_grad.sharding.is_equivalent_to(NamedSharding(mesh, P("model")), 1)
