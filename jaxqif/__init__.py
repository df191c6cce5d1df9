"""jaxqif: fused quadratic integrate-and-fire (QIF) spiking neurons for JAX.

`jaxqif.linen` and `jaxqif.nnx` (the Flax layers) are imported when first touched, so that
`import jaxqif` does not import Flax.
"""

import importlib

from jaxqif import _library, surrogate
from jaxqif._params import checking_parameters
from jaxqif.api import qif_multistep, qif_step

__all__ = ["qif_multistep", "qif_step", "checking_parameters", "surrogate", "linen", "nnx"]
__version__ = "0.1.0"

# The FFI targets exist from here on, for programs deserialized with jax.export too.
_library.register_at_import()

_LAZY_SUBMODULES = ("linen", "nnx")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"jaxqif.{name}")
    raise AttributeError(f"module 'jaxqif' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY_SUBMODULES])
