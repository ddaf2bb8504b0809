"""Video networks built for clips of another length than their own (`frames=`, `--frames`)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import video_iba
from video_iba.errors import UserInputError
from video_iba.models import get_spec, load_model, pathways, with_frames
from video_iba.models.clip_length import refit_pools, spanning_pools


def _pools(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {n: tuple(int(k) for k in m.kernel_size) for n, m in model.named_modules() if isinstance(m, nn.AvgPool3d)}


def test_a_network_built_for_other_clips_computes_as_pytorchvideo_builds_it_for_them() -> None:
    from pytorchvideo.models.x3d import create_x3d

    model = load_model("x3d_xs", weights="random", frames=8)
    assert model.video_iba_spec.frames == 8 and get_spec("x3d_xs").frames == 4
    assert _pools(model) == {"blocks.5.pool.pool": (8, 5, 5)}  # the head averages the whole clip: 4 -> 8 steps
    # the same network as pytorchvideo builds it for 8-frame clips, with these weights
    reference = create_x3d(input_clip_length=8, input_crop_size=160, depth_factor=2.2).eval()
    reference.load_state_dict(model.state_dict())
    clip = torch.randn(1, 3, 8, 182, 182, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(clip), reference(clip), rtol=0, atol=1e-5)
    own = load_model("x3d_xs", weights="random")  # without frames= nothing changes
    assert _pools(own) == {"blocks.5.pool.pool": (4, 5, 5)}


def test_slowfast_pathways_both_span_the_new_clip() -> None:
    model = load_model("slowfast_r50", weights="random", frames=16)
    assert _pools(model) == {"blocks.5.pool.0": (4, 7, 7), "blocks.5.pool.1": (16, 7, 7)}
    spec = model.video_iba_spec
    with torch.no_grad():
        logits = model(pathways(spec, torch.randn(1, 3, 16, 224, 224)))
    assert logits.shape == (1, 400)


def test_only_pools_spanning_the_whole_clip_change() -> None:
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.AvgPool3d((2, 2, 2)), nn.AvgPool3d((4, 4, 4)),
                        nn.AvgPool3d((1, 1, 1)), nn.Flatten())
    with torch.device("meta"):
        skeleton = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.AvgPool3d((2, 2, 2)), nn.AvgPool3d((4, 4, 4)),
                                 nn.AvgPool3d((1, 1, 1)), nn.Flatten())
    names = spanning_pools(skeleton, lambda x: x, (1, 3, 8, 8, 8))
    assert names == ["2"]  # the windowed pool stays, the one-step pool too
    assert refit_pools(skeleton, lambda x: x, names, (1, 3, 16, 8, 8)) == {"2": (8, 4, 4)}
    assert _pools(skeleton)["2"] == (8, 4, 4) and _pools(net)["2"] == (4, 4, 4)
    assert spanning_pools(net, lambda x: x, (1, 3, 8, 8, 8), "cpu") == ["2"]  # a network that runs on the CPU only
    with pytest.raises(RuntimeError):  # a clip too short for the network: its own error
        refit_pools(skeleton, lambda x: x, names, (1, 3, 1, 8, 8))


@pytest.mark.parametrize("name, frames, message", [
    ("mvit_v1_b", 5, "frames= must be even for mvit_v1_b (its tubelets span 2 frames), got 5"),
    ("mvit_v2_s", 7, "frames= must be even for mvit_v2_s (its tubelets span 2 frames), got 7"),
    ("hf:MCG-NJU/videomae-base-finetuned-kinetics", 7, "frames= must be even for hf:MCG-NJU/videomae-base-finetuned-"
                                                       "kinetics (its tubelets span 2 frames), got 7"),
    ("slowfast_r50", 30, "frames= must be a multiple of 4 for slowfast_r50 (its slow pathway takes every 4th frame "
                         "of the clip), got 30"),
    ("resnet50", 8, "resnet50 is an image model; frames= applies to video models only"),
    ("r3d_18", 0, "frames= must be a whole number of frames from 1 to 1024, got 0"),
    ("s3d", 8, "s3d cannot take clips of 8 frames (RuntimeError: input image (T: 1 H: 7 W: 7) smaller than kernel "
               "size (kT: 2 kH: 7 kW: 7)); choose another number of frames= (its own: 128)"),
])
def test_clips_a_network_cannot_take_are_refused(name: str, frames: int, message: str) -> None:
    with pytest.raises(UserInputError) as info:
        load_model(name, weights="random", frames=frames)
    assert message in str(info.value)


def test_a_spec_of_ones_own_takes_other_frames_and_its_model_is_left_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    net = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.AvgPool3d((4, 1, 1)), nn.AdaptiveAvgPool3d(1),
                        nn.Flatten(), nn.Linear(4, 3))
    spec = video_iba.ModelSpec("mine", "entry", input_size=16, resize=16, modality="video", frames=4,
                               default_layer="0", labels="own", label_names=("a", "b", "c"))
    session = video_iba.Session.for_model(net, spec, video_iba.Settings(frames=8, method="saliency"))
    assert session.spec.frames == 8 and _pools(net) == {"1": (4, 1, 1)}  # the network is used as it is
    assert with_frames(spec, 4) is spec


NET = '''
import torch
from torch import nn
import video_iba


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=(0, 1, 1))  # 2 frames fewer
        self.pool = nn.AvgPool3d((2, 2, 2))
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if float(x.abs().max()) > 1e6:  # reads a value: cannot run on the meta device
            raise ValueError("far too bright")
        return self.fc(self.pool(self.conv(x)).mean((2, 3, 4)))


def build():
    return Net(), video_iba.ModelSpec("net", "own", input_size=8, resize=8, modality="video", frames=4,
                                      default_layer="conv", labels="own", label_names=("a", "b"))
'''


def test_a_network_that_cannot_run_on_the_meta_device_is_fitted_on_the_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "net.py").write_text(NET)
    ref = f"{tmp_path / 'net.py'}:build"
    assert _pools(load_model(ref, frames=12)) == {"pool": (10, 2, 2)}
    with pytest.raises(UserInputError, match=r"cannot take clips of 2 frames \(RuntimeError: .*\); choose another "
                                             r"number of frames= \(its own: 4\)"):
        load_model(ref, frames=2)


def test_layers_are_listed_on_clips_of_another_length() -> None:
    shapes = {li.name: li.shape for li in video_iba.models.layers("x3d_xs", frames=8)}
    own = {li.name: li.shape for li in video_iba.models.layers("x3d_xs")}
    assert own["blocks.2"][2] == 4 and shapes["blocks.2"][2] == 8  # the default layer's time axis
    assert shapes["blocks.5.pool.pool"] == own["blocks.5.pool.pool"]  # the head still averages the whole clip
    videomae = {li.name: li.grid for li in video_iba.models.layers("hf:MCG-NJU/videomae-base-finetuned-kinetics",
                                                                    frames=8)}
    assert videomae["hf.videomae.embeddings"] == (4, 14, 14)  # 2-frame tubelets
    grids = {li.name: li.grid for li in video_iba.models.layers("mvit_v2_s", frames=32)}
    assert grids["pos_encoding"] == (16, 56, 56) and grids["norm"] == (16, 7, 7) and grids["blocks.15"] == (16, 7, 7)


def test_mvit_v2_takes_clips_of_another_length_and_a_checkpoint_trained_on_them(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from torchvision.models.video.mvit import MViT

    made = _torchvision_mvit_kwargs("mvit_v2_s", monkeypatch)
    torch.manual_seed(3)
    own = MViT(**{**made, "temporal_size": 8}).eval()  # torchvision's own network as built for 8-frame clips
    assert own.blocks[0].attn.rel_pos_t.shape[0] == 7  # its time tables, made for 4 time steps
    torch.save(own.state_dict(), tmp_path / "k8.pt")

    with caplog.at_level(logging.WARNING, logger="video_iba"):
        model = load_model("mvit_v2_s", weights=str(tmp_path / "k8.pt"), frames=8)
        assert "resampled" not in caplog.text  # a checkpoint of these clips loads as it is
        forgotten = load_model("mvit_v2_s", weights=str(tmp_path / "k8.pt"))  # without frames=: 16-frame clips
    assert (f"mvit_v2_s: the weights in '{tmp_path / 'k8.pt'}' hold time positions for clips of 8 frames and these "
            f"clips hold 16: resampled to them; give --frames 8") in caplog.text
    assert forgotten.blocks[0].attn.rel_pos_t.shape[0] == 7  # the checkpoint's tables, interpolated by the network
    caplog.clear()
    sixteen = tmp_path / "k16.pt"  # tables of the network's own length (16 frames) run on 8-frame clips
    torch.save(MViT(**made).state_dict(), sixteen)
    with caplog.at_level(logging.WARNING, logger="video_iba"):
        load_model("mvit_v2_s", weights=str(sixteen), frames=8)
    assert "hold time positions for clips of 16 frames and these clips hold 8" in caplog.text
    assert model.blocks[0].attn.rel_pos_t.shape[0] == 7 and model.video_iba_spec.frames == 8
    clip = torch.randn(1, 3, 8, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(clip), own(clip), rtol=1e-4, atol=1e-5)  # the network it was trained as
    assert model.video_iba_spec.layout("norm").grid == (4, 7, 7)
    attr = video_iba.explain(model, clip, steps=1, samples=2, seed=0)
    assert attr.bits.shape == (8, 224, 224) and len(attr.bits_per_frame) == 8


def _torchvision_mvit_kwargs(builder: str, monkeypatch) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The arguments torchvision's ``builder`` gives its ``MViT`` (its clip length included)."""
    import torchvision.models.video.mvit as tv_mvit

    made: dict[str, object] = {}
    real = tv_mvit.MViT

    def recording(**kwargs):  # type: ignore[no-untyped-def]
        made.update(kwargs)
        return real(**kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(tv_mvit, "MViT", recording)
        getattr(tv_mvit, builder)()
    return made


def test_mvit_v1_takes_clips_of_another_length_with_its_time_positions_interpolated(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from torchvision.models.video.mvit import MViT

    made = _torchvision_mvit_kwargs("mvit_v1_b", monkeypatch)
    torch.manual_seed(3)
    own = MViT(**{**made, "temporal_size": 8}).eval()  # as torchvision builds it for 8-frame clips
    assert own.pos_encoding.temporal_pos.shape == (4, 96)
    torch.save(own.state_dict(), tmp_path / "k8.pt")
    with caplog.at_level(logging.WARNING, logger="video_iba"):
        model = load_model("mvit_v1_b", weights=str(tmp_path / "k8.pt"), frames=8)
    assert "resampled" not in caplog.text  # a checkpoint of these clips loads as it is
    clip = torch.randn(1, 3, 8, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(clip), own(clip), rtol=1e-4, atol=1e-5)  # the network it was trained as
    assert model.video_iba_spec.layout("pos_encoding").grid == (4, 56, 56)
    assert model.video_iba_spec.layout("norm").grid == (4, 7, 7)
    attr = video_iba.explain(model, clip, steps=1, samples=2, seed=0)
    assert attr.bits.shape == (8, 224, 224) and len(attr.bits_per_frame) == 8

    # weights trained on 16-frame clips: their 8 time positions resampled to 4, each the middle of two
    sixteen = MViT(**made).eval()
    torch.save(sixteen.state_dict(), tmp_path / "k16.pt")
    table = sixteen.pos_encoding.temporal_pos.detach()
    with caplog.at_level(logging.WARNING, logger="video_iba"):
        halved = load_model("mvit_v1_b", weights=str(tmp_path / "k16.pt"), frames=8)
    assert (f"mvit_v1_b: the weights in '{tmp_path / 'k16.pt'}' hold time positions for clips of 16 frames and these "
            f"clips hold 8: resampled to them; give --frames 16 to run the weights on the clips they were trained "
            f"on") in caplog.text
    torch.testing.assert_close(halved.pos_encoding.temporal_pos.detach(), (table[0::2] + table[1::2]) / 2)
    torch.testing.assert_close(halved.pos_encoding.spatial_pos, sixteen.pos_encoding.spatial_pos)
    assert halved.pos_encoding.temporal_size == 4
    assert halved.pos_encoding.temporal_pos.requires_grad == halved.pos_encoding.spatial_pos.requires_grad
    with torch.no_grad():
        assert halved(clip).shape == (1, 400)
    doubled = load_model("mvit_v1_b", weights=str(tmp_path / "k16.pt"), frames=32)
    assert doubled.pos_encoding.temporal_pos.shape == (16, 96)
    torch.testing.assert_close(doubled.pos_encoding.temporal_pos.detach()[[0, -1]], table[[0, -1]])
    grids = {li.name: li.grid for li in video_iba.models.layers("mvit_v1_b", frames=32)}
    assert grids["pos_encoding"] == (16, 56, 56) and grids["norm"] == (16, 7, 7)


def test_a_token_grid_of_ones_own_keeps_its_length() -> None:
    spec = video_iba.ModelSpec(name="tok", family="own", modality="video", frames=8, input_size=32, resize=32,
                               default_layer="embed", labels="own", label_names=("a", "b"),
                               layouts=(("embed", video_iba.TokenLayout(grid=(4, 2, 2), prefix=1)),))
    with pytest.raises(UserInputError, match=r"tok takes clips of 8 frames only: its token grid is fixed \(position "
                                             r"tables or embeddings made for it\); drop frames="):
        with_frames(spec, 16)
    assert with_frames(spec, 8) is spec
