"""The result types: a photo's :class:`Attribution`, a video's :class:`ClipAttribution`, a
comparison's panels (:class:`Comparison`), and what their maps mean (:class:`Unit`).

Each is saved as an ``.npz`` file (NumPy arrays, no pickles) with a ``format`` entry naming the
type and its version; :func:`load` reads any of them and refuses anything else with one clear line.
"""

from __future__ import annotations

import json
import operator
import os
import zipfile
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import UserInputError
from .files import atomic_write, regular_file

ATTRIBUTION_FORMAT = "video-iba-attribution/1"
CLIP_FORMAT = "video-iba-video-attribution-1"
COMPARISON_FORMAT = "video-iba-comparison-1"


class Unit(str, Enum):
    """What the values of a map are. Only the information methods' maps are in bits; every other
    method has its own unit and is drawn by magnitude."""

    BITS = "bits"
    RANDOM = "random"
    GRADIENT = "gradient"
    ABS_GRADIENT = "|gradient|"
    LOGIT = "logit"
    GRAD_CAM = "grad-cam"
    GUIDED_GRAD_CAM = "guided grad-cam"
    GUIDED_GRADIENT = "guided gradient"
    RELEVANCE = "relevance"
    LOGIT_DROP = "logit drop"
    ROLLOUT = "attention rollout"
    ATTENTION_RELEVANCE = "attention relevance"

    def __str__(self) -> str:
        return self.value

    @property
    def information(self) -> bool:
        """Whether the map is information in bits (per-sample IBA, the readout)."""
        return self is Unit.BITS

    @property
    def shown(self) -> str:
        """The quantity a figure shows: bits themselves, else the magnitude ``|unit|``."""
        if self.information or self.value.startswith("|"):
            return self.value
        return f"|{self.value}|"

    def magnitude(self, values: np.ndarray) -> np.ndarray:
        """The values a figure draws: bits as they are (never negative), other units by magnitude."""
        return values if self.information else np.abs(values)


def _plain(value: Any) -> Any:
    """A numpy or torch number or array in metadata as the plain number or list JSON holds."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    raise TypeError(f"metadata of type {type(value).__name__} cannot be saved; give numbers, strings, lists or dicts")


def _unit(value: Any, where: str) -> Unit:
    try:
        return Unit(str(value))
    except ValueError:
        raise UserInputError(f"{where} has an unknown unit '{value}'; it was written by another version of "
                             f"video-iba") from None


def _read_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file (no pickles), or one clear error for anything else."""
    p = regular_file(path, "result file", "give an .npz written by `video-iba explain`")
    failures = (OSError, ValueError, EOFError, zipfile.BadZipFile)

    def unreadable(exc: BaseException) -> UserInputError:
        return UserInputError(f"cannot read '{p}': it is not an .npz written by video-iba, or it is truncated "
                              f"({type(exc).__name__}); give a file written by `video-iba explain`")

    try:  # two steps: the .npy refusal between them is a ValueError too and must not read as "truncated"
        data = np.load(p, allow_pickle=False)
    except failures as exc:
        raise unreadable(exc) from exc
    if not isinstance(data, np.lib.npyio.NpzFile):  # an .npy file: one array, no archive
        raise UserInputError(f"'{p}' holds one numpy array (.npy), not the .npz archive video-iba writes; give a "
                             f"file written by `video-iba explain`")
    try:
        with data:
            return {k: data[k] for k in data.files}
    except failures as exc:
        raise unreadable(exc) from exc


def _check_format(d: dict[str, np.ndarray], p: str, expected: str) -> None:
    fmt = str(d["format"]) if "format" in d else ""
    if fmt == expected:
        return
    if fmt.startswith("video-iba"):
        raise UserInputError(f"'{p}' holds '{fmt}', not '{expected}'; read it with video_iba.load, or with a "
                             f"video-iba version that writes '{fmt}'")
    raise UserInputError(f"'{p}' is not a video-iba result file (no format entry); give a file written by "
                         f"`video-iba explain`")


def _read_result(path: str | os.PathLike[str], expected: str) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of the result file ``path`` of the format ``expected``, and its path as a string."""
    p = os.fspath(path)
    d = _read_npz(p)
    _check_format(d, p, expected)
    return d, p


def _save(result: Any, path: str | os.PathLike[str]) -> None:
    """Write ``result`` (its ``write_npz``) to the ``.npz`` ``path`` atomically."""
    with atomic_write(_npz_name(path)) as tmp, open(tmp, "wb") as fh:
        result.write_npz(fh)


def _meta(d: dict[str, np.ndarray], p: str) -> dict[str, Any]:
    try:
        meta = json.loads(str(d["meta"]))
    except (KeyError, ValueError) as exc:
        raise UserInputError(f"'{p}' has no readable metadata; it is damaged") from exc
    if not isinstance(meta, dict):
        raise UserInputError(f"'{p}' has no readable metadata; it is damaged")
    return meta


def _summary(kind: str, shape: str, unit: "Unit", target: int, total: float | None, per: str,
             meta: dict[str, Any], *extra: str) -> str:
    """A one-line description of a result for ``repr`` (a notebook prints it, not the arrays)."""
    label = meta.get("target_label")
    parts = [str(meta.get("method", "?")), f"{unit.value} {shape}",
             f"target {target}" + (f" {label!r}" if label else "")]
    if total is not None:
        parts.append(f"{total:,.1f} bits{per}")
    layer = meta.get("layer") or meta.get("cam_layer")
    if isinstance(layer, (list, tuple)):
        layer = ", ".join(map(str, layer))
    if meta.get("model") or layer:
        parts.append(" ".join(p for p in (str(meta.get("model") or ""), f"layer {layer}" if layer else "") if p))
    return f"{kind}({', '.join([*parts, *extra])})"


def _not_bits(unit: Unit) -> ValueError:
    return ValueError(f"this attribution is in '{unit}', not bits (only the information bottleneck's maps are); "
                      f"read its map from .values")


@dataclass(repr=False)
class Attribution:
    """An attribution map at the model input's resolution.

    Attributes:
        values: ``(H, W)`` for images or ``(T, H, W)`` for clips, at the resolution of the
            preprocessed input (after resize and crop).
        unit: What the values are; :attr:`Unit.BITS` for the information bottleneck (bits per
            input pixel or voxel). A string is converted.
        target: Explained class index.
        capacity: Information per feature element in nats ``(C, *S)`` (bottleneck methods); a list
            of such tensors when several layers carry a bottleneck.
        logits: The model's logits for the unrestricted input ``(K,)``.
        meta: JSON-serialisable provenance (model, layer, settings, statistics source, ...).
        arrays: Further named arrays saved alongside (e.g. the crop box).
    """

    values: torch.Tensor
    unit: Unit
    target: int
    capacity: torch.Tensor | list[torch.Tensor] | None = None
    logits: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            self.unit = Unit(self.unit)
        except ValueError:
            raise UserInputError(f"unknown unit {self.unit!r}; give one of "
                                 f"{', '.join(u.value for u in Unit)}") from None
        if isinstance(self.values, np.ndarray):
            self.values = torch.from_numpy(self.values)
        if not isinstance(self.values, torch.Tensor) or self.values.dim() not in (2, 3):
            shape = tuple(self.values.shape) if hasattr(self.values, "shape") else type(self.values).__name__
            raise UserInputError(f"an attribution's values are a map (H, W) or (T, H, W) at the input's resolution, "
                                 f"got {shape}")
        try:
            self.target = operator.index(self.target)
        except TypeError:
            raise UserInputError(f"target must be a class index (int), got {self.target!r}") from None

    def __repr__(self) -> str:
        return _summary("Attribution", str(tuple(self.values.shape)), self.unit, self.target, self.total, "",
                        self.meta)

    @property
    def bits(self) -> torch.Tensor:
        """The map in bits per input cell (only for information methods)."""
        if not self.unit.information:
            raise _not_bits(self.unit)
        return self.values

    @property
    def bits_per_frame(self) -> torch.Tensor:
        """Bits in each frame of a clip map ``(T, H, W)``: which moments carry the information."""
        if self.values.dim() != 3:
            raise ValueError(f"bits per frame need a clip map (T, H, W), this one is {tuple(self.values.shape)}")
        return self.bits.double().sum(dim=(1, 2))

    @property
    def total_bits(self) -> float:
        """Total information through the bottleneck, in bits."""
        return float(self.bits.double().sum())

    @property
    def total(self) -> float | None:
        """:attr:`total_bits` for information maps, ``None`` for other units."""
        return self.total_bits if self.unit.information else None

    @property
    def prefix_total(self) -> float | None:
        """Bits in the class (prefix) tokens of token layers, not part of the map; ``None`` without any."""
        value = self.meta.get("prefix_bits")
        return float(value) if value is not None else None

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` file atomically: float32 ``values``, ``capacity``, ``logits``, ``meta`` (JSON)."""
        _save(self, path)

    def write_npz(self, fh: BinaryIO) -> None:
        """Write the ``.npz`` content to an open binary file (see :meth:`save` for the atomic form)."""
        np.savez_compressed(fh, **self._payload())  # type: ignore[arg-type]

    def _payload(self) -> dict[str, np.ndarray]:
        payload: dict[str, np.ndarray] = {
            "format": np.array(ATTRIBUTION_FORMAT),
            "values": self.values.detach().cpu().numpy().astype(np.float32),
            "unit": np.array(self.unit.value),
            "target": np.array(self.target, dtype=np.int64),
            "meta": np.array(json.dumps(self.meta, sort_keys=True, default=_plain)),
        }
        if self.unit.information:
            payload["bits"] = payload["values"]
        if isinstance(self.capacity, torch.Tensor):
            payload["capacity"] = self.capacity.detach().cpu().numpy().astype(np.float32)
        elif self.capacity is not None:
            for i, c in enumerate(self.capacity):
                payload[f"capacity_{i}"] = c.detach().cpu().numpy().astype(np.float32)
        if self.logits is not None:
            payload["logits"] = self.logits.detach().cpu().numpy().astype(np.float32)
        for k, v in self.arrays.items():
            payload[k] = np.asarray(v)
        return payload

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Attribution":
        """Read a file written by :meth:`save` (a photo's ``.npz`` from ``video-iba explain``)."""
        return cls._from_arrays(*_read_result(path, ATTRIBUTION_FORMAT))

    @classmethod
    def _from_arrays(cls, d: dict[str, np.ndarray], p: str) -> "Attribution":
        per_layer = sorted((k for k in d if k.startswith("capacity_")), key=lambda k: int(k.split("_")[1]))
        known = {"format", "values", "bits", "unit", "target", "meta", "capacity", "logits", *per_layer}
        capacity: torch.Tensor | list[torch.Tensor] | None = None
        if "capacity" in d:
            capacity = torch.from_numpy(d["capacity"])
        elif per_layer:
            capacity = [torch.from_numpy(d[k]) for k in per_layer]
        if "values" not in d or "target" not in d or "unit" not in d:
            raise UserInputError(f"'{p}' lacks its values, unit or target; it is damaged")
        return cls(
            values=torch.from_numpy(d["values"]),
            unit=_unit(d["unit"], p),
            target=int(d["target"]),
            capacity=capacity,
            logits=torch.from_numpy(d["logits"]) if "logits" in d else None,
            meta=_meta(d, p),
            arrays={k: v for k, v in d.items() if k not in known},
        )


@dataclass(repr=False)
class ClipAttribution:
    """The explanation of a video: one map per model clip ("window") and crop, at the model clip's
    resolution, and the map's total in every source frame of the explained range.

    Attributes:
        values: ``(windows, crops, T, S, S)`` float32; bits per voxel for information methods.
        unit: What the values are (see :class:`Unit`).
        target: Explained class index (one for the whole video).
        window_starts: ``(windows,)`` start of each model clip in seconds.
        window_frame_indices: ``(windows, T)`` the source frame of every model frame.
        window_looped: ``(windows,)`` whether the video was too short and frames repeat.
        window_probs: ``(windows, crops, K)`` the model's softmax for each clip.
        window_seconds: ``(windows,)`` time spent explaining each window.
        crop_boxes: ``(crops, 4)`` each crop's box ``(x0, y0, x1, y1)`` in source pixels.
        source_frame_indices: ``(F,)`` the source frames of the explained range.
        per_source_frame: ``(F,)`` the map's total in each of them (bits for information methods,
            the magnitude's total otherwise).
        feature_bits: Information methods: per bottleneck layer, bits per feature cell
            ``(windows, crops, *S')`` (the capacity summed over channels).
        prefix_bits: Token layers with class tokens: their bits ``(windows, crops, P)`` (counted
            in the information term, not drawn on the grid); ``None`` otherwise.
        meta: Provenance (model, layers, settings, sampling, statistics, rendering, ...).
        class_names: The model's class names, index by index (the overlay's class lines; ``None``
            in files of video-iba 0.2.0 and earlier).
    """

    values: np.ndarray
    unit: Unit
    target: int
    window_starts: np.ndarray
    window_frame_indices: np.ndarray
    window_looped: np.ndarray
    window_probs: np.ndarray
    window_seconds: np.ndarray
    crop_boxes: np.ndarray
    source_frame_indices: np.ndarray
    per_source_frame: np.ndarray
    feature_bits: list[np.ndarray] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    prefix_bits: np.ndarray | None = None
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        self.unit = Unit(self.unit)
        if self.class_names is not None:
            self.class_names = tuple(str(n) for n in self.class_names)

    def __repr__(self) -> str:
        w, c, *cell = self.values.shape
        shape = (f"({w} window{'s' * (w != 1)} x {c} crop{'s' * (c != 1)} of "
                 f"{' x '.join(str(n) for n in cell)})")
        per = " per window and crop" if c > 1 else " per window" if w > 1 else ""
        return _summary("ClipAttribution", shape, self.unit, self.target, self.total, per,
                        self.meta, f"{len(self.source_frame_indices)} source frames")

    @property
    def bits(self) -> np.ndarray:
        """The maps in bits per voxel ``(windows, crops, T, S, S)`` (only for information methods)."""
        if not self.unit.information:
            raise _not_bits(self.unit)
        return self.values

    @property
    def window_totals(self) -> np.ndarray:
        """``(windows, crops)``: each map summed over its voxels (float64; one window at a time, the
        maps may be on disk)."""
        return np.stack([w.astype(np.float64).sum(axis=(1, 2, 3)) for w in self.values])

    def peak(self) -> float:
        """The largest value a figure draws (the magnitude for units other than bits), window by window."""
        return float(max((self.unit.magnitude(w).max() for w in self.values), default=0.0))

    @property
    def total_bits(self) -> float:
        """Bits per model clip: each window's and crop's map summed, averaged over windows and crops."""
        if not self.unit.information:
            raise _not_bits(self.unit)
        return float(self.window_totals.mean())

    @property
    def total(self) -> float | None:
        """:attr:`total_bits` for information maps, ``None`` for other units."""
        return self.total_bits if self.unit.information else None

    @property
    def prefix_total(self) -> float | None:
        """Bits in the class (prefix) tokens per model clip (averaged over windows and crops, as
        :attr:`total_bits`), not part of the maps; ``None`` without any."""
        if self.prefix_bits is None:
            return None
        return float(np.asarray(self.prefix_bits, dtype=np.float64).sum(axis=2).mean())

    @property
    def bits_per_frame(self) -> np.ndarray:
        """Bits in each source frame of the explained range ``(F,)``: which moments carry the information."""
        if not self.unit.information:
            raise _not_bits(self.unit)
        return self.per_source_frame

    @property
    def mean_probs(self) -> np.ndarray:
        """``(K,)`` the softmax averaged over windows and crops."""
        return self.window_probs.astype(np.float64).mean(axis=(0, 1))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ``.npz`` atomically."""
        _save(self, path)

    def write_npz(self, fh: BinaryIO) -> None:
        """Write the ``.npz`` content to an open binary file (see :meth:`save` for the atomic form)."""
        np.savez(fh, **self._payload())  # type: ignore[arg-type]

    def _payload(self) -> dict[str, np.ndarray]:
        info = self.unit.information
        payload: dict[str, np.ndarray] = {
            "format": np.array(CLIP_FORMAT),
            "unit": np.array(self.unit.value),
            ("window_bits" if info else "window_values"): np.asarray(self.values, dtype=np.float32),
            "window_starts": np.asarray(self.window_starts, dtype=np.float64),
            "window_frame_indices": np.asarray(self.window_frame_indices, dtype=np.int64),
            "window_looped": np.asarray(self.window_looped, dtype=bool),
            "window_probs": np.asarray(self.window_probs, dtype=np.float32),
            ("window_total_bits" if info else "window_totals"): self.window_totals,
            "window_seconds": np.asarray(self.window_seconds, dtype=np.float64),
            "crop_boxes": np.asarray(self.crop_boxes, dtype=np.float64),
            "source_frame_indices": np.asarray(self.source_frame_indices, dtype=np.int64),
            ("bits_per_source_frame" if info else "magnitude_per_source_frame"):
                np.asarray(self.per_source_frame, dtype=np.float64),
            "target": np.array(self.target, dtype=np.int64),
            "meta": np.array(json.dumps(self.meta, sort_keys=True, default=_plain)),
        }
        for i, fb in enumerate(self.feature_bits):
            payload[f"feature_bits_{i}"] = np.asarray(fb, dtype=np.float32)
        if self.prefix_bits is not None:
            payload["window_prefix_bits"] = np.asarray(self.prefix_bits, dtype=np.float32)
        if self.class_names is not None:
            payload["class_names"] = np.array(self.class_names, dtype=str)
        return payload

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "ClipAttribution":
        """Read a file written by :meth:`save` (a video's ``.npz`` from ``video-iba explain``)."""
        return cls._from_arrays(*_read_result(path, CLIP_FORMAT))

    @classmethod
    def _from_arrays(cls, d: dict[str, np.ndarray], p: str) -> "ClipAttribution":
        meta = _meta(d, p)
        unit = _unit(d["unit"] if "unit" in d else meta.get("unit", "bits"), p)
        info = unit.information
        names = [("window_bits" if info else "window_values"), "window_starts", "window_frame_indices",
                 "window_looped", "window_probs", "window_seconds", "crop_boxes", "source_frame_indices",
                 ("bits_per_source_frame" if info else "magnitude_per_source_frame"), "target"]
        missing = [n for n in names if n not in d]
        if missing:
            raise UserInputError(f"'{p}' lacks {', '.join(missing)}; it is damaged")
        layers = sorted((k for k in d if k.startswith("feature_bits_")), key=lambda k: int(k.rsplit("_", 1)[1]))
        return cls(values=d[names[0]], unit=unit, target=int(d["target"]), window_starts=d["window_starts"],
                   window_frame_indices=d["window_frame_indices"], window_looped=d["window_looped"],
                   window_probs=d["window_probs"], window_seconds=d["window_seconds"], crop_boxes=d["crop_boxes"],
                   source_frame_indices=d["source_frame_indices"], per_source_frame=d[names[8]],
                   feature_bits=[d[k] for k in layers], meta=meta, prefix_bits=d.get("window_prefix_bits"),
                   class_names=tuple(d["class_names"].tolist()) if "class_names" in d else None)


@dataclass
class Panel:
    """One panel of a comparison.

    Attributes:
        input: The photo or video it explains.
        name: Its heading: the method, or ``model · method`` / ``class · method`` where several
            models or classes are compared.
        result: Its map, a photo's :class:`Attribution` or a video's :class:`ClipAttribution`.
        note: What its head says after the unit (the layer its method read; with several
            models, the class its model explained).
    """

    input: str
    name: str
    result: "Attribution | ClipAttribution"
    note: str = ""


@dataclass(repr=False)
class Comparison:
    """What ``video-iba compare`` drew, as data: every panel's result, in the order drawn (a grid's
    rows one after the other), and ``meta`` (the rows: each one's input, title and number of
    panels; the colour scale of the bits maps, the version).

    Saved as one ``.npz``: each panel's arrays under ``panel<i>/``, as its own result saves them,
    and the panels' inputs and names in ``meta``.
    """

    panels: list[Panel]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.panels:
            raise UserInputError("a comparison needs at least one panel")

    def __repr__(self) -> str:
        inputs = list(dict.fromkeys(p.input for p in self.panels))
        names = list(dict.fromkeys(p.name for p in self.panels))
        return (f"Comparison({len(self.panels)} panels: {len(inputs)} input{'' if len(inputs) == 1 else 's'} × "
                f"{', '.join(names)})")

    def __getitem__(self, name: str) -> "Attribution | ClipAttribution":
        """The result of the panel ``name`` (of a grid: its first row's; see :meth:`panel`)."""
        return self.panel(name)

    def panel(self, name: str, input: str | None = None) -> "Attribution | ClipAttribution":
        """The result of the panel ``name``, on ``input`` (a grid's row; default: the first)."""
        for p in self.panels:
            if p.name == name and (input is None or p.input == input or os.path.basename(p.input) == input):
                return p.result
        names = ", ".join(dict.fromkeys(p.name for p in self.panels))
        raise KeyError(f"no panel {name!r}" + (f" on {input!r}" if input is not None else "") + f"; panels: {names}")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the ``.npz`` atomically."""
        _save(self, path)

    def write_npz(self, fh: BinaryIO) -> None:
        """Write the ``.npz`` content to an open binary file (see :meth:`save` for the atomic form);
        compressed unless a panel is a video's (its maps are large and compress little)."""
        payload: dict[str, np.ndarray] = {
            "format": np.array(COMPARISON_FORMAT),
            "meta": np.array(json.dumps({**self.meta, "panels": [{"input": p.input, "name": p.name,
                                                                  "note": p.note} for p in self.panels]},
                                        sort_keys=True, default=_plain)),
        }
        for i, p in enumerate(self.panels):
            payload.update({f"panel{i}/{k}": v for k, v in p.result._payload().items()})
        save = np.savez if any(isinstance(p.result, ClipAttribution) for p in self.panels) else np.savez_compressed
        save(fh, **payload)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Comparison":
        """Read a file written by :meth:`save` (``video-iba compare``'s ``.npz``)."""
        return cls._from_arrays(*_read_result(path, COMPARISON_FORMAT))

    @classmethod
    def _from_arrays(cls, d: dict[str, np.ndarray], p: str) -> "Comparison":
        meta = _meta(d, p)
        listed = meta.pop("panels", None)
        if not isinstance(listed, list) or not listed or not all(isinstance(e, dict) for e in listed):
            raise UserInputError(f"'{p}' lists no panels; it is damaged")
        panels = []
        for i, entry in enumerate(listed):
            prefix = f"panel{i}/"
            own = {k[len(prefix):]: v for k, v in d.items() if k.startswith(prefix)}
            fmt = str(own.get("format", ""))
            if fmt not in (ATTRIBUTION_FORMAT, CLIP_FORMAT):
                raise UserInputError(f"'{p}' lacks panel {i}'s result; it is damaged")
            result = (Attribution if fmt == ATTRIBUTION_FORMAT else ClipAttribution)._from_arrays(own, p)
            panels.append(Panel(str(entry.get("input", "")), str(entry.get("name", "")), result,
                                str(entry.get("note", ""))))
        return cls(panels, meta)


def _npz_name(path: str | os.PathLike[str]) -> str:
    """``path`` as a string, refused unless it ends in ``.npz`` (the file is an ``.npz`` archive,
    whatever its name says)."""
    p = os.fspath(path)
    if not p.lower().endswith(".npz"):
        raise UserInputError(f"results are saved as .npz archives; give a name ending in .npz (got '{p}'); "
                             f"explain_file draws the map as a picture or video")
    return p


def load(path: str | os.PathLike[str]) -> Attribution | ClipAttribution | Comparison:
    """Read any ``.npz`` that ``video-iba explain`` or ``compare`` writes: an :class:`Attribution`
    (photo), a :class:`ClipAttribution` (video) or a :class:`Comparison`.

    Raises:
        UserInputError: a missing, damaged or truncated file, or one that is not a result of this
            package (or of a version whose format this one does not read).
    """
    p = os.fspath(path)
    d = _read_npz(p)
    fmt = str(d["format"]) if "format" in d else ""
    if fmt == ATTRIBUTION_FORMAT:
        return Attribution._from_arrays(d, p)
    if fmt == CLIP_FORMAT:
        return ClipAttribution._from_arrays(d, p)
    if fmt == COMPARISON_FORMAT:
        return Comparison._from_arrays(d, p)
    if fmt.startswith("video-iba"):
        raise UserInputError(f"'{p}' is a video-iba file of format '{fmt}', which this version cannot read (it "
                             f"reads '{ATTRIBUTION_FORMAT}', '{CLIP_FORMAT}' and '{COMPARISON_FORMAT}'); use the "
                             f"version that wrote it")
    raise UserInputError(f"'{p}' is not a video-iba result file (no format entry); give an .npz written by "
                         f"`video-iba explain`")
