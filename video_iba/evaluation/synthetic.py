"""A video benchmark with known ground truth: where *and* when the class is decided.

Every clip (``T = 16`` frames of ``64 x 64``, 3 channels, already in normalised units) shows a
textured background, one **target** object (a bright yellow square) and two **distractors**
(cyan and magenta squares). The target sits still except during a **discriminative interval**
at a random time, when it makes ``MOVE_FRAMES`` steps of ``SPEED`` pixels in one of four
directions (the interval holds the ``MOVE_FRAMES + 1`` frames from its start position to its end
position); the direction is the class (0 right, 1 left, 2 down, 3 up). The distractors
move all the time, in random directions unrelated to the class, so neither "something moves"
nor "a square is there" decides it: only the target's motion, in its tube.

Ground truth per clip: the target's box in every frame of the interval (NaN in the other
frames), the interval ``[t0, t1)``, and the class. Clips are generated from a seed alone, so a
benchmark is reproducible without storing videos.

The fixed parameters below define the benchmark; change them and results are no longer
comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..methods.readout import Readout, load_checkpoint
from ..models.layouts import TokenLayout
from .metrics import box_mask

FRAMES = 16
SIZE = 64
OBJECT = 6
#: TubeViT's tubelet (frames, pixels, pixels) and the layout of its blocks' tokens.
TUBELET = (2, 8, 8)
TUBEVIT_LAYOUT = TokenLayout(grid=(FRAMES // TUBELET[0], SIZE // TUBELET[1], SIZE // TUBELET[2]), prefix=1)
MOVE_FRAMES = 5
SPEED = 3
CLASSES = ("right", "left", "down", "up")
_DIRS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) per class
TARGET_COLOUR = (1.8, 1.6, -0.6)
DISTRACTOR_COLOURS = ((-0.8, 1.4, 1.6), (1.6, -0.8, 1.5))


@dataclass
class Clip:
    """One benchmark clip with its ground truth.

    Attributes:
        x: ``(3, T, H, W)`` float32 input (normalised units).
        label: Class index (direction of the target's motion).
        boxes: ``(T, 4)`` target box ``(x0, y0, x1, y1)`` per frame inside the interval, NaN outside.
        interval: Discriminative frames ``[t0, t1)``.
    """

    x: np.ndarray
    label: int
    boxes: np.ndarray
    interval: tuple[int, int]

    def tube(self) -> np.ndarray:
        """Boolean ``(T, H, W)`` mask of the target inside the interval."""
        return box_mask((FRAMES, SIZE, SIZE), self.boxes)


def _square(img: np.ndarray, y: int, x: int, colour: tuple[float, float, float]) -> None:
    for c in range(3):
        img[c, y:y + OBJECT, x:x + OBJECT] = colour[c]


def make_clip(seed: int) -> Clip:
    """The clip of a given seed (deterministic across platforms: NumPy's PCG64)."""
    rng = np.random.default_rng(seed)
    label = int(rng.integers(len(CLASSES)))
    dy, dx = _DIRS[label]
    t0 = int(rng.integers(1, FRAMES - MOVE_FRAMES))  # moving frames t0+1 .. t0+MOVE_FRAMES, all inside the clip
    travel = SPEED * MOVE_FRAMES
    # start so that the whole path stays inside the frame
    lo_y, hi_y = (travel, SIZE - OBJECT) if dy < 0 else (0, SIZE - OBJECT - travel) if dy > 0 else (0, SIZE - OBJECT)
    lo_x, hi_x = (travel, SIZE - OBJECT) if dx < 0 else (0, SIZE - OBJECT - travel) if dx > 0 else (0, SIZE - OBJECT)
    y0, x0 = int(rng.integers(lo_y, hi_y + 1)), int(rng.integers(lo_x, hi_x + 1))
    background = rng.normal(0.0, 0.35, (3, SIZE // 8, SIZE // 8)).repeat(8, 1).repeat(8, 2)
    x = np.empty((3, FRAMES, SIZE, SIZE), dtype=np.float32)
    boxes = np.full((FRAMES, 4), np.nan)
    distractors = []
    for colour in DISTRACTOR_COLOURS:
        ddy, ddx = _DIRS[int(rng.integers(4))]
        sy, sx = int(rng.integers(0, SIZE - OBJECT)), int(rng.integers(0, SIZE - OBJECT))
        distractors.append((colour, sy, sx, ddy, ddx))
    for t in range(FRAMES):
        frame = background + rng.normal(0.0, 0.15, background.shape)
        for colour, sy, sx, ddy, ddx in distractors:  # bounce at the borders
            py = _bounce(sy + ddy * 2 * t, SIZE - OBJECT)
            px = _bounce(sx + ddx * 2 * t, SIZE - OBJECT)
            _square(frame, py, px, colour)
        k = min(max(t - t0, 0), MOVE_FRAMES)  # steps taken so far (still before and after)
        ty, tx = y0 + dy * SPEED * k, x0 + dx * SPEED * k
        _square(frame, ty, tx, TARGET_COLOUR)
        if t0 <= t <= t0 + MOVE_FRAMES:
            boxes[t] = (tx, ty, tx + OBJECT, ty + OBJECT)
        x[:, t] = frame
    return Clip(x, label, boxes, (t0, t0 + MOVE_FRAMES + 1))


def _bounce(p: int, top: int) -> int:
    period = 2 * top
    p = p % period
    return p if p <= top else period - p


def make_batch(seeds: range | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    clips = [make_clip(s) for s in seeds]
    return torch.from_numpy(np.stack([c.x for c in clips])), torch.tensor([c.label for c in clips])


class TubeNet(nn.Module):
    """The benchmark's small 3-D CNN (about 0.1 M parameters): three conv-BN-ReLU stages, global
    average pooling, a linear classifier. ``block1`` (stride 2 in space, 32 x 32 cells, all 16
    frames) is the benchmark's bottleneck layer, chosen on :data:`VALIDATION_SEEDS` by
    ``demos/benchmark_layer.py`` (``block2``, 16 x 16 cells, localises the tube half as well)."""

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()

        def stage(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Sequential:
            return nn.Sequential(nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(cout),
                                 nn.ReLU(inplace=True))

        self.block1 = stage(3, 16, (1, 2, 2))
        self.block2 = stage(16, 32, (1, 2, 2))
        self.block3 = stage(32, 64, (1, 2, 2))
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block3(self.block2(self.block1(x))).mean(dim=(2, 3, 4)))


class TubeViTBlock(nn.Module):
    """A pre-norm transformer block: multi-head self-attention, then a two-layer MLP, both residual."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TubeViT(nn.Module):
    """The benchmark's small video transformer (about 0.15 M parameters): ``2 x 8 x 8`` tubelets
    embedded by two 3-D convolutions (``embed``: a 3x3x3 convolution at half resolution, then one
    token per tubelet; an ``8 x 8 x 8`` map), a class token and learned positions, four pre-norm
    blocks ``blocks.0..3`` (tokens ``(N, 1 + 512, C)``, time-major, see :data:`TUBEVIT_LAYOUT`), a
    final LayerNorm and a linear head on the class token. (With a single strided convolution as
    the embedding, the network stayed at chance after 5 epochs on 1600 clips at learning rates
    1e-3 and 3e-3; with the convolution before it, 0.94 on held-out clips.)"""

    def __init__(self, classes: int = len(CLASSES), dim: int = 48, heads: int = 4, depth: int = 4) -> None:
        super().__init__()
        t, h, w = TUBEVIT_LAYOUT.grid  # type: ignore[misc]
        half = (1, 2, 2)  # the first convolution halves the resolution, the second makes one token per tubelet
        self.embed = nn.Sequential(nn.Conv3d(3, 16, 3, stride=half, padding=1), nn.GELU(),
                                   nn.Conv3d(16, dim, TUBELET[0:1] + (TUBELET[1] // 2, TUBELET[2] // 2),
                                             stride=TUBELET[0:1] + (TUBELET[1] // 2, TUBELET[2] // 2)))
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + t * h * w, dim) * 0.02)
        self.blocks = nn.ModuleList([TubeViTBlock(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos
        for block in self.blocks:
            tokens = block(tokens)
        return self.head(self.norm(tokens[:, 0]))


#: Seeds of the training, validation and test clips (disjoint).
TRAIN_SEEDS = range(0, 4000)
TEST_SEEDS = range(100_000, 100_400)
#: Clips for choosing the benchmark's settings (IBA's layer), never used for the reported scores.
VALIDATION_SEEDS = range(200_000, 200_100)
#: The benchmark's bottleneck layer (see :class:`TubeNet`).
SYNTHETIC_LAYER = "block1"
#: TubeViT's bottleneck layer (its tubelet embedding; measured in docs/transformers.md) and Grad-CAM's
#: layer (the last block whose grid tokens reach the class token the head reads).
TUBEVIT_LAYER = "embed"
TUBEVIT_CAM_LAYER = "blocks.2"
#: The benchmark's trained networks: a 3-D CNN (the default) and a video transformer.
SYNTHETIC_MODELS = ("tubenet", "tubevit")
#: Clips the benchmark's IBA statistics are estimated on (training clips, never scored).
SYNTHETIC_STATS_SEEDS = range(50_000, 50_400)


def tubevit_layout(layer: str) -> TokenLayout | None:
    """The token layout of a TubeViT layer: :data:`TUBEVIT_LAYOUT` for its blocks' tokens, ``None``
    for the embedding's map."""
    return TUBEVIT_LAYOUT if layer.startswith("blocks.") else None


def load_tubenet() -> nn.Module:
    """The benchmark's trained TubeNet (weights shipped with the package), in eval mode."""
    model = TubeNet()
    path = resources.files("video_iba").joinpath("weights", "tubenet.pt")
    model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    return model.eval()


def load_tubevit() -> nn.Module:
    """The benchmark's trained TubeViT (weights shipped with the package, made by
    ``scripts/train_benchmark.py --model tubevit``), in eval mode."""
    model = TubeViT()
    path = resources.files("video_iba").joinpath("weights", "tubevit.pt")
    model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
    return model.eval()


def load_tubenet_readout() -> Readout:
    """The readout bottleneck trained for the benchmark's TubeNet at ``block1`` (shipped with the
    package; made by ``video-iba train-readout synthetic --clips 1600 --batch-size 16 --epochs 6
    --lr 1e-2`` (beta 1): the epoch of the lowest loss on the validation clips, the 6th)."""
    path = resources.files("video_iba").joinpath("weights", "tubenet_readout.pt")
    return load_checkpoint(str(path))[0]


def load_tubevit_readout() -> Readout:
    """The readout bottleneck trained for the benchmark's TubeViT at its tubelet embedding, reading
    the embedding and the token grid of ``blocks.2`` (shipped with the package; made by
    ``video-iba train-readout synthetic --model tubevit --clips 1600 --batch-size 16 --epochs 6
    --lr 1e-2`` (beta 1): the epoch of the lowest loss on the validation clips, the 6th)."""
    path = resources.files("video_iba").joinpath("weights", "tubevit_readout.pt")
    return load_checkpoint(str(path))[0]


def statistics_batches(seeds: range | list[int] | None = None, batch: int = 50,
                       device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Batches of the clips the benchmark's IBA statistics are estimated on (default
    :data:`SYNTHETIC_STATS_SEEDS`)."""
    seeds = list(SYNTHETIC_STATS_SEEDS if seeds is None else seeds)
    for i in range(0, len(seeds), batch):
        yield make_batch(seeds[i:i + batch])[0].to(device)
