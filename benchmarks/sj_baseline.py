"""SpikingJelly 2.0's QIF, wrapped for the benchmarks: its Triton kernels on torch CUDA tensors
(bench.py) and its CPU path on torch CPU tensors (cpu_bench.py).

Entry point: ``spikingjelly.activation_based.functional.qif_multi_step``::

    spike_seq, v_final, v_seq = qif_multi_step(
        x_seq, v, tau=2.0, v_threshold=1.0, v_reset=0.0, v_rest=0.0, v_c=0.8, a0=1.0,
        detach_reset=False, surrogate_function=None, store_v_seq=False)

``x_seq`` is ``[T, ...]`` float32/float16/bfloat16, ``v`` is the float32 initial potential shaped
like one step. With one of SpikingJelly's seven built-in surrogates (here ``Sigmoid(alpha=4)``)
and a float32 ``v`` it calls the custom op ``torch.ops.sj_qif.forward``, which dispatches on
CUDA to the implementation chosen by ``SJ_QIF_CUDA_IMPLEMENTATION`` (``auto`` tries the native
CUDA extension first, which the pure-Python wheel does not ship, then Triton). We set it to
``triton`` so that a missing Triton is an error rather than a silent fall back to the Torch
reference formulas. The Triton kernels (``spikingjelly/_ops/qif/triton.py``) run one neuron per
thread in blocks of 256; the forward always writes spikes, ``H`` and the previous voltage (two
float32 residuals), with or without autograd; the backward reads both.

Everything here imports torch lazily: :func:`load` returns ``None`` plus a reason when
SpikingJelly, torch or a CUDA device is missing.

On the CPU (cpu_bench.py), :func:`load_cpu` wraps the same entry point on torch CPU tensors.
There ``torch.ops.sj_qif`` runs SpikingJelly's CPU registration: its forward is
``_ops/qif/reference.py``'s ``_forward_impl`` and its backward ``_ops/qif/cpu.py``'s
``_backward_impl``, each a Python loop over T of eager torch operations on [N] tensors (the
forward saves H and the previous V, two float32 [T, N] tensors, as on CUDA). float64 inputs are
not one of its registered profiles (float32/float16/bfloat16 with a float32 v): qif_multi_step
then runs the Torch reference formulas under autograd, which is what a float64 user gets.
"""

from __future__ import annotations

import os

# Must be set before spikingjelly._ops.qif is imported: its selection reads it once.
os.environ.setdefault("SJ_QIF_CUDA_IMPLEMENTATION", "triton")

# The benchmark problem's neuron parameters (SpikingJelly's defaults differ: v_reset=0.0).
NEURON = dict(tau=2.0, v_threshold=1.0, v_reset=-0.1, v_rest=0.0, v_c=0.8, a0=1.0)
SIGMOID_ALPHA = 4.0


class SpikingJellyQIF:
    """Builds timed closures around SpikingJelly's ``qif_multi_step`` on one CUDA device."""

    def __init__(self, torch, functional, surrogate, device):
        self.torch = torch
        self._qif = functional.qif_multi_step
        self._surrogate = surrogate.Sigmoid(alpha=SIGMOID_ALPHA)
        self.device = device
        self.versions = {"torch": torch.__version__}
        for package in ("spikingjelly", "triton"):
            try:
                from importlib.metadata import version

                self.versions[package] = version(package)
            except Exception:  # noqa: BLE001 - metadata is informative only
                self.versions[package] = "unknown"

    # -- data ---------------------------------------------------------------------------------

    def dtype(self, name: str):
        """The torch dtype of a numpy/JAX dtype name."""
        return {"float32": self.torch.float32, "bfloat16": self.torch.bfloat16,
                "float16": self.torch.float16}[name]

    def from_jax(self, array, dtype_name: str):
        """A torch copy of a JAX array, on this device (DLPack; a host round trip if that fails)."""
        torch = self.torch
        try:
            array.block_until_ready()
            tensor = torch.from_dlpack(array)
            if tensor.device != self.device:
                raise ValueError("DLPack tensor landed on another device")
            return tensor.clone()
        except Exception:  # noqa: BLE001 - any DLPack incompatibility: fall back to the host
            import numpy as np

            host = np.asarray(array.astype("float32"))
            return torch.from_numpy(host).to(self.device).to(self.dtype(dtype_name))

    def v_init(self, n: int):
        """SpikingJelly needs an explicit float32 v; jaxqif's default v_init is v_reset."""
        return self.torch.full((n,), NEURON["v_reset"], dtype=self.torch.float32,
                               device=self.device)

    # -- computations -------------------------------------------------------------------------

    def forward(self, x, v):
        """Inference: the spikes, under ``torch.no_grad``."""
        with self.torch.no_grad():
            spikes, _, _ = self._qif(x, v, surrogate_function=self._surrogate, **NEURON)
        return spikes

    def forward_backward(self, x, v, g):
        """grad_x of sum(spikes * g): forward with residuals, then SpikingJelly's BPTT kernel.

        The cotangent ``g`` is handed straight to autograd (``autograd.grad(spikes, x, g)``),
        which is exactly d sum(spikes * g) / dx without the extra multiply, sum and broadcast
        kernels that ``(spikes * g).sum().backward()`` would launch in eager torch (and that
        XLA removes from the JAX version): SpikingJelly at its best."""
        spikes, _, _ = self._qif(x, v, surrogate_function=self._surrogate, **NEURON)
        (grad_x,) = self.torch.autograd.grad(spikes, x, grad_outputs=g)
        return grad_x

    def implementation(self) -> str:
        """The CUDA implementation SpikingJelly's dispatcher chose (after the first call)."""
        try:
            from spikingjelly._ops.qif import _selection

            return str(_selection.diagnostics(self.device)["implementation"])
        except Exception as error:  # noqa: BLE001
            return f"unknown ({type(error).__name__}: {error})"

    # -- timing helpers -----------------------------------------------------------------------

    def synchronize(self):
        self.torch.cuda.synchronize(self.device)

    def event_timer(self):
        """(start, stop) closures measuring device time between them in ms with CUDA events."""
        torch = self.torch
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)

        def begin():
            start.record()

        def finish() -> float:
            end.record()
            end.synchronize()
            return start.elapsed_time(end)

        return begin, finish

    def copy_bandwidth(self, n_bytes: int, reps: int = 10) -> float:
        """Device-to-device copy rate (bytes read + written per second), median of ``reps``."""
        torch = self.torch
        src = torch.empty(n_bytes // 4, dtype=torch.float32, device=self.device).uniform_()
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        times = []
        begin, finish = self.event_timer()
        for _ in range(reps):
            begin()
            dst.copy_(src)
            times.append(finish() / 1e3)
        times.sort()
        del src, dst
        return 2 * n_bytes / times[len(times) // 2]


class SpikingJellyQIFCpu(SpikingJellyQIF):
    """The same calls on torch CPU tensors. Torch's CPU operations return when done, so there is
    nothing to synchronize and no device timer: the sweep times them with the host clock."""

    event_timer = None  # the sweep falls back to the host clock

    def __init__(self, torch, functional, surrogate):
        super().__init__(torch, functional, surrogate, torch.device("cpu"))

    def dtype(self, name: str):
        if name == "float64":
            return self.torch.float64
        return super().dtype(name)

    def v_init(self, n: int, dtype_name: str = "float32"):
        """A float32 v (SpikingJelly's registered profiles need one), float64 for float64
        inputs (whose state is float64, as in jaxqif)."""
        dtype = self.torch.float64 if dtype_name == "float64" else self.torch.float32
        return self.torch.full((n,), NEURON["v_reset"], dtype=dtype, device=self.device)

    def synchronize(self):
        pass

    def implementation(self) -> str:
        return ("CPU: torch.ops.sj_qif (reference._forward_impl, cpu._backward_impl: Python loops "
                "over T of eager torch ops) for float32/float16/bfloat16; float64: the Torch "
                "reference formulas under autograd")


def load_cpu():
    """(SpikingJellyQIFCpu, None) when torch and SpikingJelly 2.0 import, else (None, reason)."""
    try:
        import torch
    except Exception as error:  # noqa: BLE001
        return None, f"torch not importable ({type(error).__name__}: {error})"
    try:
        from spikingjelly.activation_based import functional, surrogate
    except Exception as error:  # noqa: BLE001
        return None, f"spikingjelly not importable ({type(error).__name__}: {error})"
    if not hasattr(functional, "qif_multi_step"):
        return None, "spikingjelly has no functional.qif_multi_step (not 2.0?)"
    return SpikingJellyQIFCpu(torch, functional, surrogate), None


def load():
    """(SpikingJellyQIF, None) when torch sees a CUDA GPU and SpikingJelly imports, else
    (None, reason)."""
    try:
        import torch
    except Exception as error:  # noqa: BLE001
        return None, f"torch not importable ({type(error).__name__}: {error})"
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    try:
        from spikingjelly.activation_based import functional, surrogate
    except Exception as error:  # noqa: BLE001
        return None, f"spikingjelly not importable ({type(error).__name__}: {error})"
    if not hasattr(functional, "qif_multi_step"):
        return None, "spikingjelly has no functional.qif_multi_step (not 2.0?)"
    return SpikingJellyQIF(torch, functional, surrogate, torch.device("cuda", 0)), None
