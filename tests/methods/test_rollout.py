"""Attention rollout: the blocks' head-averaged attention with the residual, multiplied from the last
block back and read by the head, for Hugging Face transformers and ``nn.MultiheadAttention``
networks; its gradient-weighted relevance (Chefer et al. 2021, "gae"); what they refuse."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import video_iba
from video_iba import TokenLayout, UserInputError
from video_iba.evaluation import TEST_SEEDS, TUBEVIT_LAYOUT, TubeViT, load_tubevit, make_clip
from video_iba.methods.rollout import attention_relevance, attention_rollout, head_row

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


def _tiny_vit() -> torch.nn.Module:
    """A Hugging Face ViT with a class token and 4 x 4 patches of 8 pixels on 32 x 32 photos."""
    return transformers.ViTForImageClassification(transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
        num_labels=3)).eval()


def _tiny_videomae() -> torch.nn.Module:
    """A Hugging Face VideoMAE (mean-pooling head, no class token): 2 x 4 x 4 tubelets of 4-frame clips."""
    return transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_labels=3)).eval()


def _tiny_timesformer() -> torch.nn.Module:
    """A Hugging Face TimeSformer (divided space-time attention) on 4-frame 32 x 32 clips."""
    return transformers.TimesformerForVideoClassification(transformers.TimesformerConfig(
        image_size=32, patch_size=8, num_frames=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, num_labels=3)).eval()


def _eager(net: torch.nn.Module) -> torch.nn.Module:
    """A copy of a Hugging Face network with eager attention (transformers 4 fixes it when building)."""
    copy_ = type(net)._from_config(copy.deepcopy(net.config), attn_implementation="eager").eval()
    copy_.load_state_dict(net.state_dict())
    return copy_


def _tiny_swin() -> torch.nn.Module:
    """A Hugging Face Swin (attention within shifted windows) on 32 x 32 photos."""
    return transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=4,
        num_labels=3)).eval()


def _relevance(attentions: list[np.ndarray], grads: list[np.ndarray], row: np.ndarray) -> np.ndarray:
    """Chefer et al.'s relevance written out: ``R = I``, then ``R = R + Ā R`` for each block, first to
    last, ``Ā`` the heads' mean of ``(∇A ⊙ A)⁺``; the head's row of ``R - I``."""
    eye = np.eye(attentions[0].shape[-1])
    r = eye
    for a, g in zip(attentions, grads):
        r = r + np.clip(a * g, 0, None).mean(0) @ r
    return row @ (r - eye)


def test_a_hugging_face_vit_rolls_out_its_blocks_attention_and_keeps_its_own() -> None:
    torch.manual_seed(0)
    net = _tiny_vit()
    model = video_iba.wrap_hf(net)
    impl = net.config._attn_implementation
    assert impl != "eager"
    x = torch.randn(1, 3, 32, 32)
    before = snapshot(model)
    with torch.no_grad():
        logits = model(x)
    grid = attention_rollout(model, x)  # the layout from the wrapper's spec: 4x4 tokens after the class token
    assert grid.shape == (1, 1, 1, 4, 4)

    eager = _eager(net)
    with torch.no_grad():
        maps = [a[0].mean(0).double().numpy() for a in eager(pixel_values=x, output_attentions=True).attentions]
    expected = _reference(maps, np.eye(17)[0])[1:].reshape(4, 4)  # the class token's row, row-major grid
    np.testing.assert_allclose(grid[0, 0, 0].numpy(), expected, rtol=1e-5, atol=1e-7)
    # the wrapper averages each block's heads as the block returns them: only the averages are held
    with torch.no_grad():
        _, means = model.attentions(x, mean_heads=True)
        _, full = model.attentions(x)
    assert [tuple(a.shape) for a in means] == [(1, 1, 17, 17)] * 3 and full[0].shape == (1, 2, 17, 17)
    for a, b in zip(means, full):
        torch.testing.assert_close(a, b.mean(dim=1, keepdim=True))

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
    video = _tiny_videomae()
    model = video_iba.wrap_hf(video)
    assert model.head_reads() == ((), True)
    grid = attention_rollout(model, torch.randn(1, 3, 4, 32, 32))
    assert grid.shape == (1, 1, 2, 4, 4) and float(grid.sum()) == pytest.approx(1.0, abs=1e-5)  # no class token


def test_networks_that_attend_otherwise_are_refused_before_any_work(tmp_path, capsys, photo_dir) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="attention rollout reads the attention of nn.MultiheadAttention blocks "
                                             ".* and this model has no such attention; choose another method"):
        video_iba.attribute("rollout", TinyCNN().eval(), torch.randn(1, 3, 32, 32))
    with pytest.raises(UserInputError, match="this model's Swin blocks attend within shifted windows"):
        video_iba.attribute("rollout", video_iba.wrap_hf(_tiny_swin()), torch.randn(1, 3, 32, 32))
    with pytest.raises(UserInputError, match="cam_layer= applies to gradcam and guided_gradcam only, not to rollout"):
        video_iba.attribute("rollout", TubeViT().eval(), torch.randn(1, 3, 16, 64, 64), cam_layer="blocks.2")
    with pytest.raises(UserInputError, match="tokens= applies to gradcam, guided_gradcam, rollout and gae only, not "
                                             "to saliency"):
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


def _attend(block: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A TubeViT block with its attention written out from the module's weights: the new tokens and
    the attention probabilities ``(1, heads, L, L)``."""
    attn = block.attn
    h = block.norm1(x)
    q, k, v = F.linear(h, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    heads, d = attn.num_heads, q.shape[-1] // attn.num_heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, heads, d).transpose(1, 2)

    p = torch.softmax(split(q) @ split(k).transpose(-1, -2) / d ** 0.5, dim=-1)
    x = x + attn.out_proj((p @ split(v)).transpose(1, 2).reshape(1, -1, heads * d))
    return x + block.mlp(block.norm2(x)), p


def test_gradient_weighted_relevance_of_multihead_attention_is_chefers_and_leaves_the_network_as_it_was() -> None:
    torch.manual_seed(0)
    model = TubeViT().eval()
    clip = torch.randn(1, 3, 16, 64, 64)
    tokens = model.embed(clip).flatten(2).transpose(1, 2)
    tokens = torch.cat([model.cls.expand(1, -1, -1), tokens], dim=1) + model.pos
    probs = []
    for block in model.blocks:
        tokens, p = _attend(block, tokens)
        probs.append(p)
    logits = model.head(model.norm(tokens[:, 0]))
    with torch.no_grad():
        torch.testing.assert_close(logits, model(clip), rtol=1e-4, atol=1e-5)  # the blocks written out are the model's
    maps = {}
    for target in (0, 1):
        grads = torch.autograd.grad(logits[0, target], probs, retain_graph=True)
        expected = _relevance([p[0].detach().double().numpy() for p in probs], [g[0].double().numpy() for g in grads],
                              np.eye(513)[0])[1:].reshape(8, 8, 8)
        model.zero_grad(set_to_none=True)
        model.requires_grad_(False)
        model.blocks[1].requires_grad_(True)
        before = snapshot(model)
        fast = torch.backends.mha.get_fastpath_enabled()
        grid = attention_relevance(model, clip, target, tokens=TUBEVIT_LAYOUT)
        np.testing.assert_allclose(grid[0, 0].numpy(), expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))
        after = snapshot(model)
        assert after["hooks"] == before["hooks"] and after["requires_grad"] == before["requires_grad"]
        assert all(g is None for g in after["grads"].values()) and torch.backends.mha.get_fastpath_enabled() == fast
        model.requires_grad_(True)
        maps[target] = grid[0, 0]
    # one map per class, unlike rollout's
    assert float(torch.corrcoef(torch.stack([maps[0].flatten(), maps[1].flatten()]))[0, 1]) < 0.99

    attr = video_iba.attribute("gae", model, clip, target=1, tokens=TUBEVIT_LAYOUT)
    assert attr.values.shape == (16, 64, 64) and str(attr.unit) == "attention relevance"
    assert attr.meta["class_agnostic"] is False and float(attr.values.min()) >= 0
    half = video_iba.attribute("gae", copy.deepcopy(model).half(), clip.half(), target=1, tokens=TUBEVIT_LAYOUT)
    assert float(torch.corrcoef(torch.stack([half.values.flatten(), attr.values.flatten()]))[0, 1]) > 0.99
    with pytest.raises(UserInputError, match="gradient-weighted attention relevance places the attention's 513 tokens "
                                             "on a grid: give tokens= their layout"):
        video_iba.attribute("gae", model, clip)


def test_gradient_weighted_relevance_of_a_hugging_face_vit_reads_its_eager_attention() -> None:
    torch.manual_seed(0)
    net = _tiny_vit()
    model = video_iba.wrap_hf(net)
    impl = net.config._attn_implementation
    x = torch.randn(1, 3, 32, 32)
    before = snapshot(model)
    eager = _eager(net)
    out = eager(pixel_values=x.clone().requires_grad_(True), output_attentions=True)
    for target in (0, 2):
        grads = torch.autograd.grad(out.logits[0, target], out.attentions, retain_graph=True)
        expected = _relevance([a[0].detach().double().numpy() for a in out.attentions],
                              [g[0].double().numpy() for g in grads], np.eye(17)[0])[1:].reshape(4, 4)
        attr = video_iba.attribute("gae", model, x, target=target)
        grid = attention_relevance(model, x, target)
        assert grid.shape == (1, 1, 1, 4, 4) and attr.values.shape == (32, 32) and attr.target == target
        np.testing.assert_allclose(grid[0, 0, 0].numpy(), expected, rtol=1e-4, atol=1e-8)
    assert net.config._attn_implementation == impl
    after = snapshot(model)
    assert after["hooks"] == before["hooks"] and after["requires_grad"] == before["requires_grad"]

    # VideoMAE's head reads the grid tokens' mean: their mean row, less the identity's even floor
    video = _tiny_videomae()
    clip = torch.randn(1, 3, 4, 32, 32)
    eager = _eager(video)
    out = eager(pixel_values=clip.transpose(1, 2).clone().requires_grad_(True), output_attentions=True)
    grads = torch.autograd.grad(out.logits[0, 1], out.attentions)
    expected = _relevance([a[0].detach().double().numpy() for a in out.attentions],
                          [g[0].double().numpy() for g in grads], np.full(32, 1 / 32)).reshape(2, 4, 4)
    grid = attention_relevance(video_iba.wrap_hf(video), clip, 1)
    np.testing.assert_allclose(grid[0, 0].numpy(), expected, rtol=1e-4, atol=1e-9)

    # a head that no attention weight raises (zero-initialised, as torchvision's ViTs with random weights)
    with torch.no_grad():
        net.classifier.weight.zero_()
    with pytest.raises(UserInputError, match="gradient-weighted attention relevance: no attention weight raises the "
                                             "logit of class 1 .* use trained weights"):
        video_iba.attribute("gae", model, x, target=1)


def test_gradient_weighted_relevance_refuses_what_rollout_refuses(tmp_path, capsys, photo_dir) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="gradient-weighted attention relevance reads the attention of "
                                             "nn.MultiheadAttention blocks .* and this model has no such attention"):
        video_iba.attribute("gae", TinyCNN().eval(), torch.randn(1, 3, 32, 32))
    with pytest.raises(UserInputError, match="gradient-weighted attention relevance needs blocks whose attention "
                                             "composes over all tokens, and this model's Swin blocks attend"):
        video_iba.attribute("gae", video_iba.wrap_hf(_tiny_swin()), torch.randn(1, 3, 32, 32))
    # torchvision's ViTs with random weights have a zero head: one line, exit 2, nothing written
    code, _, err = run_cli(["explain", f"{photo_dir}/chelsea.jpg", "--model", "vit_b_32", "--weights", "random",
                            "--method", "gae", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "no attention weight raises the logit" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_gradient_weighted_relevance_follows_the_head_and_rollout_does_not() -> None:
    # the model-parameter randomisation check on the benchmark's trained TubeViT: a new head (and
    # final norm) leaves rollout's map exactly as it was, as it never reads them; gae reads the
    # head through its gradient (SSIM on this clip 0.21; on 8 clips and 5 draws 1.00 and 0.75)
    model = load_tubevit()
    clip = make_clip(list(TEST_SEEDS)[0])
    x, target = torch.from_numpy(clip.x)[None], clip.label
    for method, follows in (("rollout", False), ("gae", True)):
        result = video_iba.parameter_randomisation(
            model, lambda m, _done: video_iba.attribute(method, m, x, target, tokens=TUBEVIT_LAYOUT),  # noqa: B023
            stages=["head", "norm"])
        assert result.stages == ["head", "norm"]
        if follows:
            assert float(result.ssim.max()) < 0.95, result.ssim
        else:
            np.testing.assert_allclose(result.ssim, 1.0, atol=1e-6)


def _divided(a: np.ndarray, temporal: bool, places: int, frames: int) -> np.ndarray:
    """One TimeSformer attention layer (heads averaged) written out over its tokens, one by one: the
    class token, then each place's frames."""
    m = np.zeros((1 + places * frames, 1 + places * frames))
    for p in range(places):
        for t in range(frames):
            row = 1 + p * frames + t
            if temporal:  # a: (places, T, T); the class token does not take part
                for u in range(frames):
                    m[row, 1 + p * frames + u] = a[p, t, u]
                continue
            # a: (T, 1 + places, 1 + places): frame t's places with the class token, whose row is
            # the mean over the frames
            m[row, 0] = a[t, 1 + p, 0]
            for q in range(places):
                m[row, 1 + q * frames + t] = a[t, 1 + p, 1 + q]
            m[0, row] = a[t, 0, 1 + p] / frames
    if not temporal:
        m[0, 0] = a[:, 0, 0].mean()
    return m


def test_timesformers_divided_attention_composes_block_by_block() -> None:
    torch.manual_seed(0)
    net = _tiny_timesformer()
    model = video_iba.wrap_hf(net)
    clip = torch.randn(1, 3, 4, 32, 32)
    before = snapshot(model)
    with torch.no_grad():
        logits = model(clip)
    # the recorded attention: temporal then spatial in each block; the spatial ones are those the
    # network itself returns, the temporal ones those of its temporal modules computed by hand
    inputs = []
    handles = [layer.temporal_layernorm.register_forward_hook(lambda _m, _i, out: inputs.append(out))
               for layer in net.timesformer.encoder.layer]
    with torch.no_grad():
        own = net(pixel_values=clip.transpose(1, 2), output_attentions=True).attentions
    for h in handles:
        h.remove()
    probe = clip.clone().requires_grad_(True)
    out, raw = model.attentions(probe)
    assert len(raw) == 4 and [tuple(a.shape) for a in raw] == [(16, 2, 4, 4), (4, 2, 17, 17)] * 2
    torch.testing.assert_close(out, logits)
    for layer, a, h in zip(net.timesformer.encoder.layer, raw[0::2], inputs):
        module = layer.temporal_attention.attention
        q, k, _ = module.qkv(h).reshape(16, 4, 3, 2, 8).permute(2, 0, 3, 1, 4)
        torch.testing.assert_close(a.detach(), torch.softmax(q @ k.transpose(-1, -2) * module.scale, dim=-1))
    for a, given in zip(raw[1::2], own):
        torch.testing.assert_close(a.detach(), given)
    assert snapshot(model)["hooks"] == before["hooks"]

    kinds = [True, False, True, False]
    mats = [_divided(a.detach().mean(1).double().numpy(), t, 16, 4) for a, t in zip(raw, kinds)]
    # every grid token's row sums to 1; the class token's to 1 in space, 0 in time (it does not take part)
    assert all(np.allclose(m_[1:].sum(1), 1) and np.isclose(m_[0].sum(), 0 if t else 1) for m_, t in zip(mats, kinds))

    def on_grid(flow: np.ndarray) -> np.ndarray:  # tokens: each place's frames together, places row-major
        return flow[1:].reshape(4, 4, 4).transpose(2, 0, 1)

    grid = attention_rollout(model, clip)
    np.testing.assert_allclose(grid[0, 0].numpy(), on_grid(_reference(mats, np.eye(65)[0])), rtol=1e-5, atol=1e-8)
    grads = torch.autograd.grad(out[0, 2], raw)
    weighted = [_divided(np.clip(a.detach().double().numpy() * g.double().numpy(), 0, None).mean(1), t, 16, 4)
                for a, g, t in zip(raw, grads, kinds)]
    r = np.eye(65)
    for w in weighted:
        r = r + w @ r
    expected = on_grid(np.eye(65)[0] @ (r - np.eye(65)))
    np.testing.assert_allclose(attention_relevance(model, clip, 2)[0, 0].numpy(), expected, rtol=1e-4,
                               atol=1e-6 * float(np.abs(expected).max()))
    after = snapshot(model)
    assert after["hooks"] == before["hooks"] and after["requires_grad"] == before["requires_grad"]
    with torch.no_grad():
        torch.testing.assert_close(model(clip), logits)
