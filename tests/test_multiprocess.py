"""Beyond one machine: the same sharded training step in one process, and in two processes
joined by `jax.distributed` on localhost (each with its own CPU devices, as two hosts would
have), gives the same loss and gradients. See _multiprocess_worker.py."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

WORKER = pathlib.Path(__file__).with_name("_multiprocess_worker.py")
KEYS = ("loss", "grad_w_in", "grad_w_out")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(num_processes: int, local_devices: int, out: pathlib.Path) -> dict:
    flags = f"--xla_force_host_platform_device_count={local_devices}"
    env = dict(os.environ, XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} {flags}",
               JAX_PLATFORMS="cpu")
    port = str(_free_port())
    processes = [
        subprocess.Popen([sys.executable, str(WORKER), port, str(num_processes), str(i), str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(num_processes)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:  # one failed and left the other waiting for it
                p.kill()
    for p, log in zip(processes, logs):
        assert p.returncode == 0, log
    return dict(np.load(out))


def test_two_processes_match_one(tmp_path):
    one = _run(num_processes=1, local_devices=4, out=tmp_path / "one.npz")
    two = _run(num_processes=2, local_devices=2, out=tmp_path / "two.npz")
    assert np.abs(one["grad_w_in"]).max() > 0  # the gradient does flow through the spikes
    for key in KEYS:
        np.testing.assert_allclose(two[key], one[key], rtol=1e-12, atol=1e-15, err_msg=key)
        np.testing.assert_allclose(one[key], one[f"ref_{key}"], rtol=1e-12, atol=1e-15,
                                   err_msg=f"{key}: sharded vs unsharded")
