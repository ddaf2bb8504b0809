"""Attention rollout: the blocks' head-averaged attention with the residual, multiplied from the last
block back and read by the head, for Hugging Face transformers and ``nn.MultiheadAttention``
networks; what it refuses."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import video_iba
from video_iba import TokenLayout, UserInputError
from video_iba.evaluation import TUBEVIT_LAYOUT, TubeViT
from video_iba.methods.rollout import attention_rollout, head_row

from ..helpers import read_npz, run_cli
from ..nets import TinyCNN, snapshot

transformers = pytest.importorskip("transformers")


def _reference(attentions: list[np.ndarray], row: np.ndarray) -> np.ndarray:
    """Abnar and Zuidema's rollout written out: ``R = Â_L ... Â_1``, ``Â = (A + I) / 2`` with rows
    normalised, and the head's row of it."""
    r = np.eye(attentions[0].shape[-1])
    for a in attentions:
        mixed = 0.5 * a + 0.5 * np.eye(a.shape[-1])
        r = (mixed / mixed.sum(-1, keepdims=True)) @ r
    return row @ r


def test_a_hugging_face_vit_rolls_out_its_blocks_attention_and_keeps_its_own() -> None:
    torch.manual_seed(0)
    net = transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
        num_labels=3)).eval()
    model = video_iba.wrap_hf(net)
    impl = net.config._attn_implementation
    assert impl != "eager"
    x = torch.randn(1, 3, 32, 32)
    before = snapshot(model)
    with torch.no_grad():
        logits = model(x)
    grid = attention_rollout(model, x)  # the layout from the wrapper's spec: 4x4 tokens after the class token
    assert grid.shape == (1, 1, 1, 4, 4)

    eager = copy.deepcopy(net)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        maps = [a[0].mean(0).double().numpy() for a in eager(pixel_values=x, output_attentions=True).attentions]
    expected = _reference(maps, np.eye(17)[0])[1:].reshape(4, 4)  # the class token's row, row-major grid
    np.testing.assert_allclose(grid[0, 0, 0].numpy(), expected, rtol=1e-5, atol=1e-7)

    attr = video_iba.attribute("rollout", model, x, target=2)
    assert attr.values.shape == (32, 32) and str(attr.unit) == "attention rollout" and attr.target == 2
    assert attr.meta["class_agnostic"] and torch.equal(attr.values, video_iba.attribute("rollout", model, x, 0).values)
    # the network attends as it did (its attention implementation restored), and is otherwise untouched
    assert net.config._attn_implementation == impl
    after = snapshot(model)
    assert after["hooks"] == before["hooks"] and after["requires_grad"] == before["requires_grad"]
    with torch.no_grad():
        torch.testing.assert_close(model(x), logits)


def test_multihead_attention_networks_give_their_weights_for_the_duration_only() -> None:
    torch.manual_seed(0)
    model = TubeViT().eval()
    clip = torch.randn(1, 3, 16, 64, 64)
    maps = []
    with torch.no_grad():  # each block's attention, asked for by hand
        tokens = model.embed(clip).flatten(2).transpose(1, 2)
        tokens = torch.cat([model.cls.expand(1, -1, -1), tokens], dim=1) + model.pos
        for block in model.blocks:
            h = block.norm1(tokens)
            maps.append(block.attn(h, h, h, need_weights=True)[1][0].double().numpy())
            tokens = block(tokens)
    expected = _reference(maps, np.eye(513)[0])[1:].reshape(8, 8, 8)

    model.requires_grad_(False)
    model.blocks[1].requires_grad_(True)
    before = snapshot(model)
    fast = torch.backends.mha.get_fastpath_enabled()
    grid = attention_rollout(model, clip, tokens=TUBEVIT_LAYOUT)
    np.testing.assert_allclose(grid[0, 0].numpy(), expected, rtol=1e-4, atol=1e-7)
    after = snapshot(model)
    assert after["hooks"] == before["hooks"] and after["requires_grad"] == before["requires_grad"]
    assert torch.backends.mha.get_fastpath_enabled() == fast

    attr = video_iba.attribute("rollout", model, clip, tokens=TUBEVIT_LAYOUT)
    assert attr.values.shape == (16, 64, 64) and float(attr.values.min()) >= 0
    half = video_iba.attribute("rollout", copy.deepcopy(model).half(), clip.half(), tokens=TUBEVIT_LAYOUT)
    assert half.values.dtype == torch.float32
    assert float(torch.corrcoef(torch.stack([half.values.flatten(), attr.values.flatten()]))[0, 1]) > 0.999
    # a network of one's own says how its tokens lie; a layout that does not count them is refused
    with pytest.raises(UserInputError, match="attention rollout places the attention's 513 tokens on a grid: give "
                                             "tokens= their layout"):
        video_iba.attribute("rollout", model, clip)
    with pytest.raises(UserInputError, match="the attention runs over 513 tokens, which the layout"):
        video_iba.attribute("rollout", model, clip, tokens=TokenLayout(grid=(8, 8, 8)))


class _Encoder(torch.nn.Module):
    """Patches, a class token and torch's own encoder layers, or blocks that pass ``need_weights``
    positionally (both ask their attention for no weights)."""

    def __init__(self, positional: bool) -> None:
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 16, 8, stride=8)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, 16))
        self.positional = positional
        self.attn = torch.nn.ModuleList([torch.nn.MultiheadAttention(16, 2, batch_first=True) for _ in range(2)])
        self.enc = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                               enable_nested_tensor=False)
        self.head = torch.nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.cat([self.cls.expand(len(x), -1, -1), self.embed(x).flatten(2).transpose(1, 2)], dim=1)
        if self.positional:
            for a in self.attn:
                t = t + a(t, t, t, None, False)[0]
        else:
            t = self.enc(t)
        return self.head(t[:, 0])


@pytest.mark.parametrize("positional", [False, True])
def test_torch_encoder_layers_and_positional_arguments_give_their_attention(positional: bool) -> None:
    torch.manual_seed(0)
    model = _Encoder(positional).eval()
    x = torch.randn(1, 3, 32, 32)
    before = snapshot(model)
    grid = attention_rollout(model, x, tokens=TokenLayout(grid=(4, 4), prefix=1))
    assert grid.shape == (1, 1, 1, 4, 4) and float(grid.std()) > 0  # the blocks' attention, not an even spread
    assert 0 < float(grid.sum()) < 1  # the class token keeps its own share
    assert snapshot(model)["hooks"] == before["hooks"]


def test_the_head_reads_the_class_token_the_grid_mean_or_both() -> None:
    np.testing.assert_allclose(head_row(5, 1, (0,), False).numpy(), [1, 0, 0, 0, 0])
    np.testing.assert_allclose(head_row(4, 0, (), True).numpy(), [0.25] * 4)  # VideoMAE: the tokens' mean
    np.testing.assert_allclose(head_row(5, 1, (0,), True).numpy(), [0.5, 0.125, 0.125, 0.125, 0.125])  # DINOv2
    np.testing.assert_allclose(head_row(4, 2, (0, 1), False).numpy(), [0.5, 0.5, 0, 0])  # DeiT with its teacher
    video = transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_labels=3)).eval()
    model = video_iba.wrap_hf(video)
    assert model.head_reads() == ((), True)
    grid = attention_rollout(model, torch.randn(1, 3, 4, 32, 32))
    assert grid.shape == (1, 1, 2, 4, 4) and float(grid.sum()) == pytest.approx(1.0, abs=1e-5)  # no class token


def test_networks_that_attend_otherwise_are_refused_before_any_work(tmp_path, capsys, photo_dir) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="attention rollout reads the attention of nn.MultiheadAttention blocks "
                                             ".* and this model has no such attention; choose another method"):
        video_iba.attribute("rollout", TinyCNN().eval(), torch.randn(1, 3, 32, 32))
    times = transformers.TimesformerForVideoClassification(transformers.TimesformerConfig(
        image_size=32, patch_size=8, num_frames=4, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=3)).eval()
    with pytest.raises(UserInputError, match="this model's TimeSformer blocks attend otherwise"):
        video_iba.attribute("rollout", video_iba.wrap_hf(times), torch.randn(1, 3, 4, 32, 32))
    with pytest.raises(UserInputError, match="cam_layer= applies to gradcam and guided_gradcam only, not to rollout"):
        video_iba.attribute("rollout", TubeViT().eval(), torch.randn(1, 3, 16, 64, 64), cam_layer="blocks.2")
    with pytest.raises(UserInputError, match="tokens= applies to gradcam, guided_gradcam and rollout only, not to "
                                             "saliency"):
        video_iba.attribute("saliency", TubeViT().eval(), torch.randn(1, 3, 16, 64, 64), tokens=TUBEVIT_LAYOUT)

    code, _, err = run_cli(["explain", f"{photo_dir}/coffee.jpg", "--model", "swin_t", "--weights", "random", "--method", "rollout",
                            "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "swin_t has no such attention" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_command_line_draws_a_torchvision_vits_rollout(tmp_path, capsys, photo_dir) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run_cli(["explain", f"{photo_dir}/chelsea.jpg", "--model", "vit_b_32", "--weights", "random",
                            "--method", "rollout", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    d = read_npz(str(tmp_path / "chelsea.npz"))
    values = d["values"] if "values" in d else d["bits"]
    assert values.shape == (224, 224) and "attention rollout" in str(d["unit"]) and float(values.min()) >= 0
    # a 7x7 grid of 32-pixel patches, upsampled: no two patches' centres alike on a random network
    centres = values[16::32, 16::32]
    assert centres.shape == (7, 7) and len(np.unique(centres.round(7))) > 40
