"""The result type shared by every attribution method."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

from .errors import UserInputError

_FORMAT = "video-iba-attribution/1"


@dataclass
class Attribution:
    """An attribution map at the model input's resolution.

    Attributes:
        values: ``(H, W)`` for images or ``(T, H, W)`` for clips, at the resolution of the
            preprocessed input (after resize and crop).
        unit: ``"bits"`` for the information bottleneck (bits per input pixel or voxel).
        target: Explained class index.
        capacity: Information per feature element in nats ``(C, *S)`` (bottleneck methods); a list
            of such tensors when several layers carry a bottleneck.
        logits: The model's logits for the unrestricted input ``(K,)``.
        meta: JSON-serialisable provenance (model, layer, settings, statistics source, ...).
        arrays: Further named arrays saved alongside (e.g. the crop box).
    """

    values: torch.Tensor
    unit: str
    target: int
    capacity: torch.Tensor | list[torch.Tensor] | None = None
    logits: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def bits(self) -> torch.Tensor:
        """The map in bits per input cell (only for information methods)."""
        if self.unit != "bits":
            raise ValueError(f"this attribution is in '{self.unit}', not bits")
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

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write an ``.npz`` file atomically: float32 ``values``, ``capacity``, ``logits``, ``meta`` (JSON)."""
        from .io.atomic import atomic_write

        with atomic_write(path) as tmp, open(tmp, "wb") as fh:
            self.write_npz(fh)

    def write_npz(self, fh: BinaryIO) -> None:
        """Write the ``.npz`` content to an open binary file (see :meth:`save` for the atomic form)."""
        np.savez_compressed(fh, **self._payload())  # type: ignore[arg-type]

    def _payload(self) -> dict[str, np.ndarray]:
        payload: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT),
            "values": self.values.detach().cpu().numpy().astype(np.float32),
            "unit": np.array(self.unit),
            "target": np.array(self.target, dtype=np.int64),
            "meta": np.array(json.dumps(self.meta, sort_keys=True)),
        }
        if self.unit == "bits":
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
        """Read a file written by :meth:`save`."""
        p = os.fspath(path)
        try:
            with np.load(p, allow_pickle=False) as data:
                d = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise UserInputError(f"cannot read attribution file '{p}' ({exc}); give an .npz written by video-iba") from exc
        if str(d.get("format", "")) != _FORMAT:
            raise UserInputError(f"'{p}' is not a video-iba attribution file")
        per_layer = sorted((k for k in d if k.startswith("capacity_")), key=lambda k: int(k.split("_")[1]))
        known = {"format", "values", "bits", "unit", "target", "meta", "capacity", "logits", *per_layer}
        capacity: torch.Tensor | list[torch.Tensor] | None = None
        if "capacity" in d:
            capacity = torch.from_numpy(d["capacity"])
        elif per_layer:
            capacity = [torch.from_numpy(d[k]) for k in per_layer]
        return cls(
            values=torch.from_numpy(d["values"]),
            unit=str(d["unit"]),
            target=int(d["target"]),
            capacity=capacity,
            logits=torch.from_numpy(d["logits"]) if "logits" in d else None,
            meta=json.loads(str(d["meta"])),
            arrays={k: v for k, v in d.items() if k not in known},
        )
