"""A network of one's own named on the command line as ``file.py:function`` or ``package.module:function``."""

from __future__ import annotations

import os
import random
import re
import textwrap

import numpy as np
import pytest
import torch

import video_iba
from video_iba.models import weights_digest
from ..helpers import read_jsonl, run_cli, torchrun
from ..videos import encode, moving_square

NET = textwrap.dedent('''
    import dataclasses

    import torch
    from torch import nn

    import video_iba
    from heads import head  # a neighbour of this file


    def build():
        net = nn.Sequential()
        net.add_module("stem", nn.Conv3d(3, 8, 3, padding=1))
        net.add_module("act", nn.ReLU())
        net.add_module("block", nn.Conv3d(8, 16, 3, stride=(1, 2, 2), padding=1))
        net.add_module("act2", nn.ReLU())
        net.add_module("head", head(16, 3))
        spec = video_iba.ModelSpec(name="mynet", family="own", modality="video", frames=8, sampling_rate=2,
                                   input_size=48, resize=56, default_layer="block", labels="own",
                                   label_names=("left", "right", "still"))
        return net, spec


    def sized(width=16, classes=("left", "right", "still")):
        net = nn.Sequential()
        net.add_module("stem", nn.Conv3d(3, width, 3, padding=1))
        net.add_module("act", nn.ReLU())
        net.add_module("block", nn.Conv3d(width, 2 * width, 3, stride=(1, 2, 2), padding=1))
        net.add_module("head", head(2 * width, len(classes)))
        spec = video_iba.ModelSpec(name="sized", family="own", modality="video", frames=8, sampling_rate=2,
                                   input_size=48, resize=56, default_layer="block", labels="own",
                                   label_names=tuple(classes))
        return net, spec


    def unnamed():
        net, spec = build()
        return net, dataclasses.replace(spec, labels="ucf101", label_names=())


    def imagenet_half():
        net, spec = build()  # the spec's label set left at its default, ImageNet's; the network in float16
        return net.half(), dataclasses.replace(spec, labels="imagenet", label_names=())


    class Tokens(nn.Module):  # tubelets of 2 x 8 x 8 on 8 x 48 x 48 clips: a 4 x 6 x 6 grid after a class token
        def __init__(self):
            super().__init__()
            self.embed = nn.Conv3d(3, 8, (2, 8, 8), stride=(2, 8, 8))
            self.cls = nn.Parameter(torch.randn(1, 1, 8))
            self.blocks = nn.ModuleList([nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)])
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            t = self.embed(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], dim=1)
            for block in self.blocks:
                t = block(t)
            return self.head(t[:, 0])


    def tokens():
        _, spec = build()
        layout = video_iba.TokenLayout(grid=(4, 6, 6), prefix=1)
        return Tokens(), dataclasses.replace(spec, default_layer="blocks.0", layouts=(("blocks.*", layout),))


    def broken():
        raise RuntimeError("checkpoint server down")


    def number():
        return 3


    def bare():
        return build()[0]
''')
HEADS = textwrap.dedent('''
    from torch import nn


    def head(channels, classes):
        return nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(channels, classes))
''')


@pytest.fixture()
def own(tmp_path):  # type: ignore[no-untyped-def]
    folder = tmp_path / "nets"
    folder.mkdir()
    (folder / "mynet.py").write_text(NET)
    (folder / "heads.py").write_text(HEADS)
    clip = encode(str(tmp_path / "square.mp4"), frames=24, size=(80, 64), content=moving_square)
    return str(folder / "mynet.py"), clip


def test_a_network_of_ones_own_is_explained_from_the_command_line(own, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    net, clip = own
    ref = f"{net}:build"
    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", clip, "--model", ref, "--steps", "2", "--samples", "2", "--out", str(out)],
                                capsys)
    assert code == 0, err
    assert f"{ref} layer block" in stdout
    res = video_iba.load(str(out / "square.npz"))
    assert res.meta["model"] == ref and res.meta["layers"] == ["block"]
    assert res.meta["target_label"] in ("left", "right", "still")
    # the network explained is the one the function builds (its own randomness seeded: every
    # process, every torchrun rank, builds the same weights), and the caller's generator is untouched
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    a, b = video_iba.load_model(ref), video_iba.load_model(ref)
    assert torch.equal(torch.rand(3), before)
    assert weights_digest(a) == weights_digest(b)
    # --weights PATH loads a checkpoint into what the function builds (fine-tuned to 5 classes here)
    sd = {k: v + 1 for k, v in a.state_dict().items()}
    sd["head.2.weight"], sd["head.2.bias"] = torch.randn(5, 16), torch.randn(5)
    torch.save(sd, tmp_path / "w.pt")
    c = video_iba.load_model(ref, weights=str(tmp_path / "w.pt"))
    assert all(torch.equal(c.state_dict()[k], v) for k, v in sd.items())
    assert c.video_iba_spec.label_names == tuple(f"class {i}" for i in range(5))
    x, _ = video_iba.read_clip(clip, a.video_iba_spec)
    with torch.no_grad():
        probs = torch.softmax(a(x)[0].double(), 0).numpy()
    assert np.allclose(res.window_probs[0, 0], probs, atol=1e-5)
    code, stdout, err = run_cli(["layers", "--model", ref], capsys)
    assert code == 0 and re.search(r"^block +Conv3d +1x16x8x24x24", stdout, re.M), err
    # a folder, with a labels file for a spec that names no classes
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    folder = tmp_path / "clips"
    folder.mkdir()
    os.replace(clip, folder / "square.mp4")
    code, stdout, err = run_cli(["explain", str(folder), "--model", f"{net}:unnamed", "--labels", str(labels),
                                 "--steps", "2", "--samples", "2", "--out", str(tmp_path / "batch")], capsys)
    assert code == 0, err
    (row,) = read_jsonl(str(tmp_path / "batch" / "manifest.jsonl"))
    assert row["status"] == "ok" and row["label"] in ("a", "b", "c")
    # a labels file for a spec left at ImageNet's label set is checked against the network's 3 outputs,
    # not the 1000 ImageNet names (it was refused: "names 3 classes but ... outputs 1000"); a float16
    # network is given its clips in float16
    code, stdout, err = run_cli(["explain", str(folder / "square.mp4"), "--model", f"{net}:imagenet_half", "--labels",
                                 str(labels), "--steps", "2", "--samples", "2", "--out", str(tmp_path / "half")], capsys)
    assert code == 0, err
    assert video_iba.load(tmp_path / "half" / "square.npz").meta["target_label"] in ("a", "b", "c")


def test_a_network_of_ones_own_takes_keyword_arguments(own, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    net, clip = own
    ref = f"{net}:sized(width=4, classes=('up', 'down'))"
    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", clip, "--model", ref, "--steps", "1", "--samples", "2", "--out", str(out)],
                                capsys)
    assert code == 0, err
    res = video_iba.load(str(out / "square.npz"))
    assert res.meta["model"] == ref and res.meta["target_label"] in ("up", "down")
    code, stdout, err = run_cli(["layers", "--model", ref], capsys)
    assert code == 0 and re.search(r"^block +Conv3d +1x8x8x24x24", stdout, re.M), err  # 2 x width channels
    # several in a comparison: the commas inside a function's arguments do not split the list
    code, stdout, err = run_cli(["compare", clip, "--models", f"{ref},{net}:sized(width=2)", "--methods", "saliency",
                                 "--out", str(tmp_path / "c")], capsys)
    assert code == 0, err
    panels = video_iba.load(str(tmp_path / "c" / "square-compare.npz"))
    assert [p.name for p in panels.panels] == [f"{ref} · saliency", f"{net}:sized(width=2) · saliency"]
    assert panels.panels[1].result.class_names == ("left", "right", "still")


def test_a_package_module_names_a_network_too(own, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    net, _ = own
    pkg = tmp_path / "root" / "ownnets"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "video.py").write_text(NET.replace("from heads import head", "from .heads import head"))
    (pkg / "heads.py").write_text(HEADS)
    monkeypatch.syspath_prepend(str(tmp_path / "root"))
    code, stdout, err = run_cli(["layers", "--model", "ownnets.video:build"], capsys)
    assert code == 0 and re.search(r"^block +Conv3d", stdout, re.M), err


@pytest.mark.parametrize("model,extra,message", [
    ("{dir}/nope.py:build", [], "the model file '{dir}/nope.py' does not exist; give path/to/file.py:function"),
    ("{net}:biuld", [], "has no function 'biuld' (did you mean 'build'?)"),
    ("{net}:broken", [], "calling '{net}:broken' failed (RuntimeError: checkpoint server down ({net}:"),
    ("{net}:number", [], "returned int, not a network; return (model, video_iba.ModelSpec(...))"),
    ("{net}:bare", [], "returned a network without a spec"),
    ("{net}:build(depth=3)", [], "calling '{net}:build(depth=3)' failed (TypeError: build() got an unexpected keyword "
                                 "argument 'depth'"),
    ("{net}:sized(4)", [], "passes arguments without names; give keyword arguments of literal values, e.g. "
                           "{net}:sized(depth=18, pretrained=False)"),
    ("{net}:sized(width=int('4'))", [], "the argument width=int('4') of '{net}:sized(width=int('4'))' is not a "
                                        "literal value"),
    ("{net}:build", ["--weights", "random"], "its weights are those its function builds; give --weights default"),
    ("{net}:unnamed", [], "names no classes (its spec's labels are 'ucf101'); give --labels a file"),
    ("no_such_package.nets:build", [], "no module named 'no_such_package'"),
    ("{dir}/nets/mynet", [], "a network of your own is given as path/to/file.py:function"),
])
def test_bad_networks_of_ones_own_are_refused_in_one_line(own, tmp_path, capsys, model, extra, message) -> None:  # type: ignore[no-untyped-def]
    net, clip = own
    subst = {"net": net, "dir": str(tmp_path)}
    out = tmp_path / "out"
    code, _, err = run_cli(["explain", clip, "--model", model.format(**subst), *extra, "--steps", "1",
                            "--out", str(out)], capsys)
    assert code == 2 and message.format(**subst) in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or os.listdir(out) == []


def test_estimate_pools_a_token_grid_over_time_on_request(own, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    net, clip = own
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(2):
        encode(str(folder / f"c{i}.mp4"), frames=24, size=(80, 64), content=moving_square)
    shapes = {}
    for extra in ([], ["--pool-time"]):
        out = tmp_path / f"s{len(extra)}.pt"
        code, _, err = run_cli(["estimate", str(folder), "--model", f"{net}:tokens", *extra, "--out", str(out)], capsys)
        assert code == 0, err
        st = video_iba.Statistics.load(out)
        shapes[bool(extra)] = tuple(st.mean.shape)
        assert tuple(st.prefix.mean.shape) == (8, 1)  # the class token: its own statistics either way
    assert shapes == {False: (8, 4, 6, 6), True: (8, 1, 6, 6)}  # per token; per (channel, h, w) over all frames
    for model, extra, message in (
            ("tokens", ["--per-frame"], f"blocks.0 of {net}:tokens is estimated per position of a token grid (each frame "
                                        "apart) already; drop --per-frame, or pool over time with --pool-time"),
            ("build", ["--pool-time"], f"block of {net}:build is a feature map of clips, pooled over time already; drop "
                                       "--pool-time, or keep each frame with --per-frame"),
            ("tokens", ["--pool-time", "--per-frame"], "give --per-frame (one estimate per frame) or --pool-time "
                                                       "(pooled over time), not both")):
        code, _, err = run_cli(["estimate", str(folder), "--model", f"{net}:{model}", *extra, "--out",
                                str(tmp_path / "x.pt")], capsys)
        assert code == 2 and message in err, err
        assert not os.path.exists(tmp_path / "x.pt")


def test_a_token_network_trains_a_readout_on_the_clips_of_one_video(own, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    net, _ = own
    folder = tmp_path / "clips"
    folder.mkdir()
    encode(str(folder / "one.mp4"), frames=48, size=(80, 64), content=moving_square)  # 3 clips of 0.53 s
    out = tmp_path / "ro"
    code, stdout, err = run_cli(["train-readout", str(folder), "--model", f"{net}:tokens", "--epochs", "2",
                                 "--batch-size", "2", "--out", str(out)], capsys)
    assert code == 0, err  # per-token statistics from the video's 3 clips (its middle clip alone: refused)
    assert "1 input (a random clip of each video per epoch) on 1 process(es)" in stdout
    assert [row["epoch"] for row in read_jsonl(out / "loss.jsonl")] == [1, 2]
    record = torch.load(out / "checkpoint.pt", weights_only=True)["extra"]
    assert record["sampling"] == "a random clip of each video per epoch"
    # two processes, one video: the second process has no clip for the statistics and no input of
    # its own to train on; it takes the statistics of the first and trains on its input (this hung);
    # an unreadable file, checked by the second process, is left out by both, with one warning (fixed
    # bytes: about one in 300 random ones reads as a subtitle stream, which is refused for another reason)
    (folder / "zz.mp4").write_bytes(random.Random(0).randbytes(4000))
    run = torchrun(["train-readout", str(folder), "--model", f"{net}:tokens", "--epochs", "2", "--batch-size", "2",
                    "--out", str(tmp_path / "ro2")], timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "1 input (a random clip of each video per epoch) on 2 process(es)" in run.stdout
    assert run.stderr.count("skipping 1 of 2 inputs in") == 1 and "zz.mp4' as a video" in run.stderr
    assert run.stderr.count("statistics estimated from only 3 samples") == 1  # the same on both: said once
    assert [row["epoch"] for row in read_jsonl(tmp_path / "ro2" / "loss.jsonl")] == [1, 2]


def test_a_token_network_in_a_session_trains_a_readout_from_python(own, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba.models.entry import entry_function
    from video_iba.workflows import Schedule, TrainingRun, train_dataset

    net, _ = own
    torch.manual_seed(0)
    model, spec = entry_function(f"{net}:tokens")()  # its spec gives "blocks.*" a layout: submodules match too
    folder = tmp_path / "clips"
    folder.mkdir()
    encode(str(folder / "one.mp4"), frames=48, size=(80, 64), content=moving_square)
    session = video_iba.Session.for_model(model, spec)
    res = train_dataset(TrainingRun(str(folder), str(tmp_path / "ro")), Schedule(epochs=1, batch_size=2),
                        session=session)  # was refused: "token layouts for ['blocks.0.dropout', ...]"
    assert res.readout.spec.layers == ["blocks.0"] and res.readout.spec.prefixes == [1]
    assert res.readout.spec.tokens == {"blocks.0": spec.layout("blocks.0").to_dict()}
    clip, _ = video_iba.read_clip(str(folder / "one.mp4"), spec)
    result = video_iba.explain_readout(model, res.readout, clip)
    assert result.bits.shape == (8, 48, 48) and result.meta["prefix_bits"] > 0
