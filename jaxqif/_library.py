"""Finds the compiled handler libraries and registers their FFI targets with XLA.

The CPU library is always built; the CUDA library only where nvcc was found at build time.
Target names carry a version so that exported programs keep naming the handler they were
compiled against.

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
    "reinstall jaxqif from source on a machine with the CUDA toolkit (nvcc) so that its CUDA "
    "library is built, e.g. `JAXQIF_CUDA=ON pip install --no-build-isolation -e .`"
)


@dataclasses.dataclass(frozen=True)
class _Library:
    filename: str
    symbol_suffix: str  # the handlers are JaxqifForward<suffix>, JaxqifBackward<suffix>V3, ...
    xla_platform: str  # as jax.ffi.register_ffi_target spells it
    # Modules whose presence means JAX may run on this platform (found, never imported).
    jax_plugins: tuple[str, ...] = ()

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
                     jax_plugins=("jax_cuda12_plugin", "jax_cuda13_plugin")),
}

_lock = threading.Lock()
# platform -> True (registered), False (not built), or the error its loading raised
_status: dict[str, bool | Exception] = {}


def _package_dirs() -> list[pathlib.Path]:
    package = importlib.import_module("jaxqif")
    return [pathlib.Path(p).resolve() for p in package.__path__]


def library_path(platform: str) -> pathlib.Path | None:
    """The platform's library in the package's own folders, or None if it was not built."""
    filename = LIBRARIES[platform].filename
    return next((d / filename for d in _package_dirs() if (d / filename).is_file()), None)


def _register(platform: str) -> bool:
    library = LIBRARIES[platform]
    path = library_path(platform)
    if path is None:
        return False
    handle = ctypes.CDLL(str(path))
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
    if error is not None:
        path = library_path(platform)
        return (f"jaxqif's {platform} library {path} failed to load ({type(error).__name__}: "
                f"{error}); reinstall jaxqif on this machine so that it is rebuilt")
    if platform == "cuda":
        return f"no CUDA kernel was built; {BUILD_HINT}"
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
