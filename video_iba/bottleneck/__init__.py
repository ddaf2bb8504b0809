"""The information bottleneck: statistics, pure functions, insertion, the per-sample fit and bits maps."""

from .estimator import Statistics, WelfordEstimator
from .functional import capacity, gaussian_kernel1d, nats_to_bits, restrict, smooth
from .heatmap import bits_per_frame, capacity_to_bits
from .insertion import HookedForward, capture, frozen, get_module, layer_output
from .per_sample import FitResult, fit_inputs, fit_per_sample
from .split import BlocksSuffix, CachedSuffix, SplitError, split_runner

__all__ = [
    "Statistics", "WelfordEstimator", "capacity", "gaussian_kernel1d", "nats_to_bits", "restrict", "smooth",
    "bits_per_frame", "capacity_to_bits",
    "HookedForward", "capture", "frozen", "get_module", "layer_output", "FitResult", "fit_inputs", "fit_per_sample",
    "BlocksSuffix", "CachedSuffix", "SplitError", "split_runner",
]
