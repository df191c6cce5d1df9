"""The run-time compiled CUDA kernels (jaxqif/_rtc.py, cuda/qif_cuda_rtc.cc).

Without a GPU: every kernel instance the launches can ask for compiles with NVRTC (so that a
CUDA compile error can never land), the instance list covers every surrogate, dtype and plan,
the disk cache, and the choice between the prebuilt and run-time compiled libraries. On a GPU
(marked gpu): the run-time compiled kernels against the nvcc-built ones, in separate processes
(both register the same FFI targets): the forward bit for bit, the gradients within the
parity tolerances, and a second process that compiles nothing.
"""

import concurrent.futures
import ctypes
import json
import multiprocessing
import os
import pathlib
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from jaxqif import _library, _rtc

TESTS = pathlib.Path(__file__).resolve().parent
RTC_LIBRARY = _library._find(_library.LIBRARIES["cuda"].runtime_filename)


def _nvrtc_ready() -> str | None:
    """Why NVRTC cannot compile here, or None if it can."""
    if RTC_LIBRARY is None:
        return "the run-time compiled library is not built"
    if not _rtc.cupy_available():
        return "CuPy is not installed"
    try:
        _rtc._nvrtc().getVersion()
        _rtc.include_dirs()
    except Exception as error:  # no NVRTC library, no CUDA headers
        return f"NVRTC is not usable: {error}"
    return None


def _require_nvrtc():
    reason = _nvrtc_ready()
    if reason is None:
        return
    # CI installs what NVRTC needs ([test] extra) and sets this: there it must not skip.
    if os.environ.get("JAXQIF_REQUIRE_NVRTC"):
        pytest.fail(f"JAXQIF_REQUIRE_NVRTC is set but {reason}")
    pytest.skip(reason)


def _instances():
    return _rtc.instances(ctypes.CDLL(str(RTC_LIBRARY)))


def test_the_instance_list_covers_every_surrogate_dtype_and_kernel():
    if RTC_LIBRARY is None:
        pytest.skip("the run-time compiled library is not built")
    instances = _instances()
    names = [name for _, name in instances]
    assert len(names) == len(set(names))
    kernels = {name.split("<")[0].split("::")[-1] for name in names}
    assert kernels == {"forward_kernel", "bulk_forward_kernel", "per_neuron_bulk_forward_kernel",
                       "backward_kernel", "per_neuron_backward_kernel",
                       "segmented_backward_kernel", "per_neuron_segmented_backward_kernel"}
    for forward, name in instances:
        assert forward == ("forward" in name)
    from jaxqif import surrogate as sg
    backward = [name for forward, name in instances if not forward]
    for cls in (sg.Sigmoid, sg.ATan, sg.PiecewiseQuadratic, sg.PiecewiseExp, sg.SoftSign,
                sg.SuperSpike, sg.Erf):
        assert any(f"SurrogateKind::k{cls.__name__}," in n for n in backward), cls.__name__
    for device_type in ("__half", "__nv_bfloat16", "float", "double"):
        assert any(f"<{device_type}," in n or f", {device_type}," in n for n in names)


@pytest.mark.slow
def test_every_kernel_instance_compiles_with_nvrtc():
    """What the run-time path can ever ask NVRTC for, compiled here for sm_90 (the bulk forward
    needs Hopper), in batches over every CPU: a CUDA compile error fails CI, GPU or not."""
    _require_nvrtc()
    instances = _instances()
    batches = []
    for direction in (True, False):
        names = [name for forward, name in instances if forward == direction]
        batches += [(direction, names[i:i + 48]) for i in range(0, len(names), 48)]
    # (spawned: a fork of this multithreaded JAX process could deadlock)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count(), mp_context=context) as pool:
        results = list(pool.map(_rtc.compile_instances, [names for _, names in batches],
                                [forward for forward, _ in batches], ["sm_90"] * len(batches)))
    assert sum(len(lowered) for _, lowered in results) == len(instances)
    assert all(image and all(name.startswith("_Z") for name in lowered)
               for image, lowered in results)


def test_a_compile_error_names_the_instance_and_carries_nvrtc_log():
    _require_nvrtc()
    with pytest.raises(_rtc.CompileError, match="NVRTC failed"):
        _rtc.compile_instances(["jaxqif::gpu::forward_kernel<float, no_such_type>"], True, "sm_90")


def test_the_disk_cache_compiles_once(tmp_path, monkeypatch):
    _require_nvrtc()
    monkeypatch.setenv("JAXQIF_CACHE_DIR", str(tmp_path))
    compiled = []
    real = _rtc.compile_instances

    def counting(names, forward, arch):
        compiled.append(names)
        return real(names, forward, arch)

    monkeypatch.setattr(_rtc, "compile_instances", counting)
    forward, name = next((f, n) for f, n in _instances() if not f and "kSigmoid" in n)
    first = _rtc.compile_cached(name, forward, 90, 12090)
    second = _rtc.compile_cached(name, forward, 90, 12090)
    assert first == second and len(compiled) == 1
    assert name in _rtc.compile_seconds  # counted once, as a compilation
    assert first[1].startswith("_Z") and len(list((tmp_path / "kernels").iterdir())) == 2
    _rtc.compile_cached(name, forward, 90, 13000)  # another driver: another entry
    assert len(compiled) == 2


def test_an_unwritable_cache_warns_once_and_still_compiles(tmp_path, monkeypatch):
    """No NVRTC needed: the compiler is replaced. A cache folder that cannot be created (a file
    stands in its way) costs a compilation per call and one warning per process, never an
    error."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    monkeypatch.setenv("JAXQIF_CACHE_DIR", str(blocker))
    monkeypatch.setattr(_rtc, "_warned_unwritable", set())
    monkeypatch.setattr(_rtc, "architecture", lambda cc: f"sm_{cc}")
    monkeypatch.setattr(_rtc, "cache_key", lambda name, *args: name)
    compiled = []

    def compile_instances(names, forward, arch):
        compiled.append(names)
        return b"image", ["_Zlowered"]

    monkeypatch.setattr(_rtc, "compile_instances", compile_instances)
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache .*JAXQIF_CACHE_DIR"):
        assert _rtc.compile_cached("a", True, 90, 13000) == (b"image", "_Zlowered")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second miss: no second warning
        assert _rtc.compile_cached("b", True, 90, 13000) == (b"image", "_Zlowered")
    assert compiled == [["a"], ["b"]] and blocker.read_text() == ""


def test_precompile_fills_the_cache_once(tmp_path, monkeypatch):
    """`python -m jaxqif._rtc`'s work, on two instances: compiled in worker processes into the
    cache, which a second run finds whole."""
    _require_nvrtc()
    monkeypatch.setenv("JAXQIF_CACHE_DIR", str(tmp_path))
    some = [next(i for i in _instances() if i[0]), next(i for i in _instances() if not i[0])]
    total, compiled, seconds = _rtc.precompile(90, 12090, workers=2, only=some)
    assert (total, compiled) == (2, 2) and seconds > 0
    assert _rtc.precompile(90, 12090, workers=2, only=some)[:2] == (2, 0)
    assert len(list((tmp_path / "kernels").iterdir())) == 4


def test_the_compiler_reports_errors_to_the_handler_instead_of_raising(monkeypatch):
    """The callback the handlers call never lets an exception cross into C++: it returns 1 with
    the message."""
    def failing(*args):
        raise _rtc.CompileError("no such instance")

    monkeypatch.setattr(_rtc, "compile_cached", failing)
    error = ctypes.create_string_buffer(256)
    image, size, lowered = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_char_p()
    status = _rtc._compile_for_handler(b"jaxqif::gpu::x<1>", 1, 90, 12090, ctypes.pointer(image),
                                       ctypes.pointer(size), ctypes.pointer(lowered),
                                       ctypes.addressof(error), 256)
    assert status == 1 and b"no such instance" in error.value


@pytest.mark.parametrize("choice", ["prebuilt", "runtime", "auto", "bogus"])
def test_the_cuda_kernels_choice(choice, monkeypatch):
    monkeypatch.setenv(_library.CUDA_KERNELS_VARIABLE, choice)
    prebuilt = _library._find(_library.LIBRARIES["cuda"].filename)
    if choice == "bogus":
        with pytest.raises(ValueError, match="JAXQIF_CUDA_KERNELS"):
            _library.kernel_source("cuda")
        return
    source = _library.kernel_source("cuda")
    runtime_ok = RTC_LIBRARY is not None and _rtc.cupy_available()
    expected = {"prebuilt": "prebuilt" if prebuilt else None,
                "runtime": "runtime" if runtime_ok else None,
                "auto": "prebuilt" if prebuilt else "runtime" if runtime_ok else None}[choice]
    assert source == expected
    if source is None:
        assert choice in _library.unavailable_reason("cuda") or "CuPy" in \
            _library.unavailable_reason("cuda")


# --- on a GPU: the two compiled paths side by side, each in a process of its own ------------

_RUN_BOTH = """
import hashlib, json, sys
import numpy as np, jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import jaxqif
from jaxqif import _library, _rtc, surrogate as sg
assert _library.kernel_source("cuda") == sys.argv[1], _library.kernel_source("cuda")
out = {}
for dtype in (jnp.bfloat16, jnp.float32, jnp.float64):
    for shape in ((64, 4, 300), (4, 2**21 + 8)):
        x = (jax.random.normal(jax.random.key(0), shape, jnp.float32) * 0.8 + 0.45).astype(dtype)
        weights = (jnp.arange(shape[-1]) % 7).astype(jnp.float32)
        for kwargs in ({}, {"v_reset": None, "tau": jnp.linspace(1.5, 3.0, shape[-1])}):
            run = lambda x: jaxqif.qif_multistep(x, backend="ffi", store_v_seq=True, **kwargs)
            outputs = jax.jit(run)(x)
            digest = hashlib.sha256(b"".join(np.asarray(o).tobytes() for o in outputs))
            loss = lambda x: jnp.sum(jaxqif.qif_multistep(
                x, backend="ffi", surrogate=sg.ATan(), **kwargs)[0].astype(jnp.float32) * weights)
            grad = jax.jit(jax.grad(loss))(x)
            name = f"{jnp.dtype(dtype).name} {shape} {sorted(kwargs)}"
            out[name] = [digest.hexdigest(), np.asarray(grad, np.float64).ravel()[:4096].tolist()]
print(json.dumps({"results": out, "compiled": len(_rtc.compile_seconds),
                  "compile_seconds": sum(_rtc.compile_seconds.values())}))
"""


def _run(choice: str, cache: pathlib.Path) -> dict:
    env = {**os.environ, _library.CUDA_KERNELS_VARIABLE: choice, "JAXQIF_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(_RUN_BOTH), choice],
                            capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.gpu
def test_the_run_time_compiled_kernels_match_the_prebuilt_ones(tmp_path):
    """Forward outputs bit for bit (spikes and V), gradients within the parity tolerance, over
    a 16-bit dtype, float32 and float64, two plans (staged or bulk with the segmented backward;
    wide), the hard reset with numbers and the soft one with a per-feature tau; and a second
    process finds every kernel in the cache."""
    if _library._find(_library.LIBRARIES["cuda"].filename) is None or not _rtc.cupy_available():
        pytest.skip("needs both the nvcc-built library and CuPy")
    prebuilt = _run("prebuilt", tmp_path)
    first = _run("runtime", tmp_path)
    again = _run("runtime", tmp_path)
    assert first["compiled"] > 0 and again["compiled"] == 0
    for name, (digest, grad) in prebuilt["results"].items():
        r_digest, r_grad = first["results"][name]
        assert digest == r_digest, name  # spikes, v_final and v_seq, bit for bit
        tolerance = 2e-2 if ("float16" in name or "bfloat16" in name) else 1e-5
        np.testing.assert_allclose(r_grad, grad, rtol=tolerance, atol=tolerance, err_msg=name)
        assert again["results"][name] == first["results"][name]
    print(f"\ncompiled {first['compiled']} instances in {first['compile_seconds']:.1f} s "
          f"(then 0 from the cache)")
