"""The QIF forward and backward as JAX primitives: abstract evaluation, lowering to the FFI
handlers, batching and dead-code rules. `jaxqif/autodiff.py` ties them together with a custom
VJP.

Each has a twin, its kernel primitive, which only lowers to the platform's FFI call: a primitive
lowers by binding its twin inside `custom_partitioning` (`jaxqif/_partitioning.py`), so that it
shards over the neuron axes under `jit`.

Every array is handed to the kernels as it lies in memory; the kernels read it as
[outer, T, inner] around `time_axis`. A vmapped axis just becomes part of outer or inner: no
transpose, no copy of x.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from jaxqif import _jax, _library, _params
from jaxqif._config import NeuronConfig, checkpoint_count, checkpoint_interval, state_dtype
from jaxqif._jax import Primitive, ShapedArray, mlir
from jaxqif._params import NAMES as PARAM_NAMES
from jaxqif._partitioning import partitioned_lowering

# ---------------------------------------------------------------------------------------------
# forward: (x, [v_init], *params) -> spikes, [v_final], [v_seq], [checkpoints]
# params: the neuron parameters given as arrays (config.array_names, in that order), compact
# (jaxqif/_params.py): each the trailing block of the neuron shape it varies over.
# checkpoints: V every checkpoint_interval steps, what the backward recomputes H from (laid out
# like x, with checkpoint_count steps; asked for only where there is at least one).
# v_init_value: None, or every neuron's initial potential, given instead of a v_init operand (the
# default start: no array filled with it is made or read). The optional results are written
# only when asked for; under `jit`, dead-code elimination drops those nobody uses
# (`_prune_forward`), so inference that keeps only the spikes never writes v_final.

forward_p = Primitive("qif_forward")
forward_kernel_p = Primitive("qif_forward_kernel")

# The optional results in order, after the spikes, with the parameter that asks for each.
_FORWARD_OPTIONAL = ("store_v_final", "store_v_seq", "save_checkpoints")


def _split_forward_operands(operands, config: NeuronConfig, v_init_value):
    """(x, v_init or None, [params])."""
    x, *rest = operands
    v_init = rest.pop(0) if v_init_value is None else None
    assert len(rest) == len(config.array_names)
    return x, v_init, rest


def _forward_abstract_eval(*operands, config, time_axis, store_v_final, store_v_seq,
                           save_checkpoints, v_init_value):
    x = operands[0]
    st = state_dtype(x.dtype)
    outs = [_seq_aval(x, x.dtype)]
    if store_v_final:
        outs.append(_neuron_aval(x, time_axis, st))
    if store_v_seq:
        outs.append(_seq_aval(x, st))
    if save_checkpoints:
        outs.append(_checkpoints_aval(x, time_axis))
    return outs


def _prune_forward(params: dict, used_outputs) -> tuple[dict, list[bool]] | None:
    """The forward's parameters without the optional results in `used_outputs` that are not
    used, and which of its current results remain; None when there is nothing to drop."""
    flags = [params[name] for name in _FORWARD_OPTIONAL]
    used = iter(used_outputs[1:])  # the spikes always stay
    new_flags = [flag and next(used) for flag in flags]
    if new_flags == flags:
        return None
    kept = [True] + [new for old, new in zip(flags, new_flags) if old]
    return dict(params, **dict(zip(_FORWARD_OPTIONAL, new_flags))), kept


def _forward_dce(used_outputs, eqn):
    if not any(used_outputs):
        return [False] * len(eqn.invars), None
    pruned = _prune_forward(eqn.params, used_outputs)
    if pruned is None:
        return [True] * len(eqn.invars), eqn
    params, kept = pruned
    outvars = [v for v, keep in zip(eqn.outvars, kept) if keep]
    return [True] * len(eqn.invars), eqn.replace(params=params, outvars=outvars)


_jax.register_dce_rule(forward_p, _forward_dce)


def _neuron_attrs(config: NeuronConfig, time_axis: int, v_init_value, input_dtype) -> dict:
    """The attributes both handlers take. A parameter given as an array operand has NaN here,
    which the handlers never read."""
    number = lambda name: np.float64(
        getattr(config, name) if name in config.static_values() else
        (0.0 if name == "v_reset" and not config.hard_reset else np.nan))
    return dict(
        time_axis=np.int64(time_axis),
        **{name: number(name) for name in PARAM_NAMES},
        hard_reset=np.bool_(config.hard_reset),
        v_init_value=np.float64(0.0 if v_init_value is None else v_init_value),
        checkpoint_steps=np.int64(checkpoint_interval(input_dtype)),
    )


def _absent(dtype):
    """A zero-element operand: the handlers read it as "not given"."""
    return mlir.ir_constant(np.zeros((0,), dtype)), ShapedArray((0,), dtype)


def _full_operands(values, avals, present, dtypes):
    """The handler's fixed operand list: the given operands where `present`, zero-element
    placeholders elsewhere."""
    values, avals = list(values), list(avals)
    full_values, full_avals = [], []
    for is_present, dtype in zip(present, dtypes):
        value, aval = (values.pop(0), avals.pop(0)) if is_present else _absent(dtype)
        full_values.append(value)
        full_avals.append(aval)
    assert not values
    return full_values, full_avals


def _param_present(config: NeuronConfig) -> list[bool]:
    return [name in config.array_names for name in PARAM_NAMES]


def _target(config: NeuronConfig, v2_target: str, v3_target: str) -> tuple[str, bool]:
    """The handler to call, and whether it takes the parameters: the v2 interface (numbers
    only, exactly the program of jaxqif before array parameters) unless some are arrays."""
    return (v3_target, True) if config.array_names else (v2_target, False)


def _forward_lowering(ctx, *operands, platform, config, time_axis, store_v_final, store_v_seq,
                      save_checkpoints, v_init_value):
    del platform  # (the same call on every platform)
    # The handler always has two operands (x, v_init; v3: and the six parameters) and four
    # results; an absent one has zero elements.
    x_aval = ctx.avals_in[0]
    st = state_dtype(x_aval.dtype)
    target, with_params = _target(config, _library.FORWARD_TARGET, _library.FORWARD_TARGET_V3)
    present = [True, v_init_value is None] + (_param_present(config) if with_params else [])
    operands, avals_in = _full_operands(operands, ctx.avals_in, present,
                                        [x_aval.dtype] + [st] * (len(present) - 1))
    full = ShapedArray(x_aval.shape, st)
    neurons = ShapedArray(x_aval.shape[:time_axis] + x_aval.shape[time_axis + 1 :], st)
    checkpoints = ShapedArray(_checkpoints_shape(x_aval, time_axis), st)
    wanted = [True, store_v_final, store_v_seq, save_checkpoints]
    shapes = [ctx.avals_out[0], neurons, full, checkpoints]
    avals_out = [aval if w else _absent(st)[1] for aval, w in zip(shapes, wanted)]
    results = jax.ffi.ffi_lowering(target)(
        ctx.replace(avals_in=avals_in, avals_out=avals_out), *operands,
        **_neuron_attrs(config, time_axis, v_init_value, x_aval.dtype),
    )
    return [r for r, w in zip(results, wanted) if w]


def _forward_batching(args, dims, *, config, time_axis, store_v_final, store_v_seq,
                      save_checkpoints, v_init_value):
    x, v_init, params = _split_forward_operands(args, config, v_init_value)
    x_dim, v_dim, param_dims = _split_forward_operands(dims, config, v_init_value)
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    neuron_shape = _batched_neuron_shape(x, x_dim, time_axis, size)
    if x_dim is None:  # only v_init or a parameter is batched: x must be repeated for each
        x, x_dim = _broadcast_at(x, size, 0), 0
    time_axis, neuron_dim = _fold_batch_axis(time_axis, x_dim)
    operands = [x]
    if v_init is not None:
        operands.append(_batch_at(v_init, v_dim, neuron_dim, size))
    operands += [_batch_param(p, d, neuron_dim, neuron_shape) for p, d in zip(params, param_dims)]
    outs = forward_p.bind(
        *operands, config=config, time_axis=time_axis, store_v_final=store_v_final,
        store_v_seq=store_v_seq, save_checkpoints=save_checkpoints, v_init_value=v_init_value,
    )
    return outs, [x_dim] + [neuron_dim] * store_v_final + [x_dim] * (store_v_seq + save_checkpoints)


# ---------------------------------------------------------------------------------------------
# backward: ([grad_spikes], [grad_v_seq], [grad_v_final], x, [checkpoints], [v_init], *params)
#           -> grad_x, [grad_v_init], *[grad of each parameter in param_grads]
# Cotangents that are symbolically zero are left out (has_* = False) and never read. The
# checkpoints are there where the sequence has any (more than one interval). With
# v_init_value (a constant start, as in the forward) there is no v_init and no grad_v_init.
# The parameters' gradients, summed over time, come over the gradient block: the largest compact
# parameter (a trailing block of the neuron shape that every other one tiles), each element
# summed over the block's copies, the neurons that share its values (`_grad_block_aval`);
# autodiff sums them down to each parameter's own block. param_grads says which are wanted
# (under jit, dead-code elimination drops the others).

backward_p = Primitive("qif_backward")
backward_kernel_p = Primitive("qif_backward_kernel")


def _split_backward_operands(operands, config, has_grad_spikes, has_grad_v_seq,
                             has_grad_v_final, v_init_value):
    """(grad_spikes, grad_v_seq, grad_v_final, x, checkpoints, v_init, [params]), None where
    absent. Whether the checkpoints are there follows from the operand count."""
    operands = list(operands)
    has_v_init = v_init_value is None
    params_count = len(config.array_names)
    has_checkpoints = len(operands) > (
        has_grad_spikes + has_grad_v_seq + has_grad_v_final + 1 + has_v_init + params_count)
    take = lambda present: operands.pop(0) if present else None
    taken = (take(has_grad_spikes), take(has_grad_v_seq), take(has_grad_v_final), take(True),
             take(has_checkpoints), take(has_v_init))
    assert len(operands) == params_count
    return (*taken, operands)


def _grad_block_aval(params, dtype):
    """The type of the backward's parameter gradients: the largest of the compact parameters
    (all trailing blocks of the neuron shape, so each smaller one tiles it), in `dtype`. It
    depends on the parameters alone, not on which gradients are wanted, so that dead-code
    elimination changes no result's type."""
    return max(params, key=lambda p: p.ndim).update(dtype=dtype, weak_type=False)


def _backward_abstract_eval(*operands, config, time_axis, has_grad_spikes, has_grad_v_seq,
                            has_grad_v_final, v_init_value, param_grads):
    *values, params = _split_backward_operands(operands, config, has_grad_spikes, has_grad_v_seq,
                                               has_grad_v_final, v_init_value)
    x, st = values[3], state_dtype(values[3].dtype)
    outs = [_seq_aval(x, x.dtype)] + [_neuron_aval(x, time_axis, st)] * (v_init_value is None)
    return outs + ([_grad_block_aval(params, st)] * sum(param_grads) if params else [])


def _backward_dce(used_outputs, eqn):
    """Drops the gradients of parameters nobody differentiates (grad_x always stays)."""
    if not any(used_outputs):
        return [False] * len(eqn.invars), None
    param_grads = eqn.params["param_grads"]
    first = 1 + (eqn.params["v_init_value"] is None)
    used = iter(used_outputs[first:])
    new = tuple(wanted and next(used) for wanted in param_grads)
    if new == param_grads:
        return [True] * len(eqn.invars), eqn
    kept = [True] * first + [n for old, n in zip(param_grads, new) if old]
    outvars = [v for v, keep in zip(eqn.outvars, kept) if keep]
    return [True] * len(eqn.invars), eqn.replace(params=dict(eqn.params, param_grads=new),
                                                 outvars=outvars)


_jax.register_dce_rule(backward_p, _backward_dce)


# The platforms whose backward kernels sum the parameter gradients over the gradient block's
# copies themselves; the others' write one per neuron, which the lowering sums.
KERNELS_SUMMING_COPIES = frozenset({"cpu"})


def _backward_lowering(ctx, *operands, platform, config, time_axis, has_grad_spikes,
                       has_grad_v_seq, has_grad_v_final, v_init_value, param_grads):
    # The handler always takes six operands (the cotangents, x, the checkpoints, v_init; v3:
    # and the six parameters) and has two results (grad_x, grad_v_init; v3: and one per
    # parameter); an absent one (a zero cotangent; the checkpoints of a single interval;
    # v_init and grad_v_init with a constant start; a parameter given as a number, or whose
    # gradient is not wanted) has zero elements. The CPU handler sums the parameter gradients
    # over the block's copies itself; the CUDA kernels write one per neuron, summed here.
    split = _split_backward_operands(ctx.avals_in, config, has_grad_spikes, has_grad_v_seq,
                                     has_grad_v_final, v_init_value)
    x_aval = split[3]
    input_dtype, st = x_aval.dtype, state_dtype(x_aval.dtype)
    target, with_params = _target(config, _library.BACKWARD_TARGET, _library.BACKWARD_TARGET_V3)
    present = [a is not None for a in split[:6]]
    present += _param_present(config) if with_params else []
    operands, avals_in = _full_operands(
        operands, ctx.avals_in, present,
        ((input_dtype, st, st, input_dtype, st, st) + (st,) * 6)[: len(present)])
    wanted_grads = dict(zip(config.array_names, param_grads))
    results_present = [True, v_init_value is None] + (
        [wanted_grads.get(name, False) for name in PARAM_NAMES] if with_params else [])
    avals_out = list(ctx.avals_out)
    avals_out = [avals_out.pop(0) if p else _absent(st)[1] for p in results_present]
    per_neuron = ShapedArray(x_aval.shape[:time_axis] + x_aval.shape[time_axis + 1:], st)
    blocks = {}  # result index -> the gradient block's type, where the lowering sums copies
    if platform not in KERNELS_SUMMING_COPIES:
        for i in range(2, len(avals_out)):
            if results_present[i] and avals_out[i].shape != per_neuron.shape:
                blocks[i], avals_out[i] = avals_out[i], per_neuron
    attrs = _neuron_attrs(config, time_axis, v_init_value, input_dtype)
    attrs.update(
        detach_reset=np.bool_(config.detach_reset),
        surrogate=np.int64(config.surrogate.kernel_id),
        alpha=np.float64(config.surrogate.alpha),
    )
    results = list(jax.ffi.ffi_lowering(target)(
        ctx.replace(avals_in=avals_in, avals_out=avals_out), *operands, **attrs
    ))
    for i, block in blocks.items():
        sum_copies = mlir.lower_fun(lambda g, b=block.shape: g.reshape((-1, *b)).sum(0),
                                    multiple_results=False)
        results[i], = sum_copies(ctx.replace(primitive=None, avals_in=[per_neuron],
                                             avals_out=[block]), results[i])
    return [r for r, p in zip(results, results_present) if p]


def _backward_batching(args, dims, *, config, time_axis, has_grad_spikes, has_grad_v_seq,
                       has_grad_v_final, v_init_value, param_grads):
    flags = dict(has_grad_spikes=has_grad_spikes, has_grad_v_seq=has_grad_v_seq,
                 has_grad_v_final=has_grad_v_final, v_init_value=v_init_value)
    *values, params = _split_backward_operands(args, config, **flags)
    g_spikes, g_v_seq, g_v_final, x, checkpoints, v_init = values
    *value_dims, param_dims = _split_backward_operands(dims, config, **flags)
    d_spikes, d_v_seq, d_v_final, d_x, d_checkpoints, d_v_init = value_dims
    size = next(a.shape[d] for a, d in zip(args, dims) if d is not None)
    # All [.., T, ..] operands share one layout: follow x's batch axis (or another's).
    seq_dim = next((d for d in (d_x, d_checkpoints, d_spikes, d_v_seq) if d is not None), 0)
    neuron_shape = _batched_neuron_shape(x, d_x, time_axis, size, seq_dim)
    new_time_axis, neuron_dim = _fold_batch_axis(time_axis, seq_dim)
    operands = []
    for value, dim, target in ((g_spikes, d_spikes, seq_dim), (g_v_seq, d_v_seq, seq_dim),
                               (g_v_final, d_v_final, neuron_dim), (x, d_x, seq_dim),
                               (checkpoints, d_checkpoints, seq_dim),
                               (v_init, d_v_init, neuron_dim)):
        if value is not None:
            operands.append(_batch_at(value, dim, target, size))
    batched = [_batch_param(p, d, neuron_dim, neuron_shape) for p, d in zip(params, param_dims)]
    if any(param_grads):
        batched = _block_over_batch_axis(batched, neuron_shape, neuron_dim)
    outs = backward_p.bind(*operands, *batched, config=config, time_axis=new_time_axis,
                           param_grads=param_grads, **flags)
    first_grad = 1 + (v_init_value is None)
    if any(param_grads):  # each example's gradient, over its own (unbatched) gradient block
        block_rank = max(p.ndim - (d is not None) for p, d in zip(params, param_dims))
        block_start = len(neuron_shape) - max(b.ndim for b in batched)
        outs = outs[:first_grad] + [_per_example(g, neuron_dim - block_start, block_rank)
                                    for g in outs[first_grad:]]
    return outs, [seq_dim] + [neuron_dim] * (first_grad - 1) + [0] * (len(outs) - first_grad)


def _no_jvp(primals, tangents, **params):
    """The kernels are differentiated only through the custom VJP of jaxqif/autodiff.py; a
    primitive differentiated itself means a derivative of that derivative."""
    raise NotImplementedError(
        "jaxqif: the fused path is differentiated once, in reverse mode (its BPTT kernel): "
        "gradients of gradients (e.g. jax.grad of jax.grad, jax.hessian) need backend='jax'"
    )


# ---------------------------------------------------------------------------------------------
# output types: those of x, with its sharding and shard_map's varying axes, which `update` keeps


def _seq_aval(seq, dtype):
    return seq.update(dtype=dtype, weak_type=False)


def _checkpoints_shape(x, time_axis: int) -> tuple:
    shape = list(x.shape)
    shape[time_axis] = checkpoint_count(shape[time_axis], x.dtype)
    return tuple(shape)


def _checkpoints_aval(x, time_axis: int):
    """The forward's checkpoints: x's type with checkpoint_count steps, in the state dtype."""
    return x.update(shape=_checkpoints_shape(x, time_axis), dtype=state_dtype(x.dtype),
                    weak_type=False)


def _neuron_aval(seq, time_axis: int, dtype):
    """`seq`'s type without the time axis."""
    spec = tuple(seq.sharding.spec) + (None,) * (seq.ndim - len(seq.sharding.spec))
    neuron_spec = PartitionSpec(*spec[:time_axis], *spec[time_axis + 1 :])
    sharding = NamedSharding(seq.sharding.mesh, neuron_spec)
    return seq.update(shape=seq.shape[:time_axis] + seq.shape[time_axis + 1 :], dtype=dtype,
                      weak_type=False, sharding=sharding)


# ---------------------------------------------------------------------------------------------
# batching helpers


def _fold_batch_axis(time_axis: int, batch_axis: int) -> tuple[int, int]:
    """A batch axis inserted at `batch_axis` of a [.., T, ..] array: returns the new time axis
    and where the batch axis sits in the matching neuron-shaped (time-less) array."""
    if batch_axis <= time_axis:
        return time_axis + 1, batch_axis
    return time_axis, batch_axis - 1


def _broadcast_at(x, size: int, axis: int):
    x = jnp.expand_dims(x, axis)
    shape = list(x.shape)
    shape[axis] = size
    return jnp.broadcast_to(x, shape)


def _batch_at(x, dim, target: int, size: int):
    """x with its batch axis at `target`: broadcast if unbatched, moved if elsewhere."""
    if dim is None:
        return _broadcast_at(x, size, target)
    return x if dim == target else jnp.moveaxis(x, dim, target)


def _batched_neuron_shape(x, x_dim, time_axis: int, size: int, unbatched_at: int = 0) -> tuple:
    """The neuron shape of x with its batch axis (x's own at x_dim, or, where x is not
    batched, the one it is broadcast along at `unbatched_at`) folded in."""
    shape = list(x.shape)
    batch_axis = x_dim
    if x_dim is None:
        batch_axis = unbatched_at
        shape.insert(batch_axis, size)
    time = time_axis + (batch_axis <= time_axis)
    return tuple(shape[:time] + shape[time + 1:])


def _block_over_batch_axis(params, neuron_shape: tuple, neuron_dim: int):
    """Batched compact parameters whose largest block (the backward's gradient block) spans
    the batch axis `neuron_dim`: else the kernel would sum the parameter gradients over the
    examples. The largest is broadcast over the axes up to the batch axis where needed: for a
    per-feature parameter and x batched ahead of its batch rows, one value per neuron, about
    what the per-neuron gradients cost anyway."""
    largest = max(range(len(params)), key=lambda i: params[i].ndim)
    start = len(neuron_shape) - params[largest].ndim
    if start <= neuron_dim:
        return params
    params = list(params)
    params[largest] = jnp.broadcast_to(params[largest], neuron_shape[neuron_dim:])
    return params


def _per_example(grad, batch_axis: int, block_rank: int):
    """A batched call's parameter gradient, over a block whose axis `batch_axis` is the batch:
    the batch axis first, then summed over the axes before each example's own gradient block
    (the trailing `block_rank` axes)."""
    grad = jnp.moveaxis(grad, batch_axis, 0)
    extra = grad.ndim - 1 - block_rank
    return grad.sum(axis=tuple(range(1, 1 + extra))) if extra else grad


def _batch_param(param, dim, neuron_dim: int, neuron_shape: tuple):
    """A compact parameter (the trailing block of the unbatched neuron shape it varies over),
    batched at `dim` or not, as the compact parameter of the batched neuron shape, whose axis
    `neuron_dim` is the batch."""
    rank = len(neuron_shape)
    if dim is None:  # aligned to the trailing axes, with a 1 at the batch axis if it falls there
        aligned = param.reshape((1,) * (rank - 1 - param.ndim) + param.shape)
        aligned = jnp.expand_dims(aligned, neuron_dim)
    else:  # the batch axis at neuron_dim, the parameter's own axes trailing
        moved = jnp.moveaxis(param, dim, 0)
        aligned = moved.reshape(moved.shape[:1] + (1,) * (rank - 1 - param.ndim + 1)
                                + moved.shape[1:])
        aligned = jnp.moveaxis(aligned, 0, neuron_dim)
    return _params.compact(aligned, neuron_shape)


# ---------------------------------------------------------------------------------------------
# registration


def _kernel_lowering(platform: str, lowering):
    """The FFI lowering of a kernel primitive for `platform`, once its library is loaded."""

    def rule(ctx, *args, **params):
        if not _library.load(platform):
            raise NotImplementedError(
                f"jaxqif: no fused kernel for {platform}: {_library.unavailable_reason(platform)}. "
                "backend='jax' runs the pure-JAX path there."
            )
        return lowering(ctx, *args, platform=platform, **params)

    return rule


def _no_kernel_lowering(ctx, *args, **params):
    raise NotImplementedError(
        f"jaxqif: no fused kernel for the platform(s) {', '.join(ctx.module_context.platforms)} "
        f"(kernels exist for: {', '.join(_library.LIBRARIES)}); backend='jax' runs the pure-JAX "
        "path there."
    )


@functools.lru_cache(maxsize=64)
def _eager_callable(primitive, params_items):
    return jax.jit(functools.partial(primitive.bind, **dict(params_items)))


def _impl(primitive):
    """Eager calls compile the primitive once per configuration, like any jitted function, and
    partitioned, so that eager calls on sharded arrays stay sharded too. The cache is bounded:
    eager calls with ever new neuron parameters (a sweep, say) keep memory flat."""

    def impl(*args, **params):
        # Under jax.disable_jit() the jitted bind would run eagerly and come back here.
        with jax.disable_jit(False):
            return _eager_callable(primitive, tuple(sorted(params.items())))(*args)

    return impl


for _primitive, _kernel_primitive, _abstract_eval, _lowering, _batching in (
    (forward_p, forward_kernel_p, _forward_abstract_eval, _forward_lowering, _forward_batching),
    (backward_p, backward_kernel_p, _backward_abstract_eval, _backward_lowering,
     _backward_batching),
):
    for _p in (_primitive, _kernel_primitive):
        _p.multiple_results = True
        _p.def_abstract_eval(_abstract_eval)
    _primitive.def_impl(_impl(_primitive))
    _jax.register_batching_rule(_primitive, _batching)
    mlir.register_lowering(_primitive, partitioned_lowering(_kernel_primitive))
    _jax.requires_devices_during_lowering(_primitive)
    mlir.register_lowering(_kernel_primitive, _no_kernel_lowering)
    for _platform in _library.LIBRARIES:
        mlir.register_lowering(_kernel_primitive, _kernel_lowering(_platform, _lowering),
                               platform=_platform)
    _jax.register_jvp_rule(_primitive, _no_jvp)
