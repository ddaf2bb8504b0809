"""The readout bottleneck: initialisation, training (resumable, 2 gloo processes), one-pass explanations."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random

import pytest
import torch
from PIL import Image

import video_iba
from video_iba.methods.readout import ALPHA_BOUND, ReadoutHead, load_checkpoint, new_readout, readout_loss

from ..helpers import read_jsonl, run_cli, torchrun
from ..nets import TinyCNN


def test_head_starts_at_alpha_5_with_gradients_flowing() -> None:
    head = ReadoutHead(features=12, channels=3, dims=3)
    x = torch.randn(2, 12, 4, 5, 5)
    alpha = head(x)
    assert alpha.shape == (2, 3, 4, 5, 5)
    torch.testing.assert_close(alpha, torch.full_like(alpha, 5.0))
    (torch.sigmoid(alpha) * torch.randn_like(alpha) + torch.sigmoid(alpha)).sum().backward()
    last = head.net[-1]
    assert last.bias.grad is not None and float(last.bias.grad.abs().min()) > 1e-4  # not frozen by the bound
    assert last.weight.grad is not None and float(last.weight.grad.abs().sum()) > 1e-3
    assert float(ReadoutHead(12, 3, 3)(x * 1e6).detach().abs().max()) <= ALPHA_BOUND
    with pytest.raises(Exception, match="alpha_init"):
        ReadoutHead(12, 3, 3, alpha_init=7.0)
    assert math.isclose(1 - (5 / ALPHA_BOUND) ** 2, 0.3056, abs_tol=1e-3)


def test_train_readout_resumes_and_explains_in_one_pass(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "ro")
    base = ["train-readout", "synthetic", "--clips", "32", "--batch-size", "16", "--validation", "none", "--out", out]
    code, stdout, err = run_cli([*base, "--epochs", "1"], capsys)
    assert code == 0, err
    assert "reading block1, block3 + logits" in stdout
    for name in ("checkpoint.pt", "readout.pt", "loss.jsonl"):
        assert os.path.exists(os.path.join(out, name)), name
    assert [(r["epoch"], r["step"]) for r in read_jsonl(os.path.join(out, "loss.jsonl"))] == [(1, 1), (1, 2)]
    # an epoch cut short: its log lines go, the finished epoch stays, training resumes after it
    with open(os.path.join(out, "loss.jsonl"), "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"epoch": 2, "step": 1, "loss": 0.0}) + "\n")
    code, _, err = run_cli([*base, "--epochs", "2", "--keep-epochs"], capsys)
    assert code == 0, err
    assert "resuming after epoch 1 of 2" in err
    assert os.path.exists(os.path.join(out, "epoch2.pt")) and not os.path.exists(os.path.join(out, "epoch1.pt"))
    log = read_jsonl(os.path.join(out, "loss.jsonl"))
    assert [(r["epoch"], r["step"]) for r in log] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert all(r["info_nats"] > 0 and r["ce"] >= 0 for r in log)
    ckpt = torch.load(os.path.join(out, "readout.pt"), weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["model"] == "tubenet" and len(ckpt["log"]) == 2
    assert ckpt["config"]["beta"] == 1.0  # the readout's default, not the per-sample 10
    # resuming with other settings would mix two trainings in one readout: refused, the files as they were
    before = open(os.path.join(out, "checkpoint.pt"), "rb").read()
    fewer = ["16" if a == "32" else a for a in base]  # --clips 16
    for argv, message in (([*base, "--beta", "3"], "beta was 1.0, now 3.0"), ([*base, "--lr", "0.01"], "lr was 0.001"),
                          (fewer, "inputs was 32, now 16"), ([*base, "--seed", "1"], "seed was 0, now 1"),
                          ([*base, "--readout-layer", "block2"], "readout layers was ['block1', 'block3'], now "
                                                                 "['block2']")):
        code, _, err = run_cli([*argv, "--epochs", "3"], capsys)
        assert code == 2 and message in err and "was trained otherwise" in err and "Traceback" not in err, err
    assert open(os.path.join(out, "checkpoint.pt"), "rb").read() == before

    from video_iba.evaluation.synthetic import load_tubenet
    from video_iba.methods.readout import explain_readout, load_checkpoint
    from video_iba.evaluation.synthetic import make_clip

    readout, _ = load_checkpoint(os.path.join(out, "readout.pt"))
    model = load_tubenet()
    clip = make_clip(100_000)
    calls = {"n": 0}
    handle = model.register_forward_pre_hook(lambda *_: calls.__setitem__("n", calls["n"] + 1))
    try:
        a = explain_readout(model, readout, torch.from_numpy(clip.x)[None])
    finally:
        handle.remove()
    assert calls["n"] == 1  # one forward pass of the network
    assert a.unit == "bits" and a.values.shape == (16, 64, 64) and a.meta["method"] == "iba_readout"
    assert float(a.values.min()) >= 0 and a.total_bits > 0
    # the same readout through evaluate
    code, stdout, err = run_cli(["evaluate", "synthetic", "--clips", "2", "--methods", "readout,random", "--metrics",
                              "hit_ratio", "--readout", os.path.join(out, "readout.pt"), "--out",
                              str(tmp_path / "ev")], capsys)
    assert code == 0, err
    assert "| readout |" in stdout


def test_readout_for_a_photo_model_and_bad_checkpoints(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    out = str(tmp_path / "ro")
    code, _, err = run_cli(["train-readout", photo_dir, "--validation", photo_dir, "--out", out], capsys)
    assert code == 2 and "--validation must be other inputs than the training folder" in err
    # held-out inputs that are copies of training inputs are not held out
    val = tmp_path / "val"
    val.mkdir()
    shutil.copy(os.path.join(photo_dir, sorted(os.listdir(photo_dir))[-1]), val)
    code, _, err = run_cli(["train-readout", photo_dir, "--validation", str(val), "--out", out], capsys)
    assert code == 2 and "every input of" in err and "is a training input too (the same file or a copy)" in err
    assert not os.path.exists(os.path.join(out, "checkpoint.pt"))
    Image.open(os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])).rotate(90).save(val / "turned.jpg")
    code, stdout, err = run_cli(["train-readout", photo_dir, "--validation", str(val), "--patience", "1", "--epochs",
                              "3", "--batch-size", "2", "--lr", "0.5", "--out", out], capsys)
    assert code == 0, err
    assert "1 of 2 validation inputs is a training input too (first: " in err
    best = load_checkpoint(os.path.join(out, "best.pt"))[1]
    assert "target kept" in stdout and "val_kept" in best["log"][0]
    history = load_checkpoint(os.path.join(out, "checkpoint.pt"))[1]["log"]
    log = read_jsonl(os.path.join(out, "loss.jsonl"))
    scored = [r for r in log if r["split"] == "validation"]
    assert [r["epoch"] for r in scored] == [h["epoch"] for h in history]
    assert [r["loss"] for r in scored] == pytest.approx([h["val_loss"] for h in history], abs=1e-5)
    assert all(0 <= r["kept"] <= 1 for r in scored)
    assert [r["step"] for r in log if r["split"] == "train" and r["epoch"] == 1] == [1, 2]
    trained = max(r["epoch"] for r in log)
    assert (f"stopped after epoch {trained} of 3" in stdout) == (trained < 3), stdout
    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    code, stdout, err = run_cli(["explain", photo, "--method", "readout", "--readout", os.path.join(out, "readout.pt"),
                              "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert "readout bottleneck at _blocks.4" in stdout
    stem = os.path.splitext(os.path.basename(photo))[0]
    explained = video_iba.load(tmp_path / "o" / f"{stem}.npz")
    assert explained.unit == "bits" and explained.meta["method"] == "iba_readout" and explained.total_bits > 0
    assert explained.meta["readouts"][0] == "_blocks.4" and len(explained.meta["readouts"]) == 2  # + the last map
    assert explained.values.shape == (224, 224)
    with Image.open(tmp_path / "o" / f"{stem}.png") as fig:
        assert fig.size[0] > 600
    # a readout of another model, a file that is not a checkpoint, --readout without the method
    code, _, err = run_cli(["explain", photo, "--model", "resnet18", "--weights", "random", "--method", "readout",
                         "--readout", os.path.join(out, "readout.pt"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "trained for efficientnet_lite0, not resnet18" in err
    code, _, err = run_cli(["explain", photo, "--weights", "random", "--method", "readout", "--readout",
                            os.path.join(out, "readout.pt"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "the readout was trained with other weights of efficientnet_lite0 (digest " in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    code, _, err = run_cli(["explain", photo, "--method", "readout", "--readout", str(junk), "--out",
                         str(tmp_path / "o")], capsys)
    assert code == 2 and "not a readable readout checkpoint" in err
    code, _, err = run_cli(["explain", photo, "--readout", str(junk), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--readout applies to the method readout only" in err


def test_a_readout_of_a_video_model_explains_a_video_from_the_command_line(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from ..videos import encode, moving_square

    clips = tmp_path / "clips"
    clips.mkdir()
    for i in range(2):
        encode(str(clips / f"c{i}.mp4"), frames=20, size=(128, 96), content=moving_square)
    model = ["--model", "r3d_18", "--weights", "random"]
    code, _, err = run_cli(["train-readout", str(clips), *model, "--epochs", "1", "--batch-size", "2", "--out",
                            str(tmp_path / "ro")], capsys)
    assert code == 0, err
    code, stdout, err = run_cli(["explain", str(clips / "c0.mp4"), *model, "--method", "readout", "--readout",
                                 str(tmp_path / "ro" / "readout.pt"), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    result = video_iba.load(tmp_path / "o" / "c0.npz")
    assert result.meta["method"] == "iba_readout" and result.total > 0
    assert f"{result.total:.1f} bits per window on average · r3d_18 readout bottleneck at layer2 · " in stdout


def test_unreadable_files_in_a_training_folder_are_skipped_before_training(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    import shutil

    folder = tmp_path / "photos"
    shutil.copytree(photo_dir, folder)
    (folder / "junk.jpg").write_bytes(random.Random(0).randbytes(3000))  # fixed bytes, so every run sees the same
    (folder / "empty.png").write_bytes(b"")
    Image.new("RGB", (40, 30)).save(folder / "tiny.png")  # too small for the model
    out = tmp_path / "ro"
    code, stdout, err = run_cli(["train-readout", str(folder), "--epochs", "1", "--batch-size", "1", "--out",
                                 str(out)], capsys)  # a step of only junk.jpg ended the training
    assert code == 0, err
    assert "skipping 3 of 6 inputs in" in err and "empty.png' is empty (0 bytes); give an image file" in err
    assert err.count("skipping") == 1 and "3 inputs on 1 process(es)" in stdout
    assert len(read_jsonl(out / "loss.jsonl")) == 3
    for name in ("chelsea", "coffee", "rocket"):
        os.remove(folder / f"{name}.jpg")
    code, _, err = run_cli(["train-readout", str(folder), "--epochs", "1", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "none of the 3 input(s) in" in err and "can be read (the first: " in err


def test_a_folder_of_videos_trains_on_a_random_clip_of_each_video_per_epoch(tmp_path, caplog) -> None:  # type: ignore[no-untyped-def]
    from video_iba.io.clips import read_clip
    from video_iba.models.registry import model_spec
    from video_iba.workflows import folder_data

    from ..videos import encode, moving_square

    folder = tmp_path / "clips"
    folder.mkdir()
    long = encode(str(folder / "a.mp4"), frames=90, size=(128, 96), content=moving_square)  # 3 clips of r3d_18
    encode(str(folder / "b.mp4"), frames=20, size=(128, 96), content=moving_square)  # shorter than one clip
    spec = model_spec("r3d_18", weights="random")
    caplog.set_level("WARNING")
    data = folder_data(str(folder), spec)
    assert len(data.items) == 2 and data.sampling == "a random clip of each video per epoch"
    assert [r.getMessage() for r in caplog.records] == [
        f"1 of 2 videos in '{folder}' is shorter than one clip of r3d_18 (1.07 s; '{folder / 'b.mp4'}', 0.67 s): its "
        f"clip repeats frames from the start"]
    first = data.for_epoch([0, 1], seed=0, epoch=0)
    assert first == data.for_epoch([0, 1], seed=0, epoch=0)  # every process, and a resumed training, draws the same
    starts = {data.for_epoch([0], seed, epoch)[0][1] for seed in range(3) for epoch in range(5)}
    assert len(starts) > 8 and max(starts) <= 3 - 32 / 30  # not one clip each epoch; always a whole clip
    assert {data.for_epoch([1], 0, epoch)[0][1] for epoch in range(5)} == {0.0}
    x, labels = data.load(first)
    assert labels is None and x.shape == (2, 3, 16, 112, 112)
    torch.testing.assert_close(x[:1], read_clip(long, spec, start=first[0][1])[0])
    torch.testing.assert_close(data.load(data.items[:1])[0], read_clip(long, spec, start=None)[0])  # validation
    counts = [len(x) for x in data.statistics_inputs(data.items, 2, "cpu")]
    assert counts == [2, 2]  # statistics: every clip, 3 of the long video and the short one's
    assert len(caplog.records) == 1  # the short video's clip was read twice more, without a warning each time


def test_readout_training_on_two_gloo_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = str(tmp_path / "ro2")
    run = torchrun(["train-readout", "synthetic", "--clips", "40", "--batch-size", "8", "--epochs", "1",
                    "--out", out])
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("wrote") == 1  # rank 0 writes and reports
    log = read_jsonl(os.path.join(out, "loss.jsonl"))
    assert [r["step"] for r in log if r["split"] == "train"] == [1, 2, 3]  # 40 clips / 2 ranks / 8 per step
    assert [r["split"] for r in log][-1] == "validation"
    ckpt = torch.load(os.path.join(out, "readout.pt"), weights_only=True)
    assert ckpt["extra"]["world_size"] == 2 and ckpt["epoch"] == 1
    # the benchmark's 100 validation clips, shared by the ranks, scored after the epoch
    val = ckpt["log"][0]
    assert val["val_loss"] > val["val_ce"] > 0 and 0 <= val["val_kept"] <= 1 and val["val_info_nats"] > 0
    assert load_checkpoint(os.path.join(out, "best.pt"))[1]["epoch"] == 1 and "target kept" in run.stdout


@pytest.mark.parametrize("dims", [2, 3])
def test_head_on_parts_equals_the_head_on_the_concatenation(dims: int) -> None:
    import torch.nn.functional as F

    torch.manual_seed(0)
    head = ReadoutHead(features=5 + 3 + 4, channels=2, dims=dims)
    torch.nn.init.normal_(head.net[-1].weight, std=0.5)  # an input-dependent output
    grid = (8, 8) if dims == 2 else (4, 8, 8)
    small = (4, 4) if dims == 2 else (2, 4, 4)
    p1, p2, z = torch.randn(3, 5, *grid), torch.randn(3, 3, *small), torch.randn(3, 4)
    mode = "bilinear" if dims == 2 else "trilinear"
    full = torch.cat([p1, F.interpolate(p2, size=grid, mode=mode, align_corners=False),
                      z.reshape(3, 4, *[1] * dims).expand(-1, -1, *grid)], dim=1)
    torch.testing.assert_close(head.alphas([p1, p2], z, grid)[0], head(full), rtol=1e-4, atol=1e-5)


def test_shipped_benchmark_readout_beats_random_on_the_tube() -> None:
    import numpy as np

    from video_iba.methods import attribute
    from video_iba.evaluation.synthetic import load_tubenet, load_tubenet_readout
    from video_iba.evaluation.metrics import box_mask, hit_ratio
    from video_iba.evaluation.synthetic import TEST_SEEDS, make_clip

    model, readout = load_tubenet(), load_tubenet_readout()
    ro, rnd = [], []
    for seed in list(TEST_SEEDS)[:4]:
        clip = make_clip(seed)
        x = torch.from_numpy(clip.x)[None]
        mask = box_mask((16, 64, 64), clip.boxes)
        ro.append(hit_ratio(attribute("readout", model, x, clip.label, readout=readout).values, mask))
        rnd.append(hit_ratio(attribute("random", model, x, clip.label).values, mask))
    assert np.mean(ro) > 0.2 and np.mean(ro) > 10 * np.mean(rnd)  # random: about 216 / 65536 of n


def test_two_pathway_readout_trains_and_explains(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.methods.readout import explain_readout
    from video_iba.workflows.train_readout import Schedule, TrainingData, train

    from ..nets import TwoPath

    torch.manual_seed(0)
    model = TwoPath().eval()
    clips = torch.randn(12, 3, 8, 8, 8)
    data = TrainingData("toy", list(range(12)), lambda i: (clips[list(i)], None), rate=3, frames=8)
    readout = train(model, data, str(tmp_path / "ro"), layers=["slow", "fast"], readouts=["slow2", "fast2"],
                    schedule=Schedule(epochs=2, batch_size=4, lr=1e-2), pack=_pack)
    assert len(readout.heads) == 2 and readout.spec.channels == [8, 4]
    # the readout returned carries the clips it was trained on, as its checkpoint does
    from video_iba.methods.readout import load_readout
    saved = load_readout(str(tmp_path / "ro" / "readout.pt"), "toy")
    assert (readout.sampling_rate, readout.frames) == (saved.sampling_rate, saved.frames) == (3, 8)
    a = explain_readout(model, readout, clips[:1], pack=_pack)
    assert a.values.shape == (8, 8, 8) and isinstance(a.capacity, list) and len(a.capacity) == 2
    assert tuple(a.capacity[0].shape) == (8, 2, 8, 8) and tuple(a.capacity[1].shape) == (4, 8, 8, 8)
    assert a.total_bits > 0


def _pack(clip: torch.Tensor) -> list[torch.Tensor]:
    """TwoPath's pathways: every 4th frame (slow) and all frames (fast)."""
    return [clip[:, :, ::4], clip]


def _toy_data(n: int, seed: int):  # type: ignore[no-untyped-def]
    from video_iba.workflows.train_readout import TrainingData

    g = torch.Generator().manual_seed(seed)
    clips = torch.randn(n, 3, 8, 8, 8, generator=g)
    return TrainingData(f"toy{seed}", list(range(n)), lambda i: (clips[list(i)], None))


def test_a_readout_starts_from_its_seed_and_trains_the_same_twice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import video_iba.workflows.train_readout as tr

    from ..nets import TwoPath

    torch.manual_seed(0)
    model = TwoPath().eval()
    data = _toy_data(8, 0)

    def start(seed: int) -> dict[str, torch.Tensor]:
        ro = new_readout(model, data.load([0])[0], lambda: data.inputs(data.items, 4, "cpu"), layers=["slow", "fast"],
                         readouts=["slow2"], pack=_pack, seed=seed)
        return ro.heads.state_dict()

    state = torch.random.get_rng_state()
    a, b, c = start(0), start(0), start(1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)
    heads = []
    for run in ("a", "b"):
        torch.randn(100)  # whatever the caller drew before
        tr.train(model, data, str(tmp_path / run), layers=["slow", "fast"], readouts=["slow2"], pack=_pack,
                 schedule=tr.Schedule(epochs=2, batch_size=4, lr=0.1, seed=3))
        heads.append(torch.load(tmp_path / run / "readout.pt", weights_only=True)["heads"])
    assert all(torch.equal(heads[0][k], heads[1][k]) for k in heads[0])


def test_validation_is_repeatable_and_bounded() -> None:
    from video_iba.methods.readout import new_readout
    from video_iba.workflows.train_readout import validate

    from ..nets import TwoPath

    torch.manual_seed(0)
    model = TwoPath().eval()
    data = _toy_data(8, 0)
    readout = new_readout(model, data.load([0])[0], lambda: data.inputs(data.items, 4, "cpu"), layers=["slow", "fast"],
                          readouts=["slow2"], pack=_pack)
    val = _toy_data(6, 1)
    a, b = validate(model, readout, val, 4, "cpu", pack=_pack), validate(model, readout, val, 4, "cpu", pack=_pack)
    assert a == b  # the same noise every epoch: epochs are compared on equal terms
    assert a["val_loss"] == pytest.approx(a["val_ce"] + 10 * a["val_info_nats"])
    assert 0 <= a["val_kept"] <= 1 and 4 < a["val_info_nats"] < 6  # alpha starts at 5: about 5 nats


def test_validation_chooses_the_best_epoch_and_patience_stops(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import video_iba.workflows.train_readout as tr

    from ..nets import TwoPath

    scores = iter([(5.0, 0.1), (3.0, 0.1), (4.0, 0.5), (4.5, 0.6), (1.0, 0.7)])

    def fake_validate(*_a, **_k):  # type: ignore[no-untyped-def]
        loss, ce = next(scores)
        return {"val_loss": loss, "val_ce": ce, "val_info_nats": 0.1, "val_kept": 1.0}

    monkeypatch.setattr(tr, "validate", fake_validate)
    torch.manual_seed(0)
    model = TwoPath().eval()
    out = str(tmp_path / "ro")
    kw = dict(layers=["slow", "fast"], readouts=["slow2"], validation=_toy_data(4, 1), pack=_pack)
    schedule = tr.Schedule(epochs=5, batch_size=4, lr=1e-2, patience=2, keep_epochs=True)
    readout = tr.train(model, _toy_data(8, 0), out, schedule=schedule, **kw)
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert ckpt["epoch"] == 4  # epochs 3 and 4 did not beat epoch 2: stopped before epoch 5
    chosen = torch.load(os.path.join(out, "readout.pt"), weights_only=True)
    assert chosen["epoch"] == 2 and torch.load(os.path.join(out, "best.pt"), weights_only=True)["epoch"] == 2
    epoch2 = torch.load(os.path.join(out, "epoch2.pt"), weights_only=True)
    assert all(torch.equal(v, epoch2["heads"][k]) for k, v in readout.heads.state_dict().items())
    # an epoch's file knows the weights it was trained with, as readout.pt does (it recorded only the
    # data and learning rate, so a model with other weights was explained with it without a word)
    assert epoch2["extra"]["weights"] == chosen["extra"]["weights"] is not None
    # rerunning with more epochs does not train past the spent patience
    os.remove(os.path.join(out, "readout.pt"))
    readout = tr.train(model, _toy_data(8, 0), out, schedule=dataclasses.replace(schedule, epochs=6), **kw)
    assert torch.load(os.path.join(out, "readout.pt"), weights_only=True)["epoch"] == 2
    assert torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["epoch"] == 4
    assert next(scores) == (1.0, 0.7)  # validate was not called again
    # a chosen epoch whose cross-entropy rose far above the lowest one gets a warning
    history = [{"epoch": 1, "val_loss": 9.0, "val_ce": 0.06, "val_kept": 1.0},
               {"epoch": 2, "val_loss": 3.0, "val_ce": 0.39, "val_kept": 0.85}]
    caplog.clear()
    with caplog.at_level("WARNING"):
        tr._warn_if_prediction_given_up(history)
        tr._warn_if_prediction_given_up(history[:1])
        tr._warn_if_prediction_given_up([{"epoch": 1, "val_loss": 9.0, "val_ce": 6.9, "val_kept": 0.02}])
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("smaller beta" in m for m in messages)
    assert "rose" not in messages[1] and "only 2% of the validation inputs" in messages[1]
    with pytest.raises(tr.UserInputError, match="needs validation= data"):
        tr.train(model, _toy_data(8, 0), out, layers=["slow", "fast"], schedule=tr.Schedule(epochs=1, patience=1),
                 pack=_pack)


def test_a_stop_before_best_pt_was_written_is_repaired_on_resume(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import video_iba.workflows.train_readout as tr

    from ..nets import TwoPath

    scores = iter([5.0, 3.0])
    monkeypatch.setattr(tr, "validate", lambda *_a, **_k: {"val_loss": next(scores), "val_ce": 0.1,
                                                             "val_info_nats": 0.1, "val_kept": 1.0})
    torch.manual_seed(0)
    model, out = TwoPath().eval(), str(tmp_path / "ro")
    kw = dict(layers=["slow", "fast"], readouts=["slow2"], validation=_toy_data(4, 1), pack=_pack,
              schedule=tr.Schedule(epochs=2, batch_size=4))
    tr.train(model, _toy_data(8, 0), out, **kw)
    for name in ("best.pt", "readout.pt"):  # as if stopped right after the last checkpoint
        os.remove(os.path.join(out, name))
    tr.train(model, _toy_data(8, 0), out, **kw)
    assert torch.load(os.path.join(out, "readout.pt"), weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_trains_and_explains_a_readout_as_in_float32(dtype: torch.dtype) -> None:
    # the float32 heads were fed the network's float16 logits (a dtype error), and a float32
    # restricted map was put back into the float16 network
    torch.manual_seed(0)
    model, xs = TinyCNN().eval(), torch.randn(8, 3, 32, 32)
    results = []
    for net, x in ((model, xs), (TinyCNN().eval().to(dtype), xs.to(dtype))):
        if net is not model:
            net.load_state_dict(model.state_dict())
        ro = new_readout(net, x[:1], lambda: [x[:4], x[4:]], layers=["features.4"])
        loss, ce, info = readout_loss(net, ro, x[:4], None, torch.Generator().manual_seed(0))
        loss.backward()
        grads = [p.grad for p in ro.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        results.append((ce, info, video_iba.explain_readout(net, ro, x[:1]).total_bits))
    (ce32, info32, bits32), (ce16, info16, bits16) = results
    assert math.isclose(ce16, ce32, rel_tol=0.01) and math.isclose(info16, info32, rel_tol=0.01)
    assert math.isclose(bits16, bits32, rel_tol=0.01)
