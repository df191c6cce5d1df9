"""Every JAX interface jaxqif uses beyond `jax`, `jax.numpy`, `jax.lax` and `jax.ffi`, in one place.

These modules are public enough to build primitives on (JAX's own FFI examples and libraries
such as jax-finufft use them), but they change between releases. Each name used is listed here
with what it is for; tested with JAX 0.10.2, 0.11.2 and 0.12.1 (what `pyproject.toml` allows).
Where a version differs, the adaptation is here and nowhere else.

- `jax.extend.core.Primitive`: the forward and backward primitives.
- `jax.core.ShapedArray`, `jax.core.Tracer`: avals of absent operands; refusing traced settings.
- `jax.interpreters.mlir`: `register_lowering`, `lower_fun` (the partitioned lowering),
  `ir_constant` (absent operands).
- `jax.interpreters.batching.primitive_batchers`: the vmap rules.
- `jax.interpreters.ad.primitive_jvps`: the backward's rule, which says what the fused path does
  not differentiate (grad of grad).
- `jax.interpreters.partial_eval.dce_rules`: dead-code rules that drop results nobody uses. JAX
  0.12 calls them as `rule(used_outputs, live_inputs, eqn)`, earlier releases as
  `rule(used_outputs, eqn)`; `register_dce_rule` takes the older form and adapts.
- `JaxprEqn.replace`: the dead-code rule's pruned equation.
- `jax.experimental.custom_partitioning`: sharding over the neuron axes (`jaxqif/_partitioning.py`).
- `jax._src.dispatch.prim_requires_devices_during_lowering` (private): a primitive lowered
  through `custom_partitioning` must be listed there, as JAX lists `custom_partitioning` itself
  and its own cuDNN attention primitives, which lower the same way; otherwise JAX may lower it
  without devices, which `custom_partitioning` refuses.

Known JAX bug avoided elsewhere: JAX 0.11.2 crashes (segmentation fault in XLA's compiler) when a
zero-element array crosses a `shard_map` boundary under `jax.grad`, as a residual. So the fused
forward never saves an empty array of checkpoints (`jaxqif/autodiff.py`).
"""

from __future__ import annotations

import inspect

import jax
from jax.extend.core import Primitive
from jax._src import dispatch as _dispatch
from jax.interpreters import ad, batching, mlir
from jax.interpreters import partial_eval as pe

__all__ = [
    "Primitive", "ShapedArray", "Tracer", "mlir", "register_batching_rule", "register_dce_rule",
    "register_jvp_rule", "requires_devices_during_lowering", "vary_alike",
]

ShapedArray = jax.core.ShapedArray
Tracer = jax.core.Tracer


def register_batching_rule(primitive, rule) -> None:
    batching.primitive_batchers[primitive] = rule


def register_jvp_rule(primitive, rule) -> None:
    ad.primitive_jvps[primitive] = rule


def requires_devices_during_lowering(primitive) -> None:
    _dispatch.prim_requires_devices_during_lowering.add(primitive)


def _dce_rule_takes_live_inputs() -> bool:
    """Whether this JAX calls dead-code rules with the live inputs (0.12 and later)."""
    default = getattr(pe, "_default_dce_rule", None)
    if default is None:
        return jax.__version_info__ >= (0, 12)
    return len(inspect.signature(default).parameters) == 3


_DCE_TAKES_LIVE_INPUTS = _dce_rule_takes_live_inputs()


def register_dce_rule(primitive, rule) -> None:
    """Registers `rule(used_outputs, eqn) -> (used_inputs, new_eqn or None)` for `primitive`
    in the calling convention of the installed JAX. jaxqif's primitives have no effects and take
    no references, so the live inputs JAX 0.12 adds change nothing for them."""
    if _DCE_TAKES_LIVE_INPUTS:
        pe.dce_rules[primitive] = lambda used_outputs, live_inputs, eqn: rule(used_outputs, eqn)
    else:
        pe.dce_rules[primitive] = rule


def vary_alike(*arrays):
    """Inside `shard_map`, arrays may vary over different manual mesh axes (one made outside
    the shard_map is the same on every device), while a computation combining them varies over
    all of them. Each is cast the way a binary op would cast it, by adding a zero that varies
    like the others (XLA drops the additions): the fused call's outputs, and the pure-JAX scan's
    carry, then have one type, and autodiff sums a shared array's gradient over the devices
    using it. Outside `shard_map`, the arrays as they are."""
    if not jax.sharding.get_abstract_mesh().manual_axes:
        return arrays
    out = []
    for a in arrays:
        for b in arrays:
            if b is not a:
                a = a + jax.lax.full_like(b, 0, a.dtype, a.shape)
        out.append(a)
    return tuple(out)
