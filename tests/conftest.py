import pathlib
import sys

import jax
import pytest

# The tests run against the installed jaxqif, whose compiled libraries lie in its installed
# package folder (jaxqif loads them from nowhere else). `python -m pytest` puts the working
# directory first on sys.path, and a source checkout's jaxqif/ there has no libraries, so the
# repository root comes off sys.path before anything imports jaxqif. (An editable install
# finds the package through its own import hook, unaffected.)
_REPOSITORY = pathlib.Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != _REPOSITORY]

# float64 cases need x64; every test names its dtypes explicitly.
jax.config.update("jax_enable_x64", True)


def _has_cuda_kernel() -> bool:
    try:
        has_gpu = any(d.platform == "gpu" for d in jax.devices())
    except RuntimeError:
        return False
    from jaxqif import _library

    return has_gpu and _library.load("cuda")


def pytest_collection_modifyitems(config, items):
    if _has_cuda_kernel():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU and jaxqif's CUDA library")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
