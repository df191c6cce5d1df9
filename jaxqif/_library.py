"""Finds the compiled handler libraries and registers their FFI targets with XLA.

The CPU library is always built. CUDA has two: the kernels built ahead of time by nvcc
(`libjaxqif_cuda.so`, where the package was built with `JAXQIF_CUDA=ON`), and the run-time
compiled ones (`libjaxqif_cuda_rtc.so`, always built, by the host compiler alone: each kernel is
compiled by NVRTC through CuPy the first time a device needs it, jaxqif/_rtc.py). Both register
the same targets with the same attributes and errors; `JAXQIF_CUDA_KERNELS` picks one:
"prebuilt", "runtime", or "auto" (the default: prebuilt where it was built, else run-time
compiled where CuPy is installed). Target names carry a version so that exported programs keep
naming the handler they were compiled against.

Libraries are looked up only in the package's own folders (`jaxqif.__path__`: the installed
package, plus the source tree of an editable install), by absolute path; nothing else on
`sys.path` or in the working directory is ever loaded. Each platform's library is loaded on its
own: one that fails to load (corrupt, foreign, built for another machine) leaves the others
working, and its error is kept to be reported where that platform is used.

`import jaxqif` registers the targets of every platform JAX can run here (the CPU, and CUDA
where a JAX CUDA plugin is installed), so that a deserialized `jax.export` program finds them;
on a machine without JAX's CUDA plugin the CUDA library is never opened.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import importlib.util
import os
import pathlib
import threading

import jax

# v2: neuron parameters as numbers (attributes); v3: the same, and any of them as arrays
# (operands), with their gradients. A call with numbers only uses v2, so its program is the same
# as before array parameters existed; v3 is what a call with arrays needs.
FORWARD_TARGET = "jaxqif_forward_v2"
BACKWARD_TARGET = "jaxqif_backward_v2"
FORWARD_TARGET_V3 = "jaxqif_forward_v3"
BACKWARD_TARGET_V3 = "jaxqif_backward_v3"

BUILD_HINT = (
    "install CuPy for kernels compiled at first use (`pip install \"jaxqif[cuda12]\"` or "
    "\"jaxqif[cuda13]\", or `pip install cupy-cuda12x`), or build them ahead of time with the CUDA "
    "toolkit (`JAXQIF_CUDA=ON pip install --no-build-isolation -e .`)"
)

# Which CUDA kernels to use: "auto", "prebuilt" (nvcc-built) or "runtime" (NVRTC through CuPy).
CUDA_KERNELS_VARIABLE = "JAXQIF_CUDA_KERNELS"
CUDA_KERNELS_CHOICES = ("auto", "prebuilt", "runtime")


@dataclasses.dataclass(frozen=True)
class _Library:
    filename: str
    symbol_suffix: str  # the handlers are JaxqifForward<suffix>, JaxqifBackward<suffix>V3, ...
    xla_platform: str  # as jax.ffi.register_ffi_target spells it
    # Modules whose presence means JAX may run on this platform (found, never imported).
    jax_plugins: tuple[str, ...] = ()
    # The run-time compiled variant's library, if the platform has one.
    runtime_filename: str | None = None

    def targets(self):
        """(FFI target, handler symbol) of every interface version the library serves."""
        for direction, v2, v3 in (("Forward", FORWARD_TARGET, FORWARD_TARGET_V3),
                                  ("Backward", BACKWARD_TARGET, BACKWARD_TARGET_V3)):
            yield v2, f"Jaxqif{direction}{self.symbol_suffix}"
            yield v3, f"Jaxqif{direction}{self.symbol_suffix}V3"


# platform, as in JAX lowering rules -> its library
LIBRARIES = {
    "cpu": _Library("libjaxqif_cpu.so", "Cpu", "cpu"),
    "cuda": _Library("libjaxqif_cuda.so", "Cuda", "CUDA",
                     jax_plugins=("jax_cuda12_plugin", "jax_cuda13_plugin"),
                     runtime_filename="libjaxqif_cuda_rtc.so"),
}

_lock = threading.Lock()
# platform -> True (registered), False (not built), or the error its loading raised
_status: dict[str, bool | Exception] = {}


def _package_dirs() -> list[pathlib.Path]:
    package = importlib.import_module("jaxqif")
    return [pathlib.Path(p).resolve() for p in package.__path__]


def _find(filename: str | None) -> pathlib.Path | None:
    if filename is None:
        return None
    return next((d / filename for d in _package_dirs() if (d / filename).is_file()), None)


def cuda_kernels_choice() -> str:
    """JAXQIF_CUDA_KERNELS: "auto" (unset), "prebuilt" or "runtime"."""
    choice = os.environ.get(CUDA_KERNELS_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in CUDA_KERNELS_CHOICES:
        raise ValueError(f"jaxqif: {CUDA_KERNELS_VARIABLE}={choice!r}; expected one of "
                         f"{', '.join(CUDA_KERNELS_CHOICES)}")
    return choice


def kernel_source(platform: str) -> str | None:
    """Which of the platform's libraries serves it: "prebuilt" (built with the package: the
    CPU's, or nvcc's for CUDA), "runtime" (CUDA kernels compiled at first use), or None if none
    can (`unavailable_reason` says why)."""
    library = LIBRARIES[platform]
    if library.runtime_filename is None:
        return "prebuilt" if _find(library.filename) else None
    choice = cuda_kernels_choice()
    if choice != "runtime" and _find(library.filename):
        return "prebuilt"
    from jaxqif import _rtc
    if choice != "prebuilt" and _find(library.runtime_filename) and _rtc.cupy_available():
        return "runtime"
    return None


def library_path(platform: str) -> pathlib.Path | None:
    """The library that serves the platform (kernel_source), in the package's own folders, or
    None if none can."""
    source = kernel_source(platform)
    library = LIBRARIES[platform]
    if source is None:
        return None
    return _find(library.runtime_filename if source == "runtime" else library.filename)


def _register(platform: str) -> bool:
    library = LIBRARIES[platform]
    path = library_path(platform)
    if path is None:
        return False
    handle = ctypes.CDLL(str(path))
    if path.name == library.runtime_filename:
        from jaxqif import _rtc
        _rtc.register(handle)
    handlers = [(target, getattr(handle, symbol)) for target, symbol in library.targets()]
    for target, handler in handlers:  # (all found first: a library lacking one registers none)
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(handler),
                                    platform=library.xla_platform)
    return True


def load(platform: str) -> bool:
    """Loads the platform's library and registers its targets, once; True if its kernels are
    available, False if it was not built or failed to load (`load_error` says why)."""
    if platform not in LIBRARIES:
        return False
    with _lock:
        if platform not in _status:
            try:
                _status[platform] = _register(platform)
            except Exception as error:  # OSError, AttributeError (a foreign library), ...
                _status[platform] = error
        return _status[platform] is True


def load_error(platform: str) -> Exception | None:
    """Why the platform's library failed to load, if it did."""
    status = _status.get(platform)
    return status if isinstance(status, Exception) else None


def unavailable_reason(platform: str) -> str:
    """Why `platform` has no fused kernel, and what to do about it."""
    if platform not in LIBRARIES:
        return f"jaxqif has no fused kernel for platform '{platform}'"
    error = load_error(platform)
    if isinstance(error, ValueError):  # a JAXQIF_CUDA_KERNELS that names no choice
        return str(error)
    if error is not None:
        path = library_path(platform)
        return (f"jaxqif's {platform} library {path} failed to load ({type(error).__name__}: "
                f"{error}); reinstall jaxqif on this machine so that it is rebuilt")
    if platform == "cuda":
        choice = cuda_kernels_choice()
        if choice == "prebuilt":
            return (f"{CUDA_KERNELS_VARIABLE}=prebuilt, but no CUDA kernel was built ahead of "
                    "time: build them with the CUDA toolkit (`JAXQIF_CUDA=ON pip install "
                    "--no-build-isolation -e .`), or unset it to compile them at first use")
        if choice == "runtime":
            return (f"{CUDA_KERNELS_VARIABLE}=runtime, but CuPy is not installed (`pip install "
                    "cupy-cuda12x` or cupy-cuda13x, as JAX's CUDA)")
        return f"no CUDA kernel was built and CuPy is not installed; {BUILD_HINT}"
    folders = ", ".join(map(str, _package_dirs()))
    return (f"jaxqif's {platform} library ({LIBRARIES[platform].filename}) is missing from its "
            f"package folder ({folders}); if that is a source checkout, jaxqif was imported from "
            "it rather than from where pip installed it: run from another directory, or install "
            "it in place (`pip install -e .`); else reinstall jaxqif")


def may_be_used(platform: str) -> bool:
    """Whether JAX can run on `platform` in this installation, judged without starting JAX's
    backends: the CPU always, CUDA where a JAX CUDA plugin is installed."""
    plugins = LIBRARIES[platform].jax_plugins
    return not plugins or any(importlib.util.find_spec(name) for name in plugins)


def register_at_import() -> None:
    for platform in LIBRARIES:
        if may_be_used(platform):
            load(platform)


def available_platforms() -> tuple[str, ...]:
    """Platforms ("cpu", "cuda") whose kernels were built and registered."""
    return tuple(p for p in LIBRARIES if load(p))
