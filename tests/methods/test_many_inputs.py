"""Several inputs in one fit: each result is the input's own result alone at the same seed."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

import video_iba
from video_iba import TokenLayout, UserInputError

from ..nets import TinyCNN, TinyViViT, TwoPath, Untraceable, snapshot


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy().ravel(), b.numpy().ravel())[0, 1])


def _two_paths(clip: torch.Tensor) -> list[torch.Tensor]:
    return [clip[:, :, ::4], clip]


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=6).eval()


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], dict[str, Any], str]] = {
    # model, one input's shape, explain's arguments, the runner the fit must use
    "fx split, batch norm folded": (lambda: TinyCNN(), (3, 32, 32), {"layer": "features.0"}, "batch norm folded"),
    "fx split with a skip connection from before the layer": (
        _resnet, (3, 64, 64), {"layer": "layer2.0.conv1"}, "prefix computed once"),
    "whole network per step": (lambda: Untraceable(), (3, 32, 32), {"layer": "features.4"}, "full forward pass"),
    "two pathways, one bottleneck each": (
        lambda: TwoPath(overwrite=False), (3, 8, 16, 16), {"layer": ["slow", "fast"], "pack": _two_paths},
        "prefix computed once"),
    "two pathways, whole network per step": (
        lambda: TwoPath(overwrite=True), (3, 8, 16, 16), {"layer": ["slow", "fast"], "pack": _two_paths},
        "full forward pass"),
    "token layer with a class token": (
        lambda: TinyViViT(), (3, 8, 32, 32), {"layer": "blocks.0", "tokens": TokenLayout(grid=(4, 4, 4), prefix=1)},
        "prefix computed once"),
}


@pytest.mark.parametrize("per_pass", [None, 2], ids=["one pass", "passes of 2 inputs"])
@pytest.mark.parametrize("case", list(CASES))
def test_each_input_of_a_fit_equals_its_fit_alone(case: str, per_pass: int | None) -> None:
    make, shape, kwargs, runner = CASES[case]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(1))
    seeds, targets = [11, 12, 13], [0, None, 2]
    before = snapshot(model)
    many = video_iba.explain(model, x, targets, seed=seeds, steps=4, **kwargs,
                             config=video_iba.IBAConfig(inputs_per_pass=per_pass))
    after = snapshot(model)
    assert after["hooks"] == 0 and after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"] and all(g is None for g in after["grads"].values())
    assert isinstance(many, list) and len(many) == 3
    for i, got in enumerate(many):
        alone = video_iba.explain(model, x[i:i + 1], targets[i], seed=seeds[i], steps=4, **kwargs)
        assert runner in got.meta["prefix_note"]
        assert got.target == alone.target and got.meta["seed"] == seeds[i]
        assert got.meta["inputs_per_fit"] == 3 and alone.meta["inputs_per_fit"] == 1
        assert got.meta["inputs_per_pass"] == per_pass
        assert got.meta["input_shape"] == alone.meta["input_shape"]
        torch.testing.assert_close(got.logits, alone.logits, rtol=1e-4, atol=1e-5)
        assert _pearson(got.bits, alone.bits) >= 0.999, case
        assert math.isclose(got.total_bits, alone.total_bits, rel_tol=1e-3)
        np.testing.assert_allclose(got.meta["info_nats_per_step"], alone.meta["info_nats_per_step"], rtol=1e-3)
        np.testing.assert_allclose(got.meta["ce_per_step"], alone.meta["ce_per_step"], rtol=1e-3, atol=1e-6)
        if "prefix_bits" in alone.meta:
            assert math.isclose(got.meta["prefix_bits"], alone.meta["prefix_bits"], rel_tol=1e-3)
    assert many[0].total_bits != many[1].total_bits  # each input its own map


def test_one_seed_for_all_inputs_seeds_each_as_alone(tiny: TinyCNN) -> None:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    both = video_iba.explain(tiny, x, 1, layer="features.4", seed=5, steps=3)
    for i, got in enumerate(both):
        alone = video_iba.explain(tiny, x[i:i + 1], 1, layer="features.4", seed=5, steps=3)
        assert got.meta["seed"] == 5 and got.target == 1
        assert _pearson(got.bits, alone.bits) >= 0.999
    drawn = video_iba.explain(tiny, x, layer="features.4", steps=2, seed=None)
    assert len({a.meta["seed"] for a in drawn}) == 2  # drawn: one per input, recorded


def test_shared_statistics_and_micro_batches(tiny: TinyCNN) -> None:
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    stats = video_iba.estimate(tiny, [torch.randn(8, 3, 32, 32)], layer="features.4")
    whole = video_iba.explain(tiny, x, [0, 1, 2], layer="features.4", stats=stats, seed=[1, 2, 3], steps=3)
    parts = video_iba.explain(tiny, x, [0, 1, 2], layer="features.4", stats=stats, seed=[1, 2, 3], steps=3,
                              config=video_iba.IBAConfig(steps=3, micro_batch=4))
    for a, b in zip(whole, parts):
        assert a.meta["stats_source"] == "dataset" and b.meta["micro_batch"] == 4
        assert _pearson(a.bits, b.bits) >= 0.999 and math.isclose(a.total_bits, b.total_bits, rel_tol=1e-3)
    alone = video_iba.explain(tiny, x[2:], 2, layer="features.4", stats=stats, seed=3, steps=3)
    assert _pearson(whole[2].bits, alone.bits) >= 0.999


def test_a_list_of_one_target_gives_a_list(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    one = video_iba.explain(tiny, image_input, [2], layer="features.4", seed=0, steps=2)
    assert isinstance(one, list) and len(one) == 1 and one[0].target == 2
    labels = np.array([3, 1])  # class indices straight from numpy or torch
    two = video_iba.explain(tiny, image_input.expand(2, -1, -1, -1), list(labels), layer="features.4", steps=2)
    assert [a.target for a in two] == [3, 1] and all(isinstance(a.meta["target"], int) for a in two)
    assert video_iba.explain(tiny, image_input, torch.tensor(4), layer="features.4", steps=2).target == 4
    assert isinstance(video_iba.explain(tiny, image_input, 2, layer="features.4", seed=0, steps=2),
                      video_iba.Attribution)


@pytest.mark.parametrize("kwargs, match", [
    ({"target": [0, 1, 2]}, "target= lists 3 entries for 2 inputs"),
    ({"seed": [1]}, "seed= lists 1 entries for 2 inputs"),
    ({"target": [0, 9]}, "out of range"),
    ({"target": [0, 1.5]}, "class index"),
])
def test_per_input_arguments_are_checked(tiny: TinyCNN, kwargs: dict[str, Any], match: str) -> None:
    x = torch.randn(2, 3, 32, 32)
    before = snapshot(tiny)
    with pytest.raises(UserInputError, match=match):
        video_iba.explain(tiny, x, layer="features.4", steps=2, **kwargs)
    assert snapshot(tiny)["hooks"] == 0 and snapshot(tiny)["training"] == before["training"]


class _MemoryBound(nn.Module):
    """Runs out of memory on batches of more than ``rows`` rows, as a device would."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.net, self.rows = TinyCNN(), rows

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.rows:
            raise RuntimeError(f"CPU out of memory: tried to allocate for {x.shape[0]} rows")
        return self.net(x)


@pytest.mark.parametrize("per_pass, message", [
    (None, "out of memory with 12 noisy replicas per network pass (3 inputs x 4); explain fewer inputs at once or "
           "set inputs_per_pass= or micro_batch="),
    (2, "out of memory with 8 noisy replicas per network pass (2 inputs x 4)"),
    (1, "out of memory with 4 noisy replicas per network pass (4 samples); lower samples= or set micro_batch="),
])
def test_running_out_of_memory_names_the_rows_of_one_pass(per_pass: int | None, message: str) -> None:
    model = _MemoryBound(rows=3).eval()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with pytest.raises(UserInputError) as err:
        video_iba.explain(model, x, [0, 1, 2], layer="net.features.4", steps=2, split="hook",
                          config=video_iba.IBAConfig(samples=4, inputs_per_pass=per_pass))
    assert message in str(err.value)
    assert snapshot(model)["hooks"] == 0
