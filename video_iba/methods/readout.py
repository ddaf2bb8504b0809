"""The readout bottleneck (Schulz et al., ICLR 2020, Sec. 3.3): one network predicts the mask.

Per-sample IBA optimises a mask for every input (100 network passes). The readout bottleneck
learns, on a dataset, to predict the mask parameters ``alpha`` from what the network itself
computes for an input: feature maps of several depths ("readouts") and the logits, each
normalised, resized to the bottleneck's grid and concatenated, then mapped by 1x1 (images) or
1x1x1 (clips) convolutions ``F -> F/2 -> ReLU -> 2C -> ReLU -> C``. Explaining an input then
costs one forward pass of the network (it yields readouts, logits and the bottleneck's input at
once) and of this small network.

Choices fixed here:

* Readouts are normalised per channel with means and standard deviations estimated over the
  training data (pooled over positions); the logits are standardised per input over the classes
  (their ranking, which names the explained class, is kept), and enter as constant maps.
* The last convolution starts at zero weights with a bias giving ``alpha = 5`` (``lambda =
  0.993``: almost everything passes, as per-sample IBA starts) for every input. ``alpha`` is
  bounded softly, ``alpha = B * tanh(z / B)`` with ``B = 6``, so it stays within about
  [-6, 6] (``lambda`` in [0.0025, 0.9975]) while the gradient at the start is
  ``1 - (5/6)^2 = 0.31`` of the unbounded one: a hard clamp at the initial value would pass no
  gradient at all.
* The last convolution sees its inputs centred over the positions of each input, so the mask's
  level is set by the bias alone and its pattern by the features. The information term pushes
  every position the same way; with the last layer's inputs non-negative after the ReLU, it
  would otherwise drive all of that layer's weights towards closing the mask everywhere at once,
  a trivial optimum with chance-level cross-entropy that training does not leave (the runs that
  showed it are in docs/readout-and-scale-out.md).
* SlowFast (several bottlenecks): one head per bottleneck, each fed with all readouts resized to
  its own grid; the information term is the mean over the elements of all bottlenecks.
* The mask is smoothed like the per-sample one (sigma 1 cell, temporal sigma 1 frame); the map
  is the capacity in bits, channel-summed and resized with its total preserved.
* Training loss per input: ``CE(target) + beta * mean(capacity)`` with the bottleneck's noise
  drawn from dataset statistics; the target of each input is its label where the dataset has
  labels, else the model's top-1 class, gathered per input.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._version import __version__
from ..bottleneck.estimator import Statistics
from ..bottleneck.functional import capacity, restrict, smooth, working_dtype
from ..bottleneck.insertion import HookedForward, Taps, capture_taps, frozen, get_module
from ..bottleneck.per_sample import smoothing_sigmas
from ..config import IBAConfig
from ..errors import UserInputError
from ..files import load_payload, save_payload
from ..models.layers import cam_layer_of
from ..models.layouts import TokenLayout, layouts_for
from ..models.pathways import Pack, input_packer, packed
from ..models.registry import weights_digest
from ..results import Attribution, Unit
from ..seeding import seeded
from .common import bits_map, check_input, check_target, layer_names, split_capacities, target_label
from .iba import estimate, part_statistics

log = logging.getLogger(__name__)

#: Token layouts of a readout's layers: one for every layer, one per layer name, a function of a
#: layer's name (``ModelSpec.layout``), or ``None`` (the model's registry spec).
Layouts = TokenLayout | Mapping[str, TokenLayout] | Callable[[str], "TokenLayout | None"] | None

ALPHA_BOUND = 6.0
CHECKPOINT_FORMAT = "video-iba-readout-1"


class ReadoutHead(nn.Module):
    """``F -> F/2 -> ReLU -> 2C -> ReLU -> C`` pointwise convolutions, output ``alpha`` bounded softly.

    With ``prefix`` class tokens (a transformer layer), their ``alpha`` ``(N, C, P)`` is the grid's
    level (its unbounded output averaged over the grid, i.e. the last convolution's bias, as that
    convolution sees centred inputs) plus a learned offset per (channel, token), bounded the same
    way: a learned constant, like the grid's level; the pattern, which the class tokens do not
    have, is where inputs differ.
    """

    def __init__(self, features: int, channels: int, dims: int, alpha_init: float = 5.0,
                 bound: float = ALPHA_BOUND, prefix: int = 0) -> None:
        super().__init__()
        if not abs(alpha_init) < bound:
            raise UserInputError(f"alpha_init must lie inside (-{bound}, {bound}), got {alpha_init}")
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        hidden = max(1, features // 2)
        self.net = nn.Sequential(conv(features, hidden, 1), nn.ReLU(), conv(hidden, 2 * channels, 1), nn.ReLU(),
                                 conv(2 * channels, channels, 1))
        self.bound = float(bound)
        last = self.net[-1]
        assert isinstance(last, (nn.Conv2d, nn.Conv3d)) and last.bias is not None
        nn.init.zeros_(last.weight)
        nn.init.constant_(last.bias, bound * math.atanh(alpha_init / bound))
        self.prefix_offset = nn.Parameter(torch.zeros(channels, prefix)) if prefix else None

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``alpha`` from the concatenated inputs ``(N, F, *grid)``."""
        return self._bounded(self._tail(self.net[0](feats)))

    def alphas(self, parts: Sequence[torch.Tensor], z: torch.Tensor, grid: Sequence[int]) -> list[torch.Tensor]:
        """``[grid alpha (N, C, *grid)]``, then the class tokens' ``(N, C, P)`` where the layer has any."""
        out = self._tail(self._first(parts, z, grid))
        alphas = [self._bounded(out)]
        if self.prefix_offset is not None:
            pooled = out.mean(dim=tuple(range(2, out.dim())))
            alphas.append(self._bounded(pooled[:, :, None] + self.prefix_offset))
        return alphas

    def _first(self, parts: Sequence[torch.Tensor], z: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        """The first pointwise convolution of :meth:`forward` on ``cat([resize(p, grid) for p in parts] +
        [z as constant maps])``, computed without forming that tensor: the convolution is linear, so
        it is applied to each part at its own resolution before resizing (resizing is linear and per
        channel, so the two commute), and to the logits once per input."""
        first = self.net[0]
        assert isinstance(first, (nn.Conv2d, nn.Conv3d)) and first.bias is not None
        w = first.weight.flatten(1)  # (hidden, F)
        conv = F.conv2d if len(grid) == 2 else F.conv3d
        acc: torch.Tensor | None = None
        offset = 0
        for p in parts:
            c = p.shape[1]
            y = conv(p, w[:, offset:offset + c].reshape(w.shape[0], c, *[1] * len(grid)))
            if tuple(y.shape[2:]) != tuple(grid):
                y = F.interpolate(y, size=tuple(grid), mode="bilinear" if len(grid) == 2 else "trilinear",
                                  align_corners=False)
            acc = y if acc is None else acc + y
            offset += c
        const = z @ w[:, offset:].T + first.bias  # (N, hidden): the logits' share, the same at every position
        const = const.reshape(*const.shape, *[1] * len(grid))
        return const.expand(-1, -1, *grid) if acc is None else acc + const

    def _bounded(self, out: torch.Tensor) -> torch.Tensor:
        return self.bound * torch.tanh(out / self.bound)

    def _tail(self, h: torch.Tensor) -> torch.Tensor:
        """ReLU, the middle convolution, ReLU, then the last convolution on inputs centred over the
        positions of each input: the mask's pattern comes from the features, its level from the bias
        alone (see the module text)."""
        h = self.net[3](self.net[2](self.net[1](h)))
        h = h - h.mean(dim=tuple(range(2, h.dim())), keepdim=True)
        return self.net[4](h)  # type: ignore[no-any-return]


@dataclass
class ReadoutSpec:
    """Where the readout bottleneck sits and what it reads.

    Attributes:
        layers: Bottleneck layers (SlowFast: one per pathway).
        readouts: Layers whose outputs feed the readout network (the logits are always added).
        channels: Channels of each bottleneck layer's output.
        readout_channels: Channels of each readout's output.
        classes: Number of logits.
        dims: 2 (images) or 3 (clips and token grids).
        tokens: Token layout (as :meth:`TokenLayout.to_dict`) of each bottleneck or readout layer
            that has one; the others are feature maps.
        prefixes: Class tokens of each bottleneck layer (empty: none).
    """

    layers: list[str]
    readouts: list[str]
    channels: list[int]
    readout_channels: list[int]
    classes: int
    dims: int
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    prefixes: list[int] = field(default_factory=list)

    def layouts(self, names: Sequence[str]) -> list[TokenLayout | None]:
        return [TokenLayout.from_dict(self.tokens[n]) if n in self.tokens else None for n in names]

    def prefix_of(self, i: int) -> int:
        return self.prefixes[i] if self.prefixes else 0


class Readout(nn.Module):
    """The trained readout: heads, readout normalisation and the bottleneck's statistics."""

    def __init__(self, spec: ReadoutSpec, stats: Sequence[Statistics], norms: Sequence[Statistics],
                 config: IBAConfig | None = None) -> None:
        super().__init__()
        if len(stats) != len(spec.layers) or len(norms) != len(spec.readouts):
            raise ValueError("need one statistics object per bottleneck and one normalisation per readout")
        self.spec = spec
        self.config = config or IBAConfig()
        features = sum(spec.readout_channels) + spec.classes
        self.heads = nn.ModuleList([ReadoutHead(features, c, spec.dims, self.config.alpha_init, prefix=spec.prefix_of(i))
                                    for i, c in enumerate(spec.channels)])
        #: Per bottleneck tensor (a layer's map, then its class tokens): whether it is a map.
        self.is_map = [j == 0 for i in range(len(spec.layers)) for j in range(1 + (spec.prefix_of(i) > 0))]
        self.stats = [s.to("cpu") for s in stats]
        self.norms = [n.to("cpu") for n in norms]
        #: Digest of the weights of the network it was trained with (``weights_digest``; ``None``: not recorded).
        self.weights: str | None = None
        #: The sampling rate of the video clips it was trained on (``None``: not recorded, or photos).
        self.sampling_rate: int | None = None
        #: The frames of the video clips it was trained on (``None``: not recorded, or photos).
        self.frames: int | None = None

    def check_weights(self, model: nn.Module, name: str) -> None:
        """Refuse a network with other weights than those the readout was trained with: its heads
        learnt that network's features and logits, and on another one draw meaningless masks."""
        if self.weights is None:
            return
        digest = weights_digest(model)
        if digest != self.weights:
            raise UserInputError(f"the readout was trained with other weights of {name} (digest {self.weights}, this "
                                 f"model's {digest}); explain with the weights it was trained with (--weights), or "
                                 f"train a readout for these")

    def to_device(self, device: torch.device | str) -> "Readout":
        self.to(device)
        self.stats = [s.to(device) for s in self.stats]
        self.norms = [n.to(device) for n in self.norms]
        return self

    def forward(self, feats: Sequence[torch.Tensor], logits: torch.Tensor,
                grids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        return self.alphas(feats, logits, grids)

    def alphas(self, feats: Sequence[torch.Tensor], logits: torch.Tensor,
               grids: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """``alpha`` per bottleneck tensor, ``(N, C_i, *grid_i)`` (and ``(N, C_i, P_i)`` after a
        layer with class tokens), from readouts ``(N, C_j, *S_j)`` and logits ``(N, K)``."""
        dtype = working_dtype(logits.dtype)  # a half-precision network's outputs: the heads work in float32
        logits, feats = logits.to(dtype), [f.to(working_dtype(f.dtype)) for f in feats]
        z = (logits - logits.mean(1, keepdim=True)) / logits.std(1, keepdim=True).clamp(min=1e-6)
        normed = [(f - n.mean.reshape(1, -1, *[1] * (f.dim() - 2))) / n.std.reshape(1, -1, *[1] * (f.dim() - 2))
                  for f, n in zip(feats, self.norms)]
        heads: list[ReadoutHead] = list(self.heads)  # type: ignore[arg-type]
        return [a for head, grid in zip(heads, grids) for a in head.alphas(normed, z, tuple(int(g) for g in grid))]

    def masks(self, alphas: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The masks ``lambda`` of the predicted ``alpha``; maps smoothed as the per-sample bottleneck
        smooths its own, class tokens not."""
        return [smooth(torch.sigmoid(a), smoothing_sigmas(a.dim() - 2, self.config)) if is_map else torch.sigmoid(a)
                for a, is_map in zip(alphas, self.is_map)]

    def part_stats(self, parts: Sequence[torch.Tensor]) -> list[Statistics]:
        """The statistics of every bottleneck tensor (class tokens: their own, else the map's per channel)."""
        groups, i = [], 0
        for k in range(len(self.spec.layers)):
            n = 1 + (self.spec.prefix_of(k) > 0)
            groups.append(list(parts[i:i + n]))
            i += n
        return part_statistics(self.spec.layers, groups, self.stats, self.config.min_std,
                               self.spec.layouts(self.spec.layers))

    def capacities(self, rs: Sequence[torch.Tensor], lams: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Information per element (nats) of each bottleneck tensor ``rs`` under the masks ``lams``."""
        return [capacity((r - st.mean) / st.std, lam, st.active) for r, lam, st in zip(rs, lams, self.part_stats(rs))]


def default_readouts(model: nn.Module, layers: Sequence[str], x: torch.Tensor, pack: Pack | None = None) -> list[str]:
    """The bottleneck layers themselves and, for single-input models, Grad-CAM's layer (the
    registry's for transformers, else the last spatial feature map); multi-pathway models read
    their bottleneck layers unless told more."""
    out = list(layers)
    if input_packer(model, pack) is None:
        last = getattr(getattr(model, "video_iba_spec", None), "cam_layer", None)
        try:
            last = last or cam_layer_of(model, x)
        except UserInputError:
            last = None
        if last and last not in out:
            out.append(last)
    return out


def new_readout(model: nn.Module, probe: torch.Tensor, batches: Callable[[], Iterable[torch.Tensor]], *,
                layers: Sequence[str], readouts: Sequence[str] | None = None,
                stats: Sequence[Statistics] | None = None, config: IBAConfig | None = None,
                pack: Pack | None = None, tokens: Layouts = None,
                seed: int = 0) -> Readout:
    """An untrained readout for ``model``: the bottleneck's statistics (given, or estimated on the
    data) and the readouts' per-channel normalisation (estimated on the data, in the same pass).

    Args:
        model: The network (left as it was).
        probe: One batch of inputs, to find the layers' shapes.
        batches: Returns a fresh iterable of input batches (images or clips) to estimate on; under
            torchrun every rank gives its own share.
        layers, readouts: Bottleneck layers and the layers the readout reads (default:
            :func:`default_readouts`).
        stats: The bottleneck layers' statistics, one per layer; ``None`` estimates them.
        config: Bottleneck settings (beta, smoothing, ``alpha_init``).
        pack: For a multi-pathway network (registry models: automatic).
        tokens: Token layouts of transformer layers: one for every layer, one per layer name, or a
            function of a layer's name giving its layout or ``None`` (a spec's ``layout``, for the
            layers the readout turns out to read; registry models: their own). A readout reads a
            token layer's grid; a bottleneck restricts its class tokens too (see :class:`ReadoutHead`).
        seed: Seed of the heads' initial weights (the caller's random state is left alone).
    """
    layers = layer_names(model, layers)  # distinct
    reads = list(readouts) if readouts else default_readouts(model, layers, probe, pack)
    names = list(dict.fromkeys([*layers, *reads]))
    lays = _layouts(model, names, tokens)
    with frozen(model):
        logits, taps = capture_taps(model, [get_module(model, n) for n in names], names,
                                    packed(probe, input_packer(model, pack)), lays)
    by_name = {n: g[0] for n, g in zip(names, taps.grouped(taps.parts))}
    dims = by_name[names[0]].dim() - 2
    if any(o.dim() - 2 != dims for o in by_name.values()):
        raise UserInputError("the bottleneck and readout layers must all be image maps or all clip maps (token "
                             "grids count as clip maps)")
    spatial = tuple(range(1, dims + 1))  # readouts: one mean and std per channel
    lay_of = dict(zip(names, lays))
    if stats is None:  # bottleneck statistics and readout normalisation from one pass over the data
        both = estimate(model, batches(), layer=[*layers, *reads], pools=[None] * len(layers) + [spatial] * len(reads),
                        pack=pack, tokens=[lay_of[n] for n in [*layers, *reads]])
        stats, norms = list(both[:len(layers)]), list(both[len(layers):])
    else:
        norms = list(estimate(model, batches(), layer=reads, pool=spatial, pack=pack, tokens=[lay_of[n] for n in reads]))
    prefixes = [lay_of[n].prefix if lay_of[n] is not None else 0 for n in layers]  # type: ignore[union-attr]
    spec = ReadoutSpec(list(layers), reads, [int(by_name[n].shape[1]) for n in layers],
                       [int(by_name[n].shape[1]) for n in reads], int(logits.shape[1]), dims,
                       {n: lay.to_dict() for n, lay in lay_of.items() if lay is not None},
                       prefixes if any(prefixes) else [])
    with seeded(seed):
        readout = Readout(spec, stats, norms, config)
    return readout.to_device(probe.device)


def _layouts(model: nn.Module, names: Sequence[str],
             tokens: Layouts) -> list[TokenLayout | None]:
    if isinstance(tokens, Mapping):
        unknown = sorted(set(tokens) - set(names))
        if unknown:
            raise UserInputError(f"token layouts for {unknown}, which the readout neither restricts nor reads; "
                                 f"give layouts for {list(names)}")
        return [tokens.get(n) for n in names]
    if callable(tokens):
        return [tokens(n) for n in names]
    return layouts_for(model, names, tokens)


def _names_and_modules(model: nn.Module, readout: Readout) -> tuple[list[str], list[nn.Module]]:
    names = list(dict.fromkeys([*readout.spec.layers, *readout.spec.readouts]))
    return names, [get_module(model, n) for n in names]


def readout_forward(model: nn.Module, readout: Readout, inputs: Any) -> tuple[torch.Tensor, Taps, list[torch.Tensor]]:
    """One forward pass of ``model`` on its network input (no gradients): logits, the bottleneck
    layers' tensors (maps and class tokens, with what puts them back) and the readouts' maps."""
    names, modules = _names_and_modules(model, readout)
    logits, taps = capture_taps(model, modules, names, inputs, readout.spec.layouts(names))
    groups = taps.grouped(taps.parts)
    k = len(readout.spec.layers)
    bottleneck = Taps([p for g in groups[:k] for p in g], names[:k], taps.adapters[:k], taps.contexts[:k],
                      taps.counts[:k])
    by_name = {n: g[0] for n, g in zip(names, groups)}
    return logits, bottleneck, [by_name[n] for n in readout.spec.readouts]


def readout_terms(model: nn.Module, readout: Readout, x: torch.Tensor, labels: torch.Tensor | None,
                  generator: torch.Generator | None = None, net: nn.Module | None = None,
                  pack: Pack | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per input of the batch ``x``: cross-entropy of the noisy pass, information (mean capacity, nats
    per element), the noisy logits and the target (the label, else the model's top-1)."""
    inputs = packed(x, input_packer(model, pack))
    logits, taps, feats = readout_forward(model, readout, inputs)
    target = labels.to(logits.device) if labels is not None else logits.argmax(1)
    if target.shape != (logits.shape[0],):
        raise UserInputError(f"need one label per input, got {tuple(target.shape)} for {logits.shape[0]} inputs")
    rs = taps.parts
    alphas = (net or readout)(feats, logits, [g[0].shape[2:] for g in taps.grouped(rs)])
    lams = readout.masks(alphas)
    caps = readout.capacities(rs, lams)
    info = torch.stack([c.flatten(1).sum(1) for c in caps]).sum(0) / sum(c[0].numel() for c in caps)
    zs = []
    for r, lam, st in zip(rs, lams, readout.part_stats(rs)):
        noise = torch.randn(r.shape, generator=generator, device=r.device, dtype=working_dtype(r.dtype))
        zs.append(restrict(r, lam, st.mean, st.std, noise, st.active).to(r.dtype))  # back to the network's type
    modules = [get_module(model, n) for n in readout.spec.layers]
    with HookedForward(model, modules, inputs, taps=taps) as hooked:
        noisy = hooked(zs)
    ce = F.cross_entropy(noisy.float(), target, reduction="none")
    return ce, info, noisy, target


def readout_loss(model: nn.Module, readout: Readout, x: torch.Tensor, labels: torch.Tensor | None,
                 generator: torch.Generator | None = None, net: nn.Module | None = None,
                 pack: Pack | None = None) -> tuple[torch.Tensor, float, float]:
    """The training loss of a batch: ``CE + beta * mean(capacity)``; returns (loss, ce, info in nats).

    ``net`` computes the alphas (the readout wrapped in DistributedDataParallel when distributed);
    default: ``readout`` itself. The target of each input is its label, else the model's top-1.
    """
    ce, info, _, _ = readout_terms(model, readout, x, labels, generator, net, pack)
    loss = (ce + readout.config.beta * info).mean()
    return loss, float(ce.mean().detach()), float(info.mean().detach())


def explain_readout(model: nn.Module, readout: Readout, x: torch.Tensor, target: int | str | None = None, *,
                    pack: Pack | None = None) -> Attribution:
    """Explain one input with a trained readout: one forward pass of the model and of the readout.

    ``x`` is one preprocessed input ``(1, C, H, W)`` or clip ``(1, C, T, H, W)`` (a multi-pathway
    network builds its pathways with ``pack``; registry models: automatic). The readout reads the
    logits, so its mask is the one for what the model predicts; a ``target`` other than the top-1
    class is recorded (``meta["target_is_top1"] = False``) with a warning, and the map is the same.
    """
    x, _, inputs = check_input(model, x, pack)
    t0 = time.perf_counter()
    with frozen(model), frozen(readout), torch.no_grad():
        logits, taps, feats = readout_forward(model, readout, inputs)
        rs = [g[0] for g in taps.grouped(taps.parts)]
        top = int(logits[0].argmax())
        explained = check_target(target, logits, model)
        if explained != top:
            log.warning("the readout predicts its mask from the logits, i.e. for the top-1 class %d, not for class "
                        "%d; use the per-sample bottleneck (method iba) for a map of another class", top, explained)
        if [tuple(r.shape[1:]) for r in rs] != [tuple(s) for s in _feature_shapes(readout)]:
            raise UserInputError(f"the readout was trained for feature maps {_feature_shapes(readout)}, this input "
                                 f"gives {[tuple(r.shape[1:]) for r in rs]}; use inputs of the training size")
        lams = readout.masks(readout.alphas(feats, logits, [r.shape[2:] for r in rs]))
        cap_groups = taps.grouped([c[0] for c in readout.capacities(taps.parts, lams)])
    caps, prefix_bits = split_capacities(cap_groups, x.dim() == 4, readout.spec.layouts(readout.spec.layers))
    bits = bits_map(caps, tuple(x.shape[2:]))
    single = len(caps) == 1
    meta = {"method": "iba_readout", "layer": readout.spec.layers[0] if single else readout.spec.layers,
            "readouts": readout.spec.readouts, "target": explained, "target_is_top1": explained == top,
            "beta": readout.config.beta,
            "total_bits": float(bits.double().sum()), "seconds": round(time.perf_counter() - t0, 4),
            **({"prefix_bits": float(sum(float(p.double().sum()) for p in prefix_bits))} if prefix_bits else {}),
            "version": __version__, **target_label(model, explained)}
    return Attribution(values=bits.cpu(), unit=Unit.BITS, target=explained,
                       capacity=caps[0].cpu() if single else [c.cpu() for c in caps],
                       logits=logits[0].float().cpu(), meta=meta,
                       arrays={"prefix_bits": torch.cat(prefix_bits).numpy()} if prefix_bits else {})


def _feature_shapes(readout: Readout) -> list[tuple[int, ...]]:
    return [tuple(int(v) for v in s.meta["feature_shape"]) for s in readout.stats]


# ---------------------------------------------------------------- checkpoints

def save_checkpoint(path: str, readout: Readout, *, model_name: str | None, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, log: Sequence[dict[str, Any]] = (),
                    extra: dict[str, Any] | None = None) -> None:
    """Write the readout (and the training state, to resume) atomically."""
    spec = readout.spec
    save_payload(path, {
        "format": CHECKPOINT_FORMAT, "version": __version__, "model": model_name, "epoch": int(epoch),
        "spec": {"layers": spec.layers, "readouts": spec.readouts, "channels": spec.channels,
                 "readout_channels": spec.readout_channels, "classes": spec.classes, "dims": spec.dims,
                 "tokens": spec.tokens, "prefixes": spec.prefixes},
        "config": {"beta": readout.config.beta, "sigma": readout.config.sigma,
                   "temporal_sigma": readout.config.temporal_sigma, "alpha_init": readout.config.alpha_init,
                   "min_std": readout.config.min_std},
        "heads": {k: v.cpu() for k, v in readout.heads.state_dict().items()},
        "stats": [s.to_dict() for s in readout.stats], "norms": [n.to_dict() for n in readout.norms],
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "log": list(log), "extra": dict(extra or {}),
    })


def load_checkpoint(path: str, device: torch.device | str = "cpu") -> tuple[Readout, dict[str, Any]]:
    """Read a checkpoint of :func:`save_checkpoint`; returns the readout and the raw payload."""
    payload = load_payload(path, CHECKPOINT_FORMAT, "readout checkpoint", "train one with `video-iba train-readout`")
    try:
        spec = ReadoutSpec(**payload["spec"])
        readout = Readout(spec, [Statistics.from_dict(d) for d in payload["stats"]],
                          [Statistics.from_dict(d) for d in payload["norms"]],
                          IBAConfig().replace(**payload["config"]))
        readout.heads.load_state_dict(payload["heads"])
        extra = dict(payload.get("extra") or {})
        readout.weights = str(extra["weights"]) if extra.get("weights") is not None else None
        readout.sampling_rate = int(extra["sampling_rate"]) if extra.get("sampling_rate") is not None else None
        readout.frames = int(extra["frames"]) if extra.get("frames") is not None else None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserInputError(f"'{path}' is a damaged readout checkpoint ({type(exc).__name__}); train it again with "
                             f"`video-iba train-readout`") from exc
    return readout.to_device(device), payload


def load_readout(path: str | None, model_name: str | nn.Module, device: torch.device | str = "cpu") -> Readout:
    """The readout of the checkpoint ``path`` for the model ``model_name`` (a registry name, the
    name in a spec of one's own, or a model carrying its spec, such as one of
    :func:`~video_iba.models.registry.load_model`), refused when it was trained for another model
    or, given the model itself, with other weights."""
    if not path:
        raise UserInputError("the readout method needs a trained readout: give {readout} a checkpoint of "
                             "`video-iba train-readout`", options=["readout"])
    model = None
    if isinstance(model_name, nn.Module):
        model, spec = model_name, getattr(model_name, "video_iba_spec", None)
        if spec is None:
            raise UserInputError(f"load_readout takes the name of the model the readout was trained for (a registry "
                                 f"name, or its spec's name); this {type(model_name).__name__} carries no spec")
        model_name = spec.name
    elif not isinstance(model_name, str):
        raise UserInputError(f"load_readout takes the model's name, got {type(model_name).__name__}")
    readout, payload = load_checkpoint(path, device)
    if payload.get("model") not in (None, model_name):
        raise UserInputError(f"the readout '{path}' was trained for {payload.get('model')}, not {model_name}; "
                             f"explain with that model, or train a readout for {model_name}")
    if model is not None:
        readout.check_weights(model, model_name)
    return readout


__all__ = ["load_readout", "Readout", "ReadoutHead", "ReadoutSpec", "readout_loss", "readout_terms", "explain_readout",
           "default_readouts", "new_readout", "save_checkpoint", "load_checkpoint", "ALPHA_BOUND"]
