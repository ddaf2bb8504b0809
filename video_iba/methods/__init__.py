"""Attribution methods: the per-sample bottleneck, the readout bottleneck and the baselines."""

from .attribute import METHODS, Method, attribute, attribute_many, check_method
from .batching import FitBatches, check_batch_size
from .baselines import BASELINES, baseline
from .iba import estimate, explain
from .readout import (Readout, ReadoutHead, ReadoutSpec, default_readouts, explain_readout, load_checkpoint,
                      load_readout, new_readout, readout_loss, readout_terms, save_checkpoint)

__all__ = [
    "METHODS", "Method", "attribute", "attribute_many", "check_method", "FitBatches", "check_batch_size",
    "BASELINES", "baseline", "estimate", "explain",
    "Readout", "ReadoutHead", "ReadoutSpec", "default_readouts", "explain_readout", "load_checkpoint", "load_readout",
    "new_readout", "readout_loss", "readout_terms", "save_checkpoint",
]
