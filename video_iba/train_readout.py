"""``video-iba train-readout``: fit a readout bottleneck on a dataset, resumable, on one or many processes.

Single process by default; under ``torchrun --nproc-per-node N`` every rank trains on its own
shard of each epoch's shuffled inputs and DistributedDataParallel averages the gradients (gloo on
CPU, NCCL on GPU). Files in ``OUT``: ``checkpoint.pt`` after every epoch (the readout, the
optimiser and the epoch: a rerun of the same command resumes after the last finished epoch),
``readout.pt`` when training ends (for ``explain --method readout --readout``), ``loss.jsonl``
(one line per step: epoch, step, loss, cross-entropy, information in nats, averaged over ranks).

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

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import distributed
from .bottleneck.estimator import Statistics
from .bottleneck.insertion import Inputs, capture, frozen, get_module
from .config import IBAConfig
from .errors import UserInputError
from .io.atomic import atomic_write, ensure_writable_dir
from .readout import (Readout, ReadoutSpec, default_readouts, load_checkpoint, readout_loss, readout_terms,
                      save_checkpoint)

log = logging.getLogger(__name__)

READOUT_BETA = 1.0
"""Default beta of readout training: 1, not the per-sample bottleneck's 10. Trained to convergence,
the readout at beta 10 closed the target's evidence on the synthetic benchmark and destroyed the
prediction of the real EfficientNet-Lite0, where beta 1 was stable (README, readout section)."""


@dataclass
class TrainingData:
    """Inputs of a readout training: ``items`` (seeds, file paths ...) and how a batch of them is loaded.

    ``load(items)`` returns the model input of the batch and the labels (``None``: targets are the
    model's top-1 classes); items that cannot be read are skipped by ``load`` (with a warning).
    """

    name: str
    items: list[Any]
    load: Callable[[Sequence[Any]], tuple[Inputs, torch.Tensor | None]]


def synthetic_data(clips: int) -> TrainingData:
    """The first ``clips`` training clips of the synthetic benchmark, with their labels (kept in
    memory once generated: 0.8 MB per clip)."""
    from .synthetic import TRAIN_SEEDS

    if not 1 <= clips <= len(TRAIN_SEEDS):
        raise UserInputError(f"--clips must be between 1 and {len(TRAIN_SEEDS)}, got {clips}")
    return _seeded("synthetic", list(TRAIN_SEEDS)[:clips])


def synthetic_validation_data() -> TrainingData:
    """The synthetic benchmark's validation clips (never scored by ``evaluate``), with their labels."""
    from .synthetic import VALIDATION_SEEDS

    return _seeded("synthetic validation", list(VALIDATION_SEEDS))


def _seeded(name: str, seeds: list[int]) -> TrainingData:
    from .synthetic import make_batch

    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # generating a clip costs more than a training step

    def load(batch: Sequence[Any]) -> tuple[Inputs, torch.Tensor | None]:
        missing = [s for s in batch if s not in cache]
        if missing:
            x, y = make_batch(missing)
            for s, xi, yi in zip(missing, x, y):
                cache[s] = (xi, yi)
        return torch.stack([cache[s][0] for s in batch]), torch.stack([cache[s][1] for s in batch])

    return TrainingData(name, seeds, load)


def folder_data(folder: str, model_name: str) -> TrainingData:
    """Images (centre crop) or videos (one centre clip from the middle of each) of a folder, no labels."""
    from .models import get_spec, pathways
    from .pipeline import estimate_inputs

    _, files = estimate_inputs(folder, model_name)
    spec = get_spec(model_name)

    def load(paths: Sequence[Any]) -> tuple[Inputs, torch.Tensor | None]:
        xs = []
        for p in paths:
            try:
                if spec.is_video:
                    from .evaluate import centre_clip

                    xs.append(centre_clip(p, spec, "cpu")[0])
                else:
                    from .io.image import read_image
                    from .models import preprocess_image

                    xs.append(preprocess_image(read_image(p), spec, name=f"'{p}'")[0])
            except UserInputError as exc:
                log.warning("skipping %s", exc)
        if not xs:
            raise UserInputError(f"none of {len(paths)} inputs could be read; check the folder")
        x = torch.cat(xs)
        return (pathways(spec, x) if spec.slowfast_alpha else x), None

    return TrainingData(folder, files, load)


def _to(x: Inputs, device: torch.device | str) -> Inputs:
    return x.to(device) if isinstance(x, torch.Tensor) else [t.to(device) for t in x]


def _batches(data: TrainingData, order: Sequence[int], batch_size: int) -> list[list[Any]]:
    items = [data.items[i] for i in order]
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


def prepare(model: nn.Module, data: TrainingData, layers: Sequence[str], readouts: Sequence[str] | None,
            stats: Sequence[Statistics] | None, config: IBAConfig, batch_size: int, device: torch.device | str,
            max_estimate: int = 2000) -> Readout:
    """A fresh readout: the bottleneck's statistics (given, or estimated on the training data) and the
    readouts' per-channel normalisation (estimated on the training data); ranks share the work."""
    from .api import estimate

    probe_items = data.items[:1]
    x0, _ = data.load(probe_items)
    x0 = _to(x0, device)
    reads = list(readouts) if readouts else default_readouts(model, layers, x0)
    names = list(dict.fromkeys([*layers, *reads]))
    logits, outs = capture(model, [get_module(model, n) for n in names], names, x0)
    by_name = dict(zip(names, outs))
    dims = outs[0].dim() - 2
    if any(o.dim() - 2 != dims for o in outs):
        raise UserInputError("the bottleneck and readout layers must all be image maps or all clip maps")
    subset = distributed.shard(data.items[:max_estimate])

    def batches() -> Any:
        for chunk in _batches(TrainingData(data.name, subset, data.load), range(len(subset)), batch_size):
            yield _to(data.load(chunk)[0], device)

    spatial = tuple(range(1, dims + 1))  # readouts: one mean and std per channel
    if stats is None:  # bottleneck statistics and readout normalisation from one pass over the data
        both = estimate(model, batches(), layer=[*layers, *reads], pools=[None] * len(layers) + [spatial] * len(reads))
        stats, norms = list(both[:len(layers)]), list(both[len(layers):])
    else:
        norms = list(estimate(model, batches(), layer=reads, pool=spatial))
    spec = ReadoutSpec(list(layers), reads, [int(by_name[n].shape[1]) for n in layers],
                       [int(by_name[n].shape[1]) for n in reads], int(logits.shape[1]), dims)
    return Readout(spec, stats, norms, config).to_device(device)


def train(
    model: nn.Module,
    data: TrainingData,
    out_dir: str,
    *,
    layers: Sequence[str],
    readouts: Sequence[str] | None = None,
    stats: Sequence[Statistics] | None = None,
    config: IBAConfig | None = None,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    model_name: str | None = None,
    progress: Callable[[int, int], Callable[[int], None]] | None = None,
    keep_epochs: bool = False,
    validation: TrainingData | None = None,
    patience: int | None = None,
) -> Readout:
    """Train (or resume training) a readout; returns it (with validation data: the best epoch's).
    Call it on every rank under torchrun.

    ``config``: the bottleneck settings (default: beta :data:`READOUT_BETA`).
    ``keep_epochs`` also keeps ``OUT/epoch<N>.pt`` after every epoch. ``validation``: inputs
    scored after every epoch (see the module's description); ``patience``: stop after this many
    epochs without a lower validation loss."""
    cfg = config or IBAConfig().replace(beta=READOUT_BETA)
    if epochs <= 0 or batch_size <= 0 or not lr > 0:
        raise UserInputError("epochs, batch size and learning rate must be > 0")
    if not data.items:
        raise UserInputError(f"no training inputs in {data.name}")
    if patience is not None and (validation is None or patience <= 0):
        raise UserInputError("--patience needs --validation data and must be > 0")
    if validation is not None and not validation.items:
        raise UserInputError(f"no validation inputs in {validation.name}")
    ensure_writable_dir(out_dir)
    ckpt_path = os.path.join(out_dir, "checkpoint.pt")
    log_path = os.path.join(out_dir, "loss.jsonl")
    start = 0
    history: list[dict[str, Any]] = []
    payload: dict[str, Any] | None = None
    if os.path.exists(ckpt_path):
        readout, payload = load_checkpoint(ckpt_path, device)
        if payload.get("model") != model_name or readout.spec.layers != list(layers):
            raise UserInputError(f"{ckpt_path} belongs to another training (model {payload.get('model')}, layers "
                                 f"{readout.spec.layers}); use a new --out")
        start = int(payload["epoch"])
        history = list(payload.get("log", []))
        if distributed.rank() == 0:
            log.warning("resuming after epoch %d of %d from %s", start, epochs, ckpt_path)
            if _best_epoch(history) == start:  # a stop between writing the checkpoint and best.pt
                _copy(ckpt_path, os.path.join(out_dir, "best.pt"))
    else:
        with frozen(model):
            readout = prepare(model, data, layers, readouts, stats, cfg, batch_size, device)
    net: nn.Module = readout
    if distributed.world_size() > 1:
        from torch.nn.parallel import DistributedDataParallel

        dev = torch.device(device)
        net = DistributedDataParallel(readout, device_ids=[dev.index] if dev.type == "cuda" else None)
    opt = torch.optim.Adam(readout.heads.parameters(), lr=lr)
    if payload is not None and payload.get("optimizer") is not None:
        opt.load_state_dict(payload["optimizer"])
    if distributed.rank() == 0:
        _trim_log(log_path, start)
    generator = torch.Generator(device=torch.device(device)).manual_seed(seed * 1000 + distributed.rank())
    best_path = os.path.join(out_dir, "best.pt")
    for epoch in range(start, epochs):
        if _patience_spent(history, patience):
            break
        order = np.random.default_rng(seed + epoch).permutation(len(data.items)).tolist()
        mine = distributed.shard(order, pad=True)
        chunks = _batches(data, mine, batch_size)
        tick = progress(epoch, len(chunks)) if progress is not None else None
        t0 = time.perf_counter()
        sums = np.zeros(3)
        for step, chunk in enumerate(chunks):
            x, y = data.load(chunk)
            x = _to(x, device)
            with frozen(model), torch.inference_mode(False), torch.enable_grad():
                readout.train()
                loss, ce, info = readout_loss(model, readout, x, y, generator, net=net)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            vals = _mean_over_ranks([float(loss.detach()), ce, info], device)
            sums += vals
            if distributed.rank() == 0:
                with open(log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"epoch": epoch + 1, "step": step + 1, "loss": round(float(vals[0]), 6),
                                         "ce": round(float(vals[1]), 6), "info_nats": round(float(vals[2]), 6),
                                         "seconds": round(time.perf_counter() - t0, 3)}) + "\n")
            if tick is not None:
                tick(1)
        readout.eval()
        n = max(1, len(chunks))
        history.append({"epoch": epoch + 1, "loss": float(sums[0] / n), "ce": float(sums[1] / n),
                        "info_nats": float(sums[2] / n), "seconds": round(time.perf_counter() - t0, 2)})
        if validation is not None:
            history[-1].update(validate(model, readout, validation, batch_size, device, seed))
        if distributed.rank() == 0:
            save_checkpoint(ckpt_path, readout, model_name=model_name, epoch=epoch + 1, optimizer=opt, log=history,
                            extra={"data": data.name, "batch_size": batch_size, "lr": lr, "world_size":
                                   distributed.world_size()})
            if keep_epochs:
                save_checkpoint(os.path.join(out_dir, f"epoch{epoch + 1}.pt"), readout, model_name=model_name,
                                epoch=epoch + 1, log=history, extra={"data": data.name, "lr": lr})
            h = history[-1]
            log.info("epoch %d: loss %.4f, ce %.4f, info %.4f nats", epoch + 1, h["loss"], h["ce"], h["info_nats"])
            if validation is not None:
                log.info("epoch %d validation: loss %.4f, ce %.4f, info %.4f nats, kept %.3f", epoch + 1,
                         h["val_loss"], h["val_ce"], h["val_info_nats"], h["val_kept"])
                if _best_epoch(history) == epoch + 1:
                    _copy(ckpt_path, best_path)
        distributed.barrier()
    chosen = ckpt_path
    if validation is not None and history and "val_loss" in history[-1]:
        chosen = best_path
        if distributed.rank() == 0:
            _warn_if_prediction_given_up(history)
    if distributed.rank() == 0:
        _copy(chosen, os.path.join(out_dir, "readout.pt"))
    distributed.barrier()
    if chosen != ckpt_path:
        readout = load_checkpoint(chosen, device)[0]
    return readout


def validate(model: nn.Module, readout: Readout, data: TrainingData, batch_size: int, device: torch.device | str,
             seed: int = 0) -> dict[str, float]:
    """The readout's loss terms on ``data`` (the same noise on every call; ranks share the inputs,
    none repeated): ``val_loss``, ``val_ce``, ``val_info_nats``, ``val_kept``, means over inputs."""
    items = distributed.shard(list(data.items))
    generator = torch.Generator(device=torch.device(device)).manual_seed(seed * 1000 + 999 + distributed.rank())
    sums = np.zeros(4)
    was_training = readout.training
    readout.eval()
    try:
        for chunk in _batches(TrainingData(data.name, items, data.load), range(len(items)), batch_size):
            x, y = data.load(chunk)
            with frozen(model), torch.no_grad():
                ce, info, noisy, target = readout_terms(model, readout, _to(x, device), y, generator)
            sums += [float(ce.sum()), float(info.sum()), float((noisy.argmax(1) == target).sum()), ce.numel()]
    finally:
        readout.train(was_training)
    ce_sum, info_sum, kept, n = (float(v) for v in _sum_over_ranks(sums.tolist(), device))
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
                    "--beta", chosen["epoch"], 100 * chosen["val_kept"], chosen["val_ce"])
    elif chosen["val_ce"] > 2 * low["val_ce"] + 0.05:
        log.warning("validation cross-entropy of the chosen epoch %d is %.3f, against %.3f after epoch %d (inputs "
                    "still predicted as their target: %.0f%% against %.0f%%): the mask gives up the prediction to "
                    "save information; train with a smaller --beta, or keep epochs (--keep-epochs) and compare "
                    "them", chosen["epoch"], chosen["val_ce"], low["val_ce"], low["epoch"],
                    100 * chosen["val_kept"], 100 * low["val_kept"])


def _copy(src: str, dst: str) -> None:
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)


def _sum_over_ranks(values: list[float], device: torch.device | str) -> np.ndarray:
    if distributed.world_size() == 1:
        return np.asarray(values, dtype=np.float64)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.cpu().numpy()


def _mean_over_ranks(values: list[float], device: torch.device | str) -> np.ndarray:
    return _sum_over_ranks(values, device) / distributed.world_size()


def _trim_log(path: str, epochs_done: int) -> None:
    """Keep the log lines of finished epochs only (a resumed run repeats the interrupted epoch)."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line)["epoch"] <= epochs_done:
                    keep.append(line)
            except (ValueError, KeyError):
                continue
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(keep)


__all__ = ["READOUT_BETA", "TrainingData", "synthetic_data", "synthetic_validation_data", "folder_data", "prepare", "train",
           "validate"]
