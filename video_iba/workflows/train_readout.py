"""``video-iba train-readout``: fit a readout bottleneck on a dataset, resumable, on one or many processes.

Single process by default; under ``torchrun --nproc-per-node N`` every rank trains on its own
shard of each epoch's shuffled inputs and DistributedDataParallel averages the gradients (gloo on
CPU, NCCL on GPU). Files in ``OUT``: ``checkpoint.pt`` after every epoch (the readout, the
optimiser and the epoch: a rerun of the same command resumes after the last finished epoch),
``readout.pt`` when training ends (for ``explain --method readout --readout``), ``loss.jsonl``
(one line per step: epoch, ``"split": "train"``, step, loss, cross-entropy, information in nats,
averaged over ranks; with validation data also one line per epoch, ``"split": "validation"``,
with ``kept``).

With validation data, every epoch is also scored on it (the same loss with the same noise every
epoch, its cross-entropy and information, and ``kept``: the share of inputs whose noisy
prediction is still the target); ``best.pt`` is the epoch of the lowest validation loss and
becomes ``readout.pt``; ``patience`` stops after that many epochs without a lower one. A
validation cross-entropy that rises far above its lowest value means the mask is giving up the
prediction to save information, and a chosen epoch that keeps the target for fewer than half of
the validation inputs means it destroys the prediction: a warning says so and suggests a smaller
beta.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ..bottleneck.estimator import Statistics
from ..bottleneck.insertion import frozen
from ..config import IBAConfig
from ..distributed import (barrier, gather, process_group, rank, same_on_every_rank, shard, sum_over_ranks,
                           world_size)
from ..errors import UserInputError
from ..evaluation.synthetic import (SYNTHETIC_LAYER, SYNTHETIC_MODELS, TRAIN_SEEDS, TUBEVIT_CAM_LAYER, TUBEVIT_LAYER,
                                    VALIDATION_SEEDS, load_tubenet, load_tubevit, make_batch, tubevit_layout)
from ..files import atomic_write, check_writable_dir
from ..io.clips import random_start, read_clip, timeline
from ..io.discovery import shared_files
from ..io.image import probe_image, read_image
from ..io.sampling import clip_seconds, short_ranges_noted
from ..io.ledger import Ledger, keep_records
from ..methods.common import model_dtype
from ..methods.readout import (Layouts, Readout, load_checkpoint, new_readout, readout_loss, readout_terms,
                               save_checkpoint)
from ..models.pathways import Pack
from ..models.preprocess import check_size, preprocess_image
from ..models.registry import ModelSpec, model_spec, weights_digest
from .estimate import folder_model, input_batches, model_inputs
from .outputs import folder_lock
from .session import (Progress, Session, Settings, as_tuple, no_progress, refuse_clips_for_synthetic,
                      refuse_held_by_session, resolve_device)

log = logging.getLogger(__name__)

READOUT_BETA = 1.0
"""Default beta of readout training: 1, not the per-sample bottleneck's 10, which gave up the
prediction when trained to convergence (docs/readout-and-scale-out.md has the measurements)."""

#: Inputs the readout's statistics and normalisation are estimated on (at most).
MAX_ESTIMATE = 2000


@dataclass
class TrainingData:
    """Inputs of a readout training: ``items`` (seeds, file paths ...) and how a batch of them is loaded.

    ``load(items)`` returns the inputs of the batch (images ``(N, 3, S, S)`` or clips
    ``(N, 3, T, S, S)``) and the labels (``None``: targets are the model's top-1 classes); items
    that cannot be read are skipped by ``load`` (with a warning).

    ``pick(item, rng)``, where given, is what a training step of an epoch loads of an item (a
    video's clip at a random start), drawn with a generator seeded by the training's seed, the
    epoch and the item's index, so every process and a resumed training draw the same; validation
    and the probe load the items themselves. ``statistics(items, batch_size, device, dtype)``,
    where given, yields the inputs the readout's statistics are estimated on (every clip of the
    videos) instead of :meth:`inputs`; ``sampling`` says in words what ``pick`` draws, ``rate``
    and ``frames`` are the video model's sampling rate and clip length (all kept with the
    training's settings).
    """

    name: str
    items: list[Any]
    load: Callable[[Sequence[Any]], tuple[torch.Tensor, torch.Tensor | None]]
    pick: Callable[[Any, np.random.Generator], Any] | None = None
    statistics: Callable[[Sequence[Any], int, torch.device | str, torch.dtype], Iterator[torch.Tensor]] | None = None
    sampling: str | None = None
    rate: int | None = None
    frames: int | None = None

    def batches(self, order: Sequence[int], batch_size: int) -> list[list[Any]]:
        """The items in ``order``, in chunks of ``batch_size``."""
        items = [self.items[i] for i in order]
        return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]

    def for_epoch(self, indices: Sequence[int], seed: int, epoch: int) -> list[Any]:
        """What the training steps of ``epoch`` load of the items at ``indices``: the items, or what
        ``pick`` draws of each."""
        if self.pick is None:
            return [self.items[i] for i in indices]
        return [self.pick(self.items[i], np.random.default_rng([seed, epoch, i])) for i in indices]

    def statistics_inputs(self, items: Sequence[Any], batch_size: int, device: torch.device | str,
                          dtype: torch.dtype = torch.float32) -> Iterator[torch.Tensor]:
        """The inputs the statistics of a readout trained on ``items`` are estimated on."""
        if self.statistics is None:
            return self.inputs(items, batch_size, device, dtype)
        return self.statistics(items, batch_size, device, dtype)

    def inputs(self, items: Sequence[Any], batch_size: int, device: torch.device | str,
               dtype: torch.dtype = torch.float32) -> Iterator[torch.Tensor]:
        """The inputs of ``items`` in batches, on ``device`` in ``dtype`` (the model's)."""
        sub = TrainingData(self.name, list(items), self.load)
        for chunk in sub.batches(range(len(items)), batch_size):
            yield self.load(chunk)[0].to(device, dtype)


#: The synthetic benchmark's training clips used when none are counted.
SYNTHETIC_TRAINING_CLIPS = 1600


def synthetic_data(clips: int) -> TrainingData:
    """The first ``clips`` training clips of the synthetic benchmark, with their labels (kept in
    memory once generated: 0.8 MB per clip)."""
    if not 1 <= clips <= len(TRAIN_SEEDS):
        raise UserInputError(f"{{clips}} must be between 1 and {len(TRAIN_SEEDS)}, got {clips}", options=["clips"])
    return _seeded("synthetic", list(TRAIN_SEEDS)[:clips])


def synthetic_validation_data() -> TrainingData:
    """The synthetic benchmark's validation clips (never scored by ``evaluate``), with their labels."""
    return _seeded("synthetic validation", list(VALIDATION_SEEDS))


def _seeded(name: str, seeds: list[int]) -> TrainingData:
    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # generating a clip costs more than a training step

    def load(batch: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        missing = [s for s in batch if s not in cache]
        if missing:
            x, y = make_batch(missing)
            for s, xi, yi in zip(missing, x, y):
                cache[s] = (xi, yi)
        return torch.stack([cache[s][0] for s in batch]), torch.stack([cache[s][1] for s in batch])

    return TrainingData(name, seeds, load)


def _readable(files: Sequence[str], spec: ModelSpec, folder: str) -> list[str]:
    """The files the model can read, checked without decoding their clips (a video's container,
    first frame and frame times, a photo's header; each large enough for the model); the others are named in one
    warning, so that no training step is left without inputs; videos shorter than one clip are
    named in another (their clips are looped, without a warning at every read). Under torchrun
    each process checks its share and all learn the result."""
    log.info("checking the %d inputs of '%s'", len(files), folder)
    span = clip_seconds(spec.frames, spec.sampling_rate) if spec.is_video else 0.0
    mine: list[tuple[str, str]] = []  # (file, why it cannot be read)
    short: list[tuple[str, float]] = []  # (video, seconds)
    for f in shard(list(files)):
        try:
            if spec.is_video:
                line = timeline(f)
                check_size(f"'{f}'", line.info.height, line.info.width, spec, "video")
                if line.duration < span - 1e-6:
                    short.append((f, line.duration))
            else:
                check_size(f"'{f}'", *probe_image(f), spec)
        except UserInputError as exc:
            mine.append((f, str(exc)))
    both = gather((mine, short))
    unreadable = dict(pair for part in both for pair in part[0])
    looped = dict(pair for part in both for pair in part[1])
    kept = [f for f in files if f not in unreadable]
    refused = [unreadable[f] for f in files if f in unreadable]  # in the folder's order
    if refused and not kept:
        raise UserInputError(f"none of the {len(files)} input(s) in '{folder}' can be read (the first: {refused[0]})")
    if refused and rank() == 0:  # one warning
        log.warning("skipping %d of %d inputs in '%s' that cannot be read (the first: %s)", len(refused), len(files),
                    folder, refused[0])
    if looped and rank() == 0:
        first = next(f for f in files if f in looped)
        one = len(looped) == 1
        log.warning("%d of %d videos in '%s' %s shorter than one clip of %s (%.2f s; %s'%s', %.2f s): %s from "
                    "the start", len(looped), len(kept), folder, "is" if one else "are", spec.name, span,
                    "" if one else "the first: ", first, looped[first],
                    "its clip repeats frames" if one else "their clips repeat frames")
    return kept


#: How :func:`folder_data` draws a video's training clips (recorded with the training's settings).
VIDEO_SAMPLING = "a random clip of each video per epoch"


def folder_data(folder: str, model: str | ModelSpec, weights: str = "default") -> TrainingData:
    """Images (centre crop) or videos of a folder, no labels, prepared for the registry model
    ``model`` with ``weights`` (:func:`~video_iba.models.registry.model_spec`), or for the model a
    :class:`ModelSpec` describes.

    A video gives each epoch's training steps one centre-crop clip starting at a random frame (of
    those from which a whole clip fits), as video networks are trained; validation and the probe
    read its clip in the middle; the statistics are estimated on every clip of the videos, as
    ``estimate`` reads them (at most ``MAX_ESTIMATE``).
    """
    spec = model if isinstance(model, ModelSpec) else model_spec(model, weights=weights)
    files = _readable(model_inputs(folder, spec), spec, folder)

    def load(items: Sequence[Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        xs, failed = [], []
        for item in items:
            path, start = item if isinstance(item, tuple) else (item, None)  # a picked clip, or the middle one
            try:
                with short_ranges_noted():  # said once, by _readable
                    xs.append(read_clip(path, spec, start=start)[0] if spec.is_video
                              else preprocess_image(read_image(path), spec, name=f"'{path}'")[0])
            except UserInputError as exc:
                log.warning("skipping %s", exc)
                failed.append(str(exc))
        if not xs:
            raise UserInputError(f"none of the {len(items)} input(s) of a batch could be decoded (the first: "
                                 f"{failed[0]})")
        return torch.cat(xs), None

    if not spec.is_video:
        return TrainingData(os.path.abspath(folder), files, load)

    def pick(path: str, rng: np.random.Generator) -> Any:
        try:
            return path, random_start(timeline(path), spec, rng)
        except UserInputError:
            return path  # load names the problem and skips the file

    def statistics(paths: Sequence[Any], batch_size: int, device: torch.device | str,
                   dtype: torch.dtype) -> Iterator[torch.Tensor]:
        skipped: list[str] = []
        count = 0
        with short_ranges_noted():
            for x in input_batches(paths, spec, batch_size, device, skipped):
                x = x[:MAX_ESTIMATE - count]
                count += len(x)
                yield x.to(dtype)
                if count >= MAX_ESTIMATE:
                    return

    return TrainingData(os.path.abspath(folder), files, load, pick, statistics, VIDEO_SAMPLING, spec.sampling_rate,
                        spec.frames)


@dataclass(frozen=True)
class Schedule:
    """How a readout is trained.

    Attributes:
        epochs, batch_size, lr: Adam's epochs, inputs per step and process, learning rate.
        seed: Seed of the heads' initial weights, the shuffling and the noise.
        keep_epochs: Also keep ``OUT/epoch<N>.pt`` after every epoch.
        patience: Stop after this many epochs without a lower validation loss (needs validation data).
    """

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    keep_epochs: bool = False
    patience: int | None = None


class _Training:
    """One training run in ``out_dir``: resume or start, train epochs, keep checkpoints, choose the readout."""

    def __init__(self, model: nn.Module, data: TrainingData, out_dir: str, schedule: Schedule,
                 validation: TrainingData | None, device: torch.device | str, model_name: str | None,
                 pack: Pack | None, tokens: Layouts = None) -> None:
        self.model, self.data, self.out, self.schedule = model, data, out_dir, schedule
        self.validation, self.device, self.model_name, self.pack = validation, device, model_name, pack
        self.tokens = tokens
        self.dtype = model_dtype(model)  # inputs are given in the model's type (a network in half precision)
        self.weights = weights_digest(model)
        self.checkpoint = os.path.join(out_dir, "checkpoint.pt")
        self.best = os.path.join(out_dir, "best.pt")
        self.log_path = os.path.join(out_dir, "loss.jsonl")
        self.history: list[dict[str, Any]] = []
        self.start = 0

    def resume_or_prepare(self, layers: Sequence[str], readouts: Sequence[str] | None,
                          stats: Sequence[Statistics] | None,
                          config: IBAConfig) -> tuple[Readout, dict[str, Any] | None]:
        """The readout of the last finished epoch (and its checkpoint), or a new one."""
        if not os.path.exists(self.checkpoint):
            return self._new(layers, readouts, stats, config), None
        readout, payload = load_checkpoint(self.checkpoint, self.device)
        if payload.get("model") != self.model_name or readout.spec.layers != list(layers):
            raise UserInputError(f"{self.checkpoint} belongs to another training (model {payload.get('model')}, "
                                 f"layers {readout.spec.layers}); write to another output folder with {{out}}",
                                 options=["out"])
        self._check_same_training(payload, readout, readouts, config)
        self.start = int(payload["epoch"])
        self.history = list(payload.get("log", []))
        if rank() == 0:
            log.warning("resuming after epoch %d of %d from %s", self.start, self.schedule.epochs, self.checkpoint)
            if _best_epoch(self.history) == self.start:  # a stop between writing the checkpoint and best.pt
                _copy(self.checkpoint, self.best)
        return readout, payload

    def settings(self) -> dict[str, Any]:
        """What a resumed training must share with the checkpoint (besides model, layers, beta and
        readout layers): the model's weights (digest), its data, validation data, batch size,
        learning rate and seed."""
        s, v = self.schedule, self.validation
        record = {"weights": self.weights, "data": self.data.name, "inputs": len(self.data.items),
                  "validation": v.name if v else None, "validation_inputs": len(v.items) if v else 0,
                  "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed}
        if self.data.sampling is not None:
            record["sampling"] = self.data.sampling
        if self.data.rate is not None:  # clips read at another rate, or of another length, are other data
            record["sampling_rate"] = self.data.rate
        if self.data.frames is not None:
            record["frames"] = self.data.frames
        return record

    def _check_same_training(self, payload: dict[str, Any], readout: Readout, readouts: Sequence[str] | None,
                             config: IBAConfig) -> None:
        """Refuse to resume a checkpoint trained otherwise (settings it does not record are not compared)."""
        before = dict(payload.get("extra", {}))
        now = {**self.settings(), "beta": config.beta}
        before["beta"] = readout.config.beta
        if readouts:
            now["readout layers"], before["readout layers"] = list(readouts), list(readout.spec.readouts)
        changed = [f"{k} was {before[k]!r}, now {v!r}" for k, v in now.items() if k in before and before[k] != v]
        if changed:
            raise UserInputError(f"{self.checkpoint} was trained otherwise ({'; '.join(changed)}); rerun with those "
                                 f"settings to resume (more {{epochs}} may be given), or write to another output "
                                 f"folder with {{out}}", options=["epochs", "out"])

    def _new(self, layers: Sequence[str], readouts: Sequence[str] | None, stats: Sequence[Statistics] | None,
             config: IBAConfig) -> Readout:
        probe = self.data.load(self.data.items[:1])[0].to(self.device, self.dtype)
        subset = shard(self.data.items[:MAX_ESTIMATE])
        batch = self.schedule.batch_size
        stats_inputs = self.data.statistics_inputs
        readout = new_readout(self.model, probe, lambda: stats_inputs(subset, batch, self.device, self.dtype),
                              layers=layers, readouts=readouts, stats=stats, config=config, pack=self.pack,
                              tokens=self.tokens, seed=self.schedule.seed)
        readout.weights = self.weights
        readout.sampling_rate, readout.frames = self.data.rate, self.data.frames  # as a loaded checkpoint says
        return readout

    def epoch(self, epoch: int, readout: Readout, net: nn.Module, opt: torch.optim.Optimizer,
              generator: torch.Generator, progress: Progress) -> None:
        """Train one epoch (every rank on its shard of the shuffled inputs) and log every step."""
        s = self.schedule
        order = np.random.default_rng(s.seed + epoch).permutation(len(self.data.items)).tolist()
        mine = shard(order, pad=True)
        chunks = [mine[i:i + s.batch_size] for i in range(0, len(mine), s.batch_size)]  # indices of the items
        bar = progress(f"epoch {epoch + 1}/{s.epochs}", len(chunks), "step") if rank() == 0 else None
        t0 = time.perf_counter()
        sums = np.zeros(3)
        try:
            with Ledger(self.log_path) if rank() == 0 else _NoLedger() as steps:
                for step, chunk in enumerate(chunks):
                    x, y = self.data.load(self.data.for_epoch(chunk, s.seed, epoch))  # drawn as the step comes
                    with frozen(self.model), torch.inference_mode(False), torch.enable_grad():
                        readout.train()
                        loss, ce, info = readout_loss(self.model, readout, x.to(self.device, self.dtype), y, generator,
                                                      net=net, pack=self.pack)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                    vals = np.asarray(sum_over_ranks([float(loss.detach()), ce, info], self.device)) / world_size()
                    sums += vals
                    steps.append({"epoch": epoch + 1, "split": "train", "step": step + 1,
                                  "loss": round(float(vals[0]), 6),
                                  "ce": round(float(vals[1]), 6), "info_nats": round(float(vals[2]), 6),
                                  "seconds": round(time.perf_counter() - t0, 3)})
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        readout.eval()
        n = max(1, len(chunks))
        self.history.append({"epoch": epoch + 1, "loss": float(sums[0] / n), "ce": float(sums[1] / n),
                             "info_nats": float(sums[2] / n), "seconds": round(time.perf_counter() - t0, 2)})

    def record(self, epoch: int, readout: Readout, opt: torch.optim.Optimizer) -> None:
        """After an epoch: validate, write the checkpoint (and ``epoch<N>.pt``, ``best.pt``)."""
        s = self.schedule
        if self.validation is not None:
            self.history[-1].update(validate(self.model, readout, self.validation, s.batch_size, self.device, s.seed,
                                             self.pack))
        if rank() == 0:
            h = self.history[-1]
            if self.validation is not None:
                with Ledger(self.log_path) as ledger:
                    ledger.append({"epoch": epoch + 1, "split": "validation",
                                   **{k: round(float(h[f"val_{k}"]), 6) for k in ("loss", "ce", "info_nats", "kept")}})
            extra = {**self.settings(), "world_size": world_size()}
            save_checkpoint(self.checkpoint, readout, model_name=self.model_name, epoch=epoch + 1, optimizer=opt,
                            log=self.history, extra=extra)
            if s.keep_epochs:
                save_checkpoint(os.path.join(self.out, f"epoch{epoch + 1}.pt"), readout, model_name=self.model_name,
                                epoch=epoch + 1, log=self.history, extra=extra)  # weights checked as readout.pt's
            log.info("epoch %d: loss %.4f, ce %.4f, info %.4f nats", epoch + 1, h["loss"], h["ce"], h["info_nats"])
            if self.validation is not None:
                log.info("epoch %d validation: loss %.4f, ce %.4f, info %.4f nats, kept %.3f", epoch + 1,
                         h["val_loss"], h["val_ce"], h["val_info_nats"], h["val_kept"])
                if _best_epoch(self.history) == epoch + 1:
                    _copy(self.checkpoint, self.best)
        barrier()

    def finish(self, readout: Readout) -> Readout:
        """``readout.pt``: the best validated epoch's readout, else the last epoch's."""
        chosen = self.checkpoint
        if self.validation is not None and self.history and "val_loss" in self.history[-1]:
            chosen = self.best
            if rank() == 0:
                _warn_if_prediction_given_up(self.history)
        if rank() == 0:
            _copy(chosen, os.path.join(self.out, "readout.pt"))
        barrier()
        return load_checkpoint(chosen, self.device)[0] if chosen != self.checkpoint else readout


class _NoLedger:
    """Ranks other than 0 log nothing."""

    def __enter__(self) -> "_NoLedger":
        return self

    def append(self, _record: dict[str, Any]) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def train(
    model: nn.Module,
    data: TrainingData,
    out_dir: str,
    *,
    layers: Sequence[str],
    readouts: Sequence[str] | None = None,
    stats: Sequence[Statistics] | None = None,
    config: IBAConfig | None = None,
    schedule: Schedule = Schedule(),
    device: torch.device | str = "cpu",
    model_name: str | None = None,
    validation: TrainingData | None = None,
    pack: Pack | None = None,
    progress: Progress = no_progress,
    tokens: Layouts = None,
) -> Readout:
    """Train (or resume training) a readout; returns it (with validation data: the best epoch's).
    Call it on every rank under torchrun.

    ``config``: the bottleneck settings (default: beta :data:`READOUT_BETA`). ``validation``:
    inputs scored after every epoch (see the module's description). ``pack``: for a multi-pathway
    network, builds its pathways from each clip batch (registry models: automatic). ``tokens``:
    token layouts of transformer layers, as for :func:`~video_iba.methods.readout.new_readout`
    (registry models: from their spec).
    """
    cfg = config or IBAConfig().replace(beta=READOUT_BETA)
    s = schedule
    if s.epochs <= 0 or s.batch_size <= 0 or not s.lr > 0:
        raise UserInputError("{epochs}, {batch_size} and {lr} must be > 0", options=["epochs", "batch_size", "lr"])
    if not data.items:
        raise UserInputError(f"no training inputs in {data.name}")
    if s.patience is not None and (validation is None or s.patience <= 0):
        raise UserInputError("{patience} needs {validation} data and must be > 0", options=["patience", "validation"])
    if validation is not None and not validation.items:
        raise UserInputError(f"no validation inputs in {validation.name}")
    check_writable_dir(out_dir)
    run = _Training(model, data, out_dir, s, validation, device, model_name, pack, tokens)
    with frozen(model):
        readout, payload = run.resume_or_prepare(layers, readouts, stats, cfg)
    net: nn.Module = readout
    if world_size() > 1:
        dev = torch.device(device)
        net = torch.nn.parallel.DistributedDataParallel(readout, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(readout.heads.parameters(), lr=s.lr)
    if payload is not None and payload.get("optimizer") is not None:
        opt.load_state_dict(payload["optimizer"])
    if rank() == 0:
        keep_records(run.log_path, lambda r: r.get("epoch", s.epochs + 1) <= run.start)
    generator = torch.Generator(device=torch.device(device)).manual_seed(s.seed * 1000 + rank())
    for epoch in range(run.start, s.epochs):
        if _patience_spent(run.history, s.patience):
            break
        run.epoch(epoch, readout, net, opt, generator, progress)
        run.record(epoch, readout, opt)
    return run.finish(readout)


def validate(model: nn.Module, readout: Readout, data: TrainingData, batch_size: int, device: torch.device | str,
             seed: int = 0, pack: Pack | None = None) -> dict[str, float]:
    """The readout's loss terms on ``data`` (the same noise on every call; ranks share the inputs,
    none repeated): ``val_loss``, ``val_ce``, ``val_info_nats``, ``val_kept``, means over inputs."""
    items = shard(list(data.items))
    generator = torch.Generator(device=torch.device(device)).manual_seed(seed * 1000 + 999 + rank())
    sums = np.zeros(4)
    dtype = model_dtype(model)  # the type the model's inputs are given in
    was_training = readout.training
    readout.eval()
    try:
        for chunk in TrainingData(data.name, items, data.load).batches(range(len(items)), batch_size):
            x, y = data.load(chunk)
            with frozen(model), torch.no_grad():
                ce, info, noisy, target = readout_terms(model, readout, x.to(device, dtype), y, generator, pack=pack)
            sums += [float(ce.sum()), float(info.sum()), float((noisy.argmax(1) == target).sum()), ce.numel()]
    finally:
        readout.train(was_training)
    ce_sum, info_sum, kept, n = sum_over_ranks(sums.tolist(), device)
    if n == 0:
        raise UserInputError(f"none of the validation inputs of {data.name} could be read")
    beta = readout.config.beta
    return {"val_loss": (ce_sum + beta * info_sum) / n, "val_ce": ce_sum / n, "val_info_nats": info_sum / n,
            "val_kept": kept / n}


def _best_epoch(history: Sequence[dict[str, Any]]) -> int | None:
    scored = [h for h in history if "val_loss" in h]
    return int(min(scored, key=lambda h: h["val_loss"])["epoch"]) if scored else None


def _patience_spent(history: Sequence[dict[str, Any]], patience: int | None) -> bool:
    best = _best_epoch(history)
    return patience is not None and best is not None and int(history[-1]["epoch"]) - best >= patience


def _warn_if_prediction_given_up(history: Sequence[dict[str, Any]]) -> None:
    scored = [h for h in history if "val_loss" in h]  # a run may have been validated from a resume on
    best = _best_epoch(scored)
    chosen = next(h for h in scored if h["epoch"] == best)
    low = min(scored, key=lambda h: h["val_ce"])
    if chosen["val_kept"] < 0.5:
        log.warning("with the chosen epoch %d's mask only %.0f%% of the validation inputs are still predicted as "
                    "their target (cross-entropy %.3f): the mask destroys the prediction; train with a smaller "
                    "beta", chosen["epoch"], 100 * chosen["val_kept"], chosen["val_ce"])
    elif chosen["val_ce"] > 2 * low["val_ce"] + 0.05:
        log.warning("validation cross-entropy of the chosen epoch %d is %.3f, against %.3f after epoch %d (inputs "
                    "still predicted as their target: %.0f%% against %.0f%%): the mask gives up the prediction to "
                    "save information; train with a smaller beta, or keep every epoch's checkpoint and compare "
                    "them", chosen["epoch"], chosen["val_ce"], low["val_ce"], low["epoch"],
                    100 * chosen["val_kept"], 100 * low["val_kept"])


def _copy(src: str, dst: str) -> None:
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)


@dataclass(frozen=True)
class TrainingRun:
    """A ``train-readout`` command: the dataset and model, and where to write."""

    dataset: str
    out_dir: str
    model: str | None = None
    weights: str = "default"
    layers: Sequence[str] | None = None
    readouts: Sequence[str] | None = None
    stats: Sequence[str] = ()
    beta: float | None = None
    clips: int | None = None
    validation: str | None = None
    device: str = "cpu"
    labels: str | None = None  # a file naming the model's classes (see Settings.labels)
    sampling_rate: int | None = None  # a folder's video model reads its clips at this rate (Settings.sampling_rate)
    frames: int | None = None  # and its clips hold this many frames (Settings.frames)

    def __post_init__(self) -> None:
        """Layers and files given as one string are one entry."""
        for name in ("layers", "readouts", "stats"):
            object.__setattr__(self, name, as_tuple(getattr(self, name)))


@dataclass
class Trained:
    """What :func:`train_dataset` did: the readout, its data, its epochs' history (``lead``: this
    process is rank 0, which wrote the files; other ranks get no epoch and history; ``sampling``:
    what a training step read of each input, where not the input itself)."""

    readout: Readout
    inputs: int
    processes: int
    epoch: int
    history: list[dict[str, Any]]
    validated: bool
    lead: bool = True
    sampling: str | None = None


def train_dataset(run: TrainingRun, schedule: Schedule = Schedule(), progress: Progress = no_progress, *,
                  session: Session | None = None) -> Trained:
    """Set up the data and model of ``run`` (``synthetic`` or a folder) and train a readout on every rank.

    ``session``: an open session (e.g. a model of your own, :meth:`Session.for_model`) whose model,
    spec (the folder is read for it), bottleneck layers, statistics, token layouts and pathway
    packing are used; ``run`` then gives the folder, the output folder, the readout layers, beta
    and validation data only."""
    if session is not None:
        _check_session_training(run)
    with process_group(str(session.device) if session is not None else str(resolve_device(run.device))) as dev:
        cfg = IBAConfig().replace(beta=run.beta if run.beta is not None else READOUT_BETA)
        if run.dataset == "synthetic":
            setup = _synthetic_run(run, dev)
        else:
            setup = _folder_run(run, dev, schedule.seed, session)
        if setup.stats is not None and len(setup.stats) != len(setup.layers):
            raise UserInputError(f"give {{stats}} once per bottleneck layer ({len(setup.layers)})", options=["stats"])
        same_on_every_rank(weights_digest(setup.model), "the model's weights")
        check_writable_dir(run.out_dir)
        with folder_lock(run.out_dir):
            readout = train(setup.model, setup.data, run.out_dir, layers=setup.layers,
                            readouts=setup.readouts, stats=setup.stats, config=cfg,
                            schedule=schedule, device=dev, model_name=setup.name, validation=setup.validation,
                            progress=progress, tokens=setup.tokens, pack=setup.pack)
        processes = world_size()
        lead = rank() == 0
    validated = setup.validation is not None
    if not lead:
        return Trained(readout, len(setup.data.items), processes, 0, [], validated, lead=False,
                       sampling=setup.data.sampling)
    epoch = int(load_checkpoint(os.path.join(run.out_dir, "readout.pt"))[1]["epoch"])
    history = list(load_checkpoint(os.path.join(run.out_dir, "checkpoint.pt"))[1]["log"])
    return Trained(readout, len(setup.data.items), processes, epoch, history, validated, sampling=setup.data.sampling)


@dataclass
class _Run:
    """A training run's model, bottleneck layers, statistics, data, the layers its readout reads
    (``None``: the default ones) and their token layouts (``None``: the registry spec's)."""

    model: nn.Module
    name: str
    layers: list[str]
    stats: list[Statistics] | None
    data: TrainingData
    validation: TrainingData | None
    readouts: list[str] | None
    tokens: Layouts = None
    pack: Pack | None = None


def _synthetic_run(run: TrainingRun, dev: str) -> _Run:
    if run.model not in (None, *SYNTHETIC_MODELS) or run.weights != "default":
        raise UserInputError(f"the synthetic benchmark has its own models ({', '.join(SYNTHETIC_MODELS)}); give one of "
                             "them to {model} or none, and drop {weights}", options=["model", "weights"])
    if run.labels:
        raise UserInputError("the synthetic benchmark has its own classes; drop {labels} (or give a folder)",
                             options=["labels"])
    refuse_clips_for_synthetic(run.sampling_rate, run.frames)
    if run.validation not in (None, "none"):
        raise UserInputError("the synthetic benchmark validates on its own validation clips; drop {validation} or "
                             "give it 'none'", options=["validation"])
    stats = [Statistics.load(p) for p in run.stats] if run.stats else None
    validation = None if run.validation == "none" else synthetic_validation_data()
    if run.model == "tubevit":
        # by default the embedding's map and the token grid of Grad-CAM's block (class token left out)
        layers = list(run.layers or [TUBEVIT_LAYER])
        reads = list(run.readouts or dict.fromkeys([*layers, TUBEVIT_CAM_LAYER]))
        tokens = {n: lay for n in [*layers, *reads] if (lay := tubevit_layout(n)) is not None}
        return _Run(load_tubevit().to(dev), "tubevit", layers, stats,
                    synthetic_data(run.clips or SYNTHETIC_TRAINING_CLIPS), validation, reads, tokens)
    return _Run(load_tubenet().to(dev), "tubenet", list(run.layers or [SYNTHETIC_LAYER]), stats,
                synthetic_data(run.clips or SYNTHETIC_TRAINING_CLIPS), validation, run.readouts)


def _folder_run(run: TrainingRun, dev: str, seed: int, own: Session | None = None) -> _Run:
    if run.clips is not None:
        raise UserInputError("{clips} counts the synthetic benchmark's clips; a folder trains on all its inputs: drop "
                             "it", options=["clips"])
    if own is not None:
        spec = own.spec
        data = folder_data(run.dataset, spec)
        validation = _validation(run, spec, data)
        return _Run(own.model, spec.name, list(own.layers), own.stats, data, validation, run.readouts,
                    spec.layout, own.pack)
    name = folder_model(run.dataset, run.model)
    session = Session.open(Settings(model=name, weights=run.weights, device=dev, seed=seed,
                                    layers=run.layers or None, stats=run.stats or None,
                                    labels=run.labels, sampling_rate=run.sampling_rate, frames=run.frames))
    data = folder_data(run.dataset, session.spec)
    return _Run(session.model, name, session.layers, session.stats, data, _validation(run, session.spec, data),
                run.readouts)


def _validation(run: TrainingRun, spec: ModelSpec, data: TrainingData) -> TrainingData | None:
    """The validation inputs of a folder run, if any, prepared for the model ``spec`` describes:
    refused when every one of them is a training input too (the same file, or a copy), with a
    warning when some are."""
    if run.validation in (None, "none"):
        return None
    if os.path.abspath(run.validation) == os.path.abspath(run.dataset):
        raise UserInputError("{validation} must be other inputs than the training folder", options=["validation"])
    validation = folder_data(run.validation, spec)
    shared = shared_files(validation.items, data.items)
    if len(shared) == len(validation.items):
        raise UserInputError(f"{{validation}} must be other inputs than the training folder: every input of "
                             f"'{run.validation}' is a training input too (the same file or a copy); give held-out "
                             f"inputs", options=["validation"])
    if shared and rank() == 0:
        log.warning("%d of %d validation inputs %s too (first: '%s'), so the validation loss does not measure "
                    "held-out inputs alone; remove %s from one of the folders", len(shared), len(validation.items),
                    "is a training input" if len(shared) == 1 else "are training inputs", shared[0],
                    "it" if len(shared) == 1 else "them")
    return validation


def _check_session_training(run: TrainingRun) -> None:
    """With an open session, the run gives the folders, readout layers and beta only."""
    if run.dataset == "synthetic":
        raise UserInputError("the synthetic benchmark has its own models; train an open session's readout on a "
                             "folder of photos or videos")
    refuse_held_by_session([("model", run.model), ("weights", run.weights != "default"), ("layer", run.layers),
                            ("stats", run.stats), ("device", run.device != "cpu"),
                            ("labels", run.labels), ("sampling_rate", run.sampling_rate is not None),
                            ("frames", run.frames is not None)])


__all__ = ["READOUT_BETA", "Schedule", "TrainingData", "TrainingRun", "Trained", "synthetic_data",
           "synthetic_validation_data", "folder_data", "train", "train_dataset", "validate"]
