"""The result types: save and load round trips, `video_iba.load` for any result file, clear refusals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import video_iba
from video_iba import Attribution, ClipAttribution, Unit, UserInputError


def _clip_result(unit: Unit = Unit.BITS) -> ClipAttribution:
    rng = np.random.default_rng(0)
    values = rng.random((3, 2, 4, 8, 8), dtype=np.float32)
    return ClipAttribution(
        values=values, unit=unit, target=2, window_starts=np.array([0.0, 0.5, 1.0]),
        window_frame_indices=np.arange(12).reshape(3, 4), window_looped=np.array([False, False, True]),
        window_probs=rng.random((3, 2, 5), dtype=np.float32), window_seconds=np.array([0.1, 0.2, 0.3]),
        crop_boxes=np.array([[0, 0, 8, 8], [4, 0, 12, 8]], dtype=np.float64),
        source_frame_indices=np.arange(30), per_source_frame=rng.random(30),
        feature_bits=[rng.random((3, 2, 2, 4, 4), dtype=np.float32)] if unit.information else [],
        meta={"model": "toy", "unit": unit})


def test_unit_is_typed_and_saved_as_its_name() -> None:
    assert Unit("bits").information and not Unit.LOGIT_DROP.information
    assert Unit.BITS.shown == "bits" and Unit.ABS_GRADIENT.shown == "|gradient|" and Unit.GRAD_CAM.shown == "|grad-cam|"
    assert f"{Unit.LOGIT_DROP}" == "logit drop" and json.dumps({"u": Unit.BITS}) == '{"u": "bits"}'
    v = np.array([-1.0, 2.0])
    assert Unit.BITS.magnitude(v) is v and Unit.GRADIENT.magnitude(v).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError):
        Unit("furlongs")


def test_photo_attribution_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = Attribution(values=torch.rand(8, 8), unit="bits", target=3, capacity=torch.rand(4, 2, 2),
                    logits=torch.randn(5), meta={"layer": "x"}, arrays={"crop_box": np.array([0.0, 0, 8, 8])})
    assert a.unit is Unit.BITS  # a string becomes the typed unit
    a.save(tmp_path / "a.npz")
    for back in (Attribution.load(tmp_path / "a.npz"), video_iba.load(tmp_path / "a.npz")):
        assert isinstance(back, Attribution) and back.unit is Unit.BITS and back.target == 3
        assert torch.equal(back.values, a.values) and torch.equal(back.capacity, a.capacity)  # type: ignore[arg-type]
        assert back.meta == {"layer": "x"} and back.arrays["crop_box"].tolist() == [0, 0, 8, 8]
        assert back.total == pytest.approx(float(a.values.double().sum()))
    for name in ("a.png", "a", "a.npz.tmp"):  # an archive named as a picture, or nothing numpy's loader finds
        with pytest.raises(UserInputError, match=f"give a name ending in .npz \\(got '.*{name}'\\)"):
            a.save(tmp_path / name)
        with pytest.raises(UserInputError, match="ending in .npz"):
            _clip_result().save(tmp_path / name)
        assert not (tmp_path / name).exists()
    a.save(tmp_path / "A.NPZ")
    assert video_iba.load(tmp_path / "A.NPZ").target == 3
    g = Attribution(values=torch.randn(8, 8), unit=Unit.GRADIENT, target=0)
    assert g.total is None
    with pytest.raises(ValueError, match="not bits .*read its map from .values"):
        _ = g.bits


def test_an_attribution_made_by_hand_is_checked_and_its_metadata_saved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a = Attribution(values=np.ones((4, 4), np.float32), unit="bits", target=np.int64(2),  # type: ignore[arg-type]
                    meta={"score": np.float32(0.5), "box": np.arange(2), "t": torch.tensor(3)})
    assert isinstance(a.values, torch.Tensor) and a.target == 2 and a.total_bits == 16  # numpy values were an error
    a.save(tmp_path / "a.npz")  # numpy and torch numbers in the metadata were a JSON TypeError
    assert video_iba.load(tmp_path / "a.npz").meta == {"score": 0.5, "box": [0, 1], "t": 3}
    for kwargs, message in ((dict(unit="nats"), "unknown unit 'nats'; give one of bits, random"),
                            (dict(values=torch.zeros(4)), r"values are a map \(H, W\) or \(T, H, W\)"),
                            (dict(target="cat"), "target must be a class index")):
        with pytest.raises(UserInputError, match=message):
            Attribution(**{"values": torch.zeros(4, 4), "unit": "bits", "target": 0, **kwargs})  # type: ignore[arg-type]


def test_a_result_prints_as_one_line_that_says_what_it_is() -> None:
    a = Attribution(values=torch.full((8, 8), 0.5), unit="bits", target=3, capacity=torch.rand(4, 2, 2),
                    meta={"method": "iba_per_sample", "model": "resnet50", "layer": "layer2", "target_label": "cat"})
    assert repr(a) == "Attribution(iba_per_sample, bits (8, 8), target 3 'cat', 32.0 bits, resnet50 layer layer2)"
    g = Attribution(values=torch.randn(8, 8), unit=Unit.GRADIENT, target=0, meta={"method": "gradient"})
    assert repr(g) == "Attribution(gradient, gradient (8, 8), target 0)"
    c = _clip_result()
    total = f"{c.values.astype(np.float64).sum(axis=(2, 3, 4)).mean():,.1f}"  # per window and crop, as total_bits
    assert repr(c) == (f"ClipAttribution(?, bits (3 windows x 2 crops of 4 x 8 x 8), target 2, {total} bits per window "
                       f"and crop, toy, 30 source frames)")
    c.prefix_bits = np.array([[[1.0], [3.0]], [[2.0], [2.0]], [[0.0], [4.0]]])  # (windows, crops, tokens)
    assert c.prefix_total == 2.0  # per window and crop, as total_bits (summing the crops gave 4)
    assert "\n" not in repr(_clip_result(Unit.LOGIT_DROP)) and "bits" not in repr(_clip_result(Unit.LOGIT_DROP))


@pytest.mark.parametrize("unit", [Unit.BITS, Unit.LOGIT_DROP])
def test_clip_attribution_round_trip(tmp_path, unit: Unit) -> None:  # type: ignore[no-untyped-def]
    c = _clip_result(unit)
    c.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as d:  # the arrays keep the names the command line always wrote
        names = set(d.files)
    if unit.information:
        assert {"window_bits", "window_total_bits", "bits_per_source_frame", "feature_bits_0"} <= names
    else:
        assert {"window_values", "window_totals", "magnitude_per_source_frame"} <= names and "window_bits" not in names
    for back in (ClipAttribution.load(tmp_path / "c.npz"), video_iba.load(tmp_path / "c.npz")):
        assert isinstance(back, ClipAttribution) and back.unit is unit and back.target == 2
        assert np.array_equal(back.values, c.values) and np.array_equal(back.window_frame_indices, c.window_frame_indices)
        assert back.window_looped.tolist() == [False, False, True] and len(back.feature_bits) == len(c.feature_bits)
        np.testing.assert_allclose(back.window_totals, c.values.astype(np.float64).sum(axis=(2, 3, 4)))
        np.testing.assert_allclose(back.mean_probs, c.window_probs.astype(np.float64).mean(axis=(0, 1)))
    if unit.information:
        assert back.total_bits == pytest.approx(float(c.window_totals.mean()))
        assert np.array_equal(back.bits_per_frame, c.per_source_frame)
    else:
        assert back.total is None
        with pytest.raises(ValueError, match="not bits"):
            _ = back.bits_per_frame


def test_load_refuses_what_is_not_a_result(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(photo)
    with pytest.raises(UserInputError, match="not an .npz written by video-iba") as err:
        video_iba.load(photo)
    assert "allow_pickle" not in str(err.value)  # numpy's advice to load it unsafely is not passed on
    _clip_result().save(tmp_path / "c.npz")
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match="truncated"):
        video_iba.load(tmp_path / "cut.npz")
    np.save(tmp_path / "bits.npy", np.zeros(3))  # was a TypeError: numpy gives a .npy's array, not an archive
    with pytest.raises(UserInputError, match=r"'.*bits.npy' holds one numpy array \(.npy\), not the .npz archive"):
        video_iba.load(tmp_path / "bits.npy")
    np.savez(tmp_path / "plain.npz", values=np.zeros(3))
    with pytest.raises(UserInputError, match="not a video-iba result file"):
        video_iba.load(tmp_path / "plain.npz")
    np.savez(tmp_path / "future.npz", format=np.array("video-iba-attribution/9"))
    with pytest.raises(UserInputError, match="cannot read"):
        video_iba.load(tmp_path / "future.npz")
    with pytest.raises(UserInputError, match="not 'video-iba-attribution/1'; read it with video_iba.load"):
        Attribution.load(tmp_path / "c.npz")  # a video's file through the photo type
    with pytest.raises(UserInputError, match="does not exist"):
        video_iba.load(tmp_path / "missing.npz")
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(UserInputError, match="not a regular file"):
        video_iba.load(tmp_path / "pipe.npz")  # refused at once, never opened (it would block)


def test_a_video_file_without_a_unit_entry_reads_its_unit_from_the_metadata(tmp_path) -> None:  # type: ignore[no-untyped-def]
    c = _clip_result(Unit.ABS_GRADIENT)
    payload = dict(np.load(_saved(c, tmp_path)))
    del payload["unit"]  # files written before the entry existed
    np.savez(tmp_path / "old.npz", **payload)
    back = video_iba.load(tmp_path / "old.npz")
    assert isinstance(back, ClipAttribution) and back.unit is Unit.ABS_GRADIENT


def _saved(c: ClipAttribution, folder) -> str:  # type: ignore[no-untyped-def]
    path = str(folder / "saved.npz")
    c.save(path)
    return path


def test_a_comparison_round_trip_and_its_panels_by_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from video_iba import Comparison, Panel
    photo = Attribution(values=torch.rand(8, 8), unit=Unit.BITS, target=1, meta={"method": "iba"})
    cam = Attribution(values=torch.rand(8, 8), unit=Unit.GRAD_CAM, target=1, meta={"method": "gradcam"})
    clip = _clip_result(Unit.LOGIT_DROP)
    c = Comparison([Panel("/d/a.jpg", "iba", photo), Panel("/d/a.jpg", "gradcam", cam),
                    Panel("/d/b.mp4", "occlusion8", clip)], {"bits_vmax": 0.5})
    c.save(tmp_path / "c.npz")
    for back in (Comparison.load(tmp_path / "c.npz"), video_iba.load(tmp_path / "c.npz")):
        assert isinstance(back, Comparison) and back.meta == {"bits_vmax": 0.5}
        assert [(p.input, p.name, type(p.result)) for p in back.panels] == [
            ("/d/a.jpg", "iba", Attribution), ("/d/a.jpg", "gradcam", Attribution), ("/d/b.mp4", "occlusion8",
                                                                                    ClipAttribution)]
        assert torch.equal(back["iba"].values, photo.values) and back["gradcam"].unit is Unit.GRAD_CAM
        assert np.array_equal(back.panel("occlusion8", "b.mp4").values, clip.values)
        assert back.panel("occlusion8", "/d/b.mp4").unit is Unit.LOGIT_DROP
    assert repr(back) == "Comparison(3 panels: 2 inputs × iba, gradcam, occlusion8)"
    with pytest.raises(KeyError, match="no panel 'saliency'; panels: iba, gradcam, occlusion8"):
        back.panel("saliency")
    with pytest.raises(KeyError, match="no panel 'iba' on 'b.mp4'"):
        back.panel("iba", "b.mp4")
    with np.load(tmp_path / "c.npz") as d:  # a panel's arrays lost
        kept = {k: d[k] for k in d.files if not k.startswith("panel1/")}
    np.savez(tmp_path / "damaged.npz", **kept)
    with pytest.raises(UserInputError, match="lacks panel 1's result; it is damaged"):
        video_iba.load(tmp_path / "damaged.npz")
    with pytest.raises(UserInputError, match="at least one panel"):
        Comparison([])
