"""Classify spatio-temporal spike patterns over 200+ time steps with stacked QIF layers.

The data are "random manifold" spike patterns (randman; Zenke & Vogels, Neural Computation 2021),
generated here with numpy and shaped like the Spiking Heidelberg Digits: each of NUM_CLASSES
classes is a random smooth curve through the space of spike times of NUM_CHANNELS input
channels; a sample is a random point on its class's curve and every channel fires exactly once,
at the time step that point gives it. Spike counts therefore carry no information: only the
timing does, and a classifier has to integrate it over all NUM_STEPS steps.

Two networks learn it, both classifying by a Dense readout of their last layer's spike counts:

- feed-forward: Dense -> QIF -> Dense -> QIF -> Dense. Every QIF layer sees its whole input
  sequence at once, so it runs in jaxqif's fused multi-step kernel (`jaxqif.linen.QIF`).
- recurrent: Dense -> recurrent QIF layer -> Dense, where each step's input current also
  depends on the layer's own spikes of the step before. That cannot be computed a sequence at a
  time, so it steps `jaxqif.linen.QIFCell` through `nn.RNN` (a pure-JAX scan).

`--backend` picks the path of the feed-forward network: "both" (the default) trains it once on
the fused kernel ("ffi") and once on the pure-JAX lax.scan path ("jax") from the same
initialization, so that the two time-per-step figures compare like with like; "ffi" or "jax"
trains it on that path only. (The two paths' accuracies come out close but not equal: their
last-bit rounding differences grow over training.) The recurrent network is trained once
either way. Each run reports test accuracy against chance and the mean time per training step
after compilation.

`--learnable tau,v_threshold` also trains those neuron parameters of the feed-forward
network's QIF layers, one value per neuron of the layer (its features), starting at the
configured numbers; the fused kernels compute their gradients (`jaxqif.linen.QIF`'s
`learnable`).

    python examples/temporal_task.py                  # both paths: ~80 s on 2 CPU cores
    python examples/temporal_task.py --backend ffi    # the fused kernel only
    python examples/temporal_task.py --backend ffi --learnable tau,v_threshold
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from jaxqif.linen import QIF, QIFCell

NUM_CLASSES = 10
NUM_CHANNELS = 100
NUM_STEPS = 200
SAMPLES_PER_CLASS = 200
TEST_FRACTION = 0.2
HIDDEN = 128
BATCH_SIZE = 64
LEARNING_RATE = 1e-2
DEFAULT_EPOCHS = 10
# A long membrane time constant (in steps) and weights of order 1 (not Dense's default
# 1/sqrt(fan_in): the inputs are sparse binary spikes) make each hidden neuron a coincidence
# detector that fires a few times per sample, when spikes it weighs strongly arrive close
# together: counts of such spikes are class-specific, which counts of input spikes are not.
TAU = 10.0
INPUT_WEIGHT_INIT = nn.initializers.normal(stddev=2.0)
HIDDEN_WEIGHT_INIT = nn.initializers.normal(stddev=1.0)  # hidden layers spike more per step
RECURRENT_WEIGHT_INIT = nn.initializers.normal(stddev=0.2)  # weak at first: no runaway loop


@dataclasses.dataclass(frozen=True)
class TaskSize:
    """What --smoke shrinks: the data set, the network width and the training length."""

    samples_per_class: int = SAMPLES_PER_CLASS
    hidden: int = HIDDEN
    batch_size: int = BATCH_SIZE
    max_batches_per_epoch: int | None = None  # None: the whole training set each epoch


SMOKE = TaskSize(samples_per_class=8, hidden=16, batch_size=16, max_batches_per_epoch=2)


# --- data -------------------------------------------------------------------------------------


def random_smooth_curves(rng, num_curves, num_channels, smoothness=2.0, num_harmonics=5):
    """Random Fourier series f[curve, channel](u), u in [0, 1], rescaled to [0, 1].

    The k-th harmonic's amplitude falls as 1 / k**smoothness, so each curve is smooth; random
    frequencies and phases make every curve (every class) different.
    """
    k = np.arange(1, num_harmonics + 1)
    shape = (num_curves, num_channels, num_harmonics)
    amplitude = rng.uniform(size=shape) / k**smoothness
    frequency = k * rng.uniform(0.5, 1.5, size=shape)
    phase = rng.uniform(0, 2 * np.pi, size=shape)

    def raw(u):  # u: [samples] -> [samples, curves, channels]
        angles = 2 * np.pi * frequency * u[:, None, None, None] + phase
        return np.sum(amplitude * np.sin(angles), axis=-1)

    grid = raw(np.linspace(0, 1, 1001))  # the range of each curve, to rescale it to [0, 1]
    low, high = grid.min(axis=0), grid.max(axis=0)
    return lambda u: (raw(u) - low) / (high - low)


def make_randman(seed, samples_per_class):
    """Spike trains [samples, NUM_STEPS, NUM_CHANNELS] (float32, one spike per channel) and
    labels [samples] (int32), shuffled."""
    rng = np.random.default_rng(seed)
    curves = random_smooth_curves(rng, NUM_CLASSES, NUM_CHANNELS)
    position = rng.uniform(size=NUM_CLASSES * samples_per_class)
    labels = np.repeat(np.arange(NUM_CLASSES), samples_per_class)
    values = curves(position)[np.arange(len(labels)), labels]  # [samples, channels] in [0, 1]
    spike_step = np.round(values * (NUM_STEPS - 1)).astype(np.int64)
    spikes = np.zeros((len(labels), NUM_STEPS, NUM_CHANNELS), np.float32)
    sample, channel = np.indices(spike_step.shape)
    spikes[sample, spike_step, channel] = 1.0
    order = rng.permutation(len(labels))
    return spikes[order], labels[order].astype(np.int32)


# --- networks ---------------------------------------------------------------------------------


class FeedForwardSNN(nn.Module):
    """Dense -> QIF -> Dense -> QIF -> Dense readout; QIF layers in the fused multi-step kernel."""

    hidden: int
    backend: str | None = None
    learnable: tuple[str, ...] = ()  # neuron parameters trained per feature

    @nn.compact
    def __call__(self, spikes):  # [batch, time, channels]
        # Batch-major data, so the QIF layers take time on axis 1.
        qif = lambda: QIF(tau=TAU, time_axis=1, backend=self.backend, learnable=self.learnable)
        x = nn.Dense(self.hidden, kernel_init=INPUT_WEIGHT_INIT)(spikes)
        x = qif()(x)
        x = nn.Dense(self.hidden, kernel_init=HIDDEN_WEIGHT_INIT)(x)
        x = qif()(x)
        return nn.Dense(NUM_CLASSES)(x.sum(axis=1))  # readout of spike counts: [batch, classes]


class RecurrentQIFCell(nn.RNNCellBase):
    """QIF neurons whose input current adds a recurrent Dense of their previous spikes.

    carry = (membrane potential, previous spikes); the input x_t is the feed-forward current.
    """

    hidden: int

    @nn.compact
    def __call__(self, carry, x_t):
        v, previous_spikes = carry
        recurrent = nn.Dense(self.hidden, use_bias=False, kernel_init=RECURRENT_WEIGHT_INIT)
        current = x_t + recurrent(previous_spikes)
        v, spikes = QIFCell(tau=TAU, name="qif")(v, current)
        return (v, spikes), spikes

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        # parent=None: a stand-alone cell, just to ask for its resting carry.
        v = QIFCell(tau=TAU, parent=None).initialize_carry(rng, input_shape)
        return v, jnp.zeros(input_shape, jnp.float32)

    @property
    def num_feature_axes(self) -> int:
        return 1


class RecurrentSNN(nn.Module):
    """Dense -> recurrent QIF layer (QIFCell stepped by nn.RNN) -> Dense readout."""

    hidden: int

    @nn.compact
    def __call__(self, spikes):  # [batch, time, channels]
        # The feed-forward current, for the whole sequence at once.
        current = nn.Dense(self.hidden, kernel_init=INPUT_WEIGHT_INIT)(spikes)
        x = nn.RNN(RecurrentQIFCell(self.hidden))(current)  # nn.RNN is batch-major by default
        return nn.Dense(NUM_CLASSES)(x.sum(axis=1))


# --- training ---------------------------------------------------------------------------------


def make_train_step(model, optimizer):
    """(params, opt_state, spikes, labels) -> (params, opt_state, loss): one optimizer step on
    the softmax cross-entropy."""

    def loss_fn(params, spikes, labels):
        logits = model.apply({"params": params}, spikes)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    def train_step(params, opt_state, spikes, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, spikes, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def benchmark_step(backend: str, size: TaskSize | None = None):
    """One training step of the feed-forward network on a fixed batch, for
    `benchmarks/bench.py --examples`: returns (step, state) with step a jitted state -> state."""
    size = size or TaskSize()
    spikes, labels = make_randman(0, max(1, size.batch_size // NUM_CLASSES + 1))
    spikes, labels = jnp.asarray(spikes[: size.batch_size]), jnp.asarray(labels[: size.batch_size])
    model = FeedForwardSNN(size.hidden, backend=backend)
    params = model.init(jax.random.key(0), spikes[:1])["params"]
    optimizer = optax.adam(LEARNING_RATE)
    train_step = make_train_step(model, optimizer)

    def step(state):
        params, opt_state, _ = train_step(*state, spikes, labels)
        return params, opt_state

    return jax.jit(step, donate_argnums=0), (params, optimizer.init(params))


def train_and_evaluate(name, model, data, size: TaskSize, epochs: int, seed: int) -> dict:
    """Adam on softmax cross-entropy; returns test accuracy and mean seconds per train step."""
    x_train, y_train, x_test, y_test = data
    batches_per_epoch = len(x_train) // size.batch_size
    if size.max_batches_per_epoch is not None:
        batches_per_epoch = min(batches_per_epoch, size.max_batches_per_epoch)
    params = model.init(jax.random.key(seed), x_train[:1])["params"]
    optimizer = optax.adam(
        optax.cosine_decay_schedule(LEARNING_RATE, epochs * batches_per_epoch)
    )
    opt_state = optimizer.init(params)

    train_step = make_train_step(model, optimizer)

    @jax.jit
    def count_correct(params, spikes, labels):
        return jnp.sum(model.apply({"params": params}, spikes).argmax(axis=-1) == labels)

    # Compile ahead of time, so that the timed steps measure training only.
    first = slice(0, size.batch_size)
    train_step = (
        jax.jit(train_step, donate_argnums=(0, 1))
        .lower(params, opt_state, x_train[first], y_train[first])
        .compile()
    )

    step_seconds = 0.0
    with tqdm(range(epochs), desc=name, unit="epoch") as progress:
        for epoch in progress:
            order = np.random.default_rng([seed, epoch]).permutation(len(x_train))
            start = time.perf_counter()
            for b in range(batches_per_epoch):
                batch = order[b * size.batch_size : (b + 1) * size.batch_size]
                params, opt_state, loss = train_step(
                    params, opt_state, x_train[batch], y_train[batch]
                )
            loss = float(loss)  # waits for the last step
            step_seconds += time.perf_counter() - start
            progress.set_postfix(loss=f"{loss:.3f}")

    correct = sum(
        int(count_correct(params, x_test[i : i + 256], y_test[i : i + 256]))
        for i in range(0, len(x_test), 256)
    )
    return dict(
        test_accuracy=correct / len(x_test),
        seconds_per_step=step_seconds / (epochs * batches_per_epoch),
    )


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--backend", choices=("both", "ffi", "jax"), default="both",
        help="path of the feed-forward network's QIF layers: the fused kernel (ffi), the "
        "pure-JAX scan (jax), or each in turn (both, the default)",
    )
    parser.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS,
                        help=f"training epochs per network (default {DEFAULT_EPOCHS})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data, initialization and shuffling")
    parser.add_argument(
        "--learnable", default="",
        help="comma-separated neuron parameters the feed-forward network trains per feature, "
        "e.g. tau,v_threshold (default: none)",
    )
    parser.add_argument(
        "--smoke", action="store_true",
        help="a quick check: tiny data and network, one epoch of two batches "
        "(overrides --epochs)",
    )
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    args.learnable = tuple(name for name in args.learnable.split(",") if name)
    return args


def main(argv=None) -> dict:
    """Generates the data, trains the networks; returns {run name: accuracy and s/step}."""
    args = parse_args(argv)
    size = SMOKE if args.smoke else TaskSize()
    epochs = 1 if args.smoke else args.epochs

    spikes, labels = make_randman(args.seed, size.samples_per_class)
    num_test = int(len(labels) * TEST_FRACTION)
    data = (spikes[num_test:], labels[num_test:], spikes[:num_test], labels[:num_test])
    print(f"randman: {len(labels) - num_test} train / {num_test} test samples, "
          f"{NUM_CLASSES} classes, {NUM_CHANNELS} channels x {NUM_STEPS} steps; "
          f"chance {1 / NUM_CLASSES:.2f}")

    backends = ("ffi", "jax") if args.backend == "both" else (args.backend,)
    learned = f", learnable {','.join(args.learnable)}" if args.learnable else ""
    runs = {f"feed-forward, {b}{learned}": FeedForwardSNN(size.hidden, b, args.learnable)
            for b in backends}
    runs["recurrent, QIFCell in nn.RNN"] = RecurrentSNN(size.hidden)

    results = {}
    for name, model in runs.items():
        results[name] = train_and_evaluate(name, model, data, size, epochs, args.seed)
    for name, result in results.items():
        print(f"{name:40s} test accuracy {result['test_accuracy']:.3f} "
              f"(chance {1 / NUM_CLASSES:.2f}), "
              f"{1e3 * result['seconds_per_step']:.1f} ms/train step")
    if args.backend == "both":
        ffi = results[f"feed-forward, ffi{learned}"]
        jax_path = results[f"feed-forward, jax{learned}"]
        print(f"fused kernel vs pure-JAX path: "
              f"{jax_path['seconds_per_step'] / ffi['seconds_per_step']:.2f}x per train step")
    return results


if __name__ == "__main__":
    main()
