"""Loading the compiled libraries: only the package's own files, one platform at a time, the
targets registered on import, and a library built in another environment."""

import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxqif
from jaxqif import _library, api
from jaxqif import surrogate as sg

TESTS = pathlib.Path(__file__).resolve().parent


def _python(code: str, cwd=None, env=None) -> str:
    """Runs `code` in a new Python process; returns its stdout (stderr too on failure). `-P`:
    the working directory (a source checkout, say) stays off sys.path, as in conftest.py."""
    result = subprocess.run([sys.executable, "-P", "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=600, cwd=cwd, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_libraries_come_from_the_package_folders_by_absolute_path():
    path = _library.library_path("cpu")
    assert path.is_absolute()
    assert path.parent in {pathlib.Path(p).resolve() for p in jaxqif.__path__}


def test_a_planted_distribution_is_never_loaded(tmp_path):
    """A stray `jaxqif-*.dist-info` first on sys.path (and in the working directory) whose
    RECORD names another libjaxqif_cpu.so: that library's constructor must never run."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("needs a C compiler to build the planted library")
    marker = tmp_path / "planted_library_ran"
    source = tmp_path / "planted.c"
    source.write_text(textwrap.dedent(f"""
        #include <stdio.h>
        __attribute__((constructor)) static void planted(void) {{
          FILE* f = fopen("{marker}", "w"); if (f) fclose(f);
        }}
    """))
    (tmp_path / "evil").mkdir()
    subprocess.run([compiler, "-shared", "-fPIC", str(source), "-o",
                    str(tmp_path / "evil" / "libjaxqif_cpu.so")], check=True)
    dist_info = tmp_path / "jaxqif-9.9.9.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: jaxqif\nVersion: 9.9.9\n")
    (dist_info / "RECORD").write_text("evil/libjaxqif_cpu.so,,\nlibjaxqif_cpu.so,,\n")
    shutil.copy(tmp_path / "evil" / "libjaxqif_cpu.so", tmp_path / "libjaxqif_cpu.so")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = _python("""
        import importlib.metadata, warnings
        warnings.simplefilter("error")
        import jax.numpy as jnp, jaxqif
        from jaxqif import _library
        print(importlib.metadata.version("jaxqif"))  # the planted one is found first...
        spikes = jaxqif.qif_multistep(jnp.ones((4, 3)), backend="ffi")[0]
        print(float(spikes.sum()), _library.library_path("cpu"))  # ...and never used
    """, cwd=tmp_path, env=env)
    assert out.split()[0] == "9.9.9"
    assert not marker.exists(), "the planted library was loaded"
    assert str(tmp_path) not in out.split()[2]


def test_a_broken_library_takes_down_only_its_platform(tmp_path, monkeypatch):
    """A corrupt CUDA library: the CPU keeps its kernels; CUDA falls back with one warning that
    says what failed, and backend="ffi" there raises."""
    corrupt = tmp_path / "libjaxqif_cuda.so"
    corrupt.write_bytes(b"\x7fELF this is not a library")
    real_path = _library.library_path
    monkeypatch.setattr(_library, "library_path",
                        lambda p: corrupt if p == "cuda" else real_path(p))
    monkeypatch.setattr(_library, "_status", {"cpu": _library.load("cpu")})
    monkeypatch.setattr(api, "_warned", set())
    assert not _library.load("cuda")
    assert isinstance(_library.load_error("cuda"), OSError)
    assert _library.load("cpu")
    x = jnp.ones((4, 3), jnp.float32)
    assert api._resolve_backend(None, sg.Sigmoid(), x) == "ffi"  # on the CPU
    monkeypatch.setattr(api, "_platform_of", lambda x: "cuda")
    with pytest.warns(RuntimeWarning, match="cuda library .* failed to load .*OSError"):
        assert api._resolve_backend(None, sg.Sigmoid(), x) == "jax"
    with pytest.raises(RuntimeError, match="failed to load"):
        api._resolve_backend("ffi", sg.Sigmoid(), x)


def test_import_registers_the_targets_for_deserialized_programs(tmp_path):
    """A program exported in one process runs in a fresh one that only imported jaxqif."""
    x = jax.random.normal(jax.random.key(0), (9, 4), jnp.float32) + 0.5
    train = jax.jit(jax.value_and_grad(lambda x: jnp.sum(jnp.sin(
        jaxqif.qif_multistep(x, backend="ffi")[1]))))
    checks = [jax.export.DisabledSafetyCheck.custom_call(t)
              for t in (_library.FORWARD_TARGET, _library.BACKWARD_TARGET)]
    blob = tmp_path / "program.bin"
    blob.write_bytes(jax.export.export(train, disabled_checks=checks)(x).serialize())
    np.save(tmp_path / "x.npy", np.asarray(x))
    out = _python(f"""
        import jax, numpy as np, jaxqif
        restored = jax.export.deserialize(open("{blob}", "rb").read())
        value, grad = restored.call(np.load("{tmp_path / 'x.npy'}"))
        np.save("{tmp_path / 'grad.npy'}", np.asarray(grad))
        print(float(value))
    """)
    value, grad = train(x)
    np.testing.assert_array_equal(float(out), value)
    np.testing.assert_array_equal(np.load(tmp_path / "grad.npy"), grad)


@pytest.mark.skipif("JAXQIF_OTHER_BUILD" not in os.environ,
                    reason="set JAXQIF_OTHER_BUILD to a libjaxqif_cpu.so built elsewhere")
def test_a_library_built_in_another_environment_runs_here(tmp_path):
    """The handlers are built against the FFI headers of the oldest supported JAX (vendored),
    so a library built in one environment (say JAX 0.10, Python 3.11) registers and runs under
    the JAX of this one. CI points JAXQIF_OTHER_BUILD at the other environment's library; here
    it is installed beside a copy of the package's Python files, which is then imported."""
    other = pathlib.Path(os.environ["JAXQIF_OTHER_BUILD"]).resolve()
    assert other.is_file(), other
    package = tmp_path / "jaxqif"
    package.mkdir()
    for source in pathlib.Path(jaxqif.__file__).parent.glob("*.py"):
        shutil.copy(source, package)
    shutil.copy(other, package / _library.LIBRARIES["cpu"].filename)
    out = _python(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location(
            "jaxqif", "{package / '__init__.py'}", submodule_search_locations=["{package}"])
        jaxqif = sys.modules["jaxqif"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(jaxqif)
        import jax, jax.numpy as jnp, numpy as np
        from jaxqif import _library
        assert _library.load("cpu"), _library.load_error("cpu")
        assert _library.library_path("cpu").parent == __import__("pathlib").Path("{package}")
        x = jax.random.normal(jax.random.key(0), (12, 5)) + 0.4
        loss = lambda x, b: jnp.sum(jnp.sin(jaxqif.qif_multistep(x, backend=b)[1]))
        np.testing.assert_allclose(jax.grad(loss)(x, "ffi"), jax.grad(loss)(x, "jax"), rtol=1e-5)
        print(jax.__version__)
    """)
    print(f"{other} ran under JAX {out.strip()}")


def test_a_program_exported_with_the_v2_targets_still_runs():
    """tests/data/exported_v2_cpu.npz holds a training step exported with JAX 0.10.2 by
    jaxqif's v2 interface (targets jaxqif_forward_v2 / jaxqif_backward_v2: value_and_grad of a
    loss of spikes, v_final and v_seq; tau=3, v_threshold=0.9, ATan, v_init given, T = 19),
    with its inputs and results. A serialized program names its targets, so every interface
    ever exported stays registered and computes what it did."""
    data = np.load(TESTS / "data" / "exported_v2_cpu.npz")
    restored = jax.export.deserialize(bytearray(data["program"].tobytes()))
    value, (grad_x, grad_v) = restored.call(data["x"], data["v"])
    np.testing.assert_allclose(value, data["value"], rtol=1e-6)
    np.testing.assert_allclose(grad_x, data["grad_x"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_v, data["grad_v"], rtol=1e-6, atol=1e-7)
