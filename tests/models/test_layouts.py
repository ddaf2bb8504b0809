"""Token layouts: tokens -> grid -> tokens is the identity for every layout, and frames land on their frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from video_iba import UserInputError
from video_iba.models import TokenLayout

GRID = (3, 4, 5)


def _frame_tokens(order: str, prefix: int = 0, channels: int = 2) -> torch.Tensor:
    """Tokens (1, prefix + T*H*W, C) whose first channel is the token's frame index (prefix: -1)."""
    t, h, w = torch.meshgrid(*[torch.arange(n) for n in GRID], indexing="ij")
    frame = t.permute(1, 2, 0) if order == "h w t" else t
    values = torch.cat([torch.full((prefix,), -1.0), frame.reshape(-1).float()])
    return values[None, :, None].repeat(1, 1, channels)


@pytest.mark.parametrize("order", ["t h w", "h w t"])
@pytest.mark.parametrize("prefix", [0, 1, 2])
def test_tokens_to_grid_and_back_is_the_identity(order: str, prefix: int) -> None:
    layout = TokenLayout(grid=GRID, prefix=prefix, order=order)
    tokens = _frame_tokens(order, prefix)
    noisy = tokens + torch.randn_like(tokens)
    parts, context = layout.split(noisy, "blocks.0")
    assert parts[0].shape == (1, 2, *GRID) and (len(parts) == 2) == bool(prefix)
    assert torch.equal(layout.join(parts, context), noisy)
    grid, _ = layout.split(tokens, "blocks.0")
    for f in range(GRID[0]):  # every token of frame f lands on frame f, whatever the order
        assert torch.all(grid[0][0, 0, f] == f)
    if prefix:
        assert parts[1].shape == (1, 2, prefix)


def test_a_photos_tokens_lie_on_a_two_dimensional_grid() -> None:
    vit = TokenLayout(grid=(3, 4), prefix=1)  # (N, 1 + H*W, C), row-major as ViT's patches
    rows = torch.arange(3).repeat_interleave(4).float()
    tokens = torch.cat([torch.full((1,), -1.0), rows])[None, :, None].repeat(1, 1, 2) + torch.zeros(1, 13, 2)
    noisy = tokens + torch.randn_like(tokens)
    parts, context = vit.split(noisy, "encoder.layers.encoder_layer_1")
    assert parts[0].shape == (1, 2, 3, 4) and parts[1].shape == (1, 2, 1)
    assert torch.equal(vit.join(parts, context), noisy)
    grid, _ = vit.split(tokens, "encoder.layers.encoder_layer_1")
    assert all(torch.all(grid[0][0, 0, r] == r) for r in range(3))  # each patch row on its row
    with pytest.raises(UserInputError, match="12 tokens after 1 prefix token.*not the 3x5 of its grid"):
        TokenLayout(grid=(3, 5), prefix=1).split(tokens, "blocks.0")
    with pytest.raises(UserInputError, match=r"grid \(T, H, W\) or \(H, W\)"):
        TokenLayout(grid=(14,))


def test_channels_last_maps_and_tuple_outputs_round_trip() -> None:
    swin = TokenLayout(channels_last=True)
    out = torch.randn(1, *GRID, 6)
    parts, context = swin.split(out, "features.1")
    assert parts[0].shape == (1, 6, *GRID) and torch.equal(parts[0][0, :, 1, 2, 3], out[0, 1, 2, 3])
    assert torch.equal(swin.join(parts, context), out)
    image = torch.randn(1, 5, 7, 6)  # torchvision's image Swin: (N, H, W, C)
    parts, context = swin.split(image, "features.0")
    assert parts[0].shape == (1, 6, 5, 7) and torch.equal(parts[0][0, :, 4, 2], image[0, 4, 2])
    assert torch.equal(swin.join([p.expand(2, *p.shape[1:]) for p in parts], context)[1], image[0])
    mvit = TokenLayout(prefix=1, grid_index=1)  # MViT's blocks return (tokens, thw)
    tokens = torch.randn(1, 1 + 60, 4)
    parts, context = mvit.split((tokens, list(GRID)), "blocks.3")
    assert parts[0].shape == (1, 4, *GRID)
    back = mvit.join([p.expand(3, *p.shape[1:]) for p in parts], context)  # any batch size
    assert back[0].shape == (3, 61, 4) and back[1] == list(GRID) and torch.equal(back[0][0], tokens[0])


def test_layouts_that_do_not_fit_are_refused() -> None:
    with pytest.raises(UserInputError, match="60 tokens after 1 prefix token"):
        TokenLayout(grid=(2, 2, 2), prefix=1).split(torch.randn(1, 61, 4), "blocks.0")
    with pytest.raises(UserInputError, match="not tokens"):
        TokenLayout(grid=GRID).split(torch.randn(1, 4, 3, 4, 5), "conv")
    with pytest.raises(UserInputError, match="token order"):
        TokenLayout(order="w h t")
    with pytest.raises(UserInputError, match=r"not a channels-last map \(N, \[T,\] H, W, C\)"):
        TokenLayout(channels_last=True).split(torch.randn(1, 60, 4), "norm")
    with pytest.raises(UserInputError, match="gives no grid"):
        TokenLayout().split(torch.randn(1, 60, 4), "blocks.0")


def test_a_layout_takes_whole_numbers_only() -> None:
    lay = TokenLayout(grid=[np.int64(2), 3, 4], prefix=np.int32(1))  # a grid computed with numpy, as a list
    assert lay.grid == (2, 3, 4) and type(lay.prefix) is int and hash(lay) == hash(TokenLayout(grid=(2, 3, 4), prefix=1))
    for bad in (dict(grid=(2, 2, 2), prefix=1.5), dict(grid=(2.0, 3, 3)), dict(grid=(2, 2), prefix=True)):
        with pytest.raises(UserInputError, match="needs whole numbers"):
            TokenLayout(**bad)  # type: ignore[arg-type]
