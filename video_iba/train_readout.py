"""``video-iba train-readout``: fit a readout bottleneck on a dataset, resumable, on one or many processes.

Single process by default; under ``torchrun --nproc-per-node N`` every rank trains on its own
shard of each epoch's shuffled inputs and DistributedDataParallel averages the gradients (gloo on
CPU, NCCL on GPU). Files in ``OUT``: ``checkpoint.pt`` after every epoch (the readout, the
optimiser and the epoch: a rerun of the same command resumes after the last finished epoch),
``readout.pt`` when training ends (for ``explain --method readout --readout``), ``loss.jsonl``
(one line per step: epoch, step, loss, cross-entropy, information in nats, averaged over ranks).
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
from .io.atomic import ensure_writable_dir
from .readout import Readout, ReadoutSpec, default_readouts, load_checkpoint, readout_loss, save_checkpoint

log = logging.getLogger(__name__)


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
    from .synthetic import TRAIN_SEEDS, make_batch

    if not 1 <= clips <= len(TRAIN_SEEDS):
        raise UserInputError(f"--clips must be between 1 and {len(TRAIN_SEEDS)}, got {clips}")

    cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # generating a clip costs more than a training step

    def load(seeds: Sequence[Any]) -> tuple[Inputs, torch.Tensor | None]:
        missing = [s for s in seeds if s not in cache]
        if missing:
            x, y = make_batch(missing)
            for s, xi, yi in zip(missing, x, y):
                cache[s] = (xi, yi)
        return torch.stack([cache[s][0] for s in seeds]), torch.stack([cache[s][1] for s in seeds])

    return TrainingData("synthetic", list(TRAIN_SEEDS)[:clips], load)


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
) -> Readout:
    """Train (or resume training) a readout; returns it. Call it on every rank under torchrun.

    ``keep_epochs`` also keeps ``OUT/epoch<N>.pt`` after every epoch, to choose the epoch on
    validation data (the readout's maps can worsen while its loss still falls)."""
    cfg = config or IBAConfig()
    if epochs <= 0 or batch_size <= 0 or not lr > 0:
        raise UserInputError("epochs, batch size and learning rate must be > 0")
    if not data.items:
        raise UserInputError(f"no training inputs in {data.name}")
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
    for epoch in range(start, epochs):
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
        if distributed.rank() == 0:
            save_checkpoint(ckpt_path, readout, model_name=model_name, epoch=epoch + 1, optimizer=opt, log=history,
                            extra={"data": data.name, "batch_size": batch_size, "lr": lr, "world_size":
                                   distributed.world_size()})
            if keep_epochs:
                save_checkpoint(os.path.join(out_dir, f"epoch{epoch + 1}.pt"), readout, model_name=model_name,
                                epoch=epoch + 1, log=history, extra={"data": data.name, "lr": lr})
            h = history[-1]
            log.info("epoch %d: loss %.4f, ce %.4f, info %.4f nats", epoch + 1, h["loss"], h["ce"], h["info_nats"])
        distributed.barrier()
    if distributed.rank() == 0:
        final = os.path.join(out_dir, "readout.pt")
        tmp = final + ".part"
        shutil.copyfile(ckpt_path, tmp)
        os.replace(tmp, final)
    distributed.barrier()
    return readout


def _mean_over_ranks(values: list[float], device: torch.device | str) -> np.ndarray:
    if distributed.world_size() == 1:
        return np.asarray(values)
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / distributed.world_size()).cpu().numpy()


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


__all__ = ["TrainingData", "synthetic_data", "folder_data", "prepare", "train"]
