"""Finds the compiled handler libraries and registers their FFI targets with XLA.

The CPU library is always built; the CUDA library only where nvcc was found at build time.
Target names carry a version so that exported programs keep naming the handler they were
compiled against.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.metadata
import pathlib

import jax

FORWARD_TARGET = "jaxqif_forward_v2"
BACKWARD_TARGET = "jaxqif_backward_v2"

# platform (as in jax lowering rules) -> (library file, forward symbol, backward symbol, XLA name)
_LIBRARIES = {
    "cpu": ("libjaxqif_cpu.so", "JaxqifForwardCpu", "JaxqifBackwardCpu", "cpu"),
    "cuda": ("libjaxqif_cuda.so", "JaxqifForwardCuda", "JaxqifBackwardCuda", "CUDA"),
}

BUILD_HINT = (
    "reinstall jaxqif from source on a machine with the CUDA toolkit (nvcc) so that its CUDA "
    "library is built, e.g. `JAXQIF_CUDA=ON pip install --no-build-isolation -e .`"
)


def _candidate_paths(filename: str):
    """The package folder first, then wherever the installed distribution put the file (an
    editable install keeps compiled files outside the source tree)."""
    yield pathlib.Path(__file__).with_name(filename)
    try:
        dist = importlib.metadata.distribution("jaxqif")
    except importlib.metadata.PackageNotFoundError:
        return
    for record in dist.files or ():
        if record.name == filename:
            yield pathlib.Path(dist.locate_file(record))


@functools.cache
def load(platform: str) -> bool:
    """Loads the library for `platform` and registers its targets; False if it was not built."""
    filename, forward_symbol, backward_symbol, xla_platform = _LIBRARIES[platform]
    path = next((p for p in _candidate_paths(filename) if p.exists()), None)
    if path is None:
        return False
    library = ctypes.cdll.LoadLibrary(str(path))
    for target, symbol in ((FORWARD_TARGET, forward_symbol), (BACKWARD_TARGET, backward_symbol)):
        jax.ffi.register_ffi_target(
            target, jax.ffi.pycapsule(getattr(library, symbol)), platform=xla_platform
        )
    return True


def available_platforms() -> tuple[str, ...]:
    """Platforms ("cpu", "cuda") whose kernels were built and registered."""
    return tuple(p for p in _LIBRARIES if load(p))
