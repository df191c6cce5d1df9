"""One process of `test_multiprocess.py`: a data- and model-parallel training step of a small
spiking network over the CPU devices of every process, its loss and gradients saved to OUT.

  XLA_FLAGS=--xla_force_host_platform_device_count=LOCAL_DEVICES \\
      python tests/_multiprocess_worker.py PORT NUM_PROCESSES PROCESS_ID OUT

Batch is sharded over "data" (across processes), neurons over "model" (within a process).
A single process also saves the unsharded result, computed on one device.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

import jaxqif

T, BATCH, FEATURES, NEURONS, CLASSES = 8, 8, 5, 8, 3
SPECS = dict(w_in=P(None, "model"), w_out=P("model", None), x=P(None, "data", None),
             v0=P("data", "model"), target=P("data", None))


def problem():
    """Parameters and a batch, as NumPy arrays: the same in every process."""
    rng = np.random.default_rng(0)
    return dict(
        w_in=rng.normal(0, 0.8, (FEATURES, NEURONS)),
        w_out=rng.normal(0, 0.5, (NEURONS, CLASSES)),
        x=rng.uniform(0, 1, (T, BATCH, FEATURES)),
        v0=rng.uniform(-0.1, 0.5, (BATCH, NEURONS)),
        target=rng.normal(0, 1, (BATCH, CLASSES)),
    )


def loss(params, data):
    current = jnp.einsum("tbf,fn->tbn", data["x"], params["w_in"])
    spikes, v_final, _ = jaxqif.qif_multistep(current, data["v0"])
    logits = spikes.mean(axis=0) @ params["w_out"]
    return jnp.mean((logits - data["target"]) ** 2) + 1e-2 * jnp.mean(v_final ** 2)


loss_and_grads = jax.jit(jax.value_and_grad(loss))


def split(arrays):
    params = {k: arrays[k] for k in ("w_in", "w_out")}
    return params, {k: arrays[k] for k in ("x", "v0", "target")}


def main(port: int, num_processes: int, process_id: int, out: str):
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id,
                               initialization_timeout=60)
    mesh = jax.sharding.Mesh(np.array(jax.devices()).reshape(2, -1), ("data", "model"))
    arrays = problem()
    sharded = {k: jax.make_array_from_callback(a.shape, NamedSharding(mesh, SPECS[k]),
                                               lambda index, a=a: a[index])
               for k, a in arrays.items()}
    value, grads = loss_and_grads(*split(sharded))
    for k, g in grads.items():  # gradients keep the parameters' sharding
        assert g.sharding.is_equivalent_to(NamedSharding(mesh, SPECS[k]), g.ndim), (k, g.sharding)
    value, grads = multihost_utils.process_allgather((value, grads), tiled=True)
    results = dict(loss=value, **{f"grad_{k}": g for k, g in grads.items()})
    if num_processes == 1:
        ref_value, ref_grads = loss_and_grads(*split(jax.device_put(arrays, jax.devices()[0])))
        results.update(ref_loss=ref_value, **{f"ref_grad_{k}": g for k, g in ref_grads.items()})
    if process_id == 0:
        np.savez(out, **results)
    jax.distributed.shutdown()


if __name__ == "__main__":
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)
    port, num_processes, process_id, out = sys.argv[1:]
    main(int(port), int(num_processes), int(process_id), out)
