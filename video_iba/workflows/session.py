"""One session: a model with everything an explanation needs, loaded once for many inputs.

A :class:`Session` holds the model, its spec and labels, the device, the method and its
statistics, readout, layers and settings. Sharing a model between explanations is safe: every
explanation leaves it as it found it (hooks removed, flags and ``requires_grad`` restored).
:class:`Sessions` opens one session per model and keeps it, so a folder of photos and videos
loads each model once.
"""

from __future__ import annotations

import dataclasses
import logging
import operator
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, TypeVar

import numpy as np
import torch
from torch import nn

from ..bottleneck.estimator import Statistics
from ..bottleneck.insertion import frozen
from ..config import IBAConfig
from ..distributed import auto_device, checked_device
from ..errors import UserInputError
from ..io.discovery import is_video_file
from ..io.labels import read_labels
from ..methods.attribute import METHODS, Method, check_method
from ..methods.baselines import CAM_METHODS, baseline, check_fits, network_inputs
from ..methods.batching import FitBatches, check_batch_size
from ..methods.common import check_eager, model_dtype
from ..methods.iba import check_precision, explain
from ..methods.readout import Readout, explain_readout, load_readout
from ..models.layouts import TokenLayout
from ..models.pathways import Pack, input_packer, packed, slow_and_fast
from ..models.registry import (ModelSpec, check_frames, check_sampling_rate, labels_for, load_model, model_spec,
                               weights_digest, with_class_names, with_frames, with_sampling_rate)
from ..results import Attribution
from ..seeding import SEED_LIMIT, SEED_RANGE

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The model for photos and for videos when none is named (both offline, ImageNet classes).
DEFAULT_IMAGE_MODEL = "efficientnet_lite0"
DEFAULT_VIDEO_MODEL = "efficientnet_lite0_i3d"


class Bar(Protocol):
    """A progress bar: ``update(n)`` after ``n`` units of work, ``close()`` at the end (tqdm has both)."""

    def update(self, n: int = 1) -> Any: ...

    def close(self) -> Any: ...


#: ``(description, total units or None, unit name) -> Bar``: how workflows report progress.
Progress = Callable[[str, "int | None", str], Bar]


class _NoBar:
    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def no_progress(_desc: str, _total: int | None, _unit: str) -> Bar:
    """A :data:`Progress` that reports nothing."""
    return _NoBar()


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available; an unavailable CUDA device is an error, never a silent CPU run."""
    if name == "auto":
        return torch.device(auto_device())
    return checked_device(name, "cpu, cuda, cuda:N or auto")


def load_stats_files(paths: Sequence[str], spec: ModelSpec, layers: Sequence[str],
                     input_shape: tuple[int, ...] | None = None) -> list[Statistics]:
    """Statistics files from ``video-iba estimate``, one per layer in order, checked against the
    model, layer and (when given) input shape; an empty list when none are given. A file that does
    not record its model and layer is refused: nothing could be checked."""
    if paths and len(paths) != len(layers):
        raise UserInputError(f"got {len(paths)} statistics files for {len(layers)} layers ({', '.join(layers)}); "
                             f"give {{stats}} one per layer, in the same order", options=["stats"])
    out = []
    for p, layer in zip(paths, layers):
        st = Statistics.load(p)
        if not st.meta.get("model") or not st.meta.get("layer"):
            raise UserInputError(f"'{p}' does not record the model and layer it was estimated for; create it with "
                                 f"`video-iba estimate`")
        st.check(None, layer=layer, model=spec.name, input_shape=input_shape)
        out.append(st)
    return out


def as_tuple(value: Any, split: bool = False) -> Any:
    """A sequence option as a tuple: a single string or path is one entry (iterated, it would be
    read letter by letter), or with ``split`` its comma-separated entries (method and metric
    names, as the command line takes them); paths become strings; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        return tuple(v.strip() for v in _top_level_parts(text)) if split else (text,)
    try:
        return tuple(os.fspath(v) if isinstance(v, os.PathLike) else v for v in value)
    except TypeError:
        return (value,)  # one number (a beta)


def _top_level_parts(text: str) -> list[str]:
    """``text`` split at its commas outside brackets and quotes (a network of one's own with its
    arguments, ``nets.py:build(depth=18, width=2)``, is one entry)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


@dataclass(frozen=True)
class Settings:
    """What a session is opened with (the command line's model options).

    Attributes:
        model: Registry name; ``None`` picks :data:`DEFAULT_IMAGE_MODEL` or :data:`DEFAULT_VIDEO_MODEL`
            by the kind of input.
        weights: As for :func:`video_iba.load_model`.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        method: A name of :data:`~video_iba.methods.attribute.METHODS`.
        layers: Bottleneck layers (default: the model's; SlowFast: one per pathway).
        stats: Statistics files, one per layer (the per-sample bottleneck only).
        readout: A readout checkpoint (the readout method only).
        config: Bottleneck settings; ``None``: the model's defaults (the paper's; registry
            transformers: :meth:`IBAConfig.for_transformers`).
        changes: Settings changed on top of ``config`` or the model's defaults, e.g.
            ``{"steps": 30}`` (the command line's ``--config`` file and flags).
        seed: Seed of the methods' randomness (``None``: IBA draws one and records it).
        batch_size: Model inputs per IBA fit (``None``: chosen from the device, see
            :class:`~video_iba.methods.batching.FitBatches`); results do not depend on it.
        precision: ``fp32``, ``bf16`` or ``fp16``: the type of IBA's network passes.
        cam_layer: Grad-CAM's layer (the Grad-CAM methods only; default: the model's).
        labels: A file naming the model's classes (:func:`~video_iba.io.read_labels`), for
            weights fine-tuned to classes of one's own (default: the model's label set; weights
            with another number of outputs: ``class 0``, ``class 1``, ...).
        sampling_rate: A video model's clips take every ``sampling_rate``-th frame of a 30 fps
            video (default: the model's own rate), for weights trained at another rate. An image
            model named in ``model`` is refused with it; photos explained by the default image
            model (no ``model`` named) are read as always.
        frames: A video model's clips hold this many frames (default: the model's own number),
            for weights trained on clips of another length; refused and applied as
            ``sampling_rate`` (see :func:`~video_iba.models.with_frames`).
    """

    model: str | None = None
    weights: str = "default"
    device: str = "cpu"
    method: str = "iba"
    layers: tuple[str, ...] | None = None
    stats: tuple[str, ...] | None = None
    readout: str | None = None
    config: IBAConfig | None = None
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    seed: int | None = 0
    batch_size: int | None = None
    precision: str = "fp32"
    cam_layer: str | None = None
    labels: str | None = None
    sampling_rate: int | None = None
    frames: int | None = None

    def __post_init__(self) -> None:
        """One layer or statistics file may be given as a string (it was read letter by letter);
        other values of the wrong kind are refused here rather than deep inside a run."""
        for name in ("layers", "stats"):
            object.__setattr__(self, name, as_tuple(getattr(self, name)))
        if self.seed is not None:
            try:
                seed = operator.index(self.seed)
            except TypeError:
                seed = -1
            if isinstance(self.seed, bool) or not 0 <= seed < SEED_LIMIT:
                raise UserInputError(f"seed must be a whole number in {SEED_RANGE}, or None (a seed drawn and recorded), "
                                     f"got {self.seed!r}")
            object.__setattr__(self, "seed", seed)
        if self.sampling_rate is not None:
            object.__setattr__(self, "sampling_rate", check_sampling_rate(self.sampling_rate))
        if self.frames is not None:
            object.__setattr__(self, "frames", check_frames(self.frames))
        if self.config is not None and not isinstance(self.config, IBAConfig):
            raise UserInputError(f"config takes an IBAConfig, got {type(self.config).__name__}; give a few settings as "
                                 f"changes={{'steps': 30}}")
        if not isinstance(self.changes, Mapping):
            raise UserInputError(f"changes takes a mapping such as {{'steps': 30}}, got {type(self.changes).__name__}")

    def config_for(self, spec: ModelSpec) -> IBAConfig:
        """The bottleneck settings used with the model ``spec``."""
        return (self.config or spec.config()).changed(self.changes, where="settings")

    def spec_of(self, name: str, layer_given: bool) -> ModelSpec:
        """The spec of the model ``name`` with these settings' weights, sampling rate and frames
        (see :func:`~video_iba.models.model_spec`); an image model that was not named in ``model``
        (a photo's default) keeps its spec."""
        spec = model_spec(name, layer_given, self.weights)
        return spec if not spec.is_video and self.model is None else self.clips_of(spec)

    def clip_options(self) -> list[str]:
        """The clip-sampling options these settings give (``sampling_rate``, ``frames``), by name."""
        return _given_clip_options(self.sampling_rate, self.frames)

    def clips_of(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with these settings' sampling rate and frames, where given."""
        spec = spec if self.sampling_rate is None else with_sampling_rate(spec, self.sampling_rate)
        return spec if self.frames is None else with_frames(spec, self.frames)

    def model_for(self, path: str) -> str:
        """The model explaining the file ``path``."""
        if self.model:
            return self.model
        return DEFAULT_VIDEO_MODEL if is_video_file(path) else DEFAULT_IMAGE_MODEL


def _class_names(spec: ModelSpec) -> list[str]:
    """The spec's class names; ``[]`` for a network of one's own whose spec names none."""
    try:
        return labels_for(spec)
    except ValueError:
        if spec.family == "entry":
            return []
        raise


def _named_classes(spec: ModelSpec, path: str) -> ModelSpec:
    """``spec`` with the class names of the labels file ``path``, as many as the model's outputs."""
    names = read_labels(path)
    # a network of one's own: checked on its logits (its spec's label set may be the default, ImageNet's)
    have = _class_names(spec) if spec.family != "entry" else []
    if have and len(names) != len(have):
        raise UserInputError(f"the labels file '{path}' names {len(names)} classes but {spec.name} with these weights "
                             f"outputs {len(have)}; give one name per output, in index order")
    return with_class_names(spec, names)


#: What an open session holds, by the option that would otherwise give it.
_HELD = {"model": "model", "weights": "weights", "layer": "layers", "stats": "statistics", "readout": "readout",
         "device": "device", "labels": "class names", "sampling_rate": "clip sampling", "frames": "clip sampling"}


def _given_clip_options(sampling_rate: int | None, frames: int | None) -> list[str]:
    """The clip-sampling options of these values that are given, by name."""
    return [o for o, v in (("sampling_rate", sampling_rate), ("frames", frames)) if v is not None]


def refuse_clips_for_synthetic(sampling_rate: int | None, frames: int | None) -> None:
    """Refuse a clip sampling given for the synthetic benchmark: its clips are made for its models."""
    given = _given_clip_options(sampling_rate, frames)
    if given:
        raise UserInputError(f"the synthetic benchmark's clips are made at its models' rate and length; drop "
                             f"{' and '.join('{' + o + '}' for o in given)} (or give a folder)", options=given)


def refuse_held_by_session(given: Sequence[tuple[str, Any]]) -> None:
    """Refuse the options of ``given`` (``(option, value)`` pairs, each one of ``model``,
    ``weights``, ``layer``, ``stats``, ``readout``, ``device``, ``labels``, ``sampling_rate``,
    ``frames``) that are set, next to an open session: it holds them."""
    held = list(dict.fromkeys(_HELD[o] for o, _ in given))
    named = [o for o, v in given if v]
    if named:
        raise UserInputError(f"an open session holds its {', '.join(held[:-1])} and {held[-1]}; drop "
                             f"{', '.join('{' + o + '}' for o in named)}", options=named)


def check_method_settings(method: Method, settings: Settings) -> None:
    """Refuse settings that ``method`` would not use: statistics, bottleneck layers and settings,
    a batch size or precision for a method that fits no bottleneck, a readout for another method
    than the readout, a Grad-CAM layer for another method than Grad-CAM."""
    if settings.stats and not method.uses_statistics:
        raise UserInputError(f"{{stats}} applies to the method iba only, not to {method.name}; drop it",
                             options=["stats"])
    if settings.readout and not method.uses_readout:
        raise UserInputError(f"{{readout}} applies to the method readout only, not to {method.name}",
                             options=["readout"])
    if settings.precision != "fp32" and not method.fitted:
        raise UserInputError(f"{{precision}} applies to the method iba only, not to {method.name}; drop it",
                             options=["precision"])
    if settings.layers and not method.fitted:
        fix = ("; Grad-CAM's layer is {cam_layer}" if method.uses_cam_layer
               else " (the readout reads the layers it was trained at); drop it" if method.uses_readout
               else "; drop it")
        raise UserInputError(f"{{layer}} is the bottleneck's layer (method iba), which {method.name} does not use"
                             f"{fix}", options=["layer", "cam_layer"])
    if settings.cam_layer and not method.uses_cam_layer:
        raise UserInputError(f"{{cam_layer}} applies to {' and '.join(CAM_METHODS)} only, not to {method.name}"
                             + ("; the bottleneck's layer is {layer}" if method.fitted else "; drop it"),
                             options=["cam_layer", "layer"])
    if settings.batch_size is not None and not method.fitted:
        raise UserInputError(f"{{batch_size}} counts the inputs the per-sample bottleneck (method iba) fits together, "
                             f"and {method.name} fits none; drop it", options=["batch_size"])
    changed = sorted(settings.changes)
    if (changed or settings.config is not None) and not method.fitted:
        named = ", ".join("{" + k + "}" for k in changed) or "a bottleneck configuration"
        several = len(changed) > 1
        raise UserInputError(f"{named} {'are settings' if several else 'is a setting'} of the per-sample bottleneck "
                             f"(method iba), which {method.name} does not use; drop {'them' if several else 'it'}",
                             options=changed)


def settings_for(method: Method, settings: Settings) -> Settings:
    """``settings`` for ``method`` alone, keeping only what it uses: statistics for iba, the
    readout for readout, bottleneck layers and settings, batch size and precision for fitted
    methods, the Grad-CAM layer for Grad-CAM (comparisons give one setting to several methods)."""
    return dataclasses.replace(
        settings, method=method.name, stats=settings.stats if method.uses_statistics else None,
        readout=settings.readout if method.uses_readout else None,
        precision=settings.precision if method.fitted else "fp32", layers=settings.layers if method.fitted else None,
        cam_layer=settings.cam_layer if method.uses_cam_layer else None,
        changes=settings.changes if method.fitted else {}, batch_size=settings.batch_size if method.fitted else None,
        config=settings.config if method.fitted else None)


#: How results record the weights of a model given to :meth:`Session.for_model`.
OWN_WEIGHTS = "own"


def _prepare(method: Method, settings: Settings, spec: ModelSpec,
             device: torch.device) -> tuple[list[str], list[Statistics]]:
    """The bottleneck layers and statistics of ``spec``'s model, after checking the settings that
    depend on the model and device (all before any model is loaded)."""
    settings.config_for(spec)  # bad settings fail here
    layers = list(settings.layers) if settings.layers else list(spec.layers)
    if method.fitted and spec.slowfast_alpha and len(layers) != 2:
        example = " and ".join(spec.layers) if len(spec.layers) == 2 else "its slow and its fast layer"
        raise UserInputError(f"{spec.name} has two pathways: give {{layer}} twice (slow, then fast), e.g. {example}",
                             options=["layer"])
    check_batch_size(settings.batch_size)
    if method.fitted:
        check_precision(settings.precision, device)
    stats = load_stats_files(list(settings.stats or ()), spec, layers, None if spec.is_video else spec.input_shape)
    return layers, stats


def _spec_tokens(spec: ModelSpec, layers: Sequence[str]) -> list[TokenLayout | None] | None:
    """The token layouts ``spec`` gives ``layers`` (``None`` where all are feature maps)."""
    tokens = [spec.layout(n) for n in layers]
    return tokens if any(t is not None for t in tokens) else None


def _check_statistics(stats: Sequence[Statistics], model: nn.Module, spec: ModelSpec) -> None:
    """Refuse statistics estimated with other weights than ``model``'s, or per time step on clips of
    another length than ``spec``'s; warn of statistics of clips read at another sampling rate or of
    another length (their layer's output then moves otherwise)."""
    if stats:
        digest = weights_digest(model)
        for st in stats:
            st.check(None, weights=digest)
            _refuse_other_length(st, spec)
            _warn_of_other_clips(f"the statistics of '{st.meta.get('layer')}' were estimated",
                                 st.meta.get("sampling_rate"), st.meta.get("frames"), spec, "estimate statistics")


def _refuse_other_length(st: Statistics, spec: ModelSpec) -> None:
    """Refuse statistics with a time axis (not pooled over time) estimated on clips of another length
    than ``spec``'s: their positions do not fit the layer's output."""
    frames = st.meta.get("frames")
    if spec.is_video and frames is not None and frames != spec.frames and st.mean.dim() == 4 and st.mean.shape[1] > 1:
        raise UserInputError(f"the statistics of '{st.meta.get('layer')}' were estimated per time step on clips of "
                             f"{frames} frames and these clips hold {spec.frames}: their {st.mean.shape[1]} time "
                             f"steps do not fit; give them that length ({{frames}} {frames}) or estimate statistics "
                             f"on clips of {spec.frames} frames", options=["frames"])


def _warn_of_other_clips(made: str, rate: int | None, frames: int | None, spec: ModelSpec, remedy: str) -> None:
    """Warn where statistics or a readout (``made``, with ``remedy``) were made on clips of another
    sampling rate or length than ``spec``'s: taken, but their layer's output then moves otherwise."""
    if not spec.is_video:
        return
    if rate is not None and rate != spec.sampling_rate:
        log.warning("%s on clips read at sampling rate %s and these clips are read at rate %s; read them at that "
                    "rate (--sampling-rate %s) or %s at rate %s", made, rate, spec.sampling_rate, rate, remedy,
                    spec.sampling_rate)
    if frames is not None and frames != spec.frames:
        log.warning("%s on clips of %s frames and these clips hold %s; give them that length (--frames %s) or %s "
                    "on clips of %s frames", made, frames, spec.frames, frames, remedy, spec.frames)


def _check_readout_clips(readout: Readout, spec: ModelSpec) -> None:
    """Refuse a readout trained on clips of another length than ``spec``'s (its heads take the
    feature maps of that length); warn of one trained at another sampling rate."""
    _warn_of_other_clips("the readout was trained", readout.sampling_rate, None, spec, "train a readout")
    if spec.is_video and readout.frames is not None and readout.frames != spec.frames:
        raise UserInputError(f"the readout was trained on clips of {readout.frames} frames and these clips hold "
                             f"{spec.frames}; give them that length ({{frames}} {readout.frames}) or train a readout "
                             f"on clips of {spec.frames} frames", options=["frames"])


@dataclass
class Session:
    """A loaded model with its method and settings; :meth:`attribute` explains one model input."""

    spec: ModelSpec
    model: nn.Module
    labels: list[str]
    device: torch.device
    settings: Settings
    method: Method
    layers: list[str]
    stats: list[Statistics] | None = None
    readout: Readout | None = None
    batches: FitBatches | None = None
    pack: Pack | None = None
    tokens: list[TokenLayout | None] | None = None

    @classmethod
    def open(cls, settings: Settings, model_name: str | None = None, *, model: nn.Module | None = None,
             readout: Readout | None = None) -> "Session":
        """Check the settings, then load the model (and statistics, readout) of ``model_name``
        (default: ``settings.model``); ``model`` and ``readout`` reuse objects already loaded."""
        name = model_name or settings.model
        if not name:
            raise UserInputError("no model given; name one with {model} (`video-iba models` lists them)",
                                 options=["model"])
        method = check_method(settings.method)
        check_method_settings(method, settings)
        no_default = bool(settings.layers) or not method.fitted  # only the bottleneck needs a default layer
        spec = settings.spec_of(name, no_default)
        device = resolve_device(settings.device)
        layers, stats = _prepare(method, settings, spec, device)
        if method.uses_readout and readout is None:
            readout = load_readout(settings.readout, spec.name, device)
        if model is None:
            video = spec.is_video
            model = load_model(name, weights=settings.weights, device=device, seed=settings.seed or 0,
                               layer_given=no_default, sampling_rate=settings.sampling_rate if video else None,
                               frames=settings.frames if video else None)
        _check_statistics(stats, model, spec)
        check_fits(method.name, model, spec.is_video, spec.name)
        if method.uses_readout and readout is not None:
            readout.check_weights(model, spec.name)
            _check_readout_clips(readout, spec)
        built = getattr(model, "video_iba_spec", spec)  # fine-tuned weights may have other classes
        if built.labels != spec.labels or built.label_names != spec.label_names:
            spec = with_class_names(spec, built.label_names)
        if settings.labels:
            spec = _named_classes(spec, settings.labels)
        names = _class_names(spec)
        if not names:
            raise UserInputError(f"{spec.name} names no classes (its spec's labels are '{spec.labels}'); give "
                                 f"{{labels}} a file of its class names, or set labels='own' and label_names in its "
                                 f"spec", options=["labels"])
        return cls(spec, model, names, device, settings, method, layers,
                   [s.to(device) for s in stats] or None, readout if method.uses_readout else None,
                   FitBatches(settings.batch_size, device))

    @classmethod
    def for_model(cls, model: nn.Module, spec: ModelSpec | None = None, settings: Settings | None = None, *,
                  labels: Sequence[str] | None = None, readout: Readout | None = None) -> "Session":
        """A session for a classifier of your own: ``spec`` describes what it takes (``modality``,
        ``frames``, ``sampling_rate``, ``input_size``, ``resize``, ``mean``, ``std``; a SlowFast-like
        network's ``slowfast_alpha``), its bottleneck layers (``default_layer``, or
        ``settings.layers``), token layouts and Grad-CAM layer, so that the file workflows
        (:func:`~video_iba.workflows.explain.explain_file`) read, window, explain, render and save
        for it as for a registry model. ``labels``: its class names (default: the spec's label
        set). ``readout``: a trained readout, kept for the readout method (also when the
        session's method is another, for :meth:`for_method`). The model is used as it is, on its
        own device, and left unchanged;
        ``settings.model``, ``weights`` and ``device`` do not apply (results record the weights as
        ``"own"``); ``settings.sampling_rate`` and ``frames`` replace the spec's (the model must
        take clips of that length: it is used as it is). ``spec`` defaults to the one the model
        carries (``video_iba.wrap_hf``, ``load_model``)."""
        check_eager(model)  # not compiled, not a Hugging Face network left unwrapped
        if spec is None:
            spec = getattr(model, "video_iba_spec", None)
            if not isinstance(spec, ModelSpec):
                raise UserInputError(f"the model ({type(model).__name__}) carries no spec; give Session.for_model a "
                                     f"video_iba.ModelSpec describing what it takes")
        if not isinstance(spec, ModelSpec):
            raise UserInputError(f"spec must be a video_iba.ModelSpec, not {type(spec).__name__}; a Settings goes "
                                 f"third (Session.for_model(model, spec, settings))")
        settings = dataclasses.replace(settings or Settings(), model=spec.name, weights=OWN_WEIGHTS)
        spec = settings.clips_of(spec)
        method = check_method(settings.method)
        check_method_settings(method, settings)
        if method.fitted and not (settings.layers or spec.layers):
            raise UserInputError(f"{spec.name} has no bottleneck layer; give {{layer}} or the spec's default_layer",
                                 options=["layer"])
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        layers, stats = _prepare(method, settings, spec, device)
        if labels is None and settings.labels:
            labels = read_labels(settings.labels)
        if labels is not None:
            names = [str(n) for n in labels]
        else:
            try:
                names = labels_for(spec)
            except ValueError:
                raise UserInputError(f"the spec's label set '{spec.labels}' is not one of imagenet, kinetics400; give "
                                     f"{{labels}} the model's class names", options=["labels"]) from None
        if method.uses_readout and readout is None:
            readout = load_readout(settings.readout, spec.name, device)
        _check_statistics(stats, model, spec)
        check_fits(method.name, model, spec.is_video, spec.name)
        if readout is not None:
            readout.check_weights(model, spec.name)
            _check_readout_clips(readout, spec)
        alpha = spec.slowfast_alpha
        return cls(spec, model, names, device, settings, method, layers, [s.to(device) for s in stats] or None,
                   readout, FitBatches(settings.batch_size, device),
                   pack=(lambda clip: slow_and_fast(clip, alpha)) if alpha else None,
                   tokens=_spec_tokens(spec, layers))

    def for_method(self, name: str, settings: Settings | None = None) -> "Session":
        """This session's model, spec, labels, statistics and readout with the method ``name`` and
        the part of ``settings`` (default: the session's) that applies to it (:func:`settings_for`);
        the model, weights and device stay the session's."""
        method = check_method(name)
        if method.uses_readout and self.readout is None:
            raise UserInputError("the readout method needs a trained readout: give {readout} a checkpoint of "
                                 "`video-iba train-readout`", options=["readout"])
        if method.fitted and not self.layers and not (settings and settings.layers):
            raise UserInputError(f"{self.spec.name} has no bottleneck layer; give {{layer}} or the spec's "
                                 f"default_layer", options=["layer"])
        base = self.settings if settings is None else dataclasses.replace(
            settings, model=self.settings.model, weights=self.settings.weights, device=self.settings.device,
            stats=self.settings.stats, readout=self.settings.readout)
        check_fits(method.name, self.model, self.spec.is_video, self.spec.name)
        own = settings_for(method, base)
        layers, _ = _prepare(method, dataclasses.replace(own, stats=None), self.spec, self.device)
        layers = layers or self.layers
        return dataclasses.replace(self, settings=own, method=method, layers=layers,
                                   stats=self.stats if method.uses_statistics else None,
                                   batches=FitBatches(own.batch_size, self.device),
                                   tokens=_spec_tokens(self.spec, layers) if own.weights == OWN_WEIGHTS else None)

    @property
    def config(self) -> IBAConfig:
        """The bottleneck settings of this session's model (see :meth:`Settings.config_for`)."""
        return self.settings.config_for(self.spec)

    @property
    def weights_meta(self) -> dict[str, Any]:
        """The weights as recorded in results: their name, for random ones the seed they were drawn
        with, and the labels file naming their classes when one was given."""
        w = self.settings.weights
        return {"weights": w, **({"weights_seed": self.settings.seed or 0} if w == "random" else {}),
                **({"labels": self.settings.labels} if self.settings.labels else {})}

    @property
    def dtype(self) -> torch.dtype:
        """The model's floating-point type: its inputs are given in it (a network of one's own in
        half precision takes half-precision inputs)."""
        return model_dtype(self.model)

    def model_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` on the model's device, in its floating-point type."""
        return x.to(self.device, self.dtype if x.is_floating_point() else x.dtype)

    def __repr__(self) -> str:
        return (f"Session({self.spec.name}, method {self.method.name}, layers {self.layers}, {len(self.labels)} labels, "
                f"on {self.device}, weights {self.settings.weights})")

    def attribute(self, x: torch.Tensor, target: int | None,
                  on_step: Callable[[int, float, float], None] | None = None,
                  on_progress: Callable[[int], None] | None = None) -> Attribution:
        """Explain one model input (an image ``(1, 3, S, S)`` or a clip ``(1, 3, T, S, S)``) with the
        session's method; ``target`` ``None`` explains the top-1 class. ``on_step``: IBA's steps;
        ``on_progress``: the inputs of each network pass of a baseline that runs many."""
        x = self.model_input(x)
        if self.method.fitted:
            attr = self.fit([x], [target], on_step)[0]
        elif self.method.uses_readout:
            assert self.readout is not None
            attr = explain_readout(self.model, self.readout, x, target, pack=self.pack)
        else:
            cam: dict[str, Any] = {}
            if self.method.uses_cam_layer:
                layer = self.settings.cam_layer or self.spec.cam_layer
                cam = {"cam_layer": layer, "tokens": self.spec.layout(layer) if layer else None}
            attr = baseline(self.method.name, self.model, x, target, pack=self.pack, seed=self.settings.seed or 0,
                            on_progress=on_progress, **cam)
        assert attr.logits is not None
        self.check_classes(attr.logits)
        return attr

    def fit(self, xs: Sequence[torch.Tensor], targets: Sequence[int | None],
            on_step: Callable[[int, float, float], None] | None = None) -> list[Attribution]:
        """The per-sample bottleneck for several model inputs of one shape in one fit (each result as
        alone); ``on_step`` is called once per step of the fit."""
        x = torch.cat([self.model_input(t) for t in xs])
        out = explain(self.model, x, list(targets), layer=self.layers[0] if len(self.layers) == 1 else self.layers,
                      stats=(self.stats[0] if len(self.stats) == 1 else self.stats) if self.stats else None,
                      config=self.config, seed=self.settings.seed, precision=self.settings.precision,
                      on_step=on_step, pack=self.pack, tokens=self.tokens)
        for attr in out:
            assert attr.logits is not None
            self.check_classes(attr.logits)
        return list(out)

    def attribute_all(self, items: Iterable[T], x_of: Callable[[T], torch.Tensor],
                      target_of: Callable[[T], int | None], on_step: Callable[[int], None] | None = None,
                      ) -> Iterator[tuple[T, Attribution | Exception, float]]:
        """Every item's attribution, in order, or the exception it failed with, and its seconds (its
        share of its fit's): the per-sample bottleneck fits :attr:`batches`' number of inputs at once
        (``on_step`` gets the number of inputs each step advanced); other methods explain one by one
        (``on_step`` gets 1 per input)."""
        if not self.method.fitted:
            for item in items:
                t0 = time.perf_counter()
                counted = [0]

                def tick(n: int, counted: list[int] = counted) -> None:
                    counted[0] += n
                    if on_step is not None:
                        on_step(n)

                try:
                    res: Attribution | Exception = self.attribute(x_of(item), target_of(item), on_progress=tick)
                except Exception as exc:
                    res = exc
                yield item, res, time.perf_counter() - t0
                if on_step is not None and counted[0] == 0:
                    on_step(1)
            return
        assert self.batches is not None

        def fit(group: Sequence[T]) -> list[Attribution]:
            return self.fit([x_of(i) for i in group], [target_of(i) for i in group],
                            None if on_step is None else (lambda *_: on_step(len(group))))

        yield from self.batches.map(items, fit)

    def work(self, shape: Sequence[int]) -> tuple[int, str]:
        """What progress counts for one model input of ``shape``: IBA's steps, a baseline's network
        inputs where it runs many (occlusion, SmoothGrad, integrated gradients), else the input."""
        if self.method.fitted:
            return self.config.steps, "step"
        n = network_inputs(self.method.name, shape) if not self.method.uses_readout else 1
        return (n, "input") if n > 1 else (1, "clip" if len(shape) == 5 else "photo")

    def predict(self, x: torch.Tensor) -> np.ndarray:
        """The softmax of one model input, ``(K,)`` float64 (no gradients, the model left as it was)."""
        with frozen(self.model), torch.no_grad():
            logits = self.model(packed(self.model_input(x), input_packer(self.model, self.pack)))
        self.check_classes(logits[0])
        return torch.softmax(logits[0].double(), 0).cpu().numpy()

    def check_classes(self, logits: torch.Tensor) -> None:
        """Refuse weights whose number of outputs differs from the model's label set."""
        if logits.shape[-1] != len(self.labels):
            if self.settings.weights == OWN_WEIGHTS or self.spec.family == "entry":
                raise UserInputError(f"the model outputs {logits.shape[-1]} classes, not the {len(self.labels)} of its "
                                     f"labels; give {{labels}} its {logits.shape[-1]} class names", options=["labels"])
            raise UserInputError(f"the model outputs {logits.shape[-1]} classes but {self.spec.name} has "
                                 f"{len(self.labels)} labels; give {{weights}} of the {len(self.labels)}-class model",
                                 options=["weights"])

    def top(self, probs: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` most probable classes ``(name, probability)``; equal ones in index order, so
        the first is the class a top-1 target explains (``argmax``)."""
        return [(self.labels[i], float(probs[i])) for i in np.argsort(-probs, kind="stable")[:k]]


class Sessions:
    """Sessions opened on demand, one per model, each loaded once (batches mixing photos and videos)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._open: dict[str, Session] = {}

    def for_input(self, path: str) -> Session:
        """The session explaining the file ``path``."""
        return self.open(self.settings.model_for(path))

    def open(self, name: str) -> Session:
        """The session of the model ``name``, opened on first use."""
        if name not in self._open:
            self._open[name] = Session.open(self.settings, name)
        return self._open[name]


__all__ = ["as_tuple", "DEFAULT_IMAGE_MODEL", "DEFAULT_VIDEO_MODEL", "METHODS", "OWN_WEIGHTS", "refuse_held_by_session",
           "refuse_clips_for_synthetic", "Bar", "Progress", "no_progress", "Session",
           "Sessions", "Settings", "load_stats_files", "resolve_device"]
