"""jaxqif: fused quadratic integrate-and-fire (QIF) spiking neurons for JAX."""

from jaxqif import surrogate
from jaxqif.api import qif_multistep, qif_step

__all__ = ["qif_multistep", "qif_step", "surrogate"]
__version__ = "0.1.0"
