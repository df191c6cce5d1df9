"""Sharding of the QIF primitives under `jax.jit`.

XLA cannot see into a custom call: left alone, it would all-gather every sharded operand and
run the whole kernel on every device. Every axis but time is an independent neuron, though, so
each device can run the kernel on its own block of neurons with no communication. `bind` wraps
a primitive in `custom_partitioning` with a Shardy sharding rule that says so: the neuron axes
of every operand and result are shared pass-through factors; each time axis is a factor of its
own that must be replicated, so that a time sharding never spreads through the kernel.

An operand sharded along time is gathered onto every device first, with a warning: the
recurrence runs in order over all of time, and the kernel cannot hand V from one time shard to
the next. Inside a `shard_map` over all mesh axes, and on one device, the call is just the
primitive. `custom_partitioning` partitions through a Python callback at compile time, which
`jax.export` cannot serialize: to export a sharded program, write it with `shard_map`.

`custom_partitioning` has no vmap rule, so one is registered here for jaxqif's calls: the
wrapped primitive's own, which folds the batch axis into the kernel's neuron block. Nor does it
have a dead-code rule: the one registered here lets a wrapped primitive drop results nobody
uses (`register_output_pruning`), as it would unwrapped.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import jax
from jax.experimental.custom_partitioning import (
    ArrayMapping, SdyShardingRule, custom_partitioning, custom_partitioning_p,
)
from jax.interpreters import batching
from jax.interpreters import partial_eval as pe
from jax.sharding import NamedSharding, PartitionSpec

TIME = "t"


@dataclasses.dataclass(frozen=True)
class _Call:
    """A primitive and its parameters: the static argument of the partitioned call."""

    primitive: object
    params: tuple  # sorted (name, value) pairs, so that the call is hashable

    @property
    def kwargs(self) -> dict:
        return dict(self.params)

    def bind(self, *operands):
        return self.primitive.bind(*operands, **self.kwargs)


def bind(primitive, *operands, **params):
    """`primitive.bind(*operands, **params)`, partitioned over the neuron axes under `jit`.

    The primitive must take and return arrays that are either [.., T, ..] sequences (the
    highest rank) or neuron arrays (the same without the time axis `params["time_axis"]`).
    """
    if not getattr(jax.config, "jax_use_shardy_partitioner", True):
        # The sharding rule is Shardy's; under the deprecated GSPMD partitioner, XLA gathers
        # the operands of the plain custom call instead.
        return primitive.bind(*operands, **params)
    return _partitioned(_Call(primitive, tuple(sorted(params.items()))), *operands)


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
        if len(t.shape) < seq_rank:
            return ArrayMapping(*neurons)
        time_factors.append(f"{TIME}{len(time_factors)}")
        return ArrayMapping(*neurons[:time_axis], time_factors[-1], *neurons[time_axis:])

    operands, results = tuple(map(mapping, operand_types)), tuple(map(mapping, result_types))
    return SdyShardingRule(operands, results, need_replication_factors=tuple(time_factors))


def _partition(call: _Call, mesh, arg_shapes, result_shape):
    """Each device runs the kernel on its own block of neurons, over all of time. Every
    sequence operand and result gets the sharding of the most finely sharded sequence operand
    (x, say) with time replicated, every neuron one the same without time; XLA reshards any
    operand that differs (a cotangent XLA left replicated, say)."""
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
    pick = lambda s: seq_sharding if is_seq(s) else neuron_sharding
    return mesh, call.bind, [pick(r) for r in result_shape], tuple(map(pick, arg_shapes))


def _time_replicated(sharding: NamedSharding, mesh, time_axis: int, rank: int):
    """`sharding` of a sequence with its time axis replicated, and the matching neuron one."""
    spec = (tuple(sharding.spec) + (None,) * rank)[:rank]
    neurons = spec[:time_axis] + spec[time_axis + 1 :]
    seq_spec = PartitionSpec(*neurons[:time_axis], None, *neurons[time_axis:])
    return NamedSharding(mesh, seq_spec), NamedSharding(mesh, PartitionSpec(*neurons))


def _shards(shape, time_axis: int) -> int:
    """Into how many blocks `shape`'s sharding splits its neuron axes (the forward's checkpoints
    may have no steps: their time axis does not count)."""
    shard = shape.sharding.shard_shape(shape.shape)
    return math.prod(n // s for a, (n, s) in enumerate(zip(shape.shape, shard))
                     if a != time_axis and s)


def _time_is_sharded(shape, time_axis: int) -> bool:
    return shape.sharding.shard_shape(shape.shape)[time_axis] != shape.shape[time_axis]


_partitioned.def_partition(partition=_partition, sharding_rule=_sharding_rule)


def _batching(axis_data, args, dims, **params):
    """vmap of a partitioned call: the wrapped primitive's batching rule, which folds the batch
    axis into the neuron block and binds a partitioned call again. `custom_partitioning` has no
    batching rule of its own, so this one is registered for it; other libraries' calls get what
    they got before: an unbatched call binds as is, a batched one fails as JAX would fail."""
    if all(d is None for d in dims):
        outs = custom_partitioning_p.bind(*args, **params)
        return outs, [None] * len(outs)
    if params["partition"] is not _partition:
        if _other_batching is None:
            raise NotImplementedError("Batching rule for 'custom_partitioning' not implemented")
        return _other_batching(axis_data, args, dims, **params)
    (call,) = params["static_args"]
    return batching.fancy_primitive_batchers[call.primitive](axis_data, args, dims, **call.kwargs)


_other_batching = batching.fancy_primitive_batchers.get(custom_partitioning_p)
batching.fancy_primitive_batchers[custom_partitioning_p] = _batching


# primitive -> prune(params, used_outputs) -> (params, which results remain) or None
_output_pruning: dict = {}


def register_output_pruning(primitive, prune) -> None:
    """Lets dead-code elimination rebind a partitioned `primitive` with `prune`'s parameters,
    which drop results nobody uses. The primitive's own dead-code rule (for the unwrapped call)
    must do the same, as the call's body goes through it."""
    _output_pruning[primitive] = prune


def _default_dce(used_outputs, eqn):
    """JAX's rule for primitives without one (keeping, more cautiously, any with effects)."""
    if not any(used_outputs) and not eqn.effects:
        return [False] * len(eqn.invars), None
    return [True] * len(eqn.invars), eqn


def _dce(used_outputs, eqn):
    """Dead-code elimination of a partitioned call: a jaxqif primitive drops its unused
    results; other libraries' calls get what they got before."""
    if eqn.params["partition"] is not _partition:
        return _other_dce(used_outputs, eqn)
    (call,) = eqn.params["static_args"]
    prune = _output_pruning.get(call.primitive)
    pruned = prune(call.kwargs, used_outputs) if prune and any(used_outputs) else None
    if pruned is None:
        return _default_dce(used_outputs, eqn)
    kwargs, kept = pruned
    body = eqn.params["call"]
    body_jaxpr, _ = pe.dce_jaxpr(body.jaxpr, kept, instantiate=True)
    params = dict(
        eqn.params,
        call=body.replace(jaxpr=body_jaxpr),
        static_args=(_Call(call.primitive, tuple(sorted(kwargs.items()))),),
        out_tree=jax.tree_util.tree_structure([0] * sum(kept)),
    )
    outvars = [v for v, keep in zip(eqn.outvars, kept) if keep]
    return [True] * len(eqn.invars), eqn.replace(params=params, outvars=outvars)


_other_dce = pe.dce_rules.get(custom_partitioning_p, _default_dce)
pe.dce_rules[custom_partitioning_p] = _dce
