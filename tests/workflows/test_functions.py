"""The workflows behind the commands, called as Python functions (the command line only parses and prints)."""

from __future__ import annotations

import os
import shutil

import pytest

import video_iba
from video_iba import Statistics, UserInputError
from video_iba.io.ledger import read_records
from video_iba.workflows import (MANIFEST, Evaluation, Schedule, Settings, TrainingRun, estimate_folder,
                                 evaluate_dataset, explain_batch, train_dataset)


def test_estimate_folder_returns_and_writes_the_statistics(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    est = estimate_folder(photo_dir, model_name="efficientnet_lite0", out=str(tmp_path / "s.pt"), batch_size=2,
                          max_samples=2)
    assert est.lead and est.inputs == "images" and est.skipped == [] and est.written == [str(tmp_path / "s.pt")]
    st = Statistics.load(est.written[0])
    assert st.samples == 2 == est.statistics[0].samples and tuple(st.mean.shape) == (40, 28, 28)
    assert st.meta["layer"] == "_blocks.4" and st.meta["model"] == "efficientnet_lite0"
    with pytest.raises(UserInputError, match="is a folder; give out="):
        estimate_folder(photo_dir, model_name="efficientnet_lite0", out=str(tmp_path))


def test_explain_batch_counts_and_records_every_input(photo_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "in"
    shutil.copytree(photo_dir, folder)
    (folder / "broken.png").write_bytes(b"no image")
    out = str(tmp_path / "out")
    counts = explain_batch(str(folder), Settings(method="saliency"), out)
    assert (counts.inputs, counts.done, counts.skipped, counts.failed) == (4, 3, 0, 1) and counts.lead
    rows = {os.path.basename(r["input"]): r for r in read_records(os.path.join(out, MANIFEST))}
    assert rows["broken.png"]["status"].startswith("error: ") and rows["coffee.jpg"]["label"] == "espresso"
    assert isinstance(video_iba.load(rows["coffee.jpg"]["output"][1]), video_iba.Attribution)
    again = explain_batch(str(folder), Settings(method="saliency"), out)
    assert (again.done, again.skipped, again.failed) == (0, 3, 1)  # done inputs are skipped, the broken one retried


def test_evaluate_dataset_returns_the_summary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    summary = evaluate_dataset(Evaluation("synthetic", methods=["random"], metrics=["hit_ratio"], clips=1),
                               str(tmp_path / "ev"))
    (row,) = summary["table"]
    assert (row["method"], row["metric"], row["n"]) == ("random", "hit_ratio", 1) and 0 <= row["mean"] < 0.05
    with pytest.raises(UserInputError, match="drop weights=, stats= and annotations="):
        evaluate_dataset(Evaluation("synthetic", weights="random"), str(tmp_path / "x"))
    with pytest.raises(UserInputError, match="models are tubenet, tubevit, not 'resnet18'; give one of them to model="):
        evaluate_dataset(Evaluation("synthetic", model="resnet18"), str(tmp_path / "x"))


def test_train_dataset_trains_and_reports_the_epochs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    res = train_dataset(TrainingRun("synthetic", str(tmp_path / "ro"), clips=8, validation="none"),
                        Schedule(epochs=1, batch_size=8))
    assert res.lead and res.epoch == 1 and len(res.history) == 1 and not res.validated and res.inputs == 8
    assert res.readout.spec.layers == ["block1"] and res.history[0]["info_nats"] > 0
    readout = video_iba.load_readout(str(tmp_path / "ro" / "readout.pt"), "tubenet")
    assert readout.spec == res.readout.spec
