"""Reading images of every kind; atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from video_iba import UserInputError
from video_iba.files import atomic_writes
from video_iba.io import read_image


def _gradient(h: int = 64, w: int = 80) -> np.ndarray:
    return (np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))).astype(np.uint8)


def test_rgb_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    Image.fromarray(_gradient()).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png")
    assert img.shape == (64, 80, 3) and img.dtype == np.uint8 and np.array_equal(img, _gradient())


def test_grayscale_rgba_palette_and_16_bit_are_converted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    g = _gradient()[..., 0]
    Image.fromarray(g, "L").save(tmp_path / "gray.png")
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (64, 80, 3) and np.array_equal(out[..., 1], g)

    rgba = np.zeros((64, 80, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, :40, 3] = 255  # left opaque red, right fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[0, 79]) == (255, 255, 255)

    Image.fromarray(_gradient()).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (64, 80, 3)

    g16 = (np.linspace(0, 65535, 80)[None, :] * np.ones((64, 1))).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out[0, 0, 0] == 0 and out[0, -1, 0] == 255


def test_16_bit_colour_png(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    rgb16 = (_gradient().astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "c16.png"), rgb16[..., ::-1])
    out = read_image(tmp_path / "c16.png")
    assert out.shape == (64, 80, 3) and out.dtype == np.uint8
    assert abs(int(out[0, -1, 0]) - 255) <= 1 and out[0, 0, 0] <= 1


@pytest.mark.parametrize("content, match", [
    (None, "does not exist"),
    (b"", r"'.*x.jpg' is empty \(0 bytes\); give an image file"),  # an interrupted copy or download
    (b"hello, this is text", "not an image"),
])
def test_bad_files(tmp_path, content: bytes | None, match: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match=match):
        read_image(path)


def test_truncated_jpeg(tmp_path) -> None:  # type: ignore[no-untyped-def]
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "f.jpg")
    data = (tmp_path / "f.jpg").read_bytes()
    (tmp_path / "t.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserInputError, match="truncated or corrupt"):
        read_image(tmp_path / "t.jpg")


def test_folder_is_not_an_image(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UserInputError, match="is a folder"):
        read_image(tmp_path)


def test_atomic_writes_all_or_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    with pytest.raises(RuntimeError):
        with atomic_writes([a, b]) as (ta, tb):
            open(ta, "w").write("A")
            raise RuntimeError("failed half-way")
    assert os.listdir(tmp_path) == []
    with atomic_writes([a, b]) as (ta, tb):
        open(ta, "w").write("A")
        open(tb, "w").write("B")
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"] and a.read_text() == "A"


def test_unwritable_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserInputError, match="cannot write"):
        with atomic_writes([blocker / "out.png"]):
            pass


def test_atomic_outputs_get_the_usual_permissions(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import stat

    from video_iba.files import atomic_write

    old = os.umask(0o022)
    try:
        with atomic_write(str(tmp_path / "a.txt")) as tmp, open(tmp, "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644


def test_a_url_or_an_unexpanded_home_is_named_as_such() -> None:
    with pytest.raises(UserInputError, match="'https://example.com/cat.jpg' is a URL; files are read from disk: "
                                             "download it first"):
        read_image("https://example.com/cat.jpg")
    with pytest.raises(UserInputError, match=r"'~' is expanded by a shell, not in Python: give "
                                             r"os.path.expanduser\('~/no-such-photo.jpg'\)"):
        read_image("~/no-such-photo.jpg")
