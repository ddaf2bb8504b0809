"""``video-iba evaluate``: a dataset, a model and its statistics set up for the evaluation harness.

Datasets: ``synthetic`` (the ground-truth video benchmark, its trained TubeNet, or with
``model="tubevit"`` its trained video transformer, its statistics and, for the readout method on
TubeNet, its shipped readout) or a folder of photos (image model) or videos
(video model: one centre clip per video) with optional box annotations.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from ..config import IBAConfig
from ..distributed import process_group, rank, refuse_on_every_rank, same_on_every_rank, shard, world_size
from ..errors import UserInputError
from ..evaluation.datasets import Item, folder_items, synthetic_items
from ..evaluation.harness import (TUBE_FRAMES, applies, base_method, check_label, check_metrics, evaluate, iba_label,
                                  label_beta)
from ..evaluation.synthetic import (SYNTHETIC_LAYER, SYNTHETIC_MODELS, TUBEVIT_CAM_LAYER, TUBEVIT_LAYER,
                                   TUBEVIT_LAYOUT, load_tubenet, load_tubenet_readout, load_tubevit,
                                   load_tubevit_readout, statistics_batches, tubevit_layout)
from ..files import atomic_write, check_writable_dir, file_digest
from ..methods.attribute import check_method
from ..methods.baselines import ATTENTION_METHODS, CAM_METHODS, check_fits
from ..methods.batching import FitBatches, check_batch_size
from ..methods.iba import check_precision, estimate
from ..methods.readout import Readout, load_readout
from ..models.layouts import TokenLayout
from ..models.pathways import Pack
from ..models.registry import weights_digest
from .estimate import folder_model
from .outputs import folder_lock
from .session import (OWN_WEIGHTS, Progress, Session, Settings, as_tuple, no_progress, refuse_clips_for_synthetic,
                      refuse_held_by_session, resolve_device)

log = logging.getLogger(__name__)

#: Metrics when none are named.
SYNTHETIC_METRICS = ("degradation8", "hit_ratio", "temporal_share")
FOLDER_METRICS = ("degradation8", "degradation14", "hit_ratio", "temporal_share")
#: Sensitivity-n's random masks per n when none are counted.
SENSITIVITY_MASKS = 100
#: Synthetic test clips scored when none are counted.
SYNTHETIC_CLIPS = 20
#: What the scores of an output folder were computed with.
RUN_FILE = "evaluation.json"


@dataclass(frozen=True)
class Evaluation:
    """What to evaluate.

    Attributes:
        dataset: ``"synthetic"`` or a folder of photos or videos.
        methods: Method names; ``iba`` becomes one row per beta when several ``betas`` are given.
        metrics: Metric names (default: :data:`SYNTHETIC_METRICS` or :data:`FOLDER_METRICS`).
        model, weights, layers, stats: A folder's model, its weights, IBA's layers and statistics
            files (the synthetic benchmark has its own model and statistics).
        clips: Synthetic test clips to score (default :data:`SYNTHETIC_CLIPS`; folders: refused).
        annotations: A folder's box annotations (JSON).
        betas: IBA's beta(s) (default: the model's, see :meth:`IBAConfig.for_transformers`).
        changes: IBA's other settings changed over the model's defaults, e.g. ``{"steps": 30}``
            (the command line's ``--config`` file and flags; a ``beta`` there is the default of
            ``betas``); recorded, so that a rerun with other settings is refused.
        masks: Sensitivity-n's random masks per n (default :data:`SENSITIVITY_MASKS`; refused
            without the metric ``sensitivity_n``).
        draws: The randomisation metric's draws of the randomised weights (default 1; refused
            without the metric ``randomisation``); its score is the mean over them.
        readout: A readout checkpoint (synthetic: default the shipped one).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: Items per IBA fit (``None``: chosen from the device); scores do not depend on it.
        precision: Type of IBA's network passes (``fp32``, ``bf16``, ``fp16``).
        cam_layer: Grad-CAM's layer (default: the model's; the Grad-CAM methods only).
        labels: A file naming the model's classes (see :attr:`Settings.labels`).
        sampling_rate: A folder's video model reads its clips at this rate (see
            :attr:`Settings.sampling_rate`); recorded, as the model's own rate when not given.
        frames: A folder's video model's clips hold this many frames (see
            :attr:`Settings.frames`); recorded, as the model's own number when not given.
    """

    dataset: str
    methods: Sequence[str] = ("iba", "random", "saliency", "gradcam")
    metrics: Sequence[str] | None = None
    model: str | None = None
    weights: str = "default"
    layers: Sequence[str] | None = None
    stats: Sequence[str] = ()
    clips: int | None = None
    annotations: str | None = None
    betas: Sequence[float] | None = None
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    masks: int | None = None
    draws: int | None = None
    readout: str | None = None
    device: str = "cpu"
    batch_size: int | None = None
    precision: str = "fp32"
    cam_layer: str | None = None
    labels: str | None = None
    sampling_rate: int | None = None
    frames: int | None = None

    def __post_init__(self) -> None:
        """Names and files given as one string are one entry (methods and metrics: comma-separated)."""
        for name, split in (("methods", True), ("metrics", True), ("layers", False), ("stats", False),
                            ("betas", False)):
            object.__setattr__(self, name, as_tuple(getattr(self, name), split))
        if not isinstance(self.changes, Mapping):
            raise UserInputError(f"changes takes a mapping such as {{'steps': 30}}, got {type(self.changes).__name__}")


def evaluate_dataset(ev: Evaluation, out_dir: str, progress: Progress = no_progress, *,
                     session: Session | None = None) -> dict[str, Any]:
    """Score the methods on the dataset (resumable in ``out_dir``); returns the harness's summary.

    ``session``: an open session (e.g. a model of your own, :meth:`Session.for_model`) whose
    model, spec (the folder's inputs are read for it), bottleneck layers, statistics, settings,
    token layouts, pathway packing and readout are used; ``ev`` then gives the folder, methods,
    metrics, annotations and the methods' options only. The scores' record names the model's
    weights by their digest, so a rerun with other weights is refused.

    Under torchrun every rank scores every world-th input (each rank builds the model, and the
    ranks check that their weights agree) into its own ``scores.rankN.jsonl``; rank 0 merges them
    into ``scores.jsonl`` and returns the summary, the other ranks return ``{}``."""
    labels = [check_label(m) for m in ev.methods if m.strip()]
    if ev.betas is not None and len(ev.betas) > 1:
        labels = [lab for m in labels for lab in ([iba_label(b) for b in ev.betas] if m == "iba" else [m])]
    if session is not None:
        _check_session_evaluation(ev)
    with process_group(str(session.device) if session is not None else ev.device) as device:
        dev = session.device if session is not None else resolve_device(device)
        return _evaluate_on(ev, labels, dev, out_dir, progress, session)


def _evaluate_on(ev: Evaluation, labels: list[str], dev: Any, out_dir: str, progress: Progress,
                 session: Session | None) -> dict[str, Any]:
    """:func:`evaluate_dataset` on this process's device, this rank's share under torchrun."""
    batches = FitBatches(check_batch_size(ev.batch_size), dev)
    _check_method_options(ev, labels)
    asked = check_metrics(list(ev.metrics)) if ev.metrics else []
    for option, counted, metric in (("masks", "random masks", "sensitivity_n"), ("draws", "draws", "randomisation")):
        if getattr(ev, option) is not None and metric not in asked:
            raise UserInputError(f"{{{option}}} counts the {counted} of the metric {metric}, which is not among "
                                 "{metrics}; drop it or add the metric", options=[option, "metrics"])
    masks = ev.masks or SENSITIVITY_MASKS
    check_precision(ev.precision, dev)
    if ev.dataset == "synthetic":
        setup = _synthetic(ev, labels, dev)
    else:
        setup = _folder(ev, labels, dev, session)
    config = setup.config.changed(ev.changes, where="changes")
    betas = list(ev.betas) if ev.betas is not None else [config.beta]
    readout = _readout(ev, labels, setup.model_name, dev, session)

    def kwargs(method: str) -> dict[str, Any]:
        if check_method(base_method(method)).uses_readout:
            return {"readout": readout}
        if check_method(base_method(method)).uses_statistics:
            cfg = config.replace(beta=label_beta(method) or betas[0])
            return {"layer": setup.layers if len(setup.layers) > 1 else setup.layers[0], "stats": setup.stats,
                    "config": cfg, "precision": ev.precision, **({"tokens": setup.tokens} if setup.tokens else {})}
        if check_method(base_method(method)).uses_cam_layer:
            return {**setup.tube, **setup.cam, **({"cam_layer": ev.cam_layer} if ev.cam_layer else {})}
        if base_method(method) in ATTENTION_METHODS and setup.attention_tokens is not None:
            return {**setup.tube, "tokens": setup.attention_tokens}
        return dict(setup.tube)

    stats_sha256 = [file_digest(p) for p in ev.stats]  # once, for every beta's row

    def settings_of(method: str) -> dict[str, Any]:
        kind = check_method(base_method(method))
        if kind.uses_readout:
            if not ev.readout:
                return {"readout": "shipped"}
            return {"readout": os.path.abspath(ev.readout), "readout_sha256": file_digest(ev.readout)}
        if kind.fitted:
            return {"layers": list(setup.layers), "stats": [os.path.abspath(p) for p in ev.stats],
                    "beta": float(label_beta(method) or betas[0]), "precision": ev.precision,
                    **{k: v for k, v in dataclasses.asdict(config).items() if k in SCORED_SETTINGS},
                    **({"stats_sha256": stats_sha256} if stats_sha256 else {})}
        return {"cam_layer": kwargs(method).get("cam_layer")} if kind.uses_cam_layer else {}

    # the weights' digest: recorded for a session's model, compared between ranks under torchrun
    digest = weights_digest(setup.model) if session is not None or world_size() > 1 else None
    weights = ev.weights if session is None else f"{OWN_WEIGHTS} ({digest})"
    record = {"dataset": ev.dataset if ev.dataset == "synthetic" else os.path.abspath(ev.dataset),
              "model": setup.model_name, "weights": weights, "masks": masks,
              "annotations": os.path.abspath(ev.annotations) if ev.annotations else None,
              "methods": {m: settings_of(m) for m in labels}}
    if setup.sampling_rate is not None:  # clips read at another rate, or of another length, are other inputs
        record["sampling_rate"] = setup.sampling_rate
    if setup.frames is not None:
        record["frames"] = setup.frames
    if "randomisation" in setup.metrics:  # other draws are another score
        record["randomisation_draws"] = ev.draws or 1
    if ev.annotations:  # edited annotations are other ground truth
        record["annotations_sha256"] = file_digest(ev.annotations)
    if session is None and os.path.isfile(ev.weights):  # a checkpoint rewritten in place is another model
        record["weights_sha256"] = file_digest(ev.weights)
    if any("/" in item.name for item in setup.items):
        record["item_names"] = "paths in the folder"  # once file names alone, which two inputs could share
    check_writable_dir(out_dir)
    if digest is not None:  # every rank has one when there are several
        same_on_every_rank(digest, "the model's weights")
    bar = progress("evaluating", len(shard(setup.items)) * len(labels), "map")
    try:
        with folder_lock(out_dir):
            refused = None
            if rank() == 0:
                try:
                    _record_run(out_dir, record)
                except UserInputError as exc:
                    refused = str(exc)
            refuse_on_every_rank(refused)
            return evaluate(setup.model, setup.items, labels, setup.metrics, out_dir, method_kwargs=kwargs,
                            pack=setup.pack, restats=setup.restats, stats_layers=setup.layers, masks=masks,
                            draws=ev.draws or 1, progress=bar.update, batches=batches)
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
    cam: dict[str, Any] = dataclasses.field(default_factory=dict)
    pack: Pack | None = None
    sampling_rate: int | None = None  # a folder's video model's
    frames: int | None = None
    attention_tokens: TokenLayout | None = None  # a network without a spec: the layout its attention runs over


def _synthetic(ev: Evaluation, labels: Sequence[str], dev: Any) -> _Setup:
    if ev.stats or ev.annotations or ev.weights != "default":
        raise UserInputError("the synthetic benchmark has its own models, statistics and ground truth; drop "
                             "{weights}, {stats} and {annotations} (or give a folder)",
                             options=["weights", "stats", "annotations"])
    if ev.labels:
        raise UserInputError("the synthetic benchmark has its own classes; drop {labels} (or give a folder)",
                             options=["labels"])
    refuse_clips_for_synthetic(ev.sampling_rate, ev.frames)
    if ev.model not in (None, *SYNTHETIC_MODELS):
        raise UserInputError(f"the synthetic benchmark's models are {', '.join(SYNTHETIC_MODELS)}, not '{ev.model}'; "
                             f"give one of them to {{model}}, or a folder of photos or videos", options=["model"])
    name = ev.model or SYNTHETIC_MODELS[0]
    vit = name == "tubevit"
    metrics = check_metrics(list(ev.metrics or SYNTHETIC_METRICS))
    model = (load_tubevit() if vit else load_tubenet()).to(dev)
    _check_fits(labels, model, True, name)
    items = [Item(i.name, i.x.to(dev), i.target, i.boxes, i.interval)
             for i in synthetic_items(ev.clips or SYNTHETIC_CLIPS)]
    layers = list(ev.layers or [TUBEVIT_LAYER if vit else SYNTHETIC_LAYER])
    tokens = [tubevit_layout(n) if vit else None for n in layers]
    stats = None
    restats: Callable[[nn.Module], Any] | None = None
    if any(check_method(base_method(m)).uses_statistics for m in labels):
        restats = functools.partial(_synthetic_statistics, device=dev, layers=layers, tokens=tokens)
        stats = restats(model)
    cam_layer = ev.cam_layer or (TUBEVIT_CAM_LAYER if vit else None)
    cam = {"cam_layer": cam_layer, "tokens": tubevit_layout(cam_layer)} if vit and cam_layer else {}
    config = IBAConfig.for_transformers() if vit else IBAConfig()
    return _Setup(model, name, items, metrics, layers, stats, restats, {"tube_frames": TUBE_FRAMES}, config,
                  tokens if any(tokens) else None, cam, attention_tokens=TUBEVIT_LAYOUT if vit else None)


def _check_fits(labels: Sequence[str], model: nn.Module, video: bool, name: str) -> None:
    """Refuse a method the model cannot take before anything is scored (rather than once per input)."""
    for label in labels:
        check_fits(check_method(base_method(label)).name, model, video, name)


#: The benchmark models' statistics estimated in this process, by weights, layers, device and torch
#: thread count (sums round by the thread count): they are a function of these alone (the
#: statistics clips are fixed), so each evaluation after the first takes them from here (3.4 s of
#: a one-clip evaluation on a 2-core CPU). A copy is handed out; the last few are kept.
_SYNTHETIC_STATISTICS: dict[tuple[str, tuple[str, ...], str, int], Any] = {}
_SYNTHETIC_STATISTICS_KEPT = 4


def _synthetic_statistics(model: nn.Module, device: Any, layers: Sequence[str], tokens: Any) -> Any:
    """The benchmark model's statistics (one per layer, a single one for one layer), from the
    benchmark's statistics clips; under torchrun each rank estimates them alone, from all the
    clips (a rank re-estimates them for the randomisation metric when its inputs need them,
    whatever the other ranks do), so they are the one process's."""
    key = (weights_digest(model), tuple(layers), str(device), torch.get_num_threads())
    if key not in _SYNTHETIC_STATISTICS:
        while len(_SYNTHETIC_STATISTICS) >= _SYNTHETIC_STATISTICS_KEPT:
            _SYNTHETIC_STATISTICS.pop(next(iter(_SYNTHETIC_STATISTICS)))
        _SYNTHETIC_STATISTICS[key] = estimate(model, statistics_batches(device=device),
                                              layer=layers if len(layers) > 1 else layers[0], tokens=tokens,
                                              across_ranks=False)
    return copy.deepcopy(_SYNTHETIC_STATISTICS[key])


def _folder_statistics(model: nn.Module, items: Sequence[Item], layers: Sequence[str], pack: Any,
                       tokens: Any) -> Any:
    """Statistics of a randomised model, re-estimated on the evaluated inputs (its dataset is not
    at hand); under torchrun by each rank alone, from all the inputs, when its own inputs need
    them (see :func:`_synthetic_statistics`)."""
    log.warning("randomisation: statistics re-estimated on the %d evaluated inputs only", len(items))
    return estimate(model, (i.loaded().x for i in items), layer=layers if len(layers) > 1 else layers[0],
                    pack=pack, tokens=tokens, across_ranks=False)


def _folder(ev: Evaluation, labels: Sequence[str], dev: Any, own: Session | None = None) -> _Setup:
    if ev.clips is not None:
        raise UserInputError("{clips} counts the synthetic benchmark's clips; a folder is scored on all its inputs: "
                             "drop it", options=["clips"])
    name = own.spec.name if own is not None else folder_model(ev.dataset, ev.model)
    metrics = check_metrics(list(ev.metrics or FOLDER_METRICS))
    settings = Settings(model=name, weights=ev.weights, device=str(dev), layers=tuple(ev.layers) if ev.layers else None,
                        stats=tuple(ev.stats) or None, labels=ev.labels, sampling_rate=ev.sampling_rate,
                        frames=ev.frames)
    items = folder_items(ev.dataset, own.spec if own is not None else settings.spec_of(name, bool(ev.layers)),
                         ev.annotations, dev, ev.weights, own.dtype if own is not None else torch.float32)
    if ev.metrics:
        _refuse_unscorable(metrics, items)
    session = own or Session.open(settings)
    _check_fits(labels, session.model, session.spec.is_video, session.spec.name)
    layers, loaded = list(session.layers), session.stats or []
    stats = (loaded if len(loaded) > 1 else loaded[0]) if loaded else None
    restats: Callable[[nn.Module], Any] | None = None
    if stats is not None:
        restats = functools.partial(_folder_statistics, items=items, layers=layers, pack=session.pack,
                                    tokens=session.tokens)
    cam: dict[str, Any] = {}
    if own is not None:  # a registry model's spec lays out its Grad-CAM layer itself
        cam_layer = ev.cam_layer or own.spec.cam_layer
        cam = {"cam_layer": cam_layer, "tokens": own.spec.layout(cam_layer)} if cam_layer else {}
    video = session.spec.is_video
    return _Setup(session.model, name, items, metrics, layers, stats, restats,
                  {"tube_frames": TUBE_FRAMES} if video else {}, session.config, session.tokens, cam, session.pack,
                  session.spec.sampling_rate if video else None, session.spec.frames if video else None)


def _check_session_evaluation(ev: Evaluation) -> None:
    """With an open session, the evaluation gives the folder and the methods' options only."""
    if ev.dataset == "synthetic":
        raise UserInputError("the synthetic benchmark has its own models; evaluate an open session on a folder of "
                             "photos or videos")
    refuse_held_by_session([("model", ev.model), ("weights", ev.weights != "default"), ("layer", ev.layers),
                            ("stats", ev.stats), ("readout", ev.readout), ("device", ev.device != "cpu"),
                            ("labels", ev.labels), ("sampling_rate", ev.sampling_rate is not None),
                            ("frames", ev.frames is not None)])


def _refuse_unscorable(metrics: Sequence[str], items: Sequence[Item]) -> None:
    """Refuse metrics asked for that no input can score (no box, no annotated times)."""
    for metric in metrics:
        if not any(applies(metric, item) for item in items):
            need = ("a \"box\" or \"tube\" for some input" if metric == "hit_ratio" else
                    "videos annotated with times (\"tube\" or \"box\" with \"interval\") whose clips hold "
                    "annotated and other frames")
            raise UserInputError(f"no input of the folder can be scored with {metric}: it needs {{annotations}} "
                                 f"with {need}; add them or drop {metric} from {{metrics}}",
                                 options=["annotations", "metrics"])


def _record_run(out_dir: str, record: dict[str, Any]) -> None:
    """Keep what the scores in ``out_dir`` were computed with in ``OUT/evaluation.json``; a rerun
    resumes them only with the same dataset, model and settings of every method both runs score
    (methods may be added), else it is refused."""
    path = os.path.join(out_dir, RUN_FILE)
    before: dict[str, Any] = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                before = json.load(fh)
        except (OSError, ValueError) as exc:
            raise UserInputError(f"'{path}' is not readable ({type(exc).__name__}); remove it only if every score in "
                                 f"'{out_dir}' was computed with the current settings, or give another output "
                                 f"folder") from exc
    changed = [f"{key} was {before[key]!r}, now {value!r}" for key, value in record.items()
               if key != "methods" and key in before and before[key] != value]
    if before and "item_names" in record and "item_names" not in before:
        changed.append("inputs in subfolders were scored under their file names alone, now under their paths")
    methods = dict(before.get("methods", {}))
    for label, settings in record["methods"].items():
        old = methods.get(label, settings)
        changed += [f"{label} {k} was {old[k]!r}, now {v!r}" for k, v in settings.items()
                    if k in old and old[k] != v]  # settings a record does not hold are not compared
        methods[label] = settings
    if changed:
        raise UserInputError(f"'{out_dir}' holds scores computed otherwise ({'; '.join(changed)}); rerun with those "
                             f"settings to resume, or give another output folder")
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump({**record, "methods": methods}, fh, indent=1)


#: IBA settings a score depends on (recorded; micro-batches and inputs per pass give the same maps).
SCORED_SETTINGS = ("steps", "samples", "lr", "alpha_init", "sigma", "temporal_sigma", "min_std")


def _check_method_options(ev: Evaluation, labels: Sequence[str]) -> None:
    """IBA's layers, statistics, betas and precision need IBA among the methods; a Grad-CAM layer
    needs a Grad-CAM method."""
    kinds = [check_method(base_method(m)) for m in labels]
    given = [o for o, v in (("layer", ev.layers), ("stats", ev.stats), ("beta", ev.betas), ("changes", ev.changes),
                            ("precision", ev.precision != "fp32"), ("batch_size", ev.batch_size is not None)) if v]
    if given and not any(k.fitted for k in kinds):
        raise UserInputError(f"{', '.join('{' + o + '}' for o in given)} appl{'ies' if len(given) == 1 else 'y'} to "
                             f"the method iba only, which is not among {{methods}}; add it or drop "
                             f"{'it' if len(given) == 1 else 'them'}", options=[*given, "methods"])
    if ev.cam_layer and not any(k.uses_cam_layer for k in kinds):
        raise UserInputError(f"{{cam_layer}} applies to {' and '.join(CAM_METHODS)}, neither of which is among "
                             f"{{methods}}; add one or drop it", options=["cam_layer", "methods"])


def _readout(ev: Evaluation, labels: Sequence[str], model_name: str, dev: Any,
             session: Session | None = None) -> Readout | None:
    if not any(check_method(base_method(m)).uses_readout for m in labels):
        if ev.readout:
            raise UserInputError("{readout} applies to the method 'readout' only; add it to {methods}",
                                 options=["readout", "methods"])
        return None
    if session is not None:
        if session.readout is None:
            raise UserInputError("the readout method needs a trained readout: give the session one "
                                 "(Session.for_model(..., readout=))")
        return session.readout
    if ev.dataset == "synthetic" and not ev.readout:  # the one shipped for the benchmark's model
        return (load_tubevit_readout() if model_name == "tubevit" else load_tubenet_readout()).to_device(dev)
    return load_readout(ev.readout, model_name, dev)


__all__ = ["Evaluation", "evaluate_dataset", "SYNTHETIC_METRICS", "FOLDER_METRICS"]
