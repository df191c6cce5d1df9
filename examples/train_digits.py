"""Train a spiking network of QIF neurons on scikit-learn's 8x8 handwritten digits.

Each image (64 pixels scaled to [0, 1]) is a constant input current held for NUM_STEPS time
steps ("direct coding") and runs through Dense -> QIF -> Dense -> QIF -> Dense. The last Dense is
a non-spiking readout: its output averaged over time (the mean membrane potential of an
integrating readout neuron) gives the class scores, trained with cross-entropy and Adam through
the QIF surrogate gradient. The QIF layers run whole sequences in jaxqif's fused kernel: the CPU
kernel here, the CUDA kernel on an NVIDIA GPU, chosen automatically.

    python examples/train_digits.py                      # the platform's fused kernel
    python examples/train_digits.py --backend jax        # the pure-JAX lax.scan path
    python examples/train_digits.py --plot digits.png    # spike raster + membrane trace

Both backends train the same network to the same accuracy; compare the seconds per epoch they
report to see the fused kernel's speedup. The data set ships with scikit-learn (no download).
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from jaxqif.linen import QIF

NUM_STEPS = 16  # time steps each image is presented for
HIDDEN = 128
BATCH_SIZE = 64
LEARNING_RATE = 2e-3
DEFAULT_EPOCHS = 30
SMOKE_BATCHES = 3  # --smoke: one epoch of this many batches


class SpikingMLP(nn.Module):
    """Dense -> QIF -> Dense -> QIF -> Dense readout, time-major ([time, batch, features]).

    With `record=True` the first QIF layer sows its membrane potentials (store_v_seq) and
    spikes into `intermediates`, for plotting.
    """

    num_classes: int = 10
    backend: str | None = None
    record: bool = False

    @nn.compact
    def __call__(self, images):  # [batch, 64]
        current = nn.Dense(HIDDEN)(images)
        # The image is the same at every step, so the first Dense runs once, then repeats.
        x_seq = jnp.broadcast_to(current, (NUM_STEPS, *current.shape))
        spikes = QIF(store_v_seq=self.record, backend=self.backend, name="qif_1")(x_seq)
        if self.record:
            self.sow("intermediates", "spikes_1", spikes)
        spikes = QIF(backend=self.backend, name="qif_2")(nn.Dense(HIDDEN)(spikes))
        return nn.Dense(self.num_classes)(spikes).mean(axis=0)  # [batch, classes]


def load_data(seed: int):
    """Digits as float32 pixels in [0, 1]; a stratified 80/20 train/test split."""
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    return train_test_split(images, labels, test_size=0.2, stratify=labels, random_state=seed)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"training epochs (default {DEFAULT_EPOCHS})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the train/test split, initialization and shuffling")
    parser.add_argument(
        "--backend", choices=("ffi", "jax"), default=None,
        help="ffi: the fused kernel; jax: the pure-JAX lax.scan path "
        "(default: the platform's fused kernel, as jaxqif's backend=None)",
    )
    parser.add_argument("--plot", metavar="PNG", help="save a spike raster and membrane trace")
    parser.add_argument(
        "--smoke", action="store_true",
        help=f"a quick check: one epoch of {SMOKE_BATCHES} batches (overrides --epochs)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    return args


def make_train_step(model, optimizer):
    """(params, opt_state, images, labels) -> (params, opt_state, loss): one optimizer step on
    the softmax cross-entropy."""

    def loss_fn(params, images, labels):
        logits = model.apply({"params": params}, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def train_step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def benchmark_step(backend: str):
    """One training step on a fixed batch, for `benchmarks/bench.py --examples`: returns
    (step, state) with step a jitted state -> state."""
    x_train, _, y_train, _ = load_data(seed=0)
    images, labels = jnp.asarray(x_train[:BATCH_SIZE]), jnp.asarray(y_train[:BATCH_SIZE])
    model = SpikingMLP(backend=backend)
    params = model.init(jax.random.key(0), images[:1])["params"]
    optimizer = optax.adam(LEARNING_RATE)
    train_step = make_train_step(model, optimizer)

    def step(state):
        params, opt_state, _ = train_step(*state, images, labels)
        return params, opt_state

    return jax.jit(step, donate_argnums=0), (params, optimizer.init(params))


def main(argv=None) -> dict:
    """Trains, evaluates, optionally plots; returns accuracies and seconds per epoch."""
    args = parse_args(argv)
    epochs = 1 if args.smoke else args.epochs
    x_train, x_test, y_train, y_test = load_data(args.seed)
    batches_per_epoch = len(x_train) // BATCH_SIZE  # the last partial batch is dropped
    if args.smoke:
        batches_per_epoch = SMOKE_BATCHES

    model = SpikingMLP(backend=args.backend)
    params = model.init(jax.random.key(args.seed), x_train[:1])["params"]
    optimizer = optax.adam(
        optax.cosine_decay_schedule(LEARNING_RATE, epochs * batches_per_epoch)
    )
    opt_state = optimizer.init(params)

    train_step = make_train_step(model, optimizer)

    @jax.jit
    def accuracy(params, images, labels):
        predictions = model.apply({"params": params}, images).argmax(axis=-1)
        return jnp.mean(predictions == labels)

    # Compile ahead of time, so that the timed epochs measure training only.
    train_step = (
        jax.jit(train_step, donate_argnums=(0, 1))
        .lower(params, opt_state, x_train[:BATCH_SIZE], y_train[:BATCH_SIZE])
        .compile()
    )

    epoch_seconds = []
    with tqdm(range(epochs), desc="training", unit="epoch") as progress:
        for epoch in progress:
            order = np.random.default_rng([args.seed, epoch]).permutation(len(x_train))
            start = time.perf_counter()
            for b in range(batches_per_epoch):
                batch = order[b * BATCH_SIZE : (b + 1) * BATCH_SIZE]
                params, opt_state, loss = train_step(
                    params, opt_state, x_train[batch], y_train[batch]
                )
            loss = float(loss)  # waits for the last step
            epoch_seconds.append(time.perf_counter() - start)
            progress.set_postfix(loss=f"{loss:.3f}", s_per_epoch=f"{epoch_seconds[-1]:.3f}")

    results = dict(
        train_accuracy=float(accuracy(params, x_train, y_train)),
        test_accuracy=float(accuracy(params, x_test, y_test)),
        seconds_per_epoch=float(np.mean(epoch_seconds)),
    )
    if args.plot:
        plot_example(params, x_test[0], y_test[0], args.backend, args.plot)
        print(f"saved spike raster and membrane trace of a test digit to {args.plot}")
    path = args.backend or f"default: fused kernel of '{jax.default_backend()}'"
    print(f"backend {path}: {results['seconds_per_epoch']:.3f} s/epoch "
          f"({batches_per_epoch} batches of {BATCH_SIZE}, T = {NUM_STEPS}, after compilation)")
    print(f"train accuracy {results['train_accuracy']:.4f}, "
          f"test accuracy {results['test_accuracy']:.4f}")
    return results


def plot_example(params, image, label, backend, path):
    """Saves the digit, its hidden spike raster and membrane traces (from QIF's store_v_seq)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    model = SpikingMLP(backend=backend, record=True)
    logits, state = model.apply({"params": params}, image[None], mutable=["intermediates"])
    recorded = state["intermediates"]
    spikes = np.asarray(recorded["spikes_1"][0][:, 0])       # [time, neurons]
    v_seq = np.asarray(recorded["qif_1"]["v_seq"][0][:, 0])  # [time, neurons]
    # Trace three neurons with different firing rates, leaving out silent ones and those that
    # fire at every step (they sit at v_reset).
    counts = spikes.sum(axis=0)
    rates = np.unique(counts[(counts > 0) & (counts < NUM_STEPS)])
    picked_rates = rates[np.linspace(0, len(rates) - 1, min(3, len(rates))).astype(int)]
    traced = [int(np.flatnonzero(counts == rate)[0]) for rate in picked_rates]

    fig, (ax_image, ax_raster, ax_trace) = plt.subplots(
        1, 3, figsize=(13, 3.6), gridspec_kw=dict(width_ratios=[1, 2.2, 2.2])
    )
    ax_image.imshow(image.reshape(8, 8), cmap="gray_r")
    ax_image.set_title(f"digit {label}, predicted {int(np.argmax(logits))}")
    ax_image.axis("off")
    steps, neurons = np.nonzero(spikes)
    ax_raster.scatter(steps, neurons, marker="|", s=40, color="black")
    ax_raster.set(xlabel="time step", ylabel="neuron", xlim=(-0.5, NUM_STEPS - 0.5),
                  title=f"hidden layer 1 spikes ({int(spikes.sum())} in all)")
    for neuron in traced:
        (line,) = ax_trace.plot(v_seq[:, neuron], marker=".", label=f"neuron {neuron}")
        fired = np.flatnonzero(spikes[:, neuron])
        ax_trace.plot(fired, np.full(len(fired), 1.05), "v", color=line.get_color())
    ax_trace.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="threshold")
    ax_trace.set(xlabel="time step", ylabel="V after reset",
                 title="membrane potential (triangles: spikes)")
    ax_trace.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
