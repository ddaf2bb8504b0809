"""Attribution methods: the per-sample bottleneck, the readout bottleneck and the baselines."""

from .attribute import METHODS, Method, attribute, check_method
from .baselines import BASELINES, baseline
from .iba import estimate, explain
from .readout import (Readout, ReadoutHead, ReadoutSpec, default_readouts, explain_readout, load_checkpoint,
                      load_readout, new_readout, readout_loss, readout_terms, save_checkpoint)

__all__ = [
    "METHODS", "Method", "attribute", "check_method", "BASELINES", "baseline", "estimate", "explain",
    "Readout", "ReadoutHead", "ReadoutSpec", "default_readouts", "explain_readout", "load_checkpoint", "load_readout",
    "new_readout", "readout_loss", "readout_terms", "save_checkpoint",
]
