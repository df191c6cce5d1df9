"""The implementations compared, each wrapped so the sweep can time it the same way.

Why this module exists: the sweep (sweep.py) only knows ``case(...) -> (launch, sync,
event_timer, checksum)``; how each implementation is called, synchronized and checked lives
here, in one place for the GPU benchmark (bench.py) and the CPU section (cpu_bench.py):

  jaxqif      jaxqif.qif_multistep(backend="ffi"): the fused XLA FFI kernel (CUDA or CPU);
  jaxqif-arrays
              the same with tau and v_threshold given per feature, as learnable layers give
              them (x[T, N] seen as [T, N / F, F], F = min(N, 1024) features), and in fwd+bwd
              their gradients too: what array parameters cost against numbers;
  pure-jax    jaxqif.qif_multistep(backend="jax"): the lax.scan reference;
  spikingjelly-triton
              SpikingJelly 2.0's qif_multi_step on CUDA, through sj_baseline.py (its Triton
              kernels); on the CPU, cpu_bench.py uses the same wrapper on SpikingJelly's CPU
              path (sj_baseline.load_cpu).
"""

from __future__ import annotations

JAXQIF, SJ, PURE_JAX, JAXQIF_ARRAYS = "jaxqif", "spikingjelly-triton", "pure-jax", "jaxqif-arrays"
IMPLS = (JAXQIF, SJ, PURE_JAX, JAXQIF_ARRAYS)
BASELINES = (SJ, PURE_JAX)
ARRAY_FEATURES = 1024  # features of jaxqif-arrays' per-feature parameters (at most)


def per_feature_parameters(jnp, n: int):
    """jaxqif-arrays' tau and v_threshold for x[T, n]: one value per feature (F = min(n,
    ARRAY_FEATURES)), around the scalar path's tau = 2, v_threshold = 1."""
    features = min(n, ARRAY_FEATURES)
    f = jnp.arange(features, dtype=jnp.float32) / features
    return 2.0 + 0.1 * f, 1.0 + 0.05 * f


def spikes_with_parameters(jaxqif, backend: str, x, tau, v_threshold):
    """qif_multistep's spikes for x[T, N] with per-feature tau and v_threshold (x seen as
    [T, N / F, F])."""
    t, n = x.shape
    out = jaxqif.qif_multistep(x.reshape(t, n // tau.shape[0], tau.shape[0]), tau=tau,
                               v_threshold=v_threshold, backend=backend)[0]
    return out.reshape(t, n)


class JaxImpl:
    """jaxqif.qif_multistep with one backend: "ffi" (the fused kernel) or "jax" (lax.scan);
    per_feature: tau and v_threshold as arrays of one value per feature (jaxqif-arrays)."""

    def __init__(self, jax, jnp, jaxqif, backend: str, per_feature: bool = False):
        self.jax, self.jnp, self.backend = jax, jnp, backend

        def parameters(x):
            return per_feature_parameters(jnp, x.shape[-1])

        def spikes(x, *params):
            if not per_feature:
                return jaxqif.qif_multistep(x, backend=backend)[0]
            return spikes_with_parameters(jaxqif, backend, x, *params)

        def forward(x):
            return spikes(x, *(parameters(x) if per_feature else ()))

        def spikes_and_grad(x, g):
            # A training step needs the spikes (the next layer's input) as well as grad_x of
            # sum(spikes * g): returning them keeps XLA from dropping a forward whose results
            # the gradient alone would not need (jaxqif's backward recomputes from x). With
            # per-feature parameters, their gradients too (a learnable layer's).
            params = parameters(x) if per_feature else ()
            out, vjp = jax.vjp(spikes, x, *params)
            grads = vjp(g)
            return (out, *grads)

        self.fns = {"fwd": jax.jit(forward), "fwd+bwd": jax.jit(spikes_and_grad)}

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
