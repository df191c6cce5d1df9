import jax
import pytest

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
