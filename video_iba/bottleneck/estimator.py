"""Per-neuron feature statistics: a batched Welford estimator and the :class:`Statistics` it yields."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..errors import UserInputError
from ..files import load_payload, save_payload

log = logging.getLogger(__name__)

#: Below this many samples the estimate is noisy (the reference uses 10 000 by default).
FEW_SAMPLES = 1000
DEFAULT_MIN_STD = 0.01
#: A neuron is active if it is non-zero in more than this fraction of the samples.
ACTIVE_FRACTION = 0.01
_FORMAT = "video-iba-statistics/1"


def _pool_to_samples(x: torch.Tensor, pool: Sequence[int]) -> torch.Tensor:
    """Fold the pooled feature axes of ``x`` ``(N, C, *S)`` into the sample axis.

    ``pool`` indexes axes of one sample ``(C, *S)``: ``(1,)`` pools over time for ``(C, T, H, W)``.
    Returns ``(N * prod(pooled sizes), *kept sizes)``.
    """
    if not pool:
        return x
    feat_axes = list(range(1, x.dim()))
    pooled = [a + 1 for a in pool]
    kept = [a for a in feat_axes if a not in pooled]
    moved = x.permute(0, *pooled, *kept)
    return moved.reshape(-1, *[x.shape[a] for a in kept])


def _unpool_shape(t: torch.Tensor, pool: Sequence[int]) -> torch.Tensor:
    """Insert size-1 axes at the pooled positions so ``t`` broadcasts against ``(C, *S)``."""
    for a in sorted(pool):
        t = t.unsqueeze(a)
    return t


class WelfordEstimator:
    """Running per-neuron mean, variance and activity over batches of feature maps.

    Batches are merged with the parallel form of Welford's algorithm (Chan et al.), so each
    update is a few vectorised reductions over the batch, accumulated in float64.

    Args:
        pool: Axes of one sample ``(C, *S)`` over which neurons share statistics, e.g. ``(1,)``
            to pool a ``(C, T, H, W)`` map over time. Empty: one estimate per element.
    """

    def __init__(self, pool: Sequence[int] = ()) -> None:
        if any(a < 1 for a in pool):
            raise ValueError("the channel axis (0) cannot be pooled")
        self.pool = tuple(sorted(set(pool)))
        self.n = 0
        self.samples = 0
        self._mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None
        self._nonzero: torch.Tensor | None = None
        self.feature_shape: tuple[int, ...] | None = None

    def update(self, x: torch.Tensor) -> None:
        """Add a batch ``(N, C, *S)`` of feature maps."""
        if x.dim() < 2:
            raise ValueError(f"expected a batch of feature maps (N, C, ...), got shape {tuple(x.shape)}")
        shape = tuple(x.shape[1:])
        if self.feature_shape is None:
            self.feature_shape = shape
        elif shape != self.feature_shape:
            raise ValueError(f"feature shape changed from {self.feature_shape} to {shape}")
        flat = _pool_to_samples(x.detach(), self.pool).to(torch.float64)
        b = flat.shape[0]
        mean_b = flat.mean(0)
        m2_b = ((flat - mean_b) ** 2).sum(0)
        nz_b = (flat != 0).sum(0).to(torch.float64)
        if self._mean is None:
            self._mean, self._m2, self._nonzero = mean_b, m2_b, nz_b
        else:
            assert self._m2 is not None and self._nonzero is not None
            n = self.n
            total = n + b
            delta = mean_b - self._mean
            self._mean = self._mean + delta * (b / total)
            self._m2 = self._m2 + m2_b + delta**2 * (n * b / total)
            self._nonzero = self._nonzero + nz_b
        self.n += b
        self.samples += x.shape[0]

    def state(self) -> dict[str, Any]:
        """The running sums, for sending to other processes (CPU tensors)."""
        return {"pool": self.pool, "n": self.n, "samples": self.samples, "feature_shape": self.feature_shape,
                "mean": None if self._mean is None else self._mean.cpu(),
                "m2": None if self._m2 is None else self._m2.cpu(),
                "nonzero": None if self._nonzero is None else self._nonzero.cpu()}

    def merge(self, state: dict[str, Any]) -> None:
        """Add another estimator's :meth:`state` (the parallel combination of Chan et al.): the result
        equals one estimator that saw both inputs, up to floating-point rounding."""
        if state["n"] == 0 or state["mean"] is None:
            return
        if tuple(state["pool"]) != self.pool:
            raise ValueError(f"cannot merge estimators pooled over {state['pool']} and {self.pool}")
        if self.feature_shape is not None and tuple(state["feature_shape"]) != self.feature_shape:
            raise ValueError(f"feature shape {state['feature_shape']} differs from {self.feature_shape}")
        mean_b, m2_b, nz_b = (state[k].to(torch.float64) for k in ("mean", "m2", "nonzero"))
        if self._mean is None:
            dev = mean_b.device
            self._mean, self._m2, self._nonzero = mean_b.to(dev), m2_b.to(dev), nz_b.to(dev)
            self.feature_shape = tuple(state["feature_shape"])
        else:
            assert self._m2 is not None and self._nonzero is not None
            mean_b, m2_b, nz_b = (t.to(self._mean.device) for t in (mean_b, m2_b, nz_b))
            n, b = self.n, int(state["n"])
            total = n + b
            delta = mean_b - self._mean
            self._mean = self._mean + delta * (b / total)
            self._m2 = self._m2 + m2_b + delta**2 * (n * b / total)
            self._nonzero = self._nonzero + nz_b
        self.n += int(state["n"])
        self.samples += int(state["samples"])

    def finalize(self, min_std: float = DEFAULT_MIN_STD, meta: dict[str, Any] | None = None, source: str = "dataset") -> "Statistics":
        """Return the statistics (unbiased std, clamped below at ``min_std``)."""
        if self._mean is None or self.n < 2:
            per_input = "" if self.pool else " (each feature is estimated on its own: one sample per input)"
            raise UserInputError(f"statistics need at least 2 samples of each feature; {self.samples} input(s) gave "
                                 f"{self.n}{per_input}; give more inputs")
        assert self._m2 is not None and self._nonzero is not None
        std = torch.sqrt(self._m2 / (self.n - 1)).clamp(min=min_std)
        active = (self._nonzero / self.n > ACTIVE_FRACTION).to(torch.float32)
        return Statistics(
            mean=_unpool_shape(self._mean.to(torch.float32), self.pool),
            std=_unpool_shape(std.to(torch.float32), self.pool),
            active=_unpool_shape(active, self.pool),
            samples=self.samples,
            source=source,
            meta={**(meta or {}), "pool": list(self.pool), "feature_shape": list(self.feature_shape or ()), "min_std": min_std},
        )


@dataclass
class Statistics:
    """Per-neuron mean, std and activity of a layer's output.

    Attributes:
        mean, std, active: Tensors broadcastable to one sample ``(C, *S)``; pooled axes have size 1.
        samples: Number of inputs the estimate saw.
        source: ``"dataset"`` (estimated over inputs) or ``"input"`` (pooled over the explained
            input's own positions, see :meth:`from_input`).
        meta: Provenance: ``model``, ``layer``, ``input_shape``, ``feature_shape``, ``pool``, ...
        prefix: A transformer layer's class tokens' statistics ``(C, P)`` (``None``: the layer has
            none, or they follow the grid's per-channel statistics).
    """

    mean: torch.Tensor
    std: torch.Tensor
    active: torch.Tensor
    samples: int
    source: str = "dataset"
    meta: dict[str, Any] = field(default_factory=dict)
    prefix: "Statistics | None" = None

    def __repr__(self) -> str:
        """One line: where the statistics are from and their shape (the tensors would fill a screen)."""
        what = [f"layer {self.meta['layer']}" if self.meta.get("layer") else "", f"model {self.meta['model']}"
                if self.meta.get("model") else "", f"mean/std {tuple(self.mean.shape)}",
                f"{self.samples} samples" if self.source == "dataset" else "the explained input's own positions",
                f"prefix {tuple(self.prefix.mean.shape)}" if self.prefix is not None else ""]
        return f"Statistics({', '.join(w for w in what if w)})"

    @classmethod
    def from_input(cls, r: torch.Tensor, min_std: float = DEFAULT_MIN_STD, meta: dict[str, Any] | None = None) -> "Statistics":
        """Statistics of one input's own feature map, pooled over all its positions.

        Each channel gets the mean and std of its values over the ``*S`` positions of ``r``
        ``(1, C, *S)``; a channel is active if non-zero at more than 1 % of them. This lets a
        single input be explained without a dataset; the noise then matches the input's own
        per-channel distribution rather than the data set's per-neuron one.
        """
        est = WelfordEstimator(pool=tuple(range(1, r.dim() - 1)))
        est.update(r)
        return est.finalize(min_std=min_std, meta=meta, source="input")

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "Statistics":
        return Statistics(self.mean.to(device, dtype), self.std.to(device, dtype), self.active.to(device, dtype),
                          self.samples, self.source, dict(self.meta),
                          self.prefix.to(device, dtype) if self.prefix is not None else None)

    def per_channel(self, dims: int) -> "Statistics":
        """Each channel's statistics (pooled over everything else), shaped for ``dims`` trailing axes
        (the statistics of a layer's class tokens ``(C, P)`` when only the grid's are known)."""
        def pooled(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(t.shape[0], -1).mean(1).reshape(t.shape[0], *[1] * dims)

        return Statistics(pooled(self.mean), pooled(self.std), (pooled(self.active) > 0).to(self.active.dtype),
                          self.samples, self.source, dict(self.meta))

    def check(self, feature_shape: Sequence[int] | None, layer: str | None = None, model: str | None = None,
              input_shape: Sequence[int] | None = None, weights: str | None = None, token_order: str | None = None,
              upstream: str | None = None, feature_dtype: torch.dtype | None = None) -> None:
        """Raise :class:`UserInputError` unless these statistics fit the given layer output.

        Args:
            feature_shape: One sample of the layer output, ``(C, *S)`` (``None``: not checked).
            layer, model, input_shape: Checked against the recorded provenance when both are known.
            weights: The model's weights digest (:func:`video_iba.models.weights_digest`), checked
                against the one recorded when the statistics were estimated.
            token_order: The order a token layout reads the layer's grid tokens in (``"t h w"``),
                checked against the one recorded.
            upstream: The digest of the weights up to the layer (``meta["upstream_digest"]``),
                checked against the one recorded.
            feature_dtype: The layer output's type; in half precision, a refusal for other weights
                names the likely cause (a float32 model cast with ``.half()``).
        """
        where = f"the statistics in '{self.meta['path']}'" if self.meta.get("path") else "the statistics"
        rec_order = self.meta.get("token_order")
        if token_order is not None and rec_order is not None and rec_order != token_order:
            raise UserInputError(f"the statistics of '{layer}' were estimated with its tokens in '{rec_order}' order "
                                 f"and this layout reads them in '{token_order}' order: the grid's positions would "
                                 f"not match; give {{tokens}} the layout they were estimated with, or estimate them "
                                 f"again", options=["tokens"])
        rec_upstream = self.meta.get("upstream_digest")
        if upstream is not None and rec_upstream is not None and rec_upstream != upstream:
            file = f" in '{self.meta['path']}'" if self.meta.get("path") else ""
            half = ("; if it is their model cast to half precision (.half()), explain it in float32 with "
                    "{precision} fp16 or bf16 instead" if feature_dtype in (torch.float16, torch.bfloat16) else "")
            raise UserInputError(f"the statistics of '{layer}'{file} were estimated with other weights up to that "
                                 f"layer than this model has there; estimate them again with this model "
                                 f"(video_iba.estimate), or explain the model they were estimated with{half}",
                                 options=["precision"] if half else [])
        rec_weights = self.meta.get("weights_digest")
        if weights is not None and rec_weights is not None and rec_weights != weights:
            made = str(self.meta.get("weights", "?"))
            seeded = made == "random" and self.meta.get("weights_seed") is not None
            if seeded:
                made += f", seed {self.meta['weights_seed']}"
            raise UserInputError(f"{where} were estimated with other weights ({made}) than the model's; give "
                                 f"{{weights}} the weights they were made with"
                                 + (" and {seed} their seed" if seeded else "")
                                 + ", or estimate statistics for these weights",
                                 options=["weights", "seed"] if seeded else ["weights"])
        rec_model = self.meta.get("model")
        if model is not None and rec_model is not None and rec_model != model:
            raise UserInputError(f"{where} were estimated for model '{rec_model}', not '{model}'; "
                                 f"run `video-iba estimate` for {model} or drop {{stats}}", options=["stats"])
        rec_layer = self.meta.get("layer")
        if layer is not None and rec_layer is not None and rec_layer != layer:
            raise UserInputError(f"{where} were estimated at layer '{rec_layer}', not '{layer}'; "
                                 f"give {{layer}} {rec_layer} or estimate statistics for {layer}", options=["layer"])
        rec_input = self.meta.get("input_shape")
        if input_shape is not None and rec_input is not None and list(rec_input) != list(input_shape):
            raise UserInputError(f"{where} were estimated for inputs of shape {tuple(rec_input)}, "
                                 f"not {tuple(input_shape)}; estimate them at this input size")
        if feature_shape is None:
            return
        shape = tuple(feature_shape)
        if self.mean.dim() != len(shape) or any(m not in (1, s) for m, s in zip(self.mean.shape, shape)) \
                or self.mean.shape[0] != shape[0]:
            raise UserInputError(f"{where} have shape {tuple(self.mean.shape)}, which does not fit the layer "
                                 f"output {shape}; estimate them for this model, layer and input size")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the statistics to ``path`` atomically (a ``torch.save`` file)."""
        save_payload(path, {"format": _FORMAT, **self.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Statistics":
        """Read statistics written by :meth:`save` (loaded with ``weights_only=True``)."""
        p = os.fspath(path)
        payload = load_payload(p, _FORMAT, "statistics file", "create one with `video-iba estimate`")
        try:
            st = cls.from_dict(payload)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserInputError(f"'{p}' is a damaged statistics file ({type(exc).__name__}: {exc}); "
                                 f"create it again with `video-iba estimate`") from exc
        st.meta["path"] = p
        return st

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and values (CPU), loadable with ``torch.load(weights_only=True)``."""
        return {"mean": self.mean.cpu(), "std": self.std.cpu(), "active": self.active.cpu(),
                "samples": int(self.samples), "source": self.source,
                "meta": {k: v for k, v in self.meta.items() if k != "path"},
                **({"prefix": self.prefix.to_dict()} if self.prefix is not None else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Statistics":
        """The inverse of :meth:`to_dict`.

        Raises:
            ValueError: entries of the wrong type, shapes that differ, a non-finite mean or a
                standard deviation that is not positive.
        """
        mean, std, active = d["mean"], d["std"], d["active"]
        if not all(isinstance(t, torch.Tensor) and t.is_floating_point() for t in (mean, std, active)):
            raise ValueError("mean, std and active must be float tensors")
        if not mean.shape == std.shape == active.shape:
            raise ValueError(f"mean, std and active differ in shape: {tuple(mean.shape)}, {tuple(std.shape)}, "
                             f"{tuple(active.shape)}")
        if not bool(torch.isfinite(mean).all()) or not bool((std > 0).all()) or not bool(torch.isfinite(std).all()):
            raise ValueError("the mean must be finite and the std finite and > 0")
        meta = d.get("meta", {})
        if not isinstance(d["samples"], int) or not isinstance(meta, dict):
            raise ValueError("samples must be an integer and meta a mapping")
        prefix = cls.from_dict(d["prefix"]) if d.get("prefix") is not None else None
        return cls(mean, std, active, d["samples"], str(d.get("source", "dataset")), dict(meta), prefix)

    def describe(self) -> str:
        """One line for metadata: where the statistics came from."""
        if self.source == "input":
            return "input (per-channel, pooled over the explained input's own positions)"
        where = self.meta.get("path")
        return f"dataset ({self.samples} samples{', ' + os.path.basename(where) if where else ''})"


__all__ = ["WelfordEstimator", "Statistics", "FEW_SAMPLES", "DEFAULT_MIN_STD"]
