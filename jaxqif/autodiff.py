"""The fused path: the forward and backward primitives joined by a custom VJP.

Under differentiation the forward also saves V every few steps (checkpoints: one state-dtype
value per neuron every 8 steps, 4 for 16-bit inputs); the backward recomputes H from those and
x, which autodiff keeps anyway, instead of reading a stored H: fewer bytes moved and held.
Cotangents that are symbolic zeros (unused v outputs, say) never reach the kernel. Neuron
parameters given as arrays are operands like x: the backward kernel returns their gradients
summed over time and over the copies of the largest parameter's block (jaxqif/primitives.py),
which are summed here down to each parameter's own block.
"""

from __future__ import annotations

import functools

import jax
from jax.custom_derivatives import SymbolicZero

from jaxqif import _params
from jaxqif._config import NeuronConfig, checkpoint_count
from jaxqif._jax import vary_alike
from jaxqif.primitives import backward_p, forward_p


def _outputs(outs, store_v_seq):
    spikes, v_final = outs[0], outs[1]
    return spikes, v_final, (outs[2] if store_v_seq else None)


@functools.lru_cache(maxsize=256)
def fused_multistep(config: NeuronConfig, time_axis: int, store_v_seq: bool):
    """(x_seq, v_init, *params) -> (spikes, v_final, v_seq or None), differentiable in every
    input. v_init=None starts every neuron at config.default_v_init without making an array of
    it; params: the compact arrays of config.array_names (jaxqif/_params.py)."""
    multistep = _fused(config, time_axis, store_v_seq, constant_start=False)
    multistep_from_default = _fused(config, time_axis, store_v_seq, constant_start=True)

    def call(x_seq, v_init, *params):
        try:
            if v_init is None:
                return multistep_from_default(*vary_alike(x_seq, *params))
            return multistep(*vary_alike(x_seq, v_init, *params))
        except TypeError as error:
            if "forward-mode autodiff" not in str(error):
                raise
            raise TypeError(
                "jaxqif: the fused path (backend='ffi', or the default where a kernel exists) "
                "supports reverse-mode differentiation (jax.grad, jax.vjp) only; forward mode "
                "(jax.jvp, jax.jacfwd, jax.linearize) needs backend='jax'"
            ) from error

    return call


def _fused(config: NeuronConfig, time_axis: int, store_v_seq: bool, constant_start: bool):
    """The custom-VJP function of (x_seq, v_init, *params), or of (x_seq, *params) alone with
    constant_start."""
    v_init_value = config.default_v_init if constant_start else None
    params_count = len(config.array_names)
    # v_final is always asked for: under jit, dead-code elimination drops it when unused.
    params = dict(config=config, time_axis=time_axis, store_v_final=True,
                  store_v_seq=store_v_seq, v_init_value=v_init_value)

    def multistep(x_seq, *rest):  # rest: [v_init], *neuron parameters
        return _outputs(forward_p.bind(x_seq, *rest, save_checkpoints=False, **params),
                        store_v_seq)

    def multistep_fwd(x_seq, *rest):
        x_seq, rest = x_seq.value, tuple(r.value for r in rest)
        # A sequence of one interval has no checkpoints: none is asked for (an empty array
        # would be one more residual, and crashes JAX 0.11.2 inside shard_map, see _jax.py).
        save = checkpoint_count(x_seq.shape[time_axis], x_seq.dtype) > 0
        outs = list(forward_p.bind(x_seq, *rest, save_checkpoints=save, **params))
        checkpoints = outs.pop() if save else None
        return _outputs(outs, store_v_seq), (x_seq, checkpoints, rest)

    def multistep_bwd(saved, cotangents):
        x_seq, checkpoints, rest = saved
        neuron_params = rest[len(rest) - params_count:]
        g_spikes, g_v_final, g_v_seq = cotangents
        present = lambda g: g is not None and not isinstance(g, SymbolicZero)
        given = [g for g in (g_spikes, g_v_seq, g_v_final) if present(g)]
        if not given:
            return (jax.numpy.zeros_like(x_seq), *(jax.numpy.zeros_like(r) for r in rest))
        saved_checkpoints = () if checkpoints is None else (checkpoints,)
        grad_x, *grads = backward_p.bind(
            *given, x_seq, *saved_checkpoints, *rest, config=config, time_axis=time_axis,
            has_grad_spikes=present(g_spikes), has_grad_v_seq=present(g_v_seq),
            has_grad_v_final=present(g_v_final), v_init_value=v_init_value,
            param_grads=(True,) * params_count,
        )
        split = len(grads) - params_count
        grad_v_init, over_block = grads[:split], grads[split:]
        return (grad_x, *grad_v_init,
                *(_params.sum_to_compact(g, p.shape) for g, p in zip(over_block, neuron_params)))

    if constant_start:
        function = jax.custom_vjp(lambda x_seq, *neuron_params: multistep(x_seq, *neuron_params))
    else:
        function = jax.custom_vjp(
            lambda x_seq, v_init, *neuron_params: multistep(x_seq, v_init, *neuron_params))
    function.defvjp(multistep_fwd, multistep_bwd, symbolic_zeros=True)
    return function
