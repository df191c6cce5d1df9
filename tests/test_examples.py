"""The examples run end to end in their --smoke mode (tiny data, one short epoch)."""

import importlib.util
import math
import pathlib
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    """Imports examples/<name>.py (a script folder, not a package) as a module, once."""
    module_name = f"examples_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def assert_accuracy(value):
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("backend", [None, "jax"], ids=["default", "jax"])
def test_train_digits_smoke(backend, tmp_path, capsys):
    train_digits = load_example("train_digits")
    plot = tmp_path / "digits.png"
    argv = ["--smoke", "--plot", str(plot)] + (["--backend", backend] if backend else [])
    results = train_digits.main(argv)
    assert_accuracy(results["train_accuracy"])
    assert_accuracy(results["test_accuracy"])
    assert results["seconds_per_epoch"] > 0
    assert plot.stat().st_size > 0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("train accuracy") and "test accuracy" in last_line


def test_temporal_task_smoke(capsys):
    temporal_task = load_example("temporal_task")
    results = temporal_task.main(["--smoke"])
    assert set(results) == {
        "feed-forward, ffi", "feed-forward, jax", "recurrent, QIFCell in nn.RNN"
    }
    for result in results.values():
        assert_accuracy(result["test_accuracy"])
        assert result["seconds_per_step"] > 0 and math.isfinite(result["seconds_per_step"])
    assert "fused kernel vs pure-JAX path" in capsys.readouterr().out


def test_randman_data_shape():
    temporal_task = load_example("temporal_task")
    spikes, labels = temporal_task.make_randman(seed=0, samples_per_class=3)
    num_samples = 3 * temporal_task.NUM_CLASSES
    assert spikes.shape == (num_samples, temporal_task.NUM_STEPS, temporal_task.NUM_CHANNELS)
    assert spikes.dtype == "float32" and labels.dtype == "int32"
    assert (spikes.sum(axis=1) == 1).all()  # every channel fires exactly once per sample
    assert sorted(labels.tolist()) == sorted(list(range(temporal_task.NUM_CLASSES)) * 3)


@pytest.mark.parametrize("name", ["train_digits", "temporal_task"])
def test_benchmark_step_trains(name):
    """The hook benchmarks/bench.py --examples times: a jitted step that updates the parameters
    the same way with the fused kernel and with the pure-JAX path."""
    import jax
    import numpy as np

    example = load_example(name)
    kwargs = {"size": example.SMOKE} if name == "temporal_task" else {}
    finals = {}
    for backend in ("ffi", "jax"):
        step, state = example.benchmark_step(backend, **kwargs)
        before = jax.tree.map(np.array, state[0])
        for _ in range(2):
            state = step(state)
        after = jax.tree.map(np.asarray, state[0])
        changed = jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), before, after))
        assert any(changed)
        finals[backend] = after
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5),
                 finals["ffi"], finals["jax"])
