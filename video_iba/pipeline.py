"""File-level workflows behind the command line: explain an image file, estimate over a folder."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from .api import estimate, explain
from .attribution import Attribution
from .bottleneck.estimator import Statistics
from .config import IBAConfig
from .errors import UserInputError, did_you_mean
from .io.atomic import atomic_writes, ensure_writable_dir
from .io.image import read_image
from .models import get_spec, labels_for, load_model, preprocess_image
from .models.registry import ModelSpec

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when available; an unavailable CUDA device is an error, never a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise UserInputError(f"unknown device '{name}'; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"device '{name}' requested but CUDA is not available here; use --device cpu")
    return dev


def resolve_target(text: str | int | None, labels: Sequence[str]) -> int | None:
    """``None``/``"top1"`` -> None (explain the prediction); an index; or a class name (case-insensitive)."""
    if text is None or (isinstance(text, str) and text.lower() == "top1"):
        return None
    if isinstance(text, int) or text.strip().lstrip("-").isdigit():
        idx = int(text)
        if not 0 <= idx < len(labels):
            raise UserInputError(f"target {idx} is out of range; the model has {len(labels)} classes (0..{len(labels) - 1})")
        return idx
    wanted = text.strip().lower()
    hits = [i for i, name in enumerate(labels) if name.lower() == wanted]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise UserInputError(f"class name '{text}' is ambiguous (indices {', '.join(map(str, hits))}); pass --target INDEX")
    raise UserInputError(f"unknown class name '{text}'{did_you_mean(text, labels)}; pass a class index or an exact name")


class Loaded:
    """Models and readouts loaded once and shared by the explanations of many inputs
    (``video-iba explain FOLDER``). Sharing a model is safe: every explanation leaves it as it found
    it (hooks removed, flags and ``requires_grad`` restored)."""

    def __init__(self) -> None:
        self._items: dict[tuple[Any, ...], Any] = {}

    def model(self, name: str, weights: str, device: torch.device) -> torch.nn.Module:
        return self._get(("model", name, weights, str(device)), lambda: load_model(name, weights=weights, device=device))

    def readout(self, path: str | None, model_name: str, device: torch.device) -> Any:
        from .readout import load_for_model

        return self._get(("readout", path, model_name, str(device)), lambda: load_for_model(path, model_name, device))

    def _get(self, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        if key not in self._items:
            self._items[key] = make()
        return self._items[key]


@dataclass
class ImageResult:
    attribution: Attribution
    png: str
    npz: str
    top: list[tuple[str, float]]
    label: str


def explain_image_file(
    path: str,
    *,
    model_name: str,
    out_dir: str,
    layer: str | Sequence[str] | None = None,
    target: str | None = None,
    config: IBAConfig | None = None,
    seed: int | None = 0,
    stats_path: str | Sequence[str] | None = None,
    weights: str = "default",
    vmax: float | None = None,
    device: str = "cpu",
    on_step: Callable[[int, float, float], None] | None = None,
    method: str = "iba",
    readout: str | None = None,
    loaded: Loaded | None = None,
) -> ImageResult:
    """Explain one image file and write ``<out_dir>/<stem>.png`` and ``.npz`` atomically.

    ``method``: ``"iba"``, ``"readout"`` (with ``readout``, a checkpoint of ``video-iba
    train-readout``) or a baseline of :mod:`video_iba.baselines` (drawn by magnitude).
    ``loaded``: models and readouts kept from earlier calls (many inputs, one model load).
    """
    from .baselines import attribute, check_method
    from .render import Caption, image_figure

    method = check_method(method)
    if method != "iba" and stats_path:
        raise UserInputError("--stats applies to --method iba only; drop it for baselines")
    cfg = config or IBAConfig()
    if vmax is not None and not vmax > 0:
        raise UserInputError(f"--vmax must be > 0 bits, got {vmax}")
    dev = resolve_device(device)
    rgb = read_image(path)
    ensure_writable_dir(out_dir)
    spec = get_spec(model_name)
    if spec.is_video:
        raise UserInputError(f"{spec.name} is a video model and '{path}' is read as an image; give a video file "
                             f"(.mp4, .mkv, .avi, ...) or an image model such as --model {'efficientnet_lite0'}")
    x, geo = preprocess_image(rgb, spec, name=f"'{path}'")
    layer_names = [layer] if isinstance(layer, str) else list(layer) if layer else list(spec.layers)
    paths = [stats_path] if isinstance(stats_path, str) else list(stats_path or [])
    files = load_stats_files(paths, spec, layer_names, tuple(x.shape))
    stats: Any = None
    if files:
        stats = files[0].to(dev) if len(files) == 1 else [s.to(dev) for s in files]  # type: ignore[union-attr]
    loaded = loaded or Loaded()
    model = loaded.model(model_name, weights, dev)
    labels = labels_for(spec)
    tgt = resolve_target(target, labels)
    if readout and method != "readout":
        raise UserInputError("--readout applies to --method readout only")
    if method != "iba":
        extra_kw: dict[str, Any] = {}
        if method == "readout":
            extra_kw["readout"] = loaded.readout(readout, spec.name, dev)
        attr = attribute(method, model, x.to(dev), tgt, seed=seed or 0, **extra_kw)
    else:
        attr = explain(model, x.to(dev), tgt, layer=layer_names[0] if len(layer_names) == 1 else layer_names,
                       stats=stats, config=cfg, seed=seed, on_step=on_step)
    assert attr.logits is not None
    check_classes(attr.logits, labels, spec)
    probs = torch.softmax(attr.logits.double(), 0)
    top = [(labels[i], float(probs[i])) for i in probs.argsort(descending=True)[:5].tolist()]
    label = labels[attr.target]
    attr.meta.update({
        "model": spec.name, "weights": weights, "input": os.path.abspath(path), "target_label": label,
        "target_probability": float(probs[attr.target]), "predicted": top[0][0], "top5": top,
        "bits_unit": f"{attr.unit} per pixel of the {spec.input_size}x{spec.input_size} model input",
    })
    attr.arrays.update({
        "crop_box": np.asarray(geo.box, dtype=np.float64), "scale": np.asarray(geo.scale, dtype=np.float64),
        "image_size": np.asarray(geo.image_size, dtype=np.int64),
    })
    stem = Path(path).stem
    png, npz = os.path.join(out_dir, f"{stem}.png"), os.path.join(out_dir, f"{stem}.npz")
    if method == "readout":
        details = (f"{spec.name} · readout bottleneck at {attr.meta['layer']} ({os.path.basename(str(readout))}, "
                   f"beta {attr.meta['beta']:g}) · one forward pass")
    elif method == "iba":
        stats_text = attr.meta['stats'] if isinstance(attr.meta['stats'], str) else '; '.join(attr.meta['stats'])
        details = (f"{spec.name} · layer {attr.meta['layer']} · beta {cfg.beta:g} · {cfg.steps} steps × {cfg.samples} "
                   f"samples · seed {attr.meta['seed']} · statistics: {stats_text}")
    else:
        extra = f" · layer {attr.meta['cam_layer']}" if "cam_layer" in attr.meta else ""
        details = f"{spec.name} · {method}{extra} · colours show the magnitude of the {attr.unit} map"
    caption = Caption(predicted=", ".join(f"{n} {p:.2f}" for n, p in top[:3]),
                      explained=f"{label} (#{attr.target}, p={float(probs[attr.target]):.2f})",
                      total_bits=attr.total_bits if attr.unit == "bits" else None, details=details,
                      input_side=spec.input_size, unit=attr.unit)
    shown = attr.values.numpy() if attr.unit == "bits" else np.abs(attr.values.numpy())
    with atomic_writes([png, npz]) as (tmp_png, tmp_npz):
        used_vmax = image_figure(rgb, shown, geo.box, caption, tmp_png, vmax=vmax)
        attr.meta["vmax"] = used_vmax
        with open(tmp_npz, "wb") as fh:
            attr.write_npz(fh)
    return ImageResult(attr, png, npz, top, label)


def load_stats_files(paths: Sequence[str], spec: ModelSpec, layers: Sequence[str],
                     input_shape: tuple[int, ...] | None = None) -> list[Statistics]:
    """Statistics files from ``video-iba estimate``, one per layer in order, checked against the
    model, layer and (when given) input shape; an empty list when none are given."""
    if paths and len(paths) != len(layers):
        raise UserInputError(f"got {len(paths)} --stats files for {len(layers)} layers ({', '.join(layers)}); "
                             f"give one per layer, in the same order")
    out = []
    for p, layer in zip(paths, layers):
        st = Statistics.load(p)
        st.check(None, layer=layer, model=spec.name, input_shape=input_shape)
        out.append(st)
    return out


def check_classes(logits: torch.Tensor, labels: Sequence[str], spec: ModelSpec) -> None:
    """Refuse weights whose number of outputs differs from the label set of ``spec``."""
    if logits.shape[-1] != len(labels):
        raise UserInputError(f"the model outputs {logits.shape[-1]} classes but {spec.name} has {len(labels)} labels; "
                             f"give weights of the {len(labels)}-class model")


def find_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursive, sorted)."""
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise UserInputError(f"'{folder}' is a file; give a folder of images")
        raise UserInputError(f"folder '{folder}' does not exist; check the path")
    files = sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise UserInputError(f"no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) found in '{folder}'; give a folder of images")
    return files


def _image_batches(files: Sequence[str], spec: ModelSpec, batch_size: int, device: torch.device,
                   skipped: list[str]) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for f in files:
        try:
            x, _ = preprocess_image(read_image(f), spec, name=f"'{f}'")
        except UserInputError as exc:
            skipped.append(f)
            log.warning("skipping %s", exc)
            continue
        batch.append(x)
        if len(batch) == batch_size:
            yield torch.cat(batch).to(device)
            batch = []
    if batch:
        yield torch.cat(batch).to(device)


def find_videos(folder: str) -> list[str]:
    """Video files under ``folder`` (recursive, sorted, by suffix)."""
    from .video_pipeline import VIDEO_SUFFIXES

    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


def estimate_inputs(folder: str, model_name: str | None) -> tuple[str, list[str]]:
    """The model to use and the files to read from ``folder``: videos for a video model, images for an
    image model; without a model, videos (with the default video model) when the folder holds no images."""
    from .cli import DEFAULT_MODEL, DEFAULT_VIDEO_MODEL

    if not os.path.isdir(folder):
        find_images(folder)  # raises the right message
    videos = find_videos(folder)
    if model_name is None:
        has_images = any(p.suffix.lower() in IMAGE_SUFFIXES for p in Path(folder).rglob("*"))
        model_name = DEFAULT_VIDEO_MODEL if videos and not has_images else DEFAULT_MODEL
    if get_spec(model_name).is_video:
        if not videos:
            raise UserInputError(f"no videos (.mp4, .mkv, .avi, ...) found in '{folder}'; {model_name} is a video model")
        return model_name, videos
    return model_name, find_images(folder)


def _clip_batches(files: Sequence[str], spec: ModelSpec, batch_size: int, device: torch.device,
                  skipped: list[str]) -> Iterator[Any]:
    """Centre-crop clips of every video, one per clip length, batched (pathway lists for SlowFast)."""
    from .io.sampling import plan_windows
    from .io.video import frame_times, probe_video
    from .video_pipeline import _clip_input, clip_decoder, iter_window_frames, plan_crops

    batch: list[Any] = []

    def flush() -> Any:
        if isinstance(batch[0], torch.Tensor):
            return torch.cat(batch).to(device)
        return [torch.cat([b[i] for b in batch]).to(device) for i in range(len(batch[0]))]

    for f in files:
        try:
            info = probe_video(f)
            times = frame_times(f)
            n = len(times) if times is not None else int(info.frames or round((info.duration or 0) * info.fps))
            windows = plan_windows(n, info.fps, spec.frames, spec.sampling_rate, times=times)
            plan = plan_crops(info.height, info.width, spec, "center")
            clips = [_clip_input(fr, spec, plan, plan.tiles[0], (info.height, info.width), torch.device("cpu"))
                     for _wi, fr in iter_window_frames(f, windows, plan.size, clip_decoder())]
        except UserInputError as exc:
            skipped.append(f)
            log.warning("skipping %s", exc)
            continue
        for c in clips:
            batch.append(c)
            if len(batch) == batch_size:
                yield flush()
                batch = []
    if batch:
        yield flush()


def stats_paths_for(out: str, layers: Sequence[str]) -> list[str]:
    """Where ``estimate`` writes: ``out`` for one layer; ``<stem>.<layer><suffix>`` beside it for several."""
    if len(layers) == 1:
        return [out]
    root, ext = os.path.splitext(out)
    return [f"{root}.{layer}{ext or '.pt'}" for layer in layers]


def estimate_folder(
    folder: str,
    *,
    model_name: str | None,
    out: str,
    layer: str | Sequence[str] | None = None,
    weights: str = "default",
    batch_size: int = 16,
    max_samples: int | None = None,
    per_frame: bool = False,
    device: str = "cpu",
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[Statistics], list[str], list[str]]:
    """Estimate statistics over a folder of images or videos and save them.

    Videos give one centre-crop clip per clip length; statistics are pooled over time unless
    ``per_frame``. Returns the statistics (one per layer), the files written and the skipped inputs.
    Under torchrun every rank reads its own share of the files (``--max-samples`` is shared out
    too), the ranks' estimates are combined, and rank 0 writes the files.
    """
    if batch_size <= 0:
        raise UserInputError(f"--batch-size must be > 0, got {batch_size}")
    if max_samples is not None and max_samples < 2:
        raise UserInputError(f"--max-samples must be >= 2, got {max_samples}")
    model_name, files = estimate_inputs(folder, model_name)
    dev = resolve_device(device)
    spec = get_spec(model_name)
    layers = [layer] if isinstance(layer, str) else list(layer) if layer else list(spec.layers)
    targets = stats_paths_for(out, layers)
    for t in targets:
        ensure_writable_dir(os.path.dirname(os.path.abspath(t)))
    model = load_model(model_name, weights=weights, device=dev)
    from . import distributed

    world, rank = distributed.world_size(), distributed.rank()
    files = distributed.shard(files)  # under torchrun: every file on exactly one rank, no padding
    if max_samples is not None and world > 1:
        max_samples = max_samples // world + (1 if rank < max_samples % world else 0)
    skipped: list[str] = []
    batches = (_clip_batches(files, spec, batch_size, dev, skipped) if spec.is_video
               else _image_batches(files, spec, batch_size, dev, skipped))
    if max_samples == 0:
        batches = iter(())
    result = estimate(model, batches, layer=layers, max_samples=max_samples, on_batch=on_batch,
                      pool=() if per_frame else None,
                      meta={"model": spec.name, "weights": weights, "folder": os.path.abspath(folder),
                            "processes": world})
    skipped = [f for part in distributed.gather(skipped) for f in part]
    if rank == 0:
        for st, t in zip(result, targets):
            st.save(t)
    distributed.barrier()
    return result, targets, skipped
