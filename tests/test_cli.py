"""The command line on real photos with the offline ImageNet EfficientNet-Lite0, and every bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
from video_iba.cli import main
from .helpers import run_cli

FAST = ["--steps", "2", "--samples", "2"]


@pytest.mark.slow
def test_explain_real_photo_end_to_end(photo_dir: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", os.path.join(photo_dir, "chelsea.jpg"), "--out", str(out)], capsys)
    assert code == 0, err
    assert "predicted: Egyptian cat" in stdout and "bits" in stdout
    assert sorted(os.listdir(out)) == ["chelsea.npz", "chelsea.png"]
    png = Image.open(out / "chelsea.png")
    assert png.format == "PNG" and png.size[0] > 600
    attr = video_iba.Attribution.load(out / "chelsea.npz")
    m = attr.meta
    assert attr.bits.shape == (224, 224) and attr.bits.dtype == torch.float32
    assert m["model"] == "efficientnet_lite0" and m["layer"] == "_blocks.4" and m["target_label"] == "Egyptian cat"
    assert (m["beta"], m["steps"], m["samples"], m["seed"]) == (10.0, 10, 10, 0)
    assert m["stats_source"] == "input" and m["prefix_cached"] is True and m["version"] == video_iba.__version__
    assert m["total_bits"] == pytest.approx(attr.total_bits, rel=1e-5)
    assert attr.capacity is not None and attr.capacity.shape == (40, 28, 28)
    box = attr.arrays["crop_box"]
    assert box.shape == (4,) and 0 < box[0] < box[2] <= 451 and attr.arrays["image_size"].tolist() == [300, 451]
    # the map is not flat: the most informative tenth of pixels holds far more than a tenth of the bits
    flat = np.sort(attr.bits.numpy().ravel())[::-1]
    assert flat[: flat.size // 10].sum() > 0.25 * flat.sum()


def test_target_by_name_and_vmax(photo_dir: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    code, stdout, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--out", str(tmp_path), "--target", "cup",
                              "--vmax", "0.5", *FAST], capsys)
    assert code == 0, err
    attr = video_iba.Attribution.load(tmp_path / "coffee.npz")
    assert attr.meta["target_label"] == "cup" and attr.meta["vmax"] == 0.5 and attr.meta["predicted"] == "espresso"


def test_config_file_and_flags(photo_dir: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("beta: 100\nsteps: 3\nsamples: 2\n")
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "rocket.jpg"), "--out", str(tmp_path), "--config", str(cfg),
                         "--steps", "2"], capsys)
    assert code == 0, err
    m = video_iba.Attribution.load(tmp_path / "rocket.npz").meta
    assert (m["beta"], m["steps"], m["samples"]) == (100.0, 2, 2)
    bad = tmp_path / "bad.yaml"
    bad.write_text("betta: 3\n")
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "rocket.jpg"), "--config", str(bad)], capsys)
    assert code == 2 and "unknown setting 'betta' (did you mean 'beta'?)" in err
    # errors name what the file set as the file's, what a flag set as the flag
    zero = tmp_path / "zero.yaml"
    zero.write_text("steps: 0\n")
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "rocket.jpg"), "--config", str(zero)], capsys)
    assert code == 2 and "'steps' (from --config) must be an integer > 0, got 0" in err
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "rocket.jpg"), "--out", str(tmp_path / "g"),
                            "--method", "gradcam", "--config", str(cfg), "--steps", "2"], capsys)
    assert code == 2 and err.strip().endswith("error: 'beta' (from --config), 'samples' (from --config), --steps are "
                                              "settings of the per-sample bottleneck (method iba), which gradcam does "
                                              "not use; drop them")


def test_paper_config_equals_the_defaults() -> None:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert video_iba.IBAConfig.from_yaml(os.path.join(here, "configs", "paper.yaml")) == video_iba.IBAConfig()


def test_config_files_read_numbers_as_written_and_refuse_a_key_set_twice(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sci = tmp_path / "sci.yaml"
    sci.write_text("beta: 1e-3\nlr: 2E+0\nsteps: 3\n")  # YAML 1.1 reads 1e-3 as a string: it was refused
    cfg = video_iba.IBAConfig.from_yaml(sci)
    assert (cfg.beta, cfg.lr, cfg.steps) == (0.001, 2.0, 3)
    dup = tmp_path / "dup.yaml"
    dup.write_text("steps: 3\nbeta: 1\nsteps: 4\n")  # the last one was taken without a word
    with pytest.raises(video_iba.UserInputError, match="sets 'steps' twice \\(again on line 3\\); keep one"):
        video_iba.IBAConfig.from_yaml(dup)


def test_estimate_then_explain_with_statistics(photo_dir: str, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "imgs"
    shutil.copytree(photo_dir, folder)
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"broken")
    stats = tmp_path / "stats.pt"
    code, stdout, err = run_cli(["estimate", str(folder), "--out", str(stats), "--batch-size", "2"], capsys)
    assert code == 0, err
    assert "over 3 images (1 unreadable skipped)" in stdout and "broken.jpg" in err
    s = video_iba.Statistics.load(stats)
    assert s.samples == 3 and s.meta["model"] == "efficientnet_lite0" and s.meta["layer"] == "_blocks.4"
    assert s.meta["input_shape"] == [1, 3, 224, 224]
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "chelsea.jpg"), "--out", str(tmp_path / "o"),
                         "--stats", str(stats), *FAST], capsys)
    assert code == 0, err
    assert video_iba.Attribution.load(tmp_path / "o" / "chelsea.npz").meta["stats_source"] == "dataset"
    # statistics of another layer or model are refused
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "chelsea.jpg"), "--stats", str(stats), "--layer", "_blocks.5"], capsys)
    assert code == 2 and "layer '_blocks.4'" in err
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "chelsea.jpg"), "--stats", str(stats), "--model", "resnet50",
                         "--weights", "random"], capsys)
    assert code == 2 and "model 'efficientnet_lite0'" in err


def test_models_and_layers_listings(capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = run_cli(["layers", "--model", "efficientnet_lite0"], capsys)
    assert code == 0 and "_blocks.4" in out and "1x40x28x28" in out
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "layer2" in rows["resnet50"] and "features.17" in rows["vgg16"]
    assert "conv_proj" in rows["vit_b_16"] and "tokens (h w) +1 cls" in rows["vit_b_16"]
    assert "features.0" in rows["swin_t"] and "maps (N,H,W,C)" in rows["swin_t"]
    assert "conv_proj" in rows["mvit_v2_s"] and "16x4 224²" in rows["mvit_v2_s"] and "+1 cls" in rows["mvit_v2_s"]
    # the columns line up, long Hugging Face names included
    hf = "hf:facebook/timesformer-base-finetuned-k400"
    start = out.splitlines()[0].index("weights")
    assert rows[hf].index("Hugging Face hub") == start and rows["resnet50"].index("torch hub cache") == start
    assert rows[hf].index("tokens (h w t)") == out.splitlines()[0].index("layout")
    families = ("VideoMAE, TimeSformer, ViViT, ViT, DeiT, BEiT, DINOv2, DINOv2 with registers, Swin, Swin V2, ConvNeXt, "
                "ConvNeXt V2, ResNet, RegNet")
    assert f"{families} in the cache" in rows["hf:ORG/NAME"]
    code, out, _ = run_cli(["layers", "--model", "mvit_v2_s"], capsys)
    block = next(line for line in out.splitlines() if line.startswith("blocks.3 "))
    assert code == 0 and "MultiscaleBlock" in block and "grid 8x14x14 (t h w) + 1 prefix" in block


def _write(path: str, array: np.ndarray, mode: str | None = None) -> str:
    Image.fromarray(array, mode).save(path)
    return path


def test_unusual_images_are_converted(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from skimage import data

    rgb = np.asarray(data.chelsea())
    gray = _write(str(tmp_path / "gray.png"), rgb.mean(2).astype(np.uint8), "L")
    rgba = _write(str(tmp_path / "rgba.png"), np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
    g16 = _write(str(tmp_path / "g16.png"), (rgb.mean(2) * 257).astype(np.uint16))
    for path in (gray, rgba, g16):
        code, _, err = run_cli(["explain", path, "--out", str(tmp_path / "o"), *FAST], capsys)
        assert code == 0, err
    assert len(os.listdir(tmp_path / "o")) == 6


@pytest.mark.parametrize("argv, message", [
    (["explain", "{missing}"], "does not exist"),
    (["explain", "{text}"], "not an image file"),
    (["explain", "{small}"], "needs at least 56 pixels"),
    (["explain", "{photo}", "--model", "resnet_50"], "did you mean 'resnet50'"),
    (["explain", "{photo}", "--layer", "_blocks.44"], "did you mean '_blocks.4'"),
    (["explain", "{photo}", "--target", "1000"], "out of range"),
    (["explain", "{photo}", "--target", "espreso"], "did you mean 'espresso'"),
    (["explain", "{photo}", "--target", "Cardigan"], "ambiguous"),
    # names holding every word, before spellings ('cat': the cats, not 'catamaran' or 'polecat')
    (["explain", "{photo}", "--target", "cat"], "(did you mean 'tiger cat', 'Persian cat', 'Siamese cat', "
                                                "'Egyptian cat', 'Madagascar cat'?)"),
    (["explain", "{photo}", "--target", "Tabby cat"], "(did you mean 'tabby'"),
    (["explain", "{photo}", "--beta", "0"], "--beta"),
    # a video's options given for a photo would be dropped
    (["explain", "{photo}", "--end", "2", "--coverage", "tiles"], "--end, --coverage apply to videos and"),
    (["explain", "{photo}", "--layout", "overlay"], "--layout applies to videos and"),
    (["compare", "{photo}", "--methods", "saliency", "--stride", "1", "--out", "{out}"], "--stride applies to videos"),
    (["explain", "{photo}", "--beta", "-3"], "--beta"),
    (["explain", "{photo}", "--steps", "0"], "--steps"),
    (["explain", "{photo}", "--samples", "-1"], "--samples"),
    (["explain", "{photo}", "--vmax", "0"], "--vmax"),
    (["explain", "{photo}", "--device", "cuda:0"], "CUDA is not available"),
    (["explain", "{photo}", "--weights", "{missing}"], "does not exist"),
    (["explain", "{photo}", "--stats", "{text}"], "not a readable statistics file"),
    (["explain", "{photo}", "--out", "{blocked}"], "cannot write"),
    (["estimate", "{empty}", "--out", "{out}/s.pt"], "no images"),
    (["estimate", "{missing}", "--out", "{out}/s.pt"], "does not exist"),
    (["estimate", "{photos}", "--per-frame", "--out", "{out}/s.pt"], "--per-frame applies to videos"),
    (["evaluate", "{photos}", "--clips", "3", "--out", "{out}"], "--clips counts the synthetic benchmark's clips"),
    (["evaluate", "synthetic", "--masks", "5", "--out", "{out}"], "--masks counts the random masks of the metric "
                                                                  "sensitivity_n, which is not among --metrics"),
    (["train-readout", "{photos}", "--clips", "3", "--out", "{out}"], "--clips counts the synthetic benchmark's"),
    (["evaluate", "synthetic", "--labels", "{text}", "--out", "{out}"], "the synthetic benchmark has its own classes; "
                                                                         "drop --labels"),
    (["train-readout", "synthetic", "--labels", "{text}", "--out", "{out}"], "the synthetic benchmark has its own "
                                                                              "classes; drop --labels"),
    (["layers", "--model", "nope"], "unknown model"),
])
def test_bad_input_is_one_line_exit_2_and_no_output(argv, message, photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    if "--device" in argv and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    (tmp_path / "text.jpg").write_text("plain text")
    _write(str(tmp_path / "small.png"), np.zeros((30, 30, 3), np.uint8))
    (tmp_path / "blocked").write_text("a file where a folder should be")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    subst = {"missing": str(tmp_path / "missing.jpg"), "text": str(tmp_path / "text.jpg"),
             "small": str(tmp_path / "small.png"), "photo": os.path.join(photo_dir, "coffee.jpg"),
             "blocked": str(tmp_path / "blocked" / "sub"), "empty": str(tmp_path / "empty"), "out": str(out),
             "photos": photo_dir}
    args = [a.format(**subst) for a in argv]
    if args[0] == "explain" and "--out" not in args:
        args += ["--out", str(out)]
    if args[0] == "explain":
        args = [args[0], *FAST, *args[1:]]  # the bad flag comes last and wins
    code, stdout, err = run_cli(args, capsys)
    assert code == 2
    assert message in err, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and "Traceback" not in err
    assert not out.exists() or os.listdir(out) == []


def test_console_script_exit_code_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    exe = os.path.join(os.path.dirname(sys.executable), "video-iba")
    res = subprocess.run([exe, "explain", str(tmp_path / "nope.jpg")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.strip() == f"video-iba: error: input file '{tmp_path / 'nope.jpg'}' does not exist; check the path"
    res = subprocess.run([exe, "explain"], capture_output=True, text=True)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "video_iba", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and video_iba.__version__ in res.stdout


def test_a_photo_of_the_offline_model_is_explained_without_importing_torchvision(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # importing torchvision imports torch's compiler (seconds per command); so does building a torch
    # optimiser: neither is needed for a model outside torchvision
    script = ("import sys; from video_iba.cli import main; code = main(sys.argv[1:]); "
              "print(code, [m for m in ('torchvision', 'torch._dynamo') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", script, "explain", os.path.join(photo_dir, "coffee.jpg"), "--model",
                          "efficientnet_lite0", "--out", str(tmp_path), *FAST], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "0 []", res.stdout + res.stderr[-2000:]
    assert "espresso" in res.stdout and sorted(os.listdir(tmp_path)) == ["coffee.npz", "coffee.png"]


def test_failure_mid_run_leaves_no_partial_output(photo_dir, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr("video_iba.workflows.explain.image_figure", broken)
    with pytest.raises(OSError):
        main(["explain", os.path.join(photo_dir, "coffee.jpg"), "--out", str(tmp_path), *FAST])
    assert os.listdir(tmp_path) == []


def test_the_device_defaults_to_auto_and_the_choice_is_printed(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from video_iba.distributed import auto_device, setup

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert auto_device() == expected and setup("auto") == expected  # one process: no group joined
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "rocket.jpg"), "--out", str(tmp_path), *FAST], capsys)
    assert code == 0, err
    if expected == "cpu":
        assert "video-iba: ran on cpu (--device auto: no CUDA device found)" in err
    else:
        assert "video-iba: ran on cuda (" in err
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "rocket.jpg"), "--out", str(tmp_path), "--device",
                            "cpu", *FAST], capsys)
    assert code == 0 and "ran on" not in err  # a device the user named is not announced


def test_weights_fine_tuned_to_classes_of_ones_own_with_a_labels_file(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # an ImageNet network whose head keeps three of its classes: a checkpoint fine-tuned to 3 classes
    sd = video_iba.load_model("efficientnet_lite0").state_dict()
    names = video_iba.models.imagenet_labels()
    rows = [names.index(n) for n in ("tabby", "espresso", "missile")]
    sd["_fc.weight"], sd["_fc.bias"] = sd["_fc.weight"][rows].clone(), sd["_fc.bias"][rows].clone()
    ckpt, labels = tmp_path / "three.pt", tmp_path / "classes.txt"
    torch.save({"state_dict": sd, "epoch": 9}, ckpt)
    labels.write_text("cat\ncoffee\nrocket\n")
    coffee = os.path.join(photo_dir, "coffee.jpg")
    code, stdout, err = run_cli(["explain", coffee, "--model", "efficientnet_lite0", "--weights", str(ckpt),
                                 "--labels", str(labels), "--out", str(tmp_path / "a"), *FAST], capsys)
    assert code == 0, err
    assert stdout.startswith("predicted: coffee (") and "explained: #1 coffee" in stdout
    attr = video_iba.Attribution.load(tmp_path / "a" / "coffee.npz")
    assert attr.meta["labels"] == str(labels) and attr.meta["predicted"] == "coffee"
    code, stdout, err = run_cli(["explain", os.path.join(photo_dir, "chelsea.jpg"), "--model", "efficientnet_lite0",
                                 "--weights", str(ckpt), "--labels", str(labels), "--target", "rocket",
                                 "--out", str(tmp_path / "b"), *FAST], capsys)
    assert code == 0, err
    attr = video_iba.Attribution.load(tmp_path / "b" / "chelsea.npz")
    assert (attr.target, attr.meta["target_label"], attr.meta["predicted"]) == (2, "rocket", "cat")
    # without a labels file the classes are numbered
    code, stdout, err = run_cli(["explain", coffee, "--model", "efficientnet_lite0", "--weights", str(ckpt),
                                 "--out", str(tmp_path / "c"), *FAST], capsys)
    assert code == 0 and "explained: #1 class 1" in stdout, err
    labels.write_text("cat\ncoffee\n")
    code, stdout, err = run_cli(["explain", coffee, "--model", "efficientnet_lite0", "--weights", str(ckpt),
                                 "--labels", str(labels), "--out", str(tmp_path / "d"), *FAST], capsys)
    assert code == 2 and err.count("\n") == 1 and not os.path.exists(tmp_path / "d" / "coffee.npz")
    assert "names 2 classes but efficientnet_lite0 with these weights outputs 3" in err
