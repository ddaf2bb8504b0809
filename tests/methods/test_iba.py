"""The per-sample explanation: results, and the user's model left exactly as it was."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import video_iba
from video_iba import IBAConfig, Statistics, UserInputError

from ..nets import Tiny3D, TinyCNN, Untraceable, mixed_state, snapshot


def test_model_is_left_exactly_as_it_was(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    mixed_state(tiny)
    before = snapshot(tiny)
    tiny.eval()
    logits_before = tiny(image_input).detach()
    mixed_state(tiny)
    attr = video_iba.explain(tiny, image_input, layer="features.4", seed=0)
    after = snapshot(tiny)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"].values())  # type: ignore[union-attr]
    assert after["hooks"] == 0
    for k, v in before["state"].items():  # type: ignore[union-attr]
        assert torch.equal(after["state"][k], v), k  # type: ignore[index]
    tiny.eval()
    assert torch.equal(tiny(image_input), logits_before)
    assert attr.meta["prefix_cached"] is True


class _Boom(RuntimeError):
    pass


def test_model_restored_when_the_fit_raises(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    mixed_state(tiny)
    before = snapshot(tiny)

    def explode(step: int, ce: float, info: float) -> None:
        raise _Boom

    for split in ("auto", "hook"):
        with pytest.raises(_Boom):
            video_iba.explain(tiny, image_input, layer="features.4", on_step=explode, split=split)
        after = snapshot(tiny)
        assert after["training"] == before["training"] and after["requires_grad"] == before["requires_grad"]
        assert after["hooks"] == 0 and all(g is None for g in after["grads"].values())  # type: ignore[union-attr]


def test_model_restored_when_the_model_raises(image_input: torch.Tensor) -> None:
    class Fails(TinyCNN):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Fails.calls += 1
            if Fails.calls > 1:
                raise _Boom
            return super().forward(x)

    model = Fails()
    model.train()
    with pytest.raises(_Boom):
        video_iba.explain(model, image_input, layer="features.4", split="hook")
    assert model.training and all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_bad_target_and_layer_leave_no_trace(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    tiny.train()
    with pytest.raises(UserInputError, match="out of range"):
        video_iba.explain(tiny, image_input, 7, layer="features.4")
    with pytest.raises(UserInputError, match="did you mean 'features.4'"):
        video_iba.explain(tiny, image_input, layer="features.44")
    assert tiny.training and all(p.requires_grad for p in tiny.parameters())
    assert sum(len(m._forward_hooks) for m in tiny.modules()) == 0


def test_a_target_may_be_a_class_name_of_the_models_spec(image_input: torch.Tensor) -> None:
    model = video_iba.load_model("resnet18", weights="random")
    x = torch.nn.functional.interpolate(image_input, size=(64, 64))
    a = video_iba.explain(model, x, "tabby", steps=2, seed=0)
    assert a.target == 281 and a.meta["target_label"] == "tabby" and "281 'tabby'" in repr(a)
    top = video_iba.explain(model, x, "top1", steps=2, seed=0)
    assert top.target == int(top.logits.argmax()) and top.meta["target_label"]
    for method in ("saliency", "gradcam", "random"):
        b = video_iba.attribute(method, model, x, "Tabby")  # case ignored, as on the command line
        assert b.target == 281 and b.meta["target_label"] == "tabby"
    by_name = video_iba.degradation(model, x, a.bits, "tabby", tile=16)
    assert by_name.score == video_iba.degradation(model, x, a.bits, 281, tile=16).score
    with pytest.raises(UserInputError, match=r"unknown class name 'tabby cat' \(did you mean 'tabby'"):
        video_iba.explain(model, x, "tabby cat", steps=2)
    with pytest.raises(UserInputError, match="target= takes top1, a class index or a class name, not 'top2'"):
        video_iba.attribute("saliency", model, x, "top2")
    with pytest.raises(UserInputError, match="target= takes a class index or a class name, not 2.5"):
        video_iba.explain(model, x, 2.5, steps=2)
    own = TinyCNN()  # no spec, so no class names
    with pytest.raises(UserInputError, match="'tabby' is a class name, but the model has no class names"):
        video_iba.explain(own, image_input, "tabby", layer="features.4", steps=2)
    assert "target_label" not in video_iba.explain(own, image_input, 1, layer="features.4", steps=2).meta
    with torch.no_grad():
        predicted = int(own.eval()(image_input).argmax())
    assert video_iba.attribute("saliency", own, image_input, "top1").target == predicted


def test_a_layer_may_be_given_as_the_module_itself(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    by_module = video_iba.explain(tiny, image_input, layer=tiny.features[4], steps=2, seed=1)
    by_name = video_iba.explain(tiny, image_input, layer="features.4", steps=2, seed=1)
    assert by_module.meta["layer"] == "features.4" and torch.equal(by_module.values, by_name.values)
    st = video_iba.estimate(tiny, [torch.randn(4, 3, 32, 32)], layer=tiny.features[4])
    assert isinstance(st, Statistics)  # one module: one estimate, as for one name
    cam = video_iba.attribute("gradcam", tiny, image_input, cam_layer=tiny.features[2])
    assert cam.meta["cam_layer"] == "features.2"
    for other, match in ((TinyCNN().features[4], "not a submodule of the model .another network."),
                         (tiny, "not a submodule of the model .the model itself."), (4, "must be a module path")):
        with pytest.raises(UserInputError, match=match):
            video_iba.explain(tiny, image_input, layer=other, steps=1)
    assert sum(len(m._forward_hooks) for m in tiny.modules()) == 0


class _Output:  # what Hugging Face classifiers return
    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits


@pytest.mark.parametrize("wrap, match", [
    (lambda y: _Output(y), "returns _Output, not a tensor; .* wrap it so that forward returns model.x..logits"),
    (lambda y: {"logits": y}, "returns dict, not a tensor; .* wrap it so that"),
    (lambda y: y[0], r"returns \(5,\) for 1 input\(s\); attribution needs a classifier returning logits \(1, classes\)"),
])
def test_a_model_not_returning_logits_is_refused(tiny: TinyCNN, image_input: torch.Tensor, wrap, match) -> None:  # type: ignore[no-untyped-def]
    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = tiny

        def forward(self, x: torch.Tensor):  # type: ignore[no-untyped-def]
            return wrap(self.net(x))

    for run in (lambda m: video_iba.explain(m, image_input, layer="net.features.4", steps=1),
                lambda m: video_iba.attribute("saliency", m, image_input)):
        with pytest.raises(UserInputError, match=match):
            run(Wrapped())
    assert sum(len(m._forward_hooks) for m in tiny.modules()) == 0


def test_total_bits_equal_the_bottleneck_information(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    attr = video_iba.explain(tiny, image_input, layer="features.4", seed=3)
    assert attr.bits.shape == (32, 32) and attr.capacity is not None and attr.capacity.shape == (16, 16, 16)
    assert math.isclose(attr.total_bits, float(attr.capacity.double().sum()) / math.log(2), rel_tol=1e-5)
    assert attr.bits.min() >= 0 and attr.unit == "bits"
    assert attr.meta["stats_source"] == "input" and attr.meta["seed"] == 3


def test_seeded_determinism_and_seed_sensitivity(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    a = video_iba.explain(tiny, image_input, layer="features.4", seed=11)
    b = video_iba.explain(tiny, image_input, layer="features.4", seed=11)
    c = video_iba.explain(tiny, image_input, layer="features.4", seed=12)
    assert torch.equal(a.bits, b.bits)
    assert not torch.equal(a.bits, c.bits)
    default = video_iba.explain(tiny, image_input, layer="features.4")  # seed 0, as the command line's
    assert default.meta["seed"] == 0 and torch.equal(default.bits, video_iba.explain(tiny, image_input,
                                                                                     layer="features.4", seed=0).bits)
    drawn = video_iba.explain(tiny, image_input, layer="features.4", seed=None)
    assert isinstance(drawn.meta["seed"], int)


def test_cached_prefix_matches_the_full_forward(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    # features.3 is followed by an in-place ReLU: the cached copy must not be overwritten
    for layer in ("features.3", "features.2", "features"):
        a = video_iba.explain(tiny, image_input, layer=layer, seed=5)
        b = video_iba.explain(tiny, image_input, layer=layer, seed=5, split="hook")
        assert a.meta["prefix_cached"] and not b.meta["prefix_cached"]
        torch.testing.assert_close(a.bits, b.bits, rtol=1e-4, atol=1e-6)


def test_micro_batches_give_the_same_map(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    a = video_iba.explain(tiny, image_input, layer="features.4", seed=2)
    b = video_iba.explain(tiny, image_input, layer="features.4", seed=2, config=IBAConfig(micro_batch=3))
    torch.testing.assert_close(a.bits, b.bits, rtol=1e-4, atol=1e-6)


def test_untraceable_model_falls_back_and_says_so(image_input: torch.Tensor, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = Untraceable().eval()
    with caplog.at_level("WARNING"):
        attr = video_iba.explain(model, image_input, layer="features.4", seed=0)
    assert attr.meta["prefix_cached"] is False
    assert "full forward pass" in attr.meta["prefix_note"]
    assert any("whole network" in r.message for r in caplog.records)
    ref = video_iba.explain(model, image_input, layer="features.4", seed=0, split="hook")
    torch.testing.assert_close(attr.bits, ref.bits)


def test_huge_beta_squeezes_the_information_out(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    normal = video_iba.explain(tiny, image_input, layer="features.4", seed=0)
    squeezed = video_iba.explain(tiny, image_input, layer="features.4", seed=0, beta=1e6, steps=30)
    assert squeezed.total_bits < 0.01 * normal.total_bits
    assert normal.meta["info_nats_per_step"][-1] < normal.meta["info_nats_per_step"][0]


def test_dataset_statistics_are_used_and_checked(tiny: TinyCNN) -> None:
    data = [torch.randn(8, 3, 32, 32) for _ in range(3)]
    stats = video_iba.estimate(tiny, data, layer="features.4")
    assert stats.samples == 24 and stats.mean.shape == (16, 16, 16)
    attr = video_iba.explain(tiny, data[0][:1], layer="features.4", stats=stats, seed=0)
    assert attr.meta["stats_source"] == "dataset" and attr.meta["stats_samples"] == 24
    with pytest.raises(UserInputError, match="layer"):
        video_iba.explain(tiny, data[0][:1], layer="features.2", stats=stats)
    capped = video_iba.estimate(tiny, data, layer="features.4", max_samples=10)
    assert capped.samples == 10
    first = video_iba.estimate(tiny, data, layer="features.4", max_samples=5)  # fewer than the first batch holds
    assert first.samples == 5
    torch.testing.assert_close(first.mean, video_iba.estimate(tiny, [data[0][:5]], layer="features.4").mean)
    # batches that cannot give one layer's statistics are refused, by what is wrong with them
    with pytest.raises(UserInputError, match=r"shape \(3, 40, 40\), the first had \(3, 32, 32\)"):
        video_iba.estimate(tiny, [data[0], torch.randn(8, 3, 40, 40)], layer="features.4")
    with pytest.raises(UserInputError, match="NaN or infinite"):
        video_iba.estimate(tiny, [data[0], torch.full((2, 3, 32, 32), float("nan"))], layer="features.4")
    # one batch given as a tensor is that batch (iterated, its rows lost their batch axis: a conv ValueError)
    torch.testing.assert_close(video_iba.estimate(tiny, data[0], layer="features.4").mean,
                               video_iba.estimate(tiny, [data[0]], layer="features.4").mean)
    with pytest.raises(UserInputError, match=r"got shape \(3, 32, 32\); add a batch axis to one input with x\[None\]"):
        video_iba.estimate(tiny, [data[0][0]], layer="features.4")
    # a data loader's (inputs, labels) batches give their inputs (were refused as lists)
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.cat(data), torch.zeros(24, dtype=torch.long)), batch_size=8)
    torch.testing.assert_close(video_iba.estimate(tiny, loader, layer="features.4").mean, stats.mean)
    with pytest.raises(UserInputError, match="got list; a multi-pathway model"):  # pathways are not (inputs, labels)
        video_iba.estimate(tiny, [[data[0], data[1]]], layer="features.4")
    with pytest.raises(UserInputError, match="a batch is torch.uint8 .* preprocess the pixels with preprocess_image"):
        video_iba.estimate(tiny, [data[0].to(torch.uint8)], layer="features.4")  # was a RuntimeError
    assert repr(stats) == "Statistics(layer features.4, mean/std (16, 16, 16), 24 samples)"  # not the tensors


def test_statistics_are_refused_for_other_weights_up_to_their_layer(tiny: TinyCNN) -> None:
    # statistics estimated in a notebook were used silently with a network changed since (fine-tuned,
    # or its weights loaded again): the noise then no longer follows what the layer outputs
    data = [torch.randn(8, 3, 32, 32) for _ in range(2)]
    stats = video_iba.estimate(tiny, data, layer="features.3")  # the batch norm, after two convolutions
    x = data[0][:1]
    video_iba.explain(tiny, x, layer="features.3", stats=stats, steps=2, samples=2)
    same = copy.deepcopy(tiny)  # the same weights in another network
    with torch.no_grad():
        same.fc.weight.mul_(-1)  # a network changed only after the layer (what randomisation metrics do)
    video_iba.explain(same, x, layer="features.3", stats=stats, steps=2, samples=2)
    for name in ("features.0.bias", "features.3.running_mean"):  # before the layer, and the layer itself
        changed = copy.deepcopy(tiny)
        with torch.no_grad():
            changed.get_parameter(name).add_(0.1) if "bias" in name else changed.get_buffer(name).add_(0.1)
        before = snapshot(changed)
        with pytest.raises(UserInputError, match=r"the statistics of 'features.3' were estimated with other weights "
                                                 r"up to that layer than this model has there; estimate them again"):
            video_iba.explain(changed, x, layer="features.3", stats=stats, steps=2, samples=2)
        after = snapshot(changed)
        assert after["hooks"] == 0 and all(after[k] == before[k] for k in ("training", "requires_grad"))
    halved = copy.deepcopy(tiny).to(torch.bfloat16)  # the same network cast to half precision: its weights rounded
    with pytest.raises(UserInputError, match=r"explain the model they were estimated with; if it is their model cast "
                                             r"to half precision \(.half\(\)\), explain it in float32 with "
                                             r"precision= fp16 or bf16 instead$"):
        video_iba.explain(halved, x.to(torch.bfloat16), layer="features.3", stats=stats, steps=2, samples=2)
    stats.meta.pop("upstream_digest")  # statistics of older versions are not checked
    video_iba.explain(changed, x, layer="features.3", stats=stats, steps=2, samples=2)
    # a TorchScript submodule takes no hooks (estimate raised torch's RuntimeError): it counts as
    # before every layer
    scripted = copy.deepcopy(tiny)
    scripted.features[0] = torch.jit.script(scripted.features[0])
    stats = video_iba.estimate(scripted, data, layer="features.3")
    video_iba.explain(scripted, x, layer="features.3", stats=stats, steps=2, samples=2)
    with torch.no_grad():
        scripted.features[0].bias.add_(0.1)
    with pytest.raises(UserInputError, match="were estimated with other weights up to that layer"):
        video_iba.explain(scripted, x, layer="features.3", stats=stats, steps=2, samples=2)


def test_spatiotemporal_maps() -> None:
    torch.manual_seed(0)
    model = Tiny3D().eval()
    clip = torch.randn(1, 3, 8, 16, 16)
    attr = video_iba.explain(model, clip, layer="block", seed=0, steps=3)
    assert attr.bits.shape == (8, 16, 16) and attr.capacity is not None and attr.capacity.shape == (8, 4, 8, 8)
    assert math.isclose(attr.total_bits, float(attr.capacity.double().sum()) / math.log(2), rel_tol=1e-5)
    assert attr.meta["smoothing_sigmas"] == [1.0, 1.0, 1.0]
    clips = [torch.randn(2, 3, 8, 16, 16) for _ in range(2)]
    stats = video_iba.estimate(model, clips, layer="block")
    assert stats.mean.shape == (8, 1, 8, 8)  # pooled over time by default
    again = video_iba.explain(model, clip, layer="block", stats=stats, seed=0, steps=2)
    assert again.meta["stats_source"] == "dataset"


@pytest.mark.parametrize("bad, match", [
    (torch.randn(3, 32, 32), "shape"),
    (torch.randn(0, 3, 32, 32), r"got \(0, 3, 32, 32\)"),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "float"),
    (torch.full((1, 3, 32, 32), float("nan")), "NaN or infinite"),  # it gave an all-zero map
    (torch.full((1, 3, 32, 32), float("inf")), "NaN or infinite"),
    # another device than the model's is named as such (checking its values first failed on it)
    (torch.empty(1, 3, 32, 32, device="meta"), "x is on meta but the model is on cpu; move one of them"),
])
@pytest.mark.parametrize("method", ["iba", "saliency", "gradcam", "occlusion8"])
def test_bad_inputs(tiny: TinyCNN, bad: torch.Tensor, match: str, method: str) -> None:
    with pytest.raises(UserInputError, match=match):
        video_iba.attribute(method, tiny, bad, layer="features.4") if method == "iba" else \
            video_iba.attribute(method, tiny, bad)


@pytest.mark.parametrize("method", ["saliency", "gradcam", "occlusion8"])
def test_a_batch_given_to_a_baseline_names_how_to_take_one_input(tiny: TinyCNN, method: str) -> None:
    # it said to add a batch axis, which the batch has
    with pytest.raises(UserInputError, match=r"got \(2, 3, 32, 32\); explain one input at a time, x\[i:i \+ 1\]"):
        video_iba.attribute(method, tiny, torch.randn(2, 3, 32, 32))


def test_a_model_giving_nan_logits_is_refused(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    broken = copy.deepcopy(tiny)
    with torch.no_grad():
        broken.fc.weight[0, 0] = float("nan")
    for method in ("iba", "saliency"):
        with pytest.raises(UserInputError, match="logits for this input contain NaN; check the model's weights"):
            video_iba.attribute(method, broken, image_input, **({"layer": "features.4"} if method == "iba" else {}))


@pytest.mark.parametrize("kwargs, match", [
    ({"beta": 0.0}, "beta"), ({"beta": -1.0}, "beta"), ({"steps": 0}, "steps"), ({"samples": 0}, "samples"),
])
def test_bad_settings(tiny: TinyCNN, image_input: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(UserInputError, match=match):
        video_iba.explain(tiny, image_input, layer="features.4", **kwargs)


def test_attribution_save_load(tiny: TinyCNN, image_input: torch.Tensor, tmp_path) -> None:  # type: ignore[no-untyped-def]
    attr = video_iba.explain(tiny, image_input, layer="features.4", seed=0)
    attr.save(tmp_path / "a.npz")
    back = video_iba.Attribution.load(tmp_path / "a.npz")
    assert torch.equal(back.bits, attr.bits) and back.target == attr.target and back.meta == attr.meta
    assert back.capacity is not None and back.capacity.shape == (16, 16, 16)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]


def test_layers_without_a_feature_map_are_refused(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    with pytest.raises(UserInputError, match="not a feature map"):
        video_iba.explain(tiny, image_input, layer="fc")


def test_input_requiring_grad_gets_no_gradient(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    x = image_input.clone().requires_grad_(True)
    for split in ("auto", "hook"):
        video_iba.explain(tiny, x, layer="features.4", split=split, steps=2)
    assert x.grad is None


def test_batch_norm_after_the_layer_is_folded_in_a_private_copy(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    state = {k: v.clone() for k, v in tiny.state_dict().items()}
    a = video_iba.explain(tiny, image_input, layer="features.0", seed=4)
    assert "batch norm folded" in a.meta["prefix_note"]
    b = video_iba.explain(tiny, image_input, layer="features.0", seed=4, split="hook")
    torch.testing.assert_close(a.bits, b.bits, rtol=1e-3, atol=1e-5)
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(p.grad is None for p in tiny.parameters())


@pytest.mark.parametrize("overwrite", [True, False])
def test_one_bottleneck_per_pathway_optimised_jointly(overwrite: bool) -> None:
    from ..nets import TwoPath

    torch.manual_seed(0)
    model = TwoPath(overwrite=overwrite).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 8, 16, 16, generator=g)
    before = x.clone()
    packs: list[list[torch.Tensor]] = []

    def pack(clip: torch.Tensor) -> list[torch.Tensor]:  # slow: every 4th frame, fast: all
        packs.append([clip[:, :, ::4], clip])
        return packs[-1]

    attr = video_iba.explain(model, x, layer=["slow", "fast"], seed=0, steps=4, pack=pack)
    assert torch.equal(x, before) and packs  # the model overwrites the pathway lists it gets, never the clip
    assert attr.bits.shape == (8, 16, 16)  # at the clip's (the fast pathway's) resolution
    assert isinstance(attr.capacity, list) and [tuple(c.shape) for c in attr.capacity] == [(8, 2, 16, 16), (4, 8, 16, 16)]
    per_layer = attr.meta["bits_per_layer"]
    assert len(per_layer) == 2 and min(per_layer) > 0
    assert math.isclose(attr.total_bits, sum(per_layer), rel_tol=1e-5)
    assert attr.meta["prefix_cached"] is not overwrite
    full = video_iba.explain(model, x, layer=["slow", "fast"], seed=0, steps=4, split="hook", pack=pack)
    torch.testing.assert_close(attr.bits, full.bits, rtol=1e-4, atol=1e-7)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    with pytest.raises(UserInputError, match="one per layer"):
        video_iba.explain(model, x, layer=["slow", "fast"], stats=Statistics.from_input(torch.randn(1, 8, 2, 16, 16)),
                          pack=pack)
    with pytest.raises(UserInputError, match="distinct"):
        video_iba.explain(model, x, layer=["slow", "slow"], pack=pack)
    with pytest.raises(UserInputError, match="x is a list; give the clip"):  # one convention: the clip and pack=
        video_iba.explain(model, pack(x), layer=["slow", "fast"])


def test_multi_layer_attribution_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ..nets import TwoPath

    torch.manual_seed(0)
    model = TwoPath().eval()
    x = torch.randn(1, 3, 8, 16, 16)
    attr = video_iba.explain(model, x, layer=["slow", "fast"], seed=0, steps=2, pack=lambda c: [c[:, :, ::4], c])
    attr.save(tmp_path / "two.npz")
    back = video_iba.Attribution.load(tmp_path / "two.npz")
    assert isinstance(back.capacity, list) and len(back.capacity) == 2 and back.meta["layer"] == ["slow", "fast"]


def test_the_class_noise_alone_is_given_is_reported(image_input: torch.Tensor, caplog: pytest.LogCaptureFixture,
                                                     tmp_path) -> None:  # type: ignore[no-untyped-def]
    from torch import nn

    # a network that says class 0 for anything, noise included, unless the features are strong
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[4].weight.zero_()
        net[4].bias.copy_(torch.tensor([3.0, 0.0]))
    fast = IBAConfig(steps=2, samples=2)
    with caplog.at_level("WARNING", logger="video_iba.methods.iba"):
        first = video_iba.explain(net, image_input, 0, layer="0", config=fast, seed=0)
        video_iba.explain(net, image_input, 0, layer="0", config=fast, seed=1)  # warned once only
        other = video_iba.explain(net, image_input, 1, layer="0", config=fast, seed=0)
    p0 = float(torch.softmax(torch.tensor([3.0, 0.0]), 0)[0])  # the logits do not depend on the features here
    assert first.meta["noise_top1"] == 0 and first.meta["noise_p_target"] == pytest.approx(p0, abs=1e-4)
    assert other.meta["noise_top1"] == 0 and other.meta["noise_p_target"] == pytest.approx(1 - p0, abs=1e-4)
    warned = [r.getMessage() for r in caplog.records if "noise alone" in r.getMessage()]
    assert len(warned) == 1 and "class 0" in warned[0] and "at 0 (p=0.95)" in warned[0]
    first.save(tmp_path / "a.npz")
    assert video_iba.Attribution.load(tmp_path / "a.npz").meta["noise_p_target"] == first.meta["noise_p_target"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_is_explained_as_in_float32(tiny: TinyCNN, image_input: torch.Tensor,
                                                            dtype: torch.dtype) -> None:
    # in float16 the capacity's log((1 - lambda)^2) is -inf at the mask's upper clamp: the fit ran
    # into NaN and reported 0 bits; the masks and information are now computed in float32
    ref = video_iba.explain(tiny, image_input, layer="features.4", seed=4, steps=3)
    half = copy.deepcopy(tiny).to(dtype)
    attr = video_iba.explain(half, image_input.to(dtype), layer="features.4", seed=4, steps=3)
    assert all(math.isfinite(v) for v in attr.meta["info_nats_per_step"] + attr.meta["ce_per_step"])
    assert attr.bits.dtype == torch.float32 and math.isclose(attr.total_bits, ref.total_bits, rel_tol=0.02)
    assert float(torch.corrcoef(torch.stack([attr.bits.flatten(), ref.bits.flatten()]))[0, 1]) > 0.99
    assert all(p.dtype == dtype for p in half.parameters())


def test_a_compiled_model_is_refused_with_the_module_it_wraps(tiny: TinyCNN, image_input: torch.Tensor) -> None:
    compiled = torch.compile(tiny)  # compiles lazily: nothing runs until it is called
    for layer in ("features.4", "_orig_mod.features.4"):
        with pytest.raises(UserInputError, match=r"compiled with torch.compile .*model._orig_mod"):
            video_iba.explain(compiled, image_input, layer=layer, seed=0)
    with pytest.raises(UserInputError, match="model._orig_mod"):
        video_iba.estimate(compiled, [image_input], layer="features.4")
    with pytest.raises(UserInputError, match="model._orig_mod"):
        video_iba.attribute("saliency", compiled, image_input)


class _Sqrt(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sqrt()  # finite on a ReLU's output, NaN on noise below zero


def test_a_fit_that_turns_nan_is_refused_not_reported_as_zero_bits(image_input: torch.Tensor) -> None:
    # before, the NaN masks became a map of 0 bits with no word of the failure
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), _Sqrt(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 4)).eval()
    with pytest.raises(UserInputError, match=r"loss on the noisy feature maps is not finite at step 0 .*another layer="):
        video_iba.explain(model, image_input, layer="1", steps=3, seed=0)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
    attr = video_iba.explain(model, image_input, layer="0", steps=3, seed=0)  # before the ReLU: finite
    assert attr.total_bits > 0 and all(math.isfinite(v) for v in attr.meta["ce_per_step"])


def test_one_step_is_the_initial_mask_and_says_so(tiny: TinyCNN, image_input: torch.Tensor,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    tiny = copy.deepcopy(tiny)  # a model not explained before: warned once per model and layer
    a = video_iba.explain(tiny, image_input, 0, layer="features.4", seed=0, steps=1)
    b = video_iba.explain(tiny, image_input, 1, layer="features.4", seed=0, steps=1)
    assert torch.equal(a.bits, b.bits)  # no update: the class plays no part
    assert sum("with 1 step the mask is never updated" in r.message for r in caplog.records) == 1
    c = video_iba.explain(tiny, image_input, 1, layer="features.4", seed=0, steps=2)
    assert not torch.equal(b.bits, c.bits)


def test_weights_made_under_inference_mode_are_refused_and_an_input_made_so_is_explained(
        image_input: torch.Tensor) -> None:
    # gradients cannot pass through inference tensors: the fit failed inside autograd, and putting back
    # requires_grad=True failed too, leaving the model changed
    with torch.inference_mode():
        torch.manual_seed(0)
        held = TinyCNN().eval()
        x_inf = image_input.clone()
    before = snapshot(held)
    for call in (lambda: video_iba.explain(held, image_input, layer="features.4", steps=2),
                 lambda: video_iba.attribute("saliency", held, image_input)):
        with pytest.raises(UserInputError, match=r"made under torch.inference_mode\(\) \(features.0.weight is an "
                                                 r"inference tensor\).*build or load the model outside it"):
            call()
    stats = video_iba.estimate(held, [image_input, image_input.flip(-1)], layer="features.4")  # no gradient: works
    assert stats.samples == 2
    after = snapshot(held)
    assert after["requires_grad"] == before["requires_grad"] and after["training"] == before["training"]
    torch.manual_seed(0)
    model = TinyCNN().eval()
    for method in ("iba", "saliency"):
        kw = {"layer": "features.4", "steps": 2} if method == "iba" else {}
        got = video_iba.attribute(method, model, x_inf, 1, **kw)
        ref = video_iba.attribute(method, model, image_input, 1, **kw)
        assert torch.equal(got.values, ref.values)
