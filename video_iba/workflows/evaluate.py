"""``video-iba evaluate``: a dataset, a model and its statistics set up for the evaluation harness.

Datasets: ``synthetic`` (the ground-truth video benchmark, its trained TubeNet, or with
``model="tubevit"`` its trained video transformer, its statistics and, for the readout method on
TubeNet, its shipped readout) or a folder of photos (image model) or videos
(video model: one centre clip per video) with optional box annotations.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn

from ..config import IBAConfig
from ..errors import UserInputError
from ..evaluation.datasets import Item, folder_items, synthetic_items
from ..evaluation.harness import TUBE_FRAMES, base_method, check_label, check_metrics, evaluate, iba_label
from ..evaluation.synthetic import (SYNTHETIC_LAYER, SYNTHETIC_MODELS, TUBEVIT_CAM_LAYER, TUBEVIT_LAYER,
                                   TUBEVIT_LAYOUT, load_tubenet, load_tubenet_readout, load_tubevit,
                                   load_tubevit_readout, statistics_batches, tubevit_layout)
from ..files import ensure_writable_dir
from ..methods.attribute import check_method
from ..methods.batching import FitBatches, check_batch_size
from ..methods.iba import check_precision, estimate
from ..methods.readout import Readout, load_readout
from .estimate import estimate_inputs
from .outputs import folder_lock
from .session import Progress, Session, Settings, no_progress, resolve_device

log = logging.getLogger(__name__)

#: Metrics when none are named.
SYNTHETIC_METRICS = ("degradation8", "hit_ratio", "temporal_share")
FOLDER_METRICS = ("degradation8", "degradation14", "hit_ratio")


@dataclass(frozen=True)
class Evaluation:
    """What to evaluate.

    Attributes:
        dataset: ``"synthetic"`` or a folder of photos or videos.
        methods: Method names; ``iba`` becomes one row per beta when several ``betas`` are given.
        metrics: Metric names (default: :data:`SYNTHETIC_METRICS` or :data:`FOLDER_METRICS`).
        model, weights, layers, stats: A folder's model, its weights, IBA's layers and statistics
            files (the synthetic benchmark has its own model and statistics).
        clips: Synthetic test clips to score.
        annotations: A folder's box annotations (JSON).
        betas: IBA's beta(s) (default: the model's, see :meth:`IBAConfig.for_transformers`).
        masks: Sensitivity-n's random masks per n.
        readout: A readout checkpoint (synthetic: default the shipped one).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: Items per IBA fit (``None``: chosen from the device); scores do not depend on it.
        precision: Type of IBA's network passes (``fp32``, ``bf16``, ``fp16``).
    """

    dataset: str
    methods: Sequence[str] = ("iba", "random", "saliency", "gradcam")
    metrics: Sequence[str] | None = None
    model: str | None = None
    weights: str = "default"
    layers: Sequence[str] | None = None
    stats: Sequence[str] = ()
    clips: int = 20
    annotations: str | None = None
    betas: Sequence[float] | None = None
    masks: int = 100
    readout: str | None = None
    device: str = "cpu"
    batch_size: int | None = None
    precision: str = "fp32"


def evaluate_dataset(ev: Evaluation, out_dir: str, progress: Progress = no_progress) -> dict[str, Any]:
    """Score the methods on the dataset (resumable in ``out_dir``); returns the harness's summary."""
    labels = [check_label(m) for m in ev.methods if m.strip()]
    if ev.betas is not None and len(ev.betas) > 1:
        labels = [lab for m in labels for lab in ([iba_label(b) for b in ev.betas] if m == "iba" else [m])]
    dev = resolve_device(ev.device)
    batches = FitBatches(check_batch_size(ev.batch_size), dev)
    if ev.precision != "fp32" and not any(check_method(base_method(m)).fitted for m in labels):
        raise UserInputError("{precision} applies to the method iba only; add it to {methods} or drop {precision}",
                             options=["precision", "methods"])
    check_precision(ev.precision, dev)
    if ev.dataset == "synthetic":
        setup = _synthetic(ev, labels, dev)
    else:
        setup = _folder(ev, dev)
    betas = list(ev.betas) if ev.betas is not None else [setup.config.beta]
    configs = {iba_label(b): setup.config.replace(beta=b) for b in betas}
    readout = _readout(ev, labels, setup.model_name, dev)

    def kwargs(method: str) -> dict[str, Any]:
        if check_method(base_method(method)).uses_readout:
            return {"readout": readout}
        if check_method(base_method(method)).uses_statistics:
            cfg = configs.get(method, configs[iba_label(betas[0])])
            return {"layer": setup.layers if len(setup.layers) > 1 else setup.layers[0], "stats": setup.stats,
                    "config": cfg, "precision": ev.precision, **({"tokens": setup.tokens} if setup.tokens else {})}
        return dict(setup.tube)

    ensure_writable_dir(out_dir)
    bar = progress("evaluating", len(setup.items) * len(labels), "map")
    try:
        with folder_lock(out_dir):
            return evaluate(setup.model, setup.items, labels, setup.metrics, out_dir, method_kwargs=kwargs,
                            restats=setup.restats, stats_layers=setup.layers, masks=ev.masks, progress=bar.update,
                            batches=batches)
    finally:
        bar.close()


@dataclass
class _Setup:
    model: nn.Module
    model_name: str
    items: list[Any]
    metrics: list[str]
    layers: list[str]
    stats: Any
    restats: Callable[[nn.Module], Any] | None
    tube: dict[str, Any]
    config: IBAConfig
    tokens: list[Any] | None = None


def _synthetic(ev: Evaluation, labels: Sequence[str], dev: Any) -> _Setup:
    if ev.stats or ev.annotations or ev.weights != "default":
        raise UserInputError("the synthetic benchmark has its own models, statistics and ground truth; drop "
                             "{weights}, {stats} and {annotations} (or give a folder)",
                             options=["weights", "stats", "annotations"])
    if ev.model not in (None, *SYNTHETIC_MODELS):
        raise UserInputError(f"the synthetic benchmark's models are {', '.join(SYNTHETIC_MODELS)}, not '{ev.model}'; "
                             f"give one of them to {{model}}, or a folder of photos or videos", options=["model"])
    name = ev.model or SYNTHETIC_MODELS[0]
    vit = name == "tubevit"
    metrics = check_metrics(list(ev.metrics or SYNTHETIC_METRICS))
    model = (load_tubevit() if vit else load_tubenet()).to(dev)
    items = [Item(i.name, i.x.to(dev), i.target, i.boxes, i.interval) for i in synthetic_items(ev.clips)]
    layers = list(ev.layers or [TUBEVIT_LAYER if vit else SYNTHETIC_LAYER])
    tokens = [tubevit_layout(n) if vit else None for n in layers]
    stats = restats = None
    if any(check_method(base_method(m)).uses_statistics for m in labels):
        def restats(m: nn.Module) -> Any:
            return estimate(m, statistics_batches(device=dev), layer=layers if len(layers) > 1 else layers[0],
                            tokens=tokens)

        stats = restats(model)
    tube = {"tube_frames": TUBE_FRAMES, **({"cam_layer": TUBEVIT_CAM_LAYER, "tokens": TUBEVIT_LAYOUT} if vit else {})}
    config = IBAConfig.for_transformers() if vit else IBAConfig()
    return _Setup(model, name, items, metrics, layers, stats, restats, tube, config, tokens if any(tokens) else None)


def _folder(ev: Evaluation, dev: Any) -> _Setup:
    name, _ = estimate_inputs(ev.dataset, ev.model)
    metrics = check_metrics(list(ev.metrics or FOLDER_METRICS))
    items = folder_items(ev.dataset, name, ev.annotations, dev, ev.weights)
    session = Session.open(Settings(model=name, weights=ev.weights, device=str(dev),
                                    layers=tuple(ev.layers) if ev.layers else None, stats=tuple(ev.stats) or None))
    layers, loaded = session.layers, session.stats or []
    stats = (loaded if len(loaded) > 1 else loaded[0]) if loaded else None
    restats = None
    if stats is not None:
        def restats(m: nn.Module) -> Any:
            log.warning("randomisation: statistics re-estimated on the %d evaluated inputs only", len(items))
            return estimate(m, (i.x for i in items), layer=layers if len(layers) > 1 else layers[0])
    return _Setup(session.model, name, items, metrics, layers, stats, restats,
                  {"tube_frames": TUBE_FRAMES} if session.spec.is_video else {}, session.config)


def _readout(ev: Evaluation, labels: Sequence[str], model_name: str, dev: Any) -> Readout | None:
    if not any(check_method(base_method(m)).uses_readout for m in labels):
        if ev.readout:
            raise UserInputError("{readout} applies to the method 'readout' only; add it to {methods}",
                                 options=["readout", "methods"])
        return None
    if ev.dataset == "synthetic" and not ev.readout:  # the one shipped for the benchmark's model
        return (load_tubevit_readout() if model_name == "tubevit" else load_tubenet_readout()).to_device(dev)
    return load_readout(ev.readout, model_name, dev)


__all__ = ["Evaluation", "evaluate_dataset", "SYNTHETIC_METRICS", "FOLDER_METRICS"]
