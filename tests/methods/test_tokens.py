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
    after = snapshot(model)
    assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
    assert after["hooks"] == 0 and all(g is None for g in after["grads"].values())  # type: ignore[union-attr]
