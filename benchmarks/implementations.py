"""The implementations compared, each wrapped so the sweep can time it the same way.

Why this module exists: the sweep (sweep.py) only knows ``case(...) -> (launch, sync,
event_timer, checksum)``; how each implementation is called, synchronized and checked lives
here, in one place for the GPU benchmark (bench.py) and the CPU section (cpu_bench.py):

  jaxqif      jaxqif.qif_multistep(backend="ffi"): the fused XLA FFI kernel (CUDA or CPU);
  pure-jax    jaxqif.qif_multistep(backend="jax"): the lax.scan reference;
  spikingjelly-triton
              SpikingJelly 2.0's qif_multi_step on CUDA, through sj_baseline.py (its Triton
              kernels); on the CPU, cpu_bench.py uses the same wrapper on SpikingJelly's CPU
              path (sj_baseline.load_cpu).
"""

from __future__ import annotations

JAXQIF, SJ, PURE_JAX = "jaxqif", "spikingjelly-triton", "pure-jax"
IMPLS = (JAXQIF, SJ, PURE_JAX)
BASELINES = (SJ, PURE_JAX)


class JaxImpl:
    """jaxqif.qif_multistep with one backend: "ffi" (the fused kernel) or "jax" (lax.scan)."""

    def __init__(self, jax, jnp, jaxqif, backend: str):
        self.jax, self.jnp, self.backend = jax, jnp, backend

        def spikes(x):
            return jaxqif.qif_multistep(x, backend=backend)[0]

        def spikes_and_grad(x, g):
            # A training step needs the spikes (the next layer's input) as well as grad_x of
            # sum(spikes * g): returning them keeps XLA from dropping a forward whose results
            # the gradient alone would not need (jaxqif's backward recomputes from x).
            out, vjp = jax.vjp(spikes, x)
            return out, vjp(g)[0]

        self.fns = {"fwd": jax.jit(spikes), "fwd+bwd": jax.jit(spikes_and_grad)}

    def case(self, mode: str, xs, gs):
        """(launch, sync, event_timer, checksum) for ``measure`` over the input sets."""
        fn, jnp = self.fns[mode], self.jnp
        if mode == "fwd":
            def launch(i):
                return fn(xs[i % len(xs)])
        else:
            def launch(i):
                return fn(xs[i % len(xs)], gs[i % len(gs)])

        def checksum(out):
            out = out if mode == "fwd" else out[1]  # grad_x
            return float(jnp.sum(jnp.abs(out.astype(jnp.float32))))

        return launch, self.jax.block_until_ready, None, checksum


class SjImpl:
    """SpikingJelly 2.0's QIF on torch tensors (see sj_baseline.py): its Triton kernels on a
    GPU; on the CPU (cpu_bench.py) its CPU path, where ``sj.event_timer`` is None so the host
    clock times it."""

    def __init__(self, sj):
        self.sj = sj
        self.xs, self.gs, self.v = [], [], None

    def set_data(self, xs_jax, gs_jax, dtype: str, n: int):
        """Torch copies of the JAX input sets (leaves that require grad) and a v_init."""
        self.clear()
        self.xs = [self.sj.from_jax(x, dtype).requires_grad_(True) for x in xs_jax]
        self.gs = [self.sj.from_jax(g, dtype) for g in gs_jax]
        self.v = self.sj.v_init(n)

    def clear(self):
        self.xs, self.gs, self.v = [], [], None
        try:
            self.sj.torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001
            pass

    def case(self, mode: str):
        sj, xs, gs, v = self.sj, self.xs, self.gs, self.v
        if mode == "fwd":
            def launch(i):
                return sj.forward(xs[i % len(xs)], v)
        else:
            def launch(i):
                return sj.forward_backward(xs[i % len(xs)], v, gs[i % len(gs)])

        def checksum(out):
            return float(out.detach().float().abs().sum())

        return launch, lambda out: sj.synchronize(), sj.event_timer, checksum
