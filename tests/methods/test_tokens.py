"""The bottleneck on a transformer's tokens: grid and class tokens restricted, maps on the clip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import video_iba
from video_iba import TokenLayout, UserInputError
from video_iba.bottleneck.insertion import HookedForward, capture_taps, get_module
from video_iba.bottleneck.split import CachedSuffix

from ..nets import TinyViViT, snapshot


def _clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_fully_open_masks_leave_the_logits_and_closed_ones_give_the_noise_prediction() -> None:
    torch.manual_seed(0)
    model = TinyViViT().eval()
    x = _clip()
    layout = TokenLayout(grid=model.grid, prefix=1)
    module = get_module(model, "blocks.0")
    logits, taps = capture_taps(model, [module], ["blocks.0"], x, [layout])
    assert [tuple(p.shape) for p in taps.parts] == [(1, 16, 4, 4, 4), (1, 16, 1)] and taps.is_map == [True, False]
    with torch.no_grad():
        split = CachedSuffix(model, ["blocks.0"], x, taps.parts, logits, taps)
        with HookedForward(model, [module], x, taps=taps) as hooked:
            for run in (split, hooked):  # alpha -> +inf: Z = R, the model's own logits
                torch.testing.assert_close(run(taps.parts), logits, rtol=1e-4, atol=1e-5)
            means = [p.mean(dim=tuple(range(2, p.dim())), keepdim=True).expand_as(p) for p in taps.parts]
            closed = [split(means), hooked(means)]  # alpha -> -inf, noise at its mean: no information
    torch.testing.assert_close(closed[0], closed[1], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(closed[0], logits, atol=1e-3)


@pytest.mark.parametrize("space_major", [False, True])
def test_explain_a_token_layer_with_a_class_token(space_major: bool) -> None:
    torch.manual_seed(0)
    model = TinyViViT(space_major=space_major).eval()
    layout = TokenLayout(grid=model.grid, prefix=1, order="h w t" if space_major else "t h w")
    a = video_iba.explain(model, _clip(), layer="blocks.0", tokens=layout, seed=0, steps=3, samples=3)
    assert a.bits.shape == (8, 32, 32) and a.meta["prefix_cached"] is True
    assert tuple(a.capacity.shape) == (16, 4, 4, 4)  # type: ignore[union-attr]
    prefix = a.arrays["prefix_bits"]
    assert prefix.shape == (1,) and prefix[0] > 0 and math.isclose(a.meta["prefix_bits"], float(prefix[0]), rel_tol=1e-5)
    assert math.isclose(a.total_bits, a.meta["bits_per_layer"][0], rel_tol=1e-4)  # the map: the grid tokens only
    hooked = video_iba.explain(model, _clip(), layer="blocks.0", tokens=layout, seed=0, steps=3, samples=3,
                               split="hook")
    torch.testing.assert_close(a.bits, hooked.bits, rtol=1e-3, atol=1e-6)


def test_the_embedding_is_a_map_and_statistics_have_class_tokens(tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = TinyViViT().eval()
    emb = video_iba.explain(model, _clip(), layer="embed", seed=0, steps=2, samples=2)
    assert emb.bits.shape == (8, 32, 32) and "prefix_bits" not in emb.meta
    layout = TokenLayout(grid=model.grid, prefix=1)
    batches = [torch.randn(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    st = video_iba.estimate(model, batches, layer="blocks.1", tokens=layout)
    assert tuple(st.mean.shape) == (16, 4, 4, 4) and st.prefix is not None and tuple(st.prefix.mean.shape) == (16, 1)
    st.save(tmp_path / "s.pt")
    back = video_iba.Statistics.load(tmp_path / "s.pt")
    assert back.prefix is not None and torch.equal(back.prefix.std, st.prefix.std)
    a = video_iba.explain(model, _clip(1), layer="blocks.1", tokens=layout, stats=back, seed=0, steps=2, samples=2)
    a.save(tmp_path / "a.npz")
    loaded = video_iba.load(tmp_path / "a.npz")
    assert np.array_equal(loaded.arrays["prefix_bits"], a.arrays["prefix_bits"]) and loaded.meta["stats_source"] == "dataset"
    # the grid (4, 4, 4) read in the other token order fits the statistics' shape but not their positions
    assert back.meta["token_order"] == "t h w"
    with pytest.raises(video_iba.UserInputError, match="estimated with its tokens in 't h w' order and this layout "
                                                       "reads them in 'h w t' order"):
        video_iba.explain(model, _clip(1), layer="blocks.1", tokens=TokenLayout(grid=model.grid, prefix=1, order="h w t"),
                          stats=back, steps=2, samples=2)


def test_a_channels_last_map_is_pooled_over_time_as_a_conv_map_is() -> None:
    from torchvision.models.video.swin_transformer import SwinTransformer3d

    torch.manual_seed(0)  # Swin3D's patch embedding: (N, T', H', W', C), no position embedding
    model = SwinTransformer3d(patch_size=[2, 4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                              window_size=[2, 4, 4], num_classes=5).eval()
    layout = TokenLayout(channels_last=True)
    batches = [torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    st = video_iba.estimate(model, batches, layer="patch_embed", tokens=layout)
    assert tuple(st.mean.shape) == (16, 1, 8, 8) and st.prefix is None  # pooled over the 4 feature frames
    per_frame = video_iba.estimate(model, batches, layer="patch_embed", tokens=layout, pool=())
    assert tuple(per_frame.mean.shape) == (16, 4, 8, 8)
    longer = torch.randn(1, 3, 16, 32, 32, generator=torch.Generator().manual_seed(5))  # 8 feature frames
    a = video_iba.explain(model, longer, layer="patch_embed", tokens=layout, stats=st, seed=0, steps=2, samples=2)
    assert a.bits.shape == (16, 32, 32) and a.meta["stats_source"] == "dataset"


def test_the_model_is_left_as_it_was_even_after_an_error() -> None:
    torch.manual_seed(0)
    model = TinyViViT()
    model.train()
    model.head.weight.requires_grad_(False)  # a frozen head stays frozen
    before = snapshot(model)
    video_iba.explain(model, _clip(), layer="blocks.0", tokens=TokenLayout(grid=model.grid, prefix=1), seed=0,
                      steps=2, samples=2)
    with pytest.raises(UserInputError, match="tokens after 1 prefix token"):
        video_iba.explain(model, _clip(), layer="blocks.0", tokens=TokenLayout(grid=(2, 2, 2), prefix=1))
    with pytest.raises(UserInputError, match=r"need a token layout to become a map: give one \(in Python tokens="):
        video_iba.explain(model, _clip(), layer="blocks.0")  # without its layout
    after = snapshot(model)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == 0 and all(g is None for g in after["grads"].values())  # type: ignore[union-attr]


def test_gradcam_on_the_token_grid_leaves_the_class_token_out() -> None:
    torch.manual_seed(0)
    model = TinyViViT(space_major=True).eval()
    layout = TokenLayout(grid=model.grid, prefix=1, order="h w t")
    x = _clip()
    a = video_iba.attribute("gradcam", model, x, cam_layer="blocks.0", tokens=layout)
    assert a.values.shape == (8, 32, 32) and a.meta["cam_layer"] == "blocks.0" and "h w t" in a.meta["cam_tokens"]
    # the same map by hand: channel weights = mean gradient over the grid tokens, in (t h w) order
    tokens = {}
    handle = model.blocks[0].register_forward_hook(lambda _m, _i, out: tokens.__setitem__("out", out))
    try:
        logits = model(x)
        out = tokens["out"]
        out.retain_grad()
        logits[0, a.target].backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    t, h, w = model.grid
    grid = out[0, 1:].detach().reshape(h, w, t, -1).permute(3, 2, 0, 1)  # (C, T, H, W)
    grad = out.grad[0, 1:].reshape(h, w, t, -1).permute(3, 2, 0, 1)  # type: ignore[union-attr]
    cam = torch.relu((grad.mean(dim=(1, 2, 3), keepdim=True) * grid).sum(0))
    expected = torch.nn.functional.interpolate(cam[None, None], size=(8, 32, 32), mode="trilinear",
                                               align_corners=False)[0, 0]
    torch.testing.assert_close(a.values, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(UserInputError, match="no gradient on the grid tokens.*earlier block"):
        video_iba.attribute("gradcam", model, x, cam_layer="blocks.1", tokens=layout)  # the head reads the class token


class _TinyImageViT(torch.nn.Module):
    """A photo transformer: 8x8 patches of a 32x32 image (a 4x4 grid), a class token, one block."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 16) * 0.1)
        self.block = torch.nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.block(torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1))
        return self.head(tokens[:, 0])


def test_a_photo_transformer_gets_a_2d_map_from_its_token_grid() -> None:
    torch.manual_seed(0)
    model = _TinyImageViT().eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = video_iba.explain(model, x, layer="block", tokens=TokenLayout(grid=(1, 4, 4), prefix=1), seed=0, steps=2,
                          samples=2)
    assert a.bits.shape == (32, 32) and tuple(a.capacity.shape) == (16, 4, 4)  # type: ignore[union-attr]
    assert a.prefix_total is not None and a.prefix_total > 0
    grid_bits = float(a.capacity.double().sum()) / math.log(2)  # type: ignore[union-attr]
    assert math.isclose(a.total_bits, grid_bits, rel_tol=1e-4)  # the grid's bits, placed on the photo


def _tube_clips(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int, int]]]:
    """Noise clips (3, 8, 32, 32) with an 8x8 square in frames 4-5 at a random cell: red is class 0,
    green class 1; and a blue square in frames 0-1 at another cell, which decides nothing. Only the
    first square tells the classes apart, so the evidence is in that tube."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 32, 32, generator=g) * 0.3
    y = torch.randint(0, 2, (n,), generator=g)
    cells = []
    for k in range(n):
        c, d = (int(v) for v in torch.randperm(16, generator=g)[:2])
        i, j, p, q = c // 4, c % 4, d // 4, d % 4
        x[k, int(y[k]), 4:6, 8 * i:8 * i + 8, 8 * j:8 * j + 8] += 2.0
        x[k, 2, 0:2, 8 * p:8 * p + 8, 8 * q:8 * q + 8] += 2.0
        cells.append((i, j, p, q))
    return x, y, cells


def test_a_trained_video_transformer_puts_its_bits_in_the_tube_and_its_frames() -> None:
    from video_iba.evaluation import hit_ratio, temporal_share

    torch.manual_seed(0)
    model = TinyViViT(classes=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(150):
        x, y, _ = _tube_clips(32, step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, cells = _tube_clips(64, 10_000)
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.9  # it has learned the task
    shares, hits, tube_mass, decoy_mass = [], [], [], []
    for k in range(6):
        a = video_iba.explain(model, x[k:k + 1], int(y[k]), layer="embed", seed=0)
        bits = np.asarray(a.bits)
        i, j, p, q = cells[k]
        tube = np.zeros((8, 32, 32), dtype=bool)
        tube[4:6, 8 * i:8 * i + 8, 8 * j:8 * j + 8] = True
        decoy = np.zeros_like(tube)
        decoy[0:2, 8 * p:8 * p + 8, 8 * q:8 * q + 8] = True
        shares.append(temporal_share(a.bits, (4, 6)))
        hits.append(hit_ratio(a.bits, tube))
        tube_mass.append(bits[tube].sum() / bits.sum())
        decoy_mass.append(bits[decoy].sum() / bits.sum())
    # Spread evenly, the map would give the tube's frames 0.25 of the bits and each tube 1/64. Measured
    # (this model is sure of itself, so the masks close almost uniformly; see docs/transformers.md):
    # tube 0.12, decoy 0.03, frames 0.34, hit ratio about 0.9.
    assert np.mean(hits) > 0.6 and np.mean(shares) > 0.3, (hits, shares)
    assert np.mean(tube_mass) > 4 / 64 and np.mean(tube_mass) > 2 * np.mean(decoy_mass), (tube_mass, decoy_mass)


def test_a_readout_restricts_grid_and_class_tokens_and_reads_token_grids(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.methods.readout import (explain_readout, load_checkpoint, new_readout, readout_loss,
                                           readout_terms, save_checkpoint)

    torch.manual_seed(0)
    model = TinyViViT(space_major=True).eval()
    layout = TokenLayout(grid=model.grid, prefix=1, order="h w t")
    before = snapshot(model)
    batches = [torch.randn(4, 3, 8, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    readout = new_readout(model, batches[0], lambda: iter(batches), layers=["blocks.0"], readouts=["embed", "blocks.1"],
                          tokens={"blocks.0": layout, "blocks.1": layout})
    assert readout.spec.prefixes == [1] and set(readout.spec.tokens) == {"blocks.0", "blocks.1"}
    assert readout.stats[0].prefix is not None and readout.is_map == [True, False]
    # at the start every mask, class token included, is open (alpha 5): the noisy logits are the model's
    ce, info, noisy, target = readout_terms(model, readout, batches[0], None, torch.Generator().manual_seed(0))
    torch.testing.assert_close(noisy, model(batches[0]), rtol=0.05, atol=0.05)
    opt = torch.optim.Adam(readout.parameters(), lr=1e-2)
    for _ in range(3):
        loss, _, _ = readout_loss(model, readout, batches[1], None, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    offset = readout.heads[0].prefix_offset
    assert offset is not None and offset.shape == (16, 1) and float(offset.detach().abs().sum()) > 0  # the class token's mask learns
    a = explain_readout(model, readout, _clip())
    assert a.bits.shape == (8, 32, 32) and tuple(a.capacity.shape) == (16, 4, 4, 4)  # type: ignore[union-attr]
    assert a.arrays["prefix_bits"].shape == (1,) and a.meta["prefix_bits"] > 0
    assert math.isclose(a.total_bits, float(a.capacity.double().sum()) / math.log(2), rel_tol=1e-4)  # type: ignore[union-attr]
    save_checkpoint(str(tmp_path / "ro.pt"), readout, model_name=None, epoch=1)
    back, _ = load_checkpoint(str(tmp_path / "ro.pt"))
    again = explain_readout(model, back, _clip())
    torch.testing.assert_close(again.bits, a.bits)
    np.testing.assert_allclose(again.arrays["prefix_bits"], a.arrays["prefix_bits"], rtol=1e-6)
    after = snapshot(model)
    assert after["hooks"] == 0 and after["requires_grad"] == before["requires_grad"]
    with pytest.raises(UserInputError, match="token layouts for \\['blocks.3'\\]"):
        new_readout(model, batches[0], lambda: iter(batches), layers=["blocks.0"], tokens={"blocks.3": layout})
