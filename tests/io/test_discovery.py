"""Which inputs two folders share: the same file by any path, or a copy."""

from __future__ import annotations

import os

from video_iba.io import shared_files


def test_shared_files_are_the_same_file_by_any_path_or_a_copy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    train = tmp_path / "train"
    (train / "held").mkdir(parents=True)
    (train / "a.png").write_bytes(b"a" * 100)
    (train / "held" / "b.png").write_bytes(b"b" * 100)
    (train / "c.png").write_bytes(b"c" * 50)
    val = tmp_path / "val"
    val.mkdir()
    (val / "copy.png").write_bytes(b"c" * 50)  # the bytes of c.png
    (val / "same_size.png").write_bytes(b"x" * 100)  # the size of a.png, other bytes
    os.symlink(train / "a.png", val / "link.png")
    trained = sorted(str(p) for p in train.rglob("*.png"))
    held = str(train / "held" / "b.png")
    val_files = [str(val / n) for n in ("copy.png", "same_size.png", "link.png")]
    assert shared_files([held, *val_files], trained) == [held, str(val / "copy.png"), str(val / "link.png")]
    assert shared_files([str(val / "same_size.png")], trained) == []
    assert shared_files(trained, []) == []
