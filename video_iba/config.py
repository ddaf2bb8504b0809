"""Settings shared by the Python API and the command line, loadable from plain YAML files."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

from .errors import UserInputError, did_you_mean


@dataclass(frozen=True)
class IBAConfig:
    """Per-sample bottleneck settings. The defaults are those of Schulz et al. (ICLR 2020).

    Attributes:
        beta: Weight of the information term; the loss is ``CE + beta * mean(capacity)``, the
            mean running over all feature elements (the paper's ``beta / k``).
        steps: Optimisation steps. As in the reference code, the map is the information of the
            mask each step's loss is computed with, i.e. after ``steps - 1`` Adam updates (the
            last update would change nothing the map shows, so it is skipped); ``1`` gives the
            initial mask's information, the same for every class.
        samples: Noisy replicas of the input per step (the paper's batch size).
        lr: Adam learning rate.
        alpha_init: Initial mask parameter (``sigmoid(5) = 0.993``: almost everything passes).
        sigma: Gaussian smoothing of the mask over space, in feature cells (0: none).
        temporal_sigma: Gaussian smoothing over time for spatiotemporal maps, in feature frames.
            The default, 1, carries the paper's spatial choice over to time: one feature cell
            (frame) is also about the resolution a 3-D network's features have in time, since
            neighbouring feature frames see heavily overlapping input frames (3-tap temporal
            kernels stacked over many blocks); smoothing at that scale removes frame-to-frame
            flicker of single-frame mask values without merging events a few feature frames
            apart. On maps of 1-2 frames (r3d_18 ``layer4``) the kernel is truncated to the
            available frames and renormalised (two frames are mixed 1 : 0.61).
        min_std: Lower bound of the per-neuron standard deviation.
        micro_batch: Replicas per forward pass (``None``: all at once); lowers peak memory,
            same result.
        inputs_per_pass: When several inputs are fitted together, how many of them share one
            network pass (``None``: all); the result is the same. On a CPU the memory-bound
            networks (X3D's depthwise convolutions) run slower per replica in larger passes.
    """

    beta: float = 10.0
    steps: int = 10
    samples: int = 10
    lr: float = 1.0
    alpha_init: float = 5.0
    sigma: float = 1.0
    temporal_sigma: float = 1.0
    min_std: float = 0.01
    micro_batch: int | None = None
    inputs_per_pass: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> UserInputError:
            return UserInputError(f"{{{name}}} must be {rule}, got {_shown(getattr(self, name))}; give a valid value",
                                  options=[name])

        for name in ("beta", "lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0:
                raise bad(name, "a finite number > 0")
        for name in ("steps", "samples"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise bad(name, "an integer > 0")
        for name in ("micro_batch", "inputs_per_pass"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
                raise bad(name, "an integer > 0")
        for name in ("sigma", "temporal_sigma", "min_std", "alpha_init"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise bad(name, "a finite number")
        for name in ("sigma", "temporal_sigma"):
            if getattr(self, name) < 0:
                raise bad(name, ">= 0")
        if self.min_std <= 0:
            raise bad("min_std", "> 0")

    @classmethod
    def for_transformers(cls) -> "IBAConfig":
        """The settings registry transformers use by default (:data:`TRANSFORMER_SETTINGS`)."""
        return cls(**TRANSFORMER_SETTINGS)

    def replace(self, **changes: Any) -> "IBAConfig":
        """Copy with the given fields changed; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], where: str = "config") -> "IBAConfig":
        """Settings from a mapping (missing keys keep their defaults); errors name ``where``."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise UserInputError(f"{where}: unknown setting '{str(key)[:60]}'{did_you_mean(str(key), names)}; "
                                     f"known: {', '.join(names)}")
        try:
            return cls(**dict(data))
        except UserInputError as exc:
            raise UserInputError(f"{where}: {exc.template}", options=exc.options) from None

    def changed(self, changes: Mapping[str, Any], where: str = "config") -> "IBAConfig":
        """These settings with ``changes`` applied, names and values checked (errors name ``where``);
        unlike :meth:`replace`, a ``None`` is a value (``micro_batch: null``)."""
        if not changes:
            return self
        return IBAConfig.from_mapping({**dataclasses.asdict(self), **changes}, where=where)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> "IBAConfig":
        """Read settings from a YAML mapping; missing keys keep their defaults."""
        return cls(**read_settings(path))


#: Where video transformers depart from the paper's settings: beta 1 and masks that start half open
#: (``sigmoid(0) = 0.5``). Measured on the synthetic benchmark's video transformer, bottleneck on the
#: tubelet embedding, 10 steps: the share of the bits in the decisive frames rose from 0.61 (paper)
#: to 0.75, at the same cost (docs/transformers.md). Registry transformers use these by default.
TRANSFORMER_SETTINGS: Mapping[str, float] = MappingProxyType({"beta": 1.0, "alpha_init": 0.0})


def read_settings(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a YAML file sets (a mapping of :class:`IBAConfig` fields), checked."""
    import yaml

    p = os.fspath(path)

    class Loader(yaml.SafeLoader):
        """YAML as people write settings: ``1e-3`` is a number (YAML 1.1 reads it as a string), and
        a key set twice is refused (YAML keeps the last without a word)."""

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
            twice = next((i for i, k in enumerate(keys) if k in keys[:i]), None)
            if twice is not None:
                line = node.value[twice][0].start_mark.line + 1
                raise UserInputError(f"config file '{p}' sets '{keys[twice]}' twice (again on line {line}); keep one")
            return super().construct_mapping(node, deep)

    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9]+(\.[0-9]*)?[eE][-+]?[0-9]+$"),
                                 list("-+0123456789"))
    try:
        with open(p, encoding="utf-8") as fh:
            data = yaml.load(fh, Loader=Loader)  # a SafeLoader: plain data only
    except FileNotFoundError as exc:
        raise UserInputError(f"config file '{p}' does not exist; check the path") from exc
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserInputError(f"cannot read config file '{p}' ({exc.__class__.__name__}); give UTF-8 YAML") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserInputError(f"config file '{p}' must hold a mapping of settings, not {type(data).__name__}")
    IBAConfig.from_mapping(data, where=p)
    return dict(data)


def _shown(value: Any, limit: int = 60) -> str:
    """A short, safe rendering of a value for a message: never a huge or deeply nested repr."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        text = repr(value)
        return text if len(text) <= limit else text[:limit] + "..."
    return f"a {type(value).__name__}"
