"""JAX transformations around the fused kernel: vmap (folded into the kernel, no transpose),
sharding (on 8 CPU devices, in a subprocess; and on GPUs), jax.export, CUDA graphs, chunked
lax.scan (truncated BPTT) and remat."""

import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental.custom_partitioning import custom_partitioning

import jaxqif
from jaxqif import _library
from helpers import make_inputs

TESTS = pathlib.Path(__file__).parent
B = 3  # vmapped batch size


def _weights(shape, dtype):
    return jnp.cos(jnp.arange(np.prod(shape), dtype=dtype)).reshape(shape)


def _loss_of(multistep):
    """A loss that uses every output of `multistep(x, v) -> (spikes, v_final, v_seq)`, so that
    the backward gets every cotangent."""
    def loss(x, v):
        spikes, v_final, v_seq = multistep(x, v)
        w = _weights(x.shape, v_seq.dtype)
        return jnp.sum(spikes * w) + jnp.sum(jnp.sin(v_final)) + jnp.sum(v_seq * w)

    return loss


def _loss(x, v, **params):
    return _loss_of(lambda x, v: jaxqif.qif_multistep(x, v, store_v_seq=True, **params))(x, v)


def _take(a, axis, b):
    return a if axis is None else np.take(np.asarray(a), b, axis=axis)


def _looped(f, in_axes, out_axes, *args):
    """`jax.vmap(f, in_axes, out_axes)(*args)` as a Python loop over the members."""
    f = jax.jit(f)
    outs = [f(*(_take(a, ax, b) for a, ax in zip(args, in_axes))) for b in range(B)]
    return [jnp.stack(o, axis=ax) for o, ax in zip(zip(*outs), out_axes)]


# ---------------------------------------------------------------------------------------------
# vmap

VMAP_CASES = [  # (unbatched x shape, time_axis, x batch axis, v_init batch axis or None)
    ((6, 4), 0, 0, 0),
    ((6, 4), 0, 1, 0),
    ((6, 4), 0, 2, 1),
    ((6, 4), 1, 0, None),
    ((4, 6), 1, 2, 0),
    ((5, 6, 2), 1, 1, 1),
    ((5, 6, 2), 1, 3, None),
    ((6,), 0, 1, 0),  # a single neuron per member
]


@pytest.mark.parametrize("case", VMAP_CASES, ids=lambda c: f"{len(c[0])}d-t{c[1]}-x{c[2]}-v{c[3]}")
def test_vmap_equals_a_loop(case):
    shape, time_axis, x_axis, v_axis = case
    x, _ = make_inputs((B,) + shape, time_axis + 1, jnp.float32)
    x = jnp.moveaxis(x, 0, x_axis)
    v = make_inputs(shape, time_axis, jnp.float32, seed=1)[1]
    v = v if v_axis is None else jnp.stack([v + 0.1 * b for b in range(B)], axis=v_axis)
    f = lambda x, v: jaxqif.qif_multistep(x, v, time_axis=time_axis, store_v_seq=True)
    out_axes = (x_axis, 0, x_axis)
    batched = jax.jit(jax.vmap(f, (x_axis, v_axis), out_axes))(x, v)
    for got, expected in zip(batched, _looped(f, (x_axis, v_axis), out_axes, x, v)):
        np.testing.assert_array_equal(got, expected)

    grad = jax.grad(lambda x, v: _loss(x, v, time_axis=time_axis), argnums=(0, 1))
    grad_axes = (x_axis, 0)
    batched = jax.jit(jax.vmap(grad, (x_axis, v_axis), grad_axes))(x, v)
    for got, expected in zip(batched, _looped(grad, (x_axis, v_axis), grad_axes, x, v)):
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_vmap_over_v_init_only():
    x, v = make_inputs((6, 4), 0, jnp.float32)
    vs = jnp.stack([v, v * 0.5, v - 0.2], axis=1)
    f = lambda v: jaxqif.qif_multistep(x, v)[:2]
    batched = jax.vmap(f, in_axes=1, out_axes=(1, 1))(vs)
    for got, expected in zip(batched, _looped(f, (1,), (1, 1), vs)):
        np.testing.assert_array_equal(got, expected)


def test_nested_vmap():
    """Two vmapped axes, of the outputs and of the gradients."""
    x, _ = make_inputs((2, 6, B, 4), 1, jnp.float32)  # vmapped over axes 0 and 2
    v = make_inputs((1, B, 2, 4), 0, jnp.float32, seed=1)[1]  # over axes 1 and 0
    forward = lambda x, v: jaxqif.qif_multistep(x, v)[:2]
    for f in (forward, jax.grad(_loss, argnums=(0, 1))):
        inner = jax.vmap(f, in_axes=(1, 0), out_axes=(1, 0))
        batched = jax.jit(jax.vmap(inner, in_axes=(0, 1), out_axes=(0, 1)))(x, v)
        f = jax.jit(f)
        for i in range(2):
            for j in range(B):
                out_x, out_v = f(np.asarray(x)[i, :, j], np.asarray(v)[j, i])
                np.testing.assert_allclose(batched[0][i, :, j], out_x, rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(batched[1][j, i], out_v, rtol=1e-6, atol=1e-6)


def test_unbatched_call_inside_vmap():
    """A call whose operands do not depend on the vmapped value runs once, unbatched."""
    x, v = make_inputs((6, 4), 0, jnp.float32)
    a = jnp.arange(3.0, dtype=jnp.float32)
    scaled = jax.vmap(lambda a: jaxqif.qif_multistep(x, v)[1] * a)(a)
    np.testing.assert_array_equal(scaled, jaxqif.qif_multistep(x, v)[1] * a[:, None])


def _opcodes(hlo: str) -> set[str]:
    return set(re.findall(r"^\s*(?:ROOT )?%\S+ = .*? ([a-z][\w-]*)\(", hlo, re.MULTILINE))


def _kernel_operands(hlo: str, target: str) -> list[str]:
    """The instructions that produce the operands of the custom call to `target`."""
    call = next(line for line in hlo.splitlines() if f'custom_call_target="{target}"' in line)
    names = re.search(r"custom-call\(([^)]*)\)", call).group(1).split(", ")
    defs = {}
    for line in hlo.splitlines():
        if m := re.match(r"\s*(?:ROOT )?(%\S+) = ", line):
            defs[m.group(1)] = line
    return [defs[name] for name in names]


@pytest.mark.parametrize("x_axis", [0, 1, 2])
def test_vmap_folds_the_batch_axis_into_the_kernel(x_axis):
    """No transpose, no copy, no loop: the kernel reads the batched x where it lies, and the
    backward writes grad_x there."""
    x, _ = make_inputs((B, 6, 4), 1, jnp.float32)
    x = jnp.moveaxis(x, 0, x_axis)
    v_axis = 0 if x_axis <= 1 else 1  # where the batch axis lies among the neuron axes
    v = jnp.moveaxis(make_inputs((B, 4), 0, jnp.float32, seed=1)[0], 0, v_axis)
    axes = (x_axis, v_axis)
    forward = jax.vmap(lambda x, v: jaxqif.qif_multistep(x, v)[:2], axes, axes)
    grad = jax.vmap(jax.grad(_loss, argnums=(0, 1)), axes, axes)
    for f, targets in ((forward, [_library.FORWARD_TARGET]),
                       (grad, [_library.FORWARD_TARGET, _library.BACKWARD_TARGET])):
        hlo = jax.jit(f).lower(x, v).compile().as_text()
        assert not _opcodes(hlo) & {"transpose", "copy", "while"}, _opcodes(hlo)
        assert hlo.count("custom-call(") == len(targets)
        x_operand = _kernel_operands(hlo, _library.FORWARD_TARGET)[0]
        assert "parameter(0)" in x_operand and f"f32[{','.join(map(str, x.shape))}]" in x_operand


def test_other_custom_partitioning_calls_keep_their_vmap_behaviour():
    """jaxqif registers vmap for its own custom_partitioning calls only."""
    @custom_partitioning
    def double(x):
        return 2 * x

    def partition(mesh, args, result):
        return mesh, lambda x: 2 * x, result.sharding, (args[0].sharding,)

    double.def_partition(partition=partition, sharding_rule="i -> i")
    a = jnp.arange(3.0)
    np.testing.assert_array_equal(jax.vmap(lambda b: double(a) * b)(a), 2 * a[:, None] * a)
    with pytest.raises(NotImplementedError, match="custom_partitioning"):
        jax.vmap(double)(jnp.ones((2, 3)))


def test_other_custom_partitioning_calls_keep_their_dead_code_behaviour():
    """jaxqif's dead-code rule for custom_partitioning prunes its own calls only: another
    library's call keeps all its results while one is used, and goes when none is."""
    from jax.interpreters import partial_eval as pe

    @custom_partitioning
    def pair(x):
        return 2 * x, 3 * x

    def partition(mesh, args, results):
        return mesh, lambda x: (2 * x, 3 * x), [r.sharding for r in results], (args[0].sharding,)

    pair.def_partition(partition=partition, sharding_rule="i -> i, i")
    jaxpr = jax.make_jaxpr(pair)(jnp.arange(3.0)).jaxpr
    one_used, _ = pe.dce_jaxpr(jaxpr, [False, True])
    (call,) = [e for e in one_used.eqns if e.primitive.name == "custom_partitioning"]
    assert len(call.outvars) == 2
    assert not pe.dce_jaxpr(jaxpr, [False, False])[0].eqns
    np.testing.assert_array_equal(jax.jit(lambda x: pair(x)[1])(jnp.arange(3.0)), [0, 3, 6])


# ---------------------------------------------------------------------------------------------
# sharding


def test_sharded_cases():
    """tests/_sharded_cases.py on 8 CPU devices. XLA fixes the device count when JAX starts,
    so it runs in a subprocess."""
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "_sharded_cases.py"],
        cwd=TESTS, env=env, capture_output=True, text=True, timeout=600,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"\d+ passed", output) and "skipped" not in output, output


@pytest.mark.gpu
def test_sharding_over_gpus():
    from _sharded_cases import LAYOUTS, assert_sharded_like_unsharded

    gpus = jax.devices("gpu")
    if len(gpus) < 2:
        pytest.skip("needs at least 2 GPUs")
    mesh = jax.sharding.Mesh(np.array(gpus[: len(gpus) // 2 * 2]).reshape(-1, 2), ("data", "model"))
    for shape, time_axis, x_spec in LAYOUTS:
        shape = tuple(s * 8 for s in shape)  # room for larger meshes
        assert_sharded_like_unsharded(mesh, shape, time_axis, x_spec)


# ---------------------------------------------------------------------------------------------
# jax.export


def test_export_round_trip():
    x, v = make_inputs((6, 5, 4), 1, jnp.float32)
    forward = lambda x, v: jaxqif.qif_multistep(x, v, time_axis=1, store_v_seq=True)
    grad = jax.grad(lambda x, v: _loss(x, v, time_axis=1), argnums=(0, 1))
    checks = [jax.export.DisabledSafetyCheck.custom_call(target)
              for target in (_library.FORWARD_TARGET, _library.BACKWARD_TARGET)]
    for f in (forward, grad):
        exported = jax.export.export(jax.jit(f), disabled_checks=checks,
                                     platforms=_library.available_platforms())(x, v)
        restored = jax.export.deserialize(exported.serialize())
        for got, expected in zip(restored.call(x, v), jax.jit(f)(x, v)):
            np.testing.assert_array_equal(got, expected)


def test_export_names_the_versioned_targets():
    x, v = make_inputs((6, 4), 0, jnp.float32)
    with pytest.raises(ValueError, match=_library.FORWARD_TARGET):
        jax.export.export(jax.jit(lambda x, v: jaxqif.qif_multistep(x, v)[0]))(x, v)


# ---------------------------------------------------------------------------------------------
# CUDA graphs

COMMAND_BUFFER_OPTIONS = [
    {"xla_gpu_enable_command_buffer": "CUSTOM_CALL", "xla_gpu_graph_min_graph_size": 1},
    {"xla_gpu_enable_command_buffer": "+CUSTOM_CALL", "xla_gpu_graph_min_graph_size": 1},
]


@pytest.mark.gpu
def test_command_buffers_give_the_same_results():
    """XLA may capture the kernels in CUDA graphs (their handlers say they are safe to); the
    results must not change."""
    gpu = jax.devices("gpu")[0]
    x, v = (jax.device_put(a, gpu) for a in make_inputs((16, 8, 32), 0, jnp.float32))
    f = jax.jit(lambda x, v: (jaxqif.qif_multistep(x, v, store_v_seq=True, backend="ffi"),
                              jax.grad(_loss, argnums=(0, 1))(x, v)))
    lowered = f.lower(x, v)
    errors = []
    for options in COMMAND_BUFFER_OPTIONS:
        try:
            with_graphs = lowered.compile(compiler_options=options)
            break
        except Exception as e:  # noqa: BLE001 - the option spelling differs across XLA versions
            errors.append(f"{options}: {e}")
    else:
        pytest.skip("XLA rejected the command buffer options: " + " | ".join(errors))
    expected = jax.tree.leaves(lowered.compile()(x, v))
    for _ in range(3):  # the first run records the graph, later ones replay it
        for got, want in zip(jax.tree.leaves(with_graphs(x, v)), expected):
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# truncated BPTT and remat


def _chunked(f, chunks):
    """f(x, v) -> (spikes, v_final, v_seq) over time chunks of x (time axis 0), v carried by
    lax.scan."""
    def run(x, v):
        def step(v, x_chunk):
            spikes, v, v_seq = f(x_chunk, v)
            return v, (spikes, v_seq)

        v_final, (spikes, v_seq) = jax.lax.scan(step, v, x.reshape(chunks, -1, *x.shape[1:]))
        return spikes.reshape(x.shape), v_final, v_seq.reshape(x.shape)

    return run


def _assert_same_value_and_grads(loss, reference, x, v):
    value, grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(x, v)
    value_ref, grads_ref = jax.jit(jax.value_and_grad(reference, argnums=(0, 1)))(x, v)
    np.testing.assert_allclose(value, value_ref, rtol=1e-12)
    for got, expected in zip(grads, grads_ref):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _whole(x, v):
    return jaxqif.qif_multistep(x, v, store_v_seq=True)


def test_chunked_scan_equals_one_call():
    """A sequence in chunks, v carried from one to the next: the same outputs and the same
    full-BPTT gradients as one call over the whole sequence."""
    x, v = make_inputs((12, 3, 4), 0, jnp.float64)
    chunked = _chunked(_whole, chunks=4)
    for got, expected in zip(jax.jit(chunked)(x, v), _whole(x, v)):
        np.testing.assert_array_equal(got, expected)
    _assert_same_value_and_grads(_loss_of(chunked), _loss_of(_whole), x, v)


def test_truncated_bptt_cuts_the_gradient_between_chunks():
    """stop_gradient on the carried v: each chunk's gradients are those of the chunk alone,
    started from the v that the previous chunk left."""
    x, v = make_inputs((8, 4), 0, jnp.float64)
    w = _weights(x.shape, x.dtype)
    seq_loss = lambda outputs, w: jnp.sum(outputs[0] * w) + jnp.sum(outputs[2] * w)
    truncated = _chunked(lambda x, v: _whole(x, jax.lax.stop_gradient(v)), chunks=2)
    grad_x = jax.jit(jax.grad(lambda x: seq_loss(truncated(x, v), w)))(x)
    v_mid = _whole(x[:4], v)[1]
    for half, v_start in ((slice(0, 4), v), (slice(4, 8), v_mid)):
        expected = jax.grad(lambda x: seq_loss(_whole(x, v_start), w[half]))(x[half])
        np.testing.assert_allclose(grad_x[half], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("policy", [None, jax.checkpoint_policies.nothing_saveable],
                         ids=["default", "nothing_saveable"])
def test_remat_equals_no_remat(policy):
    x, v = make_inputs((12, 3, 4), 0, jnp.float64)
    model = lambda x, v: _whole(jnp.tanh(x) + 0.5, v)
    plain = _loss_of(model)
    _assert_same_value_and_grads(jax.checkpoint(plain, policy=policy), plain, x, v)
    # remat of each chunk of a scan: the usual way to train on sequences longer than memory
    chunk = jax.checkpoint(model, policy=policy)
    _assert_same_value_and_grads(_loss_of(_chunked(chunk, chunks=3)), plain, x, v)
