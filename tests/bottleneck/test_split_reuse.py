"""The split suffix kept for a model's next input of the same shape: traced and rewritten once, checked
against every input's logits, built again where the model changed (in place, a module replaced, a
Python value the trace read), and let go with the model."""

from __future__ import annotations

import gc
import weakref
from typing import Iterator

import pytest
import torch
from torch import nn

import video_iba
from video_iba.bottleneck import split
from video_iba.bottleneck.insertion import frozen

from ..nets import TinyCNN, split_suffix

LAYER = "features.0"  # the suffix holds a convolution with a batch norm, folded into a copy of its weights


@pytest.fixture()
def traces(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many times a model is traced for a split."""
    count = [0]
    trace = split._LeafTracer.trace

    def counted(self: split._LeafTracer, *args: object, **kwargs: object) -> torch.fx.Graph:
        count[0] += 1
        return trace(self, *args, **kwargs)

    monkeypatch.setattr(split._LeafTracer, "trace", counted)
    split._plans.clear()
    yield count
    split._plans.clear()


def _explain(model: nn.Module, x: torch.Tensor, **kw: object) -> video_iba.Attribution:
    return video_iba.explain(model, x, 1, layer=LAYER, steps=3, samples=4, **kw)


def _fresh(model: nn.Module, x: torch.Tensor) -> video_iba.Attribution:
    split._plans.clear()
    return _explain(model, x)


def _inputs(n: int, size: int = 16) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return [torch.randn(1, 3, size, size, generator=g) for _ in range(n)]


def _model() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN().eval()
    with torch.no_grad():  # batch-norm statistics of their own, so that folding them changes the weights
        model.features[3].running_mean.uniform_(-0.5, 0.5)
        model.features[3].running_var.uniform_(0.5, 2.0)
    return model


def test_the_next_input_of_the_shape_reuses_the_split_with_the_same_result(traces: list[int]) -> None:
    model = _model()
    x1, x2, x3 = _inputs(3)
    _explain(model, x1)
    kept = _explain(model, x2)
    together = video_iba.explain(model, torch.cat([x2, x3]), [1, 1], layer=LAYER, steps=3, samples=4)
    assert traces[0] == 1  # K inputs at once reuse it too: a split runs at any batch size
    assert "batch norm folded" in kept.meta["prefix_note"]
    fresh = _fresh(model, x2)
    assert traces[0] == 2
    assert torch.equal(kept.values, fresh.values) and torch.equal(kept.logits, fresh.logits)
    assert kept.meta["prefix_note"] == fresh.meta["prefix_note"]
    assert torch.allclose(together[0].values, fresh.values, rtol=1e-4, atol=1e-6)


def test_another_input_shape_or_layer_is_split_again(traces: list[int]) -> None:
    model = _model()
    _explain(model, _inputs(1)[0])
    _explain(model, _inputs(1, size=24)[0])
    assert traces[0] == 2
    video_iba.explain(model, _inputs(1, size=24)[0], 1, layer="features.2", steps=3, samples=4)
    assert traces[0] == 3


@pytest.mark.parametrize("change", ["in place", "state dict", "module replaced"])
def test_a_model_changed_between_inputs_is_split_again(traces: list[int], change: str) -> None:
    model = _model()
    x1, x2 = _inputs(2)
    _explain(model, x1)
    conv = model.features[2]  # folded with the batch norm: a kept split would hold a copy of its old weights
    if change == "in place":
        with torch.no_grad():
            conv.weight.mul_(1.0 + 1e-6)  # below the logits check's tolerance: only the fingerprint sees it
    elif change == "state dict":
        state = {k: v.clone() for k, v in model.state_dict().items()}
        state["features.2.weight"] *= 1.0 + 1e-6
        model.load_state_dict(state)
    else:
        new = nn.Conv2d(8, 16, 3, padding=1, stride=2)
        new.load_state_dict(conv.state_dict())
        with torch.no_grad():
            new.weight.mul_(1.0 + 1e-6)
        model.features[2] = new
    after = _explain(model, x2)
    assert traces[0] == 2
    fresh = _fresh(model, x2)
    assert torch.equal(after.values, fresh.values) and torch.equal(after.logits, fresh.logits)


class Gained(TinyCNN):
    """Reads a Python number after the layer: the trace keeps its value, no tensor records it."""

    gain = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.gain


def test_a_kept_split_that_no_longer_reproduces_the_logits_is_built_again(traces: list[int]) -> None:
    torch.manual_seed(0)
    model = Gained().eval()
    x1, x2 = _inputs(2)
    _explain(model, x1)
    model.gain = 3.0
    after = _explain(model, x2)
    assert traces[0] == 2  # the kept split gave a third of the logits: refused by the check
    with torch.no_grad():
        assert torch.allclose(after.logits, model(x2)[0])
    fresh = _fresh(model, x2)
    assert torch.equal(after.values, fresh.values)


def test_the_kept_split_goes_with_its_model(traces: list[int]) -> None:
    model = _model()
    _explain(model, _inputs(1)[0])
    assert len(split._plans) == 1
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None and len(split._plans) == 0


def test_a_split_built_without_reuse_is_not_kept(traces: list[int]) -> None:
    model = _model()
    x = _inputs(1)[0]
    with frozen(model):
        split_suffix(model, LAYER, x)
        split_suffix(model, LAYER, x)
    assert traces[0] == 2 and len(split._plans) == 0
