"""What a careless or hostile user does: outputs never replace inputs, batches never lose work, the same
command computes the same thing, nothing hangs or eats the memory, every refusal is one line."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import video_iba
import video_iba.cli
from video_iba import UserInputError
from video_iba.workflows import Settings, explain_path

from .helpers import break_one_photo, read_frames, read_jsonl, run_cli
from .videos import encode, moving_square

FAST = ["--steps", "2", "--samples", "2"]


def _digest(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


# ---------------------------------------------------------------- data loss

def test_an_output_never_replaces_an_input(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    same = tmp_path / "same"
    same.mkdir()
    Image.open(os.path.join(photo_dir, "coffee.jpg")).save(same / "coffee.png")
    clip = encode(str(same / "short.mp4"), frames=10)
    before = {p: _digest(str(same / p)) for p in ("coffee.png", "short.mp4")}
    for path in (str(same / "coffee.png"), clip):
        code, _, err = run_cli(["explain", path, "--out", str(same), "--method", "random"], capsys)
        assert code == 2 and "would replace the input" in err and "--out" in err
    assert {p: _digest(str(same / p)) for p in before} == before
    shutil.copy(os.path.join(photo_dir, "chelsea.jpg"), same / "chelsea.jpg")
    code, _, err = run_cli(["estimate", str(same), "--out", str(same / "chelsea.jpg")], capsys)
    assert code == 2 and "would replace the input" in err and os.path.getsize(same / "chelsea.jpg") > 10_000


def test_same_stems_get_their_own_outputs(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(os.path.join(photo_dir, "coffee.jpg"), folder / "cat.jpg")
    Image.open(os.path.join(photo_dir, "chelsea.jpg")).save(folder / "cat.png")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", str(folder), "--method", "saliency", "--out", str(out)], capsys)
    assert code == 0 and "2 explained" in stdout, err
    rows = {os.path.basename(r["input"]): r for r in read_jsonl(str(out / "manifest.jsonl"))}
    assert rows["cat.jpg"]["output"] == [str(out / "cat.jpg.png"), str(out / "cat.jpg.npz")]  # absolute paths
    assert video_iba.load(out / "cat.jpg.npz").meta["predicted"] == "espresso"
    assert video_iba.load(out / "cat.png.npz").meta["predicted"] == "Egyptian cat"


def test_a_batch_never_explains_its_own_outputs(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    shutil.copytree(photo_dir, folder)
    code, _, err = run_cli(["explain", str(folder), "--method", "random", "--out", str(folder)], capsys)
    assert code == 2 and "is the input folder" in err
    for _ in range(2):  # the default layout: results inside the folder explained
        code, stdout, err = run_cli(["explain", str(folder), "--method", "random", "--out", str(folder / "out")],
                                    capsys)
        assert code == 0, err
    assert "3 inputs: 0 explained, 3 done before" in stdout
    assert not (folder / "out" / "out").exists()


def test_one_run_per_output_folder(photo_dir, tmp_path, capsys, caplog) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    out.mkdir()
    lock = out / ".video-iba.lock"
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid()}))  # a live holder
    code, _, err = run_cli(["explain", photo_dir, "--method", "random", "--out", str(out)], capsys)
    assert code == 2 and f"another run (process {os.getpid()}" in err and not (out / "manifest.jsonl").exists()
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": 2 ** 22 + 12345}))  # a holder that is gone
    with caplog.at_level("WARNING"):
        code, _, err = run_cli(["explain", photo_dir, "--method", "random", "--out", str(out)], capsys)
    assert code == 0, err
    assert "taking over" in err and not lock.exists() and len(read_jsonl(str(out / "manifest.jsonl"))) == 3
    code, _, err = run_cli(["evaluate", "synthetic", "--clips", "1", "--methods", "random", "--metrics", "hit_ratio",
                            "--out", str(out)], capsys)
    assert code == 0 and not lock.exists(), err  # evaluate holds the same lock and releases it


def test_a_rerun_redoes_what_changed_or_went_missing(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    base = ["explain", photo_dir, "--method", "random", "--out", str(out)]
    assert run_cli(base, capsys)[0] == 0
    os.remove(out / "coffee.png")
    code, stdout, _ = run_cli(base, capsys)
    assert "1 explained (1 again as their outputs were missing), 2 done before" in stdout and (out / "coffee.png").exists()
    code, stdout, _ = run_cli([*base, "--seed", "7"], capsys)
    assert "3 explained (3 again as the settings changed), 0 done before" in stdout
    assert {r["settings"] for r in read_jsonl(str(out / "manifest.jsonl"))} != set()


# ---------------------------------------------------------------- a batch that stops

@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the lowered limit, for the other photos
def test_every_failure_is_recorded_and_the_batch_goes_on(photo_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    shutil.copytree(photo_dir, folder)
    Image.new("RGB", (1000, 1000)).save(folder / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200_000)  # 1000 x 1000 is more than twice that: a "bomb"
    break_one_photo(monkeypatch, "rocket.jpg")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["explain", str(folder), "--method", "random", "--out", str(out)], capsys)
    assert code == 0, err
    assert "4 inputs: 2 explained, 0 done before, 2 failed" in stdout
    rows = {os.path.basename(r["input"]): r["status"] for r in read_jsonl(str(out / "manifest.jsonl"))}
    assert "larger than PIL decodes safely" in rows["huge.png"] and rows["rocket.jpg"].startswith(
        "error: ZeroDivisionError: a bug in one input")


# ---------------------------------------------------------------- the same command computes the same thing

def test_random_weights_are_seeded_and_recorded(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = os.path.join(photo_dir, "coffee.jpg")
    maps = []
    for run in ("a", "b"):
        code, _, err = run_cli(["explain", photo, "--model", "resnet18", "--weights", "random", "--out",
                                str(tmp_path / run), *FAST], capsys)
        assert code == 0, err
        maps.append(video_iba.load(tmp_path / run / "coffee.npz"))
    assert maps[0].target == maps[1].target and torch.equal(maps[0].values, maps[1].values)
    assert maps[0].meta["weights"] == "random" and maps[0].meta["weights_seed"] == 0
    a = video_iba.load_model("resnet18", weights="random", seed=1)
    b = video_iba.load_model("resnet18", weights="random", seed=1)
    c = video_iba.load_model("resnet18", weights="random", seed=2)
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)
    g = torch.get_rng_state()
    video_iba.load_model("resnet18", weights="random")
    assert torch.equal(g, torch.get_rng_state())  # the caller's generator is left alone


def test_ranks_with_different_weights_are_refused(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import video_iba.distributed as dist

    monkeypatch.setattr(dist, "gather", lambda obj: [obj, "another"])
    with pytest.raises(UserInputError, match="the model's weights differ between ranks"):
        dist.same_on_every_rank("abc", "the model's weights")


def test_unknown_weights_names_are_refused() -> None:
    for name in ("efficientnet_lite0", "efficientnet_lite0_i3d"):
        for weights in ("IMAGENET1K_V2", "bogus_weights_name"):
            with pytest.raises(UserInputError, match=f"unknown weights '{weights}' for {name}"):
                video_iba.load_model(name, weights=weights)


def test_a_rotated_phone_video_is_explained_upright(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    def marker(i: int, size: tuple[int, int]) -> np.ndarray:
        img = np.full((size[1], size[0], 3), 30, dtype=np.uint8)
        img[:12, :12] = 250  # top left as stored
        return img

    clip = encode(str(tmp_path / "phone.mp4"), frames=20, size=(96, 64), content=marker, rotation=90)
    info = video_iba.io.probe_video(clip)
    assert (info.width, info.height, info.rotation) == (64, 96, 90)
    first = read_frames(clip)[0]
    assert first.shape[:2] == (96, 64) and first[-6:, :6].mean() > 200 and first[:6, :6].mean() < 60
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--layout", "overlay",
                            "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 0, err
    out = read_frames(str(tmp_path / "o" / "phone.mp4"))[0]
    from video_iba.render.text import BACKGROUND

    drawn = np.nonzero((np.abs(out[:360].astype(int) - BACKGROUND).max(axis=2) > 30).any(axis=0))[0]
    assert 360 > (drawn[-1] - drawn[0] + 1) * 1.2  # a portrait panel (centred in the frame) above the text rows


def test_an_anamorphic_video_is_explained_as_a_player_shows_it(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from fractions import Fraction

    def disc(i: int, size: tuple[int, int]) -> np.ndarray:
        # a disc as displayed: stored squeezed to three quarters of its width (pixels 4:3 wide)
        yy, xx = np.mgrid[:size[1], :size[0]]
        img = np.full((size[1], size[0], 3), 20, dtype=np.uint8)
        img[((xx - size[0] / 2) * 4 / 3) ** 2 + (yy - size[1] / 2) ** 2 < 30 ** 2] = 240
        return img

    def extent(rgb: np.ndarray) -> tuple[int, int]:
        ys, xs = np.nonzero(rgb.mean(axis=2) > 130)
        return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)

    clip = encode(str(tmp_path / "dv.mp4"), frames=20, size=(96, 96), content=disc, pixel_aspect=Fraction(4, 3))
    info = video_iba.io.probe_video(clip)
    assert (info.width, info.height, info.pixel_aspect, info.stored_size) == (128, 96, pytest.approx(4 / 3), (96, 96))
    import av

    with av.open(clip) as container:  # as stored: a disc squeezed to 45 x 60 pixels
        width, height = extent(next(container.decode(video=0)).to_ndarray(format="rgb24"))
    assert width < 0.8 * height
    width, height = extent(read_frames(clip)[0])  # decoded as displayed: round
    assert abs(width - height) <= 2, (width, height)
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--layout", "side-by-side",
                            "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 0, err
    out = read_frames(str(tmp_path / "o" / "dv.mp4"))[0]
    side = out.shape[1] // 2  # the original's panel (4:3, above the text rows), as displayed: a round disc
    width, height = extent(out[:side * 3 // 4, :side])
    assert abs(width - height) <= 0.03 * height and height > 0.55 * (side * 3 // 4), (width, height)
    # the model's clips are cut from the frames as displayed: 128 x 96, shorter side resized to 128
    npz = tmp_path / "o" / "dv.npz"
    assert video_iba.load(npz).meta["resized"] == [128, 170]
    # explained on the stored pixels (as before this was decided): redraw names why, not another video
    with np.load(npz, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    meta = json.loads(str(arrays["meta"]))
    meta["resized"] = [128, 128]
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "old.npz", **arrays)
    code, _, err = run_cli(["redraw", str(tmp_path / "old.npz"), "--source", clip], capsys)
    assert code == 2 and err.strip().endswith(f"was explained on the stored pixels of '{clip}' (96x96), which is "
                                              f"now read as a player shows it (128x96, square pixels); explain it "
                                              f"again"), err


def test_a_tall_narrow_video_gets_frames_wide_enough_for_their_text(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # before: the overlay MP4 was as wide as its two 32-pixel panels (64 pixels of cut-off text), the
    # keyframe still's columns as narrow, and the comparison's heads cut to a few letters
    from video_iba.render.text import BACKGROUND

    clip = encode(str(tmp_path / "pole.mp4"), frames=20, size=(32, 480))
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--keyframes", "3",
                            "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 0, err
    frame = read_frames(str(tmp_path / "o" / "pole.mp4"))[0]
    assert frame.shape[1] == 480 and frame.shape[0] > 480  # the 32 x 480 panels centred in a 480-wide frame
    panels = frame[:480]
    assert np.abs(panels[:, :200].astype(int) - BACKGROUND).max() < 12  # margins of background (H.264's error)
    assert np.abs(panels[:, 280:].astype(int) - BACKGROUND).max() < 12
    assert np.abs(panels[:, 212:268].astype(int) - BACKGROUND).max() > 60  # the panels between them
    sheet = np.asarray(Image.open(tmp_path / "o" / "pole-keyframes.png"))
    assert sheet.shape[1] >= 3 * 170  # a column per keyframe wide enough for its time and total
    code, _, err = run_cli(["compare", clip, "--model", "r3d_18", "--weights", "random", "--methods",
                            "iba,saliency", "--keyframes", "2", "--out", str(tmp_path / "c"), *FAST], capsys)
    assert code == 0, err
    assert read_frames(str(tmp_path / "c" / "pole-compare.mp4"))[0].shape[1] == 3 * 160  # input and two methods
    assert np.asarray(Image.open(tmp_path / "c" / "pole-compare-keyframes.png")).shape[1] >= 220 + 2 * 64


def test_statistics_that_cannot_be_right_are_refused(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.pt"
    assert run_cli(["estimate", photo_dir, "--out", str(good), "--max-samples", "2", "--batch-size", "2"], capsys)[0] == 0
    payload = torch.load(good, weights_only=True)
    photo = os.path.join(photo_dir, "coffee.jpg")
    for name, change, message in (
            ("nan", lambda p: p["mean"].view(-1).__setitem__(0, float("nan")), "damaged statistics file"),
            ("negative", lambda p: p["std"].view(-1).__setitem__(0, -1.0), "damaged statistics file"),
            ("types", lambda p: p.__setitem__("samples", "many"), "damaged statistics file"),
            ("nometa", lambda p: p.__setitem__("meta", {}), "does not record the model and layer")):
        bad = {k: (v.clone() if isinstance(v, torch.Tensor) else json.loads(json.dumps(v)) if k == "meta" else v)
               for k, v in payload.items()}
        change(bad)
        torch.save(bad, tmp_path / f"{name}.pt")
        code, _, err = run_cli(["explain", photo, "--stats", str(tmp_path / f"{name}.pt"), "--out", str(tmp_path / "o")],
                               capsys)
        assert code == 2 and message in err, (name, err)
    other = tmp_path / "random.pt"
    assert run_cli(["estimate", photo_dir, "--weights", "random", "--out", str(other), "--max-samples", "2"],
                   capsys)[0] == 0
    code, _, err = run_cli(["explain", photo, "--stats", str(other), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "estimated with other weights (random, seed 0)" in err and "--weights" in err
    assert f"the statistics in '{other}' were estimated" in err  # was "'random.pt' were estimated"
    assert "and --seed their seed" in err
    # random weights of another seed are other weights: the message names the seed to give
    code, _, err = run_cli(["explain", photo, "--weights", "random", "--seed", "1", "--stats", str(other), "--out",
                            str(tmp_path / "o")], capsys)
    assert code == 2 and "(random, seed 0) than the model's; give --weights the weights they were made with and " \
                         "--seed their seed" in err
    assert run_cli(["explain", photo, "--weights", "random", "--seed", "0", "--stats", str(other), "--steps", "1",
                    "--out", str(tmp_path / "o")], capsys)[0] == 0


# ---------------------------------------------------------------- hangs and memory

def test_many_windows_go_to_disk_or_are_refused_before_any_work(tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=60, content=moving_square)
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--stride", "1e-9"], capsys)
    assert code == 2 and "--stride 1e-09 s is shorter than one frame of the video" in err
    from video_iba.io.sampling import plan_windows

    with pytest.raises(video_iba.UserInputError, match="windows over 4000.0 s, more than 100000; give a larger"):
        plan_windows(120_000, 30.0, 16, 2, stride=1 / 30)  # a stride of one frame over 67 minutes
    import video_iba.workflows.explain as wx

    argv = ["explain", clip, "--model", "x3d_xs", "--weights", "random", "--stride", "0.25", *FAST]
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "memory")], capsys)
    assert code == 0, err
    monkeypatch.setattr(wx, "SPILL_BYTES", 2 ** 20)  # 3 windows of 0.5 MB: kept in a file beside the outputs
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "disk")], capsys)
    assert code == 0 and "in a temporary file" in err, err
    assert sorted(os.listdir(tmp_path / "disk")) == ["c.mp4", "c.npz"]  # the temporary file is gone
    a, b = video_iba.load(tmp_path / "memory" / "c.npz"), video_iba.load(tmp_path / "disk" / "c.npz")
    assert np.array_equal(a.values, b.values) and np.array_equal(a.per_source_frame, b.per_source_frame)

    def fail(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise video_iba.UserInputError("the network stopped")

    with monkeypatch.context() as patch:
        patch.setattr(wx, "attribute_windows", fail)
        code, _, err = run_cli([*argv, "--out", str(tmp_path / "new" / "failed")], capsys)
    assert code == 2 and "the network stopped" in err
    assert not (tmp_path / "new").exists()  # the temporary file and the folders made for it are gone

    class Full:
        free = 2 ** 20

    monkeypatch.setattr(wx.shutil, "disk_usage", lambda _folder: Full())
    code, _, err = run_cli([*argv, "--out", str(tmp_path / "full")], capsys)
    assert code == 2 and "more than the 0.0 GiB free" in err and not (tmp_path / "full").exists()


def test_a_huge_photo_is_decoded_reduced(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "big.jpg"
    Image.open(os.path.join(photo_dir, "coffee.jpg")).resize((4800, 3200)).save(big, quality=90)
    rgb, full = video_iba.io.image.load_image(big, reduce_to=256)
    assert full == (3200, 4800) and 512 <= min(rgb.shape[:2]) < 1600  # decoded at a reduced scale
    res = explain_path(str(big), Settings(method="saliency"), str(tmp_path / "o"))
    arrays = res.result.arrays
    assert arrays["image_size"].tolist() == [3200, 4800]  # the geometry is in the file's pixels
    np.testing.assert_allclose(arrays["crop_box"], [1000, 200, 3800, 3000], atol=10)
    assert res.top[0][0] == "espresso"


def test_a_yaml_bomb_is_refused_without_expanding_it(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    bomb = tmp_path / "bomb.yaml"
    level = "&a [1, 1, 1, 1, 1, 1, 1, 1, 1]"
    names = "abcdefgh"
    for prev, name in zip(names, names[1:]):
        level += f", &{name} [" + ", ".join([f"*{prev}"] * 9) + "]"
    bomb.write_text(f"beta: [{level}]\n")  # 9^8 leaves once expanded
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--config", str(bomb)], capsys)
    assert code == 2 and len(err) < 300 and "'beta' (from --config) must be a finite number > 0, got a list" in err


@pytest.mark.parametrize("suffix", [".jpg", ".mp4", ".npz"])
def test_a_named_pipe_is_refused_at_once(tmp_path, capsys, suffix: str) -> None:  # type: ignore[no-untyped-def]
    pipe = tmp_path / f"pipe{suffix}"
    os.mkfifo(pipe)
    result: dict[str, object] = {}

    def run() -> None:
        if suffix == ".npz":
            try:
                video_iba.load(pipe)
            except UserInputError as exc:
                result["err"] = str(exc)
        else:
            result["code"] = video_iba.cli.main(["explain", str(pipe), "--out", str(tmp_path / "o")])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout=60)
    assert not t.is_alive(), "blocked on a named pipe"
    assert result.get("code") == 2 or "not a regular file" in str(result.get("err"))


# ---------------------------------------------------------------- one line instead of a traceback

def test_bad_values_and_files_give_one_line(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = os.path.join(photo_dir, "coffee.jpg")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, wrong)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("beta: 3 # é\n".encode("latin-1"))
    typed = tmp_path / "typed.yaml"
    typed.write_text("micro_batch: true\n")
    sigma = tmp_path / "sigma.yaml"
    sigma.write_text("sigma: -1\n")
    per_pass = tmp_path / "per_pass.yaml"
    per_pass.write_text("inputs_per_pass: 0\n")
    cases = [
        (["--model", "resnet18", "--weights", str(wrong)], "size mismatch for fc.weight"),
        (["--seed", str(2 ** 64)], "expected an integer in 0 .. 2**63-1"),
        (["--device", "meta"], "device 'meta' is not supported"),
        (["--device", "mps"], "device 'mps' is not supported"),
        (["--config", str(latin)], "give UTF-8 YAML"),
        (["--config", str(typed)], "'micro_batch' (from --config) must be an integer > 0, got True"),
        (["--config", str(sigma)], "'sigma' (from --config) must be >= 0"),
        (["--config", str(per_pass)], "'inputs_per_pass' (from --config) must be an integer > 0"),
        (["--samples", "1000000000", "--steps", "2"], "out of memory with 1000000000 noisy replicas"),
        (["--target", "\u0663"], "unknown class name"),  # an Arabic-Indic three is not the index 3
        (["--target", "top3"], "--target takes top1, a class index or a class name, not 'top3'; the K most "
                               "probable classes are explained side by side by `video-iba compare --targets topK`"),
        (["--layer", "_avg_pooling"], "outputs a map of one cell"),
    ]
    for extra, message in cases:
        code, out, err = run_cli(["explain", photo, "--out", str(tmp_path / "o"), *extra], capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "o" / "coffee.png").exists()


def test_library_misuse_gives_one_line() -> None:
    model = video_iba.load_model("resnet18", weights="random")
    with pytest.raises(UserInputError, match=r"cannot run on an input of shape \(1, 3, 4, 64, 64\)"):
        video_iba.explain(model, torch.randn(1, 3, 4, 64, 64))
    with pytest.raises(UserInputError, match="x is torch.float64 but the model's parameters are torch.float32"):
        video_iba.explain(model, torch.randn(1, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(UserInputError, match=r"cannot run on an input.*: resnet18 takes \(1, 3, 224, 224\), as "
                                             r"video_iba.preprocess_image\(image, model.video_iba_spec\) makes it"):
        video_iba.attribute("saliency", model, torch.randn(1, 3, 4, 64, 64))
    clips = video_iba.load_model("x3d_s", weights="random")  # a registry model says what it takes
    with pytest.raises(UserInputError, match=r"x3d_s takes clips \(1, 3, 13, 182, 182\), as video_iba.read_clip"):
        video_iba.attribute("saliency", clips, torch.randn(1, 3, 64, 64))
    with pytest.raises(UserInputError, match=r"if it is one clip \(3, T, H, W\), add its batch axis with x\[None\]"):
        video_iba.attribute("saliency", clips, torch.randn(3, 13, 182, 182))

    class Unpacking(torch.nn.Module):  # a network of one's own reading the clip's shape: a ValueError, not torch's
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv3d(3, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, t, h, w = x.shape
            return self.conv(x).reshape(n, -1)[:, :2]

    with pytest.raises(UserInputError, match=r"shape \(3, 4, 8, 8\) \(not enough values to unpack.*x\[None\]"):
        video_iba.explain(Unpacking(), torch.randn(3, 4, 8, 8), layer="conv")  # was: the ValueError itself


def test_output_names_too_long_and_a_full_disk(photo_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    long = tmp_path / ("x" * 249 + ".jpg")
    shutil.copy(os.path.join(photo_dir, "coffee.jpg"), long)
    code, _, err = run_cli(["compare", str(long), "--methods", "random", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "more than the 255 the file system allows" in err
    import video_iba.files as files

    def full(_src, _dst):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "replace", full)
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--method", "random", "--out",
                            str(tmp_path / "o")], capsys)
    assert code == 2 and "no space left writing" in err and not (tmp_path / "o").exists()


def test_a_refused_command_leaves_no_folder_behind(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # before: every refusal after the output check left the --out folder (and those above it) empty
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    broken = tmp_path / "nets.py"
    broken.write_text("def build():\n    raise RuntimeError('no such layer')\n")
    photo = os.path.join(photo_dir, "coffee.jpg")
    commands = [
        ["explain", str(bad), "--out", str(tmp_path / "a" / "b")],
        ["compare", str(bad), "--methods", "saliency", "--out", str(tmp_path / "c")],
        ["redraw", str(tmp_path / "none.npz"), "--out", str(tmp_path / "d")],
        ["evaluate", photo_dir, "--methods", "saliency", "--metrics", "nosuch", "--out", str(tmp_path / "e")],
        ["explain", photo_dir, "--model", f"{broken}:build", "--out", str(tmp_path / "f")],  # refused under the lock
        ["estimate", photo_dir, "--model", f"{broken}:build", "--out", str(tmp_path / "g" / "s.pt")],
    ]
    for argv in commands:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    assert sorted(os.listdir(tmp_path)) == ["bad.mp4", "nets.py"]
    out = tmp_path / "kept"
    out.mkdir()
    code, _, err = run_cli(["explain", photo, "--model", f"{broken}:build", "--out", str(out)], capsys)
    assert code == 2 and out.is_dir()  # a folder that was there stays
    code, _, err = run_cli(["explain", photo, "--method", "random", "--out", str(tmp_path / "new" / "out")], capsys)
    assert code == 0 and sorted(os.listdir(tmp_path / "new" / "out")) == ["coffee.npz", "coffee.png"]


def test_a_folder_where_a_file_goes_and_a_file_where_a_folder_goes(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    # before: an IsADirectoryError naming a temporary file, and "cannot write ... (File exists)"
    import video_iba

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    a = video_iba.attribute("random", net, torch.zeros(1, 3, 8, 8), target=0)
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder.npz").mkdir()
    with pytest.raises(video_iba.UserInputError, match="'.*folder.npz' is a folder; give the path of a file"):
        a.save(tmp_path / "folder.npz")
    assert os.listdir(tmp_path / "folder.npz") == []
    (tmp_path / "plain").write_text("x")
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--method", "random", "--out",
                            str(tmp_path / "plain")], capsys)
    assert code == 2 and "plain' is a file, not a folder" in err and (tmp_path / "plain").read_text() == "x"
    code, _, err = run_cli(["estimate", photo_dir, "--out", str(tmp_path / "folder")], capsys)
    assert code == 2 and "folder' is a folder" in err
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--method", "random", "--out",
                            str(tmp_path / "result.png")], capsys)  # was a folder named result.png
    assert code == 2 and "result.png' looks like a file name, and --out is the folder the outputs go to" in err
    assert not (tmp_path / "result.png").exists()


# ---------------------------------------------------------------- unclear before

def test_transformer_layers_without_a_layout_are_refused_with_the_fix() -> None:
    import torchvision

    import video_iba

    photo = torch.randn(1, 3, 224, 224)
    vit = torchvision.models.vit_b_16().eval()  # a user's own model: no registry layout
    with pytest.raises(video_iba.UserInputError, match=r"outputs tokens \(1, 197, 768\).*token layout"):
        video_iba.explain(vit, photo, 0, layer="encoder.layers.encoder_layer_5", steps=1, samples=2)
    swin = torchvision.models.swin_t().eval()
    with pytest.raises(video_iba.UserInputError, match=r"channels-last map.*TokenLayout\(channels_last=True\)"):
        video_iba.explain(swin, photo, 0, layer="features.3", steps=1, samples=2)
    a = video_iba.explain(swin, photo, 0, layer="features.3", steps=1, samples=2,
                          tokens=video_iba.TokenLayout(channels_last=True))  # the fix the message names
    assert tuple(a.capacity.shape) == (192, 28, 28) and a.bits.shape == (224, 224)  # type: ignore[union-attr]

    class Block(torch.nn.Module):  # returns (tokens, grid size), as MViT's blocks do
        def __init__(self) -> None:
            super().__init__()
            self.mix = torch.nn.Linear(8, 8)

        def forward(self, x: torch.Tensor, thw: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
            return x + self.mix(x), thw

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed, self.block, self.head = torch.nn.Conv3d(3, 8, 4, 4), Block(), torch.nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = self.embed(x)
            tokens, _ = self.block(z.flatten(2).transpose(1, 2), tuple(z.shape[2:]))
            return self.head(tokens.mean(1))

    net, clip = Net().eval(), torch.randn(1, 3, 8, 16, 16)
    with pytest.raises(video_iba.UserInputError, match=r"returns a tuple led by tokens \(1, 32, 8\).*TokenLayout"):
        video_iba.explain(net, clip, 0, layer="block", steps=1, samples=2)  # was: "returns tuple, not a tensor"
    with pytest.raises(video_iba.UserInputError, match=r"layer 'block' returns a tuple of Tensor, tuple, not a feature "
                                                       r"map.*its layout with tokens="):
        video_iba.attribute("gradcam", net, clip, 0, cam_layer="block")  # was: captum's AssertionError
    assert not any(m._forward_hooks or m._backward_hooks for m in net.modules())
    a = video_iba.explain(net, clip, 0, layer="block", steps=1, samples=2, tokens=video_iba.TokenLayout(grid=(2, 4, 4)))
    assert tuple(a.capacity.shape) == (8, 2, 4, 4)  # type: ignore[union-attr]


def test_an_image_named_like_a_video_says_so(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    fake = tmp_path / "photo.mp4"
    shutil.copy(os.path.join(photo_dir, "coffee.jpg"), fake)
    code, _, err = run_cli(["explain", str(fake), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "is an image (JPEG), not a video" in err


def test_list_files_with_a_byte_order_mark(photo_dir, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    listing = tmp_path / "list.txt"
    listing.write_text(os.path.join(photo_dir, "coffee.jpg") + "\n", encoding="utf-8-sig")
    code, stdout, err = run_cli(["explain", str(listing), "--method", "random", "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and "1 input: 1 explained" in stdout, err


def test_a_range_past_the_end_is_said(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip = encode(str(tmp_path / "c.mp4"), frames=45)
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--method", "random",
                            "--end", "60", "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and "the range ends at 60 s but" in err and "lasts 1.50 s" in err


def test_progress_lines_where_stderr_is_not_a_terminal(photo_dir, tmp_path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(video_iba.cli, "PROGRESS_EVERY", 0.0)
    code, _, err = run_cli(["explain", os.path.join(photo_dir, "coffee.jpg"), "--out", str(tmp_path), *FAST], capsys)
    assert code == 0
    lines = [line for line in err.splitlines() if line.startswith("video-iba: explaining:")]
    assert lines and lines[-1].startswith("video-iba: explaining: 2/2 step(s)")


def test_the_same_command_writes_the_same_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import hashlib
    import subprocess
    import sys

    clip = encode(str(tmp_path / "c.mp4"), frames=90, size=(128, 96), content=moving_square)
    digests = []
    for run in ("a", "b"):  # separate processes, as two users would run it
        cmd = [sys.executable, "-m", "video_iba", "explain", clip, "--model", "x3d_xs", "--weights", "random",
               "--stride", "0.5", "--out", str(tmp_path / run), *FAST]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        digests.append(hashlib.sha256((tmp_path / run / "c.mp4").read_bytes()).hexdigest())
        assert video_iba.load(tmp_path / run / "c.npz").meta["weights_seed"] == 0
    assert digests[0] == digests[1]
    a, b = video_iba.load(tmp_path / "a" / "c.npz"), video_iba.load(tmp_path / "b" / "c.npz")
    assert np.array_equal(a.values, b.values) and a.target == b.target
