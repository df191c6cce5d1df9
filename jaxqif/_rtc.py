"""The run-time compiled CUDA kernels: NVRTC, through CuPy, compiles each kernel instance the
first time a device needs it.

The handlers of `libjaxqif_cuda_rtc.so` (cuda/qif_cuda_rtc.cc, built with the host compiler
alone) choose the kernel instance of each call exactly as the nvcc-built library does (the same
launch code), and ask the compiler registered here for any instance their device has not loaded
yet: its name expression (e.g. ``jaxqif::gpu::forward_kernel<float, float, true, false, false,
jaxqif::gpu::Shape<4, 4, false>>``), whether it is a forward kernel, and the device's compute
capability. The compiler builds it from the kernel sources shipped with the package (`cuda/`),
for that exact architecture, with the nvcc build's options, and keeps the result in a disk cache
keyed by everything the machine code depends on, so that a second process loads it without
compiling.

Cache: `$JAXQIF_CACHE_DIR`, else `$XDG_CACHE_HOME/jaxqif`, else `~/.cache/jaxqif`; one
``<key>.cubin`` (or ``.ptx``) and ``<key>.name`` per instance and device architecture.
``python -m jaxqif._rtc`` fills it with every instance ahead of time.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import json
import os
import pathlib
import threading
import time
import traceback
import warnings

# The forward is compiled without contraction but qif_math.h's explicit fused multiply-adds
# (bit for bit the CPU handler's, as the nvcc build's --fmad=false), the backward with it.
_ENTRY = {
    True: '#include "kernels/forward_kernel.cuh"\n#include "kernels/bulk_forward_kernel.cuh"\n',
    False: '#include "kernels/backward_kernel.cuh"\n'
           '#include "kernels/segmented_backward_kernel.cuh"\n',
}
_CONTRACT = {True: "--fmad=false", False: "--fmad=true"}


class CompileError(RuntimeError):
    """NVRTC refused a kernel instance (the message holds its log)."""


def cupy_available() -> bool:
    """Whether CuPy is installed (found, not imported)."""
    return importlib.util.find_spec("cupy") is not None


def _nvrtc():
    from cupy.cuda import nvrtc  # the NVRTC that CuPy found (its pip package or the toolkit's)
    return nvrtc


@functools.cache
def source_dir() -> pathlib.Path:
    """The kernel sources: the package's `cuda/` (installed with it), or a source checkout's."""
    import jaxqif
    for folder in map(pathlib.Path, jaxqif.__path__):
        for candidate in (folder / "cuda", folder.parent / "cuda"):
            if (candidate / "qif_math.h").is_file():
                return candidate.resolve()
    raise FileNotFoundError("jaxqif: the CUDA kernel sources (cuda/qif_math.h) are not installed "
                            "with the package; reinstall jaxqif")


@functools.cache
def _sources_hash() -> str:
    digest = hashlib.sha256()
    root = source_dir()
    for path in sorted(root.rglob("*")):
        if path.suffix in (".h", ".cuh"):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cuda_include_candidates() -> list[pathlib.Path]:
    """Where the CUDA headers may be: NVIDIA's pip packages (what `jax[cuda12]` / `jax[cuda13]`
    install), those of NVRTC's own CUDA version first, then a toolkit."""
    spec = importlib.util.find_spec("nvidia")
    roots = [pathlib.Path(p) for p in (spec.submodule_search_locations or [])] if spec else []
    major = _nvrtc().getVersion()[0]
    layouts = ("cu13", "cuda_runtime") if major >= 13 else ("cuda_runtime", "cu12", "cu13")
    candidates = [root / layout / "include" for layout in layouts for root in roots]
    for variable in ("CUDA_PATH", "CUDA_HOME"):
        if os.environ.get(variable):
            candidates.append(pathlib.Path(os.environ[variable]) / "include")
    candidates.append(pathlib.Path("/usr/local/cuda/include"))
    return candidates


@functools.cache
def include_dirs() -> tuple[str, ...]:
    """The CUDA headers (cuda_fp16.h, ...) and CCCL's libcu++ (cuda/std, cuda/ptx): the CCCL
    beside those headers (CUDA 13 keeps it in include/cccl, CUDA 12 in include itself), else
    the one CuPy ships."""
    cuda = next((c for c in _cuda_include_candidates() if (c / "cuda_fp16.h").is_file()), None)
    if cuda is None:
        raise CompileError(
            "jaxqif: no CUDA headers (cuda_fp16.h) found for NVRTC; install the CUDA runtime's "
            "pip package (`pip install nvidia-cuda-runtime-cu12`, which `jax[cuda12]` brings) or "
            "set CUDA_PATH to a CUDA toolkit")
    if (cuda / "cccl/cuda/std").is_dir():
        return str(cuda / "cccl"), str(cuda)
    if (cuda / "cuda/std").is_dir():
        return (str(cuda),)
    cupy_spec = importlib.util.find_spec("cupy")
    cccl = (pathlib.Path(cupy_spec.origin).parent / "_core/include/cupy/_cccl/libcudacxx"
            if cupy_spec and cupy_spec.origin else None)
    if cccl is None or not (cccl / "cuda/std").is_dir():
        raise CompileError(f"jaxqif: no CCCL headers (cuda/std) beside {cuda} or in CuPy")
    return str(cccl), str(cuda)


def options(forward: bool, arch: str) -> tuple[str, ...]:
    """NVRTC's options for one instance: the nvcc build's (C++20, release, its contraction
    choice) for `arch` (sm_XY: machine code; compute_XY: PTX the driver compiles)."""
    return ("--std=c++20", "-default-device", "-DNDEBUG", _CONTRACT[forward], f"-arch={arch}",
            f"-I{source_dir()}", *(f"-I{d}" for d in include_dirs()))


def architecture(compute_capability: int) -> str:
    """The device's own architecture where this NVRTC knows it (machine code), else PTX of the
    newest one it knows below it, which the driver compiles at load."""
    supported = _nvrtc().getSupportedArchs()
    if compute_capability in supported:
        return f"sm_{compute_capability}"
    older = [a for a in supported if a <= compute_capability]
    if not older:
        raise CompileError(f"jaxqif: NVRTC {_nvrtc().getVersion()} cannot compile for compute "
                           f"capability {compute_capability}")
    return f"compute_{max(older)}"


def compile_instances(names: list[str], forward: bool, arch: str) -> tuple[bytes, list[str]]:
    """Compiles kernel instances (name expressions) of one direction into one image; returns it
    (cubin for sm_XY, PTX for compute_XY) and each instance's lowered (mangled) name."""
    nvrtc = _nvrtc()
    program = nvrtc.createProgram(_ENTRY[forward], "jaxqif_kernels.cu", [], [])
    try:
        for name in names:
            nvrtc.addNameExpression(program, name)
        try:
            nvrtc.compileProgram(program, list(options(forward, arch)))
        except nvrtc.NVRTCError as error:
            log = nvrtc.getProgramLog(program)
            raise CompileError(f"jaxqif: NVRTC failed ({error}):\n{log}") from None
        lowered = [nvrtc.getLoweredName(program, name) for name in names]
        image = nvrtc.getCUBIN(program) if arch.startswith("sm_") else nvrtc.getPTX(program)
        return image, lowered
    finally:
        nvrtc.destroyProgram(program)


# Seconds spent compiling (not loading from the cache), per instance, in this process: for tests
# and benchmarks.
compile_seconds: dict[str, float] = {}


def cache_dir() -> pathlib.Path:
    if os.environ.get("JAXQIF_CACHE_DIR"):
        return pathlib.Path(os.environ["JAXQIF_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxqif"


def cache_key(name: str, forward: bool, arch: str, driver_version: int) -> str:
    from jaxqif import __version__
    parts = [__version__, _sources_hash(), name, list(options(forward, arch)),
             list(_nvrtc().getVersion()), driver_version]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def compile_cached(name: str, forward: bool, compute_capability: int,
                   driver_version: int) -> tuple[bytes, str]:
    """One instance's image and lowered name, from the disk cache or compiled (and cached)."""
    arch = architecture(compute_capability)
    folder = cache_dir() / "kernels"
    key = cache_key(name, forward, arch, driver_version)
    image_path = folder / f"{key}.{'cubin' if arch.startswith('sm_') else 'ptx'}"
    name_path = folder / f"{key}.name"
    try:
        return image_path.read_bytes(), name_path.read_text()
    except OSError:
        pass
    start = time.perf_counter()
    image, (lowered,) = compile_instances([name], forward, arch)
    compile_seconds[name] = time.perf_counter() - start
    try:  # written whole, then renamed: a reader never sees half a file
        folder.mkdir(parents=True, exist_ok=True)
        for path, data in ((image_path, image), (name_path, lowered.encode())):
            partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.partial")
            try:
                partial.write_bytes(data)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)
    except OSError as error:
        _warn_unwritable_cache(folder, error)
    return image, lowered


_warned_unwritable: set[pathlib.Path] = set()


def _warn_unwritable_cache(folder: pathlib.Path, error: OSError) -> None:
    """Once per folder and process: every process will compile each kernel again."""
    if folder in _warned_unwritable:
        return
    _warned_unwritable.add(folder)
    warnings.warn(
        f"jaxqif: cannot write the kernel cache {folder} ({error}); each process will compile "
        "the CUDA kernels it uses again (a second or two each). Set JAXQIF_CACHE_DIR to a "
        "writable folder.", RuntimeWarning, stacklevel=2)


# int (const char* name, int forward, int compute_capability, int driver_version,
#      const void** image, size_t* image_size, const char** lowered_name, char* error,
#      size_t error_size): rtc::Compiler, cuda/rtc/rtc_launcher.h
_COMPILER_TYPE = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
    ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t),
    ctypes.POINTER(ctypes.c_char_p), ctypes.c_void_p, ctypes.c_size_t)

# What the handlers were given: kept for the life of the process, as they hold its addresses.
_loaded: dict[tuple[str, int], tuple[ctypes.Array, bytes]] = {}


def _compile_for_handler(name, forward, compute_capability, driver_version, image, image_size,
                         lowered_name, error, error_size):
    try:
        name = name.decode()
        key = (name, compute_capability)
        if key not in _loaded:
            data, lowered = compile_cached(name, bool(forward), compute_capability,
                                           driver_version)
            _loaded[key] = (ctypes.create_string_buffer(data, len(data)), lowered.encode())
        buffer, lowered = _loaded[key]
        image[0] = ctypes.addressof(buffer)
        image_size[0] = len(buffer)
        lowered_name[0] = lowered
        return 0
    except BaseException as exception:  # never let an exception cross into C
        message = "".join(traceback.format_exception_only(exception)).strip().encode()
        message = message[: max(error_size - 1, 0)]
        ctypes.memmove(error, message + b"\0", len(message) + 1)
        return 1


_compiler = _COMPILER_TYPE(_compile_for_handler)


def register(library: ctypes.CDLL) -> None:
    """Hands the loaded run-time compiled library its compiler."""
    library.JaxqifRtcSetCompiler.argtypes = [_COMPILER_TYPE]
    library.JaxqifRtcSetCompiler(_compiler)


def instances(library: ctypes.CDLL) -> list[tuple[bool, str]]:
    """(forward, name expression) of every kernel instance the library's launches can ask
    for."""
    library.JaxqifRtcInstances.restype = ctypes.c_char_p
    lines = library.JaxqifRtcInstances().decode().splitlines()
    return [(line[0] == "F", line[2:]) for line in lines]


def _compile_one(args):
    name, forward, compute_capability, driver_version = args
    compile_seconds.pop(name, None)
    compile_cached(name, forward, compute_capability, driver_version)
    return compile_seconds.get(name, 0.0)  # 0: found in the cache


def precompile(compute_capability: int, driver_version: int, workers: int | None = None,
               only: list[tuple[bool, str]] | None = None):
    """Fills the disk cache with every kernel instance (or those in `only`) for one architecture
    and driver (what a machine without a compiler at run time, or a test suite, can start from);
    returns (instances, compiled now, CPU seconds compiling)."""
    import concurrent.futures
    import multiprocessing
    from jaxqif import _library

    if only is None:
        library = ctypes.CDLL(str(_library._find(_library.LIBRARIES["cuda"].runtime_filename)))
        only = instances(library)
    jobs = [(name, forward, compute_capability, driver_version) for forward, name in only]
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        seconds = list(pool.map(_compile_one, jobs, chunksize=4))
    return len(jobs), sum(s > 0 for s in seconds), sum(seconds)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m jaxqif._rtc",
        description="Compile every run-time compiled CUDA kernel instance into the disk cache "
                    "(by default for this machine's first GPU and driver).")
    parser.add_argument("--compute-capability", type=int, help="e.g. 90 (default: the GPU's)")
    parser.add_argument("--driver-version", type=int, help="e.g. 13000 (default: the driver's)")
    parser.add_argument("--workers", type=int, help="processes (default: one per CPU)")
    args = parser.parse_args()
    if args.compute_capability is None or args.driver_version is None:
        import cupy
        device = cupy.cuda.Device(0)
        args.compute_capability = args.compute_capability or int(device.compute_capability)
        args.driver_version = args.driver_version or cupy.cuda.runtime.driverGetVersion()
    start = time.perf_counter()
    total, compiled, cpu_seconds = precompile(args.compute_capability, args.driver_version,
                                              args.workers)
    print(f"{total} kernel instances for compute capability {args.compute_capability} in "
          f"{cache_dir() / 'kernels'}: {compiled} compiled ({cpu_seconds:.0f} s of compiling) in "
          f"{time.perf_counter() - start:.0f} s")
