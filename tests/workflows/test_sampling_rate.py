"""`--sampling-rate` and `--frames`: a video model's clips read at another rate, or of another length,
than its own (weights trained so), in every command that reads clips, recorded, and refused where
they cannot apply."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

import video_iba
from video_iba.errors import UserInputError
from video_iba.models import get_spec

from ..helpers import read_jsonl, read_npz, run_cli
from ..videos import encode, moving_square

FAST = ["--steps", "1", "--samples", "2"]


def _explained_clip(tmp_path, given: list[str], capsys):  # type: ignore[no-untyped-def]
    """A 3 s clip at 25 fps, ``tmp_path/v/clip.mp4``, explained by r3d_18 with the options ``given``:
    the clip, its NPZ's arrays and its metadata."""
    (tmp_path / "v").mkdir()
    clip = encode(str(tmp_path / "v" / "clip.mp4"), frames=75, size=(128, 96), fps=25, content=moving_square)
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", *given,
                            "--out", str(tmp_path / "out"), *FAST], capsys)
    assert code == 0, err
    d = read_npz(str(tmp_path / "out" / "clip.npz"))
    return clip, d, json.loads(str(d["meta"]))


def _rerun_folder(tmp_path, given: list[str], capsys):  # type: ignore[no-untyped-def]
    """Explain the folder ``tmp_path/v`` (one clip) with the options ``given``, again with them (resumed),
    then without them (explained again), the maps alone (the drawing is another test's); the output folder."""
    out = tmp_path / "batch"
    counts = []
    for options in (given, given, []):
        code, stdout, err = run_cli(["explain", str(tmp_path / "v"), "--model", "r3d_18", "--weights", "random",
                                     *options, "--maps-only", "--out", str(out), *FAST], capsys)
        assert code == 0, err
        counts.append(stdout.splitlines()[0])
    assert counts[0].startswith("1 input: 1 explained") and "1 done before" in counts[1]
    assert "1 explained (1 again as the settings changed)" in counts[2]
    return out


def test_clips_take_every_nth_frame_and_say_so(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert get_spec("r3d_18").sampling_rate == 2
    clip, d, meta = _explained_clip(tmp_path, ["--sampling-rate", "4"], capsys)
    # 16 frames every 4/30 s: a clip of 2.13 s (the model's own rate: 1.07 s), so 3 s give 2 windows
    assert d["window_frame_indices"][0].tolist() == [int(round(k * 4 / 30 * 25)) for k in range(16)]
    assert meta["sampling"]["rate"] == 4 and meta["sampling"]["clip_seconds"] == pytest.approx(16 * 4 / 30)
    assert d["window_starts"].round(2).tolist() == [0.0, 0.87]

    # statistics estimated at that rate record it
    stats = tmp_path / "s.pt"
    code, _, err = run_cli(["estimate", str(tmp_path / "v"), "--model", "r3d_18", "--weights", "random",
                            "--sampling-rate", "4", "--out", str(stats)], capsys)
    assert code == 0, err
    st = video_iba.Statistics.load(str(stats))
    assert st.meta["sampling_rate"] == 4 and st.samples == 2  # two clips of 2.13 s in 3 s
    # used at the model's own rate, they are taken, with a warning naming both rates
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--stats", str(stats),
                            "--maps-only", "--out", str(tmp_path / "o2"), *FAST], capsys)
    assert code == 0, err
    assert ("the statistics of 'layer2' were estimated on clips read at sampling rate 4 and these clips are read at "
            "rate 2; read them at that rate (--sampling-rate 4) or estimate statistics at rate 2") in err
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--stats", str(stats),
                            "--sampling-rate", "4", "--maps-only", "--out", str(tmp_path / "o2"), *FAST], capsys)
    assert code == 0 and "sampling rate" not in err, err

    # a folder explained again at another rate is explained again; at the same rate, resumed
    folder_out = _rerun_folder(tmp_path, ["--sampling-rate", "4"], capsys)
    rows = read_jsonl(str(folder_out / "manifest.jsonl"))
    assert json.loads(str(read_npz(rows[-1]["output"][0])["meta"]))["sampling"]["rate"] == 2


@pytest.mark.parametrize("flag, value, key, own, warning", [
    ("--sampling-rate", 3, "sampling_rate", 2, "the readout was trained on clips read at sampling rate 3 and these "
                                               "clips are read at rate 2; read them at that rate (--sampling-rate 3) "
                                               "or train a readout at rate 2"),
    ("--frames", 8, "frames", 16, "error: the readout was trained on clips of 8 frames and these clips hold 16; give "
                                  "them that length (--frames 8) or train a readout on clips of 16 frames"),
])
def test_the_clip_sampling_is_kept_with_scores_and_readouts(flag, value, key, own, warning,  # type: ignore[no-untyped-def]
                                                           tmp_path, capsys) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    encode(str(folder / "clip.mp4"), frames=40, size=(128, 96), fps=25, content=moving_square)
    out = tmp_path / "ev"
    boxes = tmp_path / "boxes.json"  # a hit ratio needs no network pass beyond the explanation: the cheapest score
    boxes.write_text(json.dumps({"clip.mp4": {"box": [0, 0, 64, 48], "target": 3}}))
    common = ["evaluate", str(folder), "--model", "r3d_18", "--weights", "random", "--methods", "random",
              "--metrics", "hit_ratio", "--annotations", str(boxes), "--out", str(out)]
    code, _, err = run_cli([*common, flag, str(value)], capsys)
    assert code == 0, err
    with open(out / "evaluation.json", encoding="utf-8") as fh:
        record = json.load(fh)
    assert record[key] == value and record["sampling_rate" if key == "frames" else "frames"] == (2 if key == "frames"
                                                                                               else 16)
    code, _, err = run_cli(common, capsys)  # the model's own sampling: other inputs
    assert code == 2 and f"holds scores computed otherwise ({key} was {value}, now {own})" in err

    train = ["train-readout", str(folder), "--model", "r3d_18", "--weights", "random", "--batch-size", "1",
             "--out", str(tmp_path / "ro")]
    code, _, err = run_cli([*train, "--epochs", "1", flag, str(value)], capsys)
    assert code == 0, err
    code, _, err = run_cli([*train, "--epochs", "2"], capsys)
    assert code == 2 and f"was trained otherwise ({key} was {value}, now {own})" in err
    # the readout explains clips read at another rate with a warning naming both; its heads take the
    # feature maps of clips of its length only, so another length is refused with the fix
    explain = ["explain", str(folder / "clip.mp4"), "--model", "r3d_18", "--weights", "random", "--method", "readout",
               "--readout", str(tmp_path / "ro" / "readout.pt"), "--out", str(tmp_path / "ex")]
    code, _, err = run_cli(explain, capsys)
    assert code == (2 if key == "frames" else 0), err
    assert warning in err
    code, _, err = run_cli([*explain, flag, str(value)], capsys)
    assert code == 0 and "was trained on clips" not in err, err


def test_clips_of_another_length_are_explained_recorded_and_checked(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    clip, d, meta = _explained_clip(tmp_path, ["--frames", "8"], capsys)
    # 8 frames every 2/30 s: clips of 0.53 s, so 3 s take 6 windows of 8 frames (a 16-frame clip: 3)
    assert d["window_frame_indices"].shape == (6, 8) and meta["sampling"]["frames"] == 8
    assert d["window_frame_indices"][0].tolist() == [int(round(k * 2 / 30 * 25)) for k in range(8)]
    assert "per voxel of the 8x112x112 model clip" in meta["bits_unit"]

    stats = tmp_path / "s.pt"
    code, _, err = run_cli(["estimate", str(tmp_path / "v"), "--model", "r3d_18", "--weights", "random",
                            "--frames", "8", "--out", str(stats)], capsys)
    assert code == 0, err
    st = video_iba.Statistics.load(str(stats))
    assert st.meta["frames"] == 8 and st.meta["sampling_rate"] == 2
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--stats", str(stats),
                            "--maps-only", "--out", str(tmp_path / "o2"), *FAST], capsys)
    assert code == 0, err
    assert ("the statistics of 'layer2' were estimated on clips of 8 frames and these clips hold 16; give them that "
            "length (--frames 8) or estimate statistics on clips of 16 frames") in err
    # statistics per time step do not fit clips of another length: refused with the fix
    code, _, err = run_cli(["estimate", str(tmp_path / "v"), "--model", "r3d_18", "--weights", "random",
                            "--frames", "8", "--per-frame", "--out", str(tmp_path / "pf.pt")], capsys)
    assert code == 0, err
    code, _, err = run_cli(["explain", clip, "--model", "r3d_18", "--weights", "random", "--stats",
                            str(tmp_path / "pf.pt"), "--maps-only", "--out", str(tmp_path / "o3"), *FAST], capsys)
    assert code == 2 and not os.path.exists(tmp_path / "o3")
    assert err.strip() == ("video-iba: error: the statistics of 'layer2' were estimated per time step on clips of 8 "
                           "frames and these clips hold 16: their 4 time steps do not fit; give them that length "
                           "(--frames 8) or estimate statistics on clips of 16 frames")

    _rerun_folder(tmp_path, ["--frames", "8"], capsys)


@pytest.mark.parametrize("argv, message", [
    (["explain", "{photo}", "--sampling-rate", "2"], "--sampling-rate applies to videos and '{photo}' is a photo; "
                                                     "drop it"),
    (["explain", "{photo}", "--model", "resnet50", "--weights", "random", "--sampling-rate", "2"],
     "resnet50 is an image model; --sampling-rate applies to video models only"),
    (["compare", "{photo}", "--methods", "saliency,random", "--sampling-rate", "2"],
     "--sampling-rate applies to videos and '{photo}' is a photo"),
    (["explain", "{video}", "--sampling-rate", "0"], "argument --sampling-rate: expected an integer from 1 to 256, "
                                                     "got 0"),
    (["evaluate", "synthetic", "--sampling-rate", "2", "--out", "{out}"],
     "the synthetic benchmark's clips are made at its models' rate and length; drop --sampling-rate"),
    (["train-readout", "synthetic", "--sampling-rate", "2", "--out", "{out}"],
     "the synthetic benchmark's clips are made at its models' rate and length; drop --sampling-rate"),
    (["explain", "{photo}", "--frames", "8"], "--frames applies to videos and '{photo}' is a photo; drop it"),
    (["explain", "{photo}", "--model", "resnet50", "--weights", "random", "--frames", "8"],
     "resnet50 is an image model; --frames applies to video models only"),
    (["compare", "{photo}", "--methods", "saliency,random", "--frames", "8"],
     "--frames applies to videos and '{photo}' is a photo"),
    (["explain", "{video}", "--frames", "2000"], "argument --frames: expected an integer from 1 to 1024, got 2000"),
    (["explain", "{video}", "--model", "hf:MCG-NJU/videomae-base-finetuned-kinetics", "--weights", "random",
      "--frames", "9"], "--frames must be even for hf:MCG-NJU/videomae-base-finetuned-kinetics (its tubelets span 2 "
                        "frames), got 9"),
    (["explain", "{video}", "--model", "mvit_v1_b", "--weights", "random", "--frames", "9"],
     "--frames must be even for mvit_v1_b (its tubelets span 2 frames), got 9"),
    (["evaluate", "synthetic", "--frames", "8", "--sampling-rate", "2", "--out", "{out}"],
     "the synthetic benchmark's clips are made at its models' rate and length; drop --sampling-rate and --frames"),
    (["train-readout", "synthetic", "--frames", "8", "--out", "{out}"],
     "the synthetic benchmark's clips are made at its models' rate and length; drop --frames"),
])
def test_refused_where_it_cannot_apply(argv, message, tmp_path, photo_dir, capsys) -> None:  # type: ignore[no-untyped-def]
    photo = os.path.join(photo_dir, sorted(os.listdir(photo_dir))[0])
    video = encode(str(tmp_path / "c.mp4"), frames=10)
    fill = {"{photo}": photo, "{video}": video, "{out}": str(tmp_path / "o")}
    argv = [fill.get(a, a) for a in argv]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert message.replace("{photo}", photo) in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "o")


def test_python_settings_and_own_models(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="sampling_rate= must be a whole number of frames from 1 to 256, got 0"):
        video_iba.Settings(sampling_rate=0)
    assert video_iba.Settings(sampling_rate=torch.tensor(3).numpy()[()]).sampling_rate == 3  # a numpy integer
    model = video_iba.load_model("r3d_18", weights="random", sampling_rate=6)
    assert model.video_iba_spec.sampling_rate == 6
    with pytest.raises(UserInputError, match="resnet50 is an image model; sampling_rate= applies to video models"):
        video_iba.load_model("resnet50", weights="random", sampling_rate=2)
    session = video_iba.Session.for_model(model, settings=video_iba.Settings(sampling_rate=5))
    assert session.spec.sampling_rate == 5 and model.video_iba_spec.sampling_rate == 6  # the model left as it was
    clip = encode(str(tmp_path / "c.mp4"), frames=30)
    for given in ({"sampling_rate": 2}, {"frames": 8}):
        with pytest.raises(UserInputError, match="an open session holds its model, weights, clip sampling"):
            video_iba.compare_file(clip, ["saliency", "random"], video_iba.Settings(**given), str(tmp_path / "o"),
                                   session=session)
    with pytest.raises(UserInputError, match="frames= must be a whole number of frames from 1 to 1024, got 0"):
        video_iba.Settings(frames=0)
    assert video_iba.Settings(frames=torch.tensor(8).numpy()[()]).frames == 8
    assert video_iba.Session.for_model(model, settings=video_iba.Settings(frames=8)).spec.frames == 8
    assert model.video_iba_spec.frames == 16
    shutil.rmtree(tmp_path / "o", ignore_errors=True)
