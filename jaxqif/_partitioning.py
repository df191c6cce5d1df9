"""Sharding of the QIF kernels under `jax.jit`.

XLA cannot see into a custom call: left alone, it would all-gather every sharded operand and
run the whole kernel on every device. Every axis but time is an independent neuron, though, so
each device can run the kernel on its own block of neurons with no communication. (The one
exception: the backward's gradients of array parameters are sums over neurons, over a trailing
block of them; where the neuron axes in front of that block are sharded, each device's sums
are added up by one all-reduce.)

Each primitive of `jaxqif/primitives.py` is lowered through `custom_partitioning` (the pattern
of JAX's own docs and of TransformerEngine): its lowering rule wraps the kernel's FFI call in a
partitioned function, with a Shardy sharding rule saying that the neuron axes of every operand
and result are shared pass-through factors, while each time axis is a factor of its own that
must be replicated, so that a time sharding never spreads through the kernel. The primitives
themselves stay plain, so vmap and dead-code elimination act on them with their own rules.

An operand sharded along time is gathered onto every device first, with a warning: the
recurrence runs in order over all of time, and the kernel cannot hand V from one time shard to
the next. Inside a `shard_map` over all mesh axes, and on one device, `custom_partitioning`
lowers the call as it is. It partitions through a Python callback at compile time, which
`jax.export` cannot serialize: to export a sharded program, write it with `shard_map`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings

import jax
from jax.experimental.custom_partitioning import ArrayMapping, SdyShardingRule, custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec

from jaxqif._jax import mlir

TIME = "t"


@dataclasses.dataclass(frozen=True)
class _Call:
    """A kernel primitive and its parameters: the static argument of the partitioned call."""

    primitive: object
    params: tuple  # sorted (name, value) pairs, so that the call is hashable

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    def bind(self, *operands):
        return self.primitive.bind(*operands, **self.kwargs)


def partitioned_lowering(kernel_primitive):
    """A lowering rule that binds `kernel_primitive` (whose own lowering is the FFI call) with
    the same operands and parameters, partitioned over the neuron axes.

    The primitive must take and return arrays that are either [.., T, ..] sequences (the
    highest rank), neuron arrays (the same without the time axis `params["time_axis"]`), or
    compact parameters: a trailing block of the neuron shape (jaxqif/_params.py).
    """

    def rule(ctx, *operands, **params):
        call = _Call(kernel_primitive, tuple(sorted(params.items())))
        if getattr(jax.config, "jax_use_shardy_partitioner", True):
            body = functools.partial(_partitioned, call)
        else:  # the sharding rule is Shardy's; under GSPMD, XLA gathers the operands instead
            body = call.bind
        return mlir.lower_fun(body, multiple_results=True)(ctx, *operands)

    return rule


def _partitioned_body(call: _Call, *operands):
    return call.bind(*operands)


_partitioned = custom_partitioning(_partitioned_body, static_argnums=(0,))


def _sharding_rule(call: _Call, mesh, operand_types, result_types):
    del mesh
    time_axis = call.kwargs["time_axis"]
    seq_rank = max(len(t.shape) for t in operand_types)
    neurons = [f"n{a}" for a in range(seq_rank) if a != time_axis]
    time_factors = []

    def mapping(t):
        if len(t.shape) < seq_rank:  # neurons, or a trailing block of them
            return ArrayMapping(*neurons[len(neurons) - len(t.shape):])
        time_factors.append(f"{TIME}{len(time_factors)}")
        return ArrayMapping(*neurons[:time_axis], time_factors[-1], *neurons[time_axis:])

    operands, results = tuple(map(mapping, operand_types)), tuple(map(mapping, result_types))
    return SdyShardingRule(operands, results, need_replication_factors=tuple(time_factors))


def _partition(call: _Call, mesh, arg_shapes, result_shape):
    """Each device runs the kernel on its own block of neurons, over all of time. Every
    sequence operand and result gets the sharding of the most finely sharded sequence operand
    (x, say) with time replicated, every neuron one the same without time, and a compact
    parameter that of its trailing neuron axes; XLA reshards any operand that differs (a
    cotangent XLA left replicated, say)."""
    time_axis = call.kwargs["time_axis"]
    seq_rank = max(len(s.shape) for s in arg_shapes)
    is_seq = lambda s: len(s.shape) == seq_rank
    reference = max(filter(is_seq, arg_shapes), key=lambda s: _shards(s, time_axis))
    if any(_time_is_sharded(s, time_axis) for s in filter(is_seq, arg_shapes)):
        warnings.warn(
            f"jaxqif: {call.primitive.name} got an operand sharded along its time axis "
            f"({time_axis}); it is gathered onto every device first, as the recurrence runs "
            "in order over all of time. Shard the neuron (non-time) axes instead.",
            RuntimeWarning,
            stacklevel=1,
        )
    if isinstance(reference.sharding, NamedSharding):
        seq_sharding, neuron_sharding = _time_replicated(reference.sharding, mesh, time_axis,
                                                         seq_rank)
    else:
        # Positional shardings come from programs with no NamedSharding in them (a context
        # mesh, a shard_map over some of the mesh axes): take the results', which the sharding
        # rule keeps consistent with one another.
        seq_result = next(r for r in result_shape if is_seq(r))
        if _time_is_sharded(seq_result, time_axis):
            raise NotImplementedError(
                f"jaxqif: cannot replicate the time axis of {call.primitive.name}'s "
                f"{seq_result.sharding}; shard its operands with a jax.sharding.NamedSharding")
        seq_sharding = seq_result.sharding
        # (or the operands', v_init, when the results have none: a forward without v_final;
        # a backward with a constant start has neither)
        neuron_sharding = next((s.sharding for s in (*result_shape, *arg_shapes)
                                if not is_seq(s)), None)
    # Results smaller than the neurons (the backward's parameter gradients, over a trailing
    # block of them) are sums over the leading neuron axes: each device's covers its own
    # neurons, and the sums over the mesh axes of those neuron axes add them up.
    block_ranks = {len(r.shape) for r in result_shape if len(r.shape) < seq_rank - 1}
    if block_ranks and not isinstance(neuron_sharding, NamedSharding):
        # (no axis names to sum over: every device runs the whole call, as rare as these are)
        replicated = NamedSharding(mesh, PartitionSpec())
        return mesh, call.bind, [replicated] * len(result_shape), (replicated,) * len(arg_shapes)
    neuron_spec = ()
    if isinstance(neuron_sharding, NamedSharding):
        neuron_spec = (tuple(neuron_sharding.spec) + (None,) * (seq_rank - 1))[: seq_rank - 1]

    def pick(s):
        if is_seq(s):
            return seq_sharding
        if len(s.shape) == seq_rank - 1 or not isinstance(neuron_sharding, NamedSharding):
            return neuron_sharding if len(s.shape) == seq_rank - 1 else s.sharding
        return NamedSharding(mesh, PartitionSpec(*neuron_spec[len(neuron_spec) - len(s.shape):]))

    def summed_over(rank: int) -> tuple:
        """The mesh axes of the neuron axes in front of a trailing block of `rank` axes."""
        axes = []
        for entry in neuron_spec[: len(neuron_spec) - rank]:
            axes += [] if entry is None else [entry] if isinstance(entry, str) else list(entry)
        return tuple(axes)

    def lower(*operands):
        results = call.bind(*operands)
        return [jax.lax.psum(r, summed_over(r.ndim)) if r.ndim < seq_rank - 1
                and summed_over(r.ndim) else r for r in results]

    lower_fn = lower if block_ranks else call.bind
    return mesh, lower_fn, [pick(r) for r in result_shape], tuple(map(pick, arg_shapes))


def _time_replicated(sharding: NamedSharding, mesh, time_axis: int, rank: int):
    """`sharding` of a sequence with its time axis replicated, and the matching neuron one."""
    spec = (tuple(sharding.spec) + (None,) * rank)[:rank]
    neurons = spec[:time_axis] + spec[time_axis + 1 :]
    seq_spec = PartitionSpec(*neurons[:time_axis], None, *neurons[time_axis:])
    return NamedSharding(mesh, seq_spec), NamedSharding(mesh, PartitionSpec(*neurons))


def _shards(shape, time_axis: int) -> int:
    """Into how many blocks `shape`'s sharding splits its neuron axes."""
    shard = shape.sharding.shard_shape(shape.shape)
    return math.prod(n // s for a, (n, s) in enumerate(zip(shape.shape, shard))
                     if a != time_axis and s)


def _time_is_sharded(shape, time_axis: int) -> bool:
    return shape.sharding.shard_shape(shape.shape)[time_axis] != shape.shape[time_axis]


_partitioned.def_partition(partition=_partition, sharding_rule=_sharding_rule)
