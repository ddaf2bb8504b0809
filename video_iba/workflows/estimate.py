"""``video-iba estimate``: per-neuron statistics of the bottleneck layers over a folder of photos or videos.

Photos give their centre crop; videos give the centre crop of every model clip (windows one
clip length apart). Statistics of a clip's feature map (Swin3D's channels-last ones too) are
pooled over time unless ``per_frame``, those of token grids (position embeddings) kept per token
unless ``pool_time``. With ``max_samples`` the files are read in a random order drawn from
``seed`` (a folder's sorted order would give the first classes of a dataset sorted by class).
Under torchrun every rank reads its own share of the files (and of ``max_samples``), the ranks'
estimates are combined, and rank 0 writes the files.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from ..bottleneck.estimator import Statistics
from ..distributed import barrier, gather, process_group, rank, same_on_every_rank, shard, world_size
from ..errors import UserInputError
from ..files import check_names, check_writable_dir
from ..io.discovery import find_images, find_videos, has_images, warn_other_kind
from ..methods.iba import estimate
from ..models.registry import ModelSpec, get_spec, load_model, model_spec, weights_digest
from .inputs import plan_input
from .outputs import refuse_overwriting_inputs
from .session import DEFAULT_IMAGE_MODEL, DEFAULT_VIDEO_MODEL, Progress, no_progress, resolve_device

log = logging.getLogger(__name__)


def folder_model(folder: str, model_name: str | None) -> str:
    """``model_name``, or without one the model a folder is read with: the default video model when
    it holds videos and no images, else the default image model."""
    if model_name is not None:
        return model_name
    return DEFAULT_VIDEO_MODEL if find_videos(folder) and not has_images(folder) else DEFAULT_IMAGE_MODEL


def estimate_inputs(folder: str, model_name: str | None) -> tuple[str, list[str]]:
    """The model to use (:func:`folder_model`) and the files to read from ``folder``
    (:func:`model_inputs`)."""
    model_name = folder_model(folder, model_name)
    return model_name, model_inputs(folder, get_spec(model_name))


def model_inputs(folder: str, spec: ModelSpec) -> list[str]:
    """The files of ``folder`` the model of ``spec`` reads: its videos for a video model, its images
    for an image model; at least one (the others are named in a warning)."""
    if not spec.is_video:
        files = find_images(folder)
    else:
        files = find_videos(folder)
        if not files:
            raise UserInputError(f"no videos (.mp4, .mkv, .avi, ...) found in '{folder}'; {spec.name} is a video "
                                 f"model")
    warn_other_kind(folder, spec.is_video, spec.name)
    return files


def input_batches(files: Sequence[str], spec: ModelSpec, batch_size: int, device: torch.device | str,
                  skipped: list[str]) -> Iterator[torch.Tensor]:
    """Batches of model inputs of ``files``: photos' centre crops, or the centre crop of every model
    clip of every video; unreadable files are added to ``skipped`` (with a warning)."""
    batch: list[torch.Tensor] = []
    for f in files:
        try:
            inputs = [x for _wi, xs in plan_input(f, spec).units() for x in xs]
        except UserInputError as exc:
            skipped.append(f)
            log.warning("skipping %s", exc)
            continue
        for x in inputs:
            batch.append(x)
            if len(batch) == batch_size:
                yield torch.cat(batch).to(device)
                batch = []
    if batch:
        yield torch.cat(batch).to(device)


def stats_paths_for(out: str, layers: Sequence[str]) -> list[str]:
    """Where ``estimate`` writes: ``out`` for one layer; ``<stem>.<layer><suffix>`` beside it for several."""
    if len(layers) == 1:
        return [out]
    root, ext = os.path.splitext(out)
    return [f"{root}.{layer}{ext or '.pt'}" for layer in layers]


@dataclass
class Estimated:
    """What :func:`estimate_folder` computed and wrote; ``lead``: this process is rank 0 (it wrote the files)."""

    statistics: list[Statistics]
    written: list[str]
    skipped: list[str]
    model: str
    inputs: str
    lead: bool = True


def _check_time_pooling(spec: ModelSpec, names: Sequence[str], per_frame: bool, pool_time: bool, folder: str) -> None:
    """Refuse a choice between per-frame and time-pooled statistics that is not one: for photos,
    both at once, or what the layers have by default (a clip's feature maps are pooled over time,
    token grids kept per token)."""
    asked = [o for o, on in (("per_frame", per_frame), ("pool_time", pool_time)) if on]
    if not asked:
        return
    if not spec.is_video:
        raise UserInputError(f"{{{asked[0]}}} applies to videos, and '{folder}' is explained with the image model "
                             f"{spec.name}; drop it", options=[asked[0]])
    if len(asked) == 2:
        raise UserInputError("give {per_frame} (one estimate per frame) or {pool_time} (pooled over time), not both",
                             options=asked)
    tokens = [(lay := spec.layout(n)) is not None and not lay.channels_last for n in names]
    shown = f"{', '.join(names)} of {spec.name} " + ("is" if len(names) == 1 else "are")
    if per_frame and all(tokens):
        raise UserInputError(f"{shown} estimated per position of a token grid (each frame apart) already; drop "
                             f"{{per_frame}}, or pool over time with {{pool_time}}", options=["per_frame", "pool_time"])
    if pool_time and not any(tokens):
        maps = "a feature map" if len(names) == 1 else "feature maps"
        raise UserInputError(f"{shown} {maps} of clips, pooled over time already; drop {{pool_time}}, or keep each "
                             f"frame with {{per_frame}}", options=["pool_time", "per_frame"])


def estimate_folder(
    folder: str,
    *,
    model_name: str | None,
    out: str,
    layers: Sequence[str] | None = None,
    weights: str = "default",
    batch_size: int = 16,
    max_samples: int | None = None,
    per_frame: bool = False,
    pool_time: bool = False,
    device: str = "cpu",
    seed: int = 0,
    sampling_rate: int | None = None,
    frames: int | None = None,
    progress: Progress = no_progress,
) -> Estimated:
    """Estimate statistics over a folder of images or videos and save them, one file per layer
    (see :func:`stats_paths_for`); call it on every rank under torchrun. ``seed`` seeds random
    weights and, with ``max_samples``, the random order of the files (the same on every rank and in
    every process), recorded as ``meta["files"]``; the statistics record the weights' digest,
    which explanations check. ``sampling_rate``: a video model's clips take every
    ``sampling_rate``-th frame at 30 fps (default: its own rate; recorded as ``meta["sampling_rate"]``);
    ``frames``: its clips hold this many frames (default: its own number; recorded as
    ``meta["frames"]``)."""
    if batch_size <= 0:
        raise UserInputError(f"{{batch_size}} must be > 0, got {batch_size}", options=["batch_size"])
    if max_samples is not None and max_samples < 2:
        raise UserInputError(f"{{max_samples}} must be >= 2, got {max_samples}", options=["max_samples"])
    model_name, files = estimate_inputs(folder, model_name)
    refuse_overwriting_inputs(stats_paths_for(out, list(layers) if layers else list(get_spec(model_name).layers)),
                              files)
    spec = model_spec(model_name, bool(layers), weights, sampling_rate, frames)
    names = list(layers) if layers else list(spec.layers)
    _check_time_pooling(spec, names, per_frame, pool_time, folder)
    targets = stats_paths_for(out, names)
    for t in targets:
        if os.path.isdir(t):
            raise UserInputError(f"'{t}' is a folder; give {{out}} a file name such as stats.pt", options=["out"])
    check_names(targets)
    for t in targets:
        check_writable_dir(os.path.dirname(os.path.abspath(t)))
    what = "clip" if spec.is_video else "img"
    with process_group(str(resolve_device(device))) as dev:
        model = load_model(model_name, weights=weights, device=dev, seed=seed, layer_given=bool(layers),
                           sampling_rate=sampling_rate, frames=frames)
        digest = weights_digest(model)
        same_on_every_rank(digest, "the model's weights")
        world = world_size()
        order = "sorted"
        if max_samples is not None:  # the first max_samples of a sorted folder would be its first classes
            files = random.Random(seed).sample(files, len(files))
            order = f"random (seed {seed})"
        mine = shard(files)  # every file on exactly one rank, no padding
        share = max_samples
        if max_samples is not None and world > 1:
            share = max_samples // world + (1 if rank() < max_samples % world else 0)
        total = None if spec.is_video else (min(len(mine), share) if share is not None else len(mine))
        skipped: list[str] = []
        batches: Iterator[torch.Tensor] = input_batches(mine, spec, batch_size, dev, skipped)
        if share == 0:
            batches = iter(())
        bar = progress("estimating", total, what)
        try:
            result = estimate(model, batches, layer=names, max_samples=share, on_batch=bar.update,
                              pool=() if per_frame else (1,) if pool_time else None,
                              meta={"model": spec.name, "weights": weights, "weights_digest": digest,
                                    **({"weights_seed": seed} if weights == "random" else {}),
                                    "folder": os.path.abspath(folder), "processes": world,
                                    **({"sampling_rate": spec.sampling_rate, "frames": spec.frames}
                                       if spec.is_video else {}),
                                    "files": {"found": len(files), "order": order}})
        finally:
            bar.close()
        skipped = [f for part in gather(skipped) for f in part]
        lead = rank() == 0
        if lead:
            for st, t in zip(result, targets):
                st.save(t)
        barrier()
    return Estimated(result, targets, skipped, model_name, "clips" if spec.is_video else "images", lead)


__all__ = ["Estimated", "estimate_folder", "estimate_inputs", "folder_model", "input_batches", "model_inputs", "stats_paths_for"]
