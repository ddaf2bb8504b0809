"""Metric definitions on constructed cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from video_iba import Attribution, Unit, UserInputError
from video_iba.evaluation.metrics import (bootstrap_ci, box_mask, degradation, hit_ratio, sensitivity_n, temporal_share,
                               tile_labels)


class RegionModel(nn.Module):
    """Two classes; the logit of class 0 is the sum of the input over a region (times a weight map)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x * self.weight).flatten(1).sum(1)
        return torch.stack([s, torch.zeros_like(s)], dim=1)


def test_tiles_and_tubes() -> None:
    lab = tile_labels((16, 24), 8)
    assert lab.max() == 5 and (lab[:8, :8] == 0).all() and (lab[8:, 16:] == 5).all()
    tubes = tile_labels((8, 16, 16), 8, t_tile=4)
    assert tubes.max() == 7 and (tubes[:4, :8, :8] == 0).all() and (tubes[4:, 8:, 8:] == 7).all()
    assert tile_labels((3, 14, 14), 14).max() == 0  # a tube over all frames by default
    with pytest.raises(UserInputError):
        tile_labels((4, 4, 4, 4), 2)


def test_degradation_ranks_the_true_map_above_random_and_reversed() -> None:
    torch.manual_seed(0)
    w = torch.zeros(1, 3, 32, 32)
    w[:, :, 8:16, 8:24] = 0.005  # two tiles matter
    model = RegionModel(w)
    x = torch.randn(1, 3, 32, 32) * 0.1
    x[:, :, 8:16, 8:24] += 2.0  # what the class sees; the channel mean is far below it
    truth = (w * x)[0].sum(0)
    good = degradation(model, x, truth, target=0, tile=8, points=100)
    assert good.tiles == 16 and good.fractions[0] == 0 and good.fractions[-1] == 1
    assert good.morf[0] == pytest.approx(1) and good.morf[-1] == pytest.approx(0) and good.lerf[-1] == pytest.approx(0)
    assert good.score > 0.8  # MoRF falls at once, LeRF only at the end
    bad = degradation(model, x, -truth, target=0, tile=8)
    assert bad.score == pytest.approx(-good.score, abs=1e-6)  # reversing the ranking swaps the curves
    flat = degradation(model, x, torch.zeros(32, 32), target=0, tile=8)
    assert flat.score == pytest.approx(0.0, abs=1e-9)  # no ranking, equal curves
    clip = degradation(RegionModel(torch.ones(1, 3, 4, 8, 8) * 0.01), torch.rand(1, 3, 4, 8, 8), torch.rand(4, 8, 8),
                       target=0, tile=4, t_tile=2)
    assert clip.tiles == 8 and len(clip.fractions) == 9  # every count of removed tubes, 0..8
    with pytest.raises(UserInputError, match="shape"):
        degradation(model, x, torch.zeros(16, 16), target=0)


def test_box_and_tube_hit_ratio_and_temporal_share() -> None:
    mask = box_mask((10, 10), np.array([2, 3, 6, 5]))
    assert mask.sum() == 8 and mask[3:5, 2:6].all()
    v = np.zeros((10, 10))
    v[3:5, 2:6] = 1
    assert hit_ratio(v, mask) == 1.0
    assert hit_ratio(-v, mask) == 0.0
    half = v.copy()
    half[3, 2:6] = 0
    half[0, :4] = 1  # 4 of the 8 top cells outside
    assert hit_ratio(half, mask) == 0.5
    boxes = np.array([[np.nan] * 4, [0, 0, 2, 2], [0, 0, 2, 2], [np.nan] * 4])
    tube = box_mask((4, 4, 4), boxes)
    assert tube.sum() == 8 and not tube[0].any() and tube[1, :2, :2].all()
    clip = np.zeros((4, 4, 4))
    clip[1:3] = 1.0
    clip[0] = 1.0
    assert temporal_share(clip, (1, 3)) == pytest.approx(2 / 3)
    with pytest.raises(UserInputError, match="outside"):
        box_mask((10, 10), np.array([5, 5, 12, 8]))
    with pytest.raises(UserInputError, match="does not fit"):
        temporal_share(clip, (2, 9))
    with pytest.raises(UserInputError, match=r"0 <= t0 < t1 <= 4"):
        temporal_share(clip, (3, 1))
    with pytest.raises(UserInputError, match=r"box \(5, 5, 12, 8.5\) lies outside"):  # numbers, not numpy reprs
        box_mask((10, 10), np.array([5, 5, 12, 8.5]))


def test_metrics_run_the_network_in_eval_mode_and_leave_it_as_it_was() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    net[1].running_mean.uniform_(-1, 1)
    x = torch.randn(1, 3, 16, 16)
    attr = Attribution(torch.rand(16, 16), Unit.BITS, target=1)
    net.eval()
    expected = degradation(net, x, attr.values, 1, tile=4).score, sensitivity_n(net, x, attr.values, 1, tile=4,
                                                                                 ns=[3], masks=8).pearson
    net.train()  # a notebook's network, left in training mode
    stats = net[1].running_mean.clone()
    assert degradation(net, x, attr, 1, tile=4).score == pytest.approx(expected[0])  # an Attribution as the map
    assert np.allclose(sensitivity_n(net, x, attr, 1, tile=4, ns=3, masks=8).pearson, expected[1])  # one n
    assert net.training and all(m.training for m in net.modules()) and torch.equal(net[1].running_mean, stats)
    assert hit_ratio(attr, attr.values.numpy() > 0.5) == 1.0 and temporal_share(torch.rand(2, 4, 4), (0, 1)) > 0


@pytest.mark.parametrize("call, message", [
    (lambda net, x, v: degradation(net, x, v, 3), "target 3 is out of range; the model has 3 classes"),
    (lambda net, x, v: sensitivity_n(net, x, v, -1, masks=4), "target -1 is out of range"),
    (lambda net, x, v: degradation(net, x, v, 0, tile=16), "tile=16 makes one tile of the 16x16 map"),
    (lambda net, x, v: sensitivity_n(net, x, v, 0, tile=32), "tile=32 makes one tile"),
    (lambda net, x, v: degradation(net, x, v, 0, points=1), "points=1: a curve needs at least 2 points"),
    (lambda net, x, v: sensitivity_n(net, x, v, 0, masks=1), "masks=1: a correlation needs at least 2"),
    (lambda net, x, v: degradation(net, x, "map", 0), "a map must be an array, a tensor or an Attribution, got str"),
    (lambda net, x, v: bootstrap_ci([1.0, 2.0], level=95), "give 0 < level < 1"),
])
def test_metric_arguments_that_cannot_be_scored_are_refused(call, message) -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    with pytest.raises(UserInputError, match=message):
        call(net, torch.randn(1, 3, 16, 16), torch.rand(16, 16))


def test_sensitivity_n_is_one_for_exact_linear_attributions() -> None:
    torch.manual_seed(0)
    w = torch.randn(1, 3, 16, 16)
    model = RegionModel(w)
    x = torch.randn(1, 3, 16, 16)
    exact = (w * x)[0].sum(0)  # setting a tile to 0 drops the logit by exactly its attribution sum
    res = sensitivity_n(model, x, exact, target=0, tile=4, masks=20, seed=0)
    assert res.tiles == 16 and res.n[0] == 1 and res.n[-1] <= 13
    assert np.allclose(res.pearson, 1.0, atol=1e-6)
    noise = sensitivity_n(model, x, torch.randn(16, 16), target=0, tile=4, ns=[4], masks=50)
    assert abs(noise.pearson[0]) < 0.6


def test_bootstrap_interval() -> None:
    est = bootstrap_ci([0.5] * 10)
    assert (est.mean, est.low, est.high, est.n) == (0.5, 0.5, 0.5, 10)
    rng = np.random.default_rng(0)
    est = bootstrap_ci(rng.normal(1.0, 1.0, 400).tolist())
    assert est.low < 1.0 < est.high and est.high - est.low == pytest.approx(2 * 1.96 / 20, rel=0.2)
    assert bootstrap_ci([1.0, float("nan"), 3.0]).n == 2
    with pytest.raises(UserInputError):
        bootstrap_ci([])


def test_parameter_randomisation_cascades_on_a_copy() -> None:
    from video_iba.methods import attribute
    from video_iba.evaluation.metrics import map_ssim, parameter_randomisation, randomisation_stages

    from ..nets import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen: list[list[str]] = []

    def grad_map(m: nn.Module, randomised: list[str]) -> torch.Tensor:
        seen.append(randomised)
        return attribute("saliency", m, x, target=0).values

    # two parameterised children: the Sequential is cascaded layer by layer (VGG's features/classifier)
    assert randomisation_stages(model) == ["fc", "features.5", "features.3", "features.2", "features.0"]
    res = parameter_randomisation(model, grad_map, stages=["fc", "features"], seed=0)
    assert res.stages == ["fc", "features"] and seen == [[], ["fc"], ["fc", "features"]]
    assert res.ssim.shape == (2,) and np.all(res.ssim < 0.9) and np.all(res.ssim > -1)
    original = grad_map(model, [])
    calls = len(seen)
    given = parameter_randomisation(model, grad_map, stages=["fc", "features"], seed=0, base=original)
    assert np.allclose(given.ssim, res.ssim) and len(seen) == calls + 2  # the original map given, not made again
    assert parameter_randomisation(model, grad_map, stages="fc", base=original).stages == ["fc"]  # not 'f', 'c'
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())  # the user's model untouched
    m = torch.rand(8, 16, 16)
    assert map_ssim(m, 3 * m) == pytest.approx(1.0)  # compared after |map| / max
    assert map_ssim(torch.rand(16, 16), torch.rand(16, 16)) < 0.5


def test_randomised_networks_depend_on_the_seed_alone_and_leave_the_callers_generator() -> None:
    from video_iba.evaluation.metrics import parameter_randomisation

    from ..nets import TinyCNN

    torch.manual_seed(0)
    model = TinyCNN().eval()
    fixed = torch.rand(8, 8)

    def weights_seen(draws: int) -> list[dict[str, torch.Tensor]]:
        seen: list[dict[str, torch.Tensor]] = []

        def draw_then_map(m: nn.Module, randomised: list[str]) -> torch.Tensor:
            seen.append({k: v.clone() for k, v in m.state_dict().items()})
            if draws:
                torch.rand(draws)  # a method drawing from the global generator (captum's SmoothGrad does)
            return fixed

        parameter_randomisation(model, draw_then_map, stages=["fc", "features"], seed=3)
        return seen

    first, second = weights_seen(1), weights_seen(1000)
    # the same randomised network at every stage, whatever the method drew in between
    assert all(torch.equal(a[k], b[k]) for a, b in zip(first, second) for k in a)
    assert not torch.equal(first[1]["fc.weight"], first[0]["fc.weight"])  # and it was randomised
    torch.manual_seed(123)
    state = torch.get_rng_state()
    weights_seen(0)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator as it was


def test_randomisation_stages_and_the_stages_before_a_bottleneck() -> None:
    from video_iba.evaluation.metrics import randomisation_stages, stages_reaching
    from video_iba.evaluation.synthetic import TubeNet

    from ..nets import Tiny3D

    net = TubeNet().eval()
    assert randomisation_stages(net) == ["fc", "block3", "block2", "block1"]  # blocks stay whole
    x = torch.randn(1, 3, 4, 16, 16)
    stages = randomisation_stages(net)
    assert stages_reaching(net, x, ["block2"], stages) == {"block1", "block2"}
    assert stages_reaching(net, x, ["block3.2"], stages) == {"block1", "block2", "block3"}  # a layer inside a stage
    assert stages_reaching(net, x, ["block1"], ["fc", "block3"]) == set()
    net.train()
    running = [b.clone() for b in net.buffers()]
    assert stages_reaching(net, x, ["block2"], stages) == {"block1", "block2"}
    assert net.training and all(torch.equal(a, b) for a, b in zip(running, net.buffers()))  # statistics untouched
    net.eval()

    class Blocks(nn.Module):  # pytorchvideo's layout: one ModuleList
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList([Tiny3D().stem, Tiny3D().block, nn.Identity()])

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            for b in self.blocks:
                v = b(v)
            return v.mean()

    assert randomisation_stages(Blocks()) == ["blocks.1", "blocks.0"]

    class Listed(nn.Module):  # MViT's layout: a ModuleList among other stages, never called itself
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.blocks, self.head = Tiny3D().stem, nn.ModuleList([Tiny3D().block, Tiny3D().block]), \
                nn.Linear(8, 2)

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            v = self.stem(v)
            for b in self.blocks:
                v = b(v)
            return self.head(v.mean((2, 3, 4)))

    listed = Listed().eval()
    assert randomisation_stages(listed) == ["head", "blocks", "stem"]
    assert stages_reaching(listed, x, ["blocks.1"], ["head", "blocks", "stem"]) == {"blocks", "stem"}
    assert stages_reaching(listed, x, ["stem"], ["head", "blocks", "stem"]) == {"stem"}
    net.spare = nn.Conv3d(3, 3, 1)  # a module the forward pass never calls
    with pytest.raises(UserInputError, match="did not run"):
        stages_reaching(net, x, ["spare"], stages)
