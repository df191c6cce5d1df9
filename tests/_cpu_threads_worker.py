"""Worker of test_cpu_threads.py: computes, on the fused CPU path and the pure-JAX one, the
spikes, v_final and gradients (of x, v_init and the per-feature tau and v_threshold) of a few
calls whose neurons span several of the CPU handler's blocks, and saves them with the number of
XLA's intra-op threads (the CPU handler's pool, threads named tf_XLAEigen) to an .npz file.

    python _cpu_threads_worker.py OUT.npz [CPUS]

CPUS: run on that many CPUs only (the process's affinity, set before JAX starts: XLA sizes its
pool from it)."""

import os
import sys


def _main(out: str, cpus: int | None) -> None:
    if cpus is not None:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:cpus])
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import jaxqif

    results = {}
    # [T, batch, features]: 2100 neurons, 9 blocks of the CPU handler (256 neurons each).
    steps, batch, features = 37, 3, 700
    keys = jax.random.split(jax.random.PRNGKey(0), 5)
    for dtype in ("float32", "float64", "bfloat16"):
        x = (1.2 * jax.random.normal(keys[0], (steps, batch, features)) + 0.4).astype(dtype)
        v_init = 0.3 * jax.random.normal(keys[1], (batch, features))
        tau = 2.0 + jax.random.uniform(keys[2], (features,))
        threshold = 1.0 + 0.1 * jax.random.uniform(keys[3], (features,))
        cotangent = jax.random.normal(keys[4], x.shape).astype(dtype)
        for reset in ("hard", "soft"):
            for arrays in (False, True):
                def loss(x, v_init, tau, threshold, backend=None, reset=reset, arrays=arrays):
                    params = dict(tau=tau, v_threshold=threshold) if arrays else {}
                    spikes, v_final, _ = jaxqif.qif_multistep(
                        x, v_init=v_init, backend=backend,
                        v_reset=None if reset == "soft" else -0.1, **params)
                    total = jnp.sum(spikes.astype(jnp.float32) * cotangent.astype(jnp.float32))
                    return total + jnp.sum(v_final.astype(jnp.float32)), (spikes, v_final)

                for backend in ("ffi", "jax"):
                    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True),
                                   static_argnames="backend")
                    grads, (spikes, v_final) = grad(x, v_init.astype(dtype), tau, threshold,
                                                    backend=backend)
                    name = f"{dtype}-{reset}-{'arrays' if arrays else 'numbers'}-{backend}"
                    for key, value in zip(("grad_x", "grad_v_init", "grad_tau",
                                           "grad_v_threshold", "spikes", "v_final"),
                                          (*grads, spikes, v_final)):
                        if key in ("grad_tau", "grad_v_threshold") and not arrays:
                            continue
                        results[f"{name}/{key}"] = np.asarray(value.astype(jnp.float64))
    results["xla_threads"] = np.array(sum(
        open(f"/proc/self/task/{task}/comm").read().strip() == "tf_XLAEigen"
        for task in os.listdir("/proc/self/task")))
    np.savez(out, **results)


if __name__ == "__main__":
    _main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
