"""Which files are inputs: photos and videos by suffix (an animated GIF is a video), in folders and
list files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from PIL import Image

from ..errors import UserInputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm")
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv", ".3gp")


def is_animated_gif(path: str) -> bool:
    """Whether ``path`` is a GIF with more than one frame (an unreadable file is not: it is then
    read as an image, whose reader says what is wrong with it)."""
    if Path(path).suffix.lower() != ".gif":
        return False
    try:
        with Image.open(path) as im:
            return bool(getattr(im, "is_animated", False))
    except (OSError, ValueError):
        return False


def is_video_file(path: str) -> bool:
    """Whether ``path`` is treated as a video: a video suffix, or an animated GIF; other files are
    read as images."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES or is_animated_gif(path)


def is_image_file(path: str) -> bool:
    """Whether ``path`` has an image suffix and is not an animated GIF."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES and not is_animated_gif(path)


def is_batch_input(path: str) -> bool:
    """A folder or a ``.txt`` list of inputs (explained one by one) rather than one input file."""
    return os.path.isdir(path) or path.lower().endswith(".txt")


def _files(folder: str, suffixes: tuple[str, ...]) -> list[str]:
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix.lower() in suffixes and p.is_file())


def _images(folder: str) -> list[str]:
    return [f for f in _files(folder, IMAGE_SUFFIXES) if is_image_file(f)]


def _check_folder(folder: str, what: str) -> None:
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise UserInputError(f"'{folder}' is a file; give a folder of {what}")
        raise UserInputError(f"folder '{folder}' does not exist; check the path")


def find_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursive, sorted); at least one."""
    _check_folder(folder, "images")
    files = _images(folder)
    if not files:
        raise UserInputError(f"no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...) found in '{folder}'; give a folder of "
                             f"images")
    return files


def find_videos(folder: str) -> list[str]:
    """Video files under ``folder`` (recursive, sorted; by suffix, and animated GIFs); possibly none."""
    _check_folder(folder, "videos")
    return [f for f in _files(folder, (*VIDEO_SUFFIXES, ".gif")) if is_video_file(f)]


def has_images(folder: str) -> bool:
    """Whether ``folder`` holds any image file (recursive; animated GIFs are videos)."""
    return bool(_images(folder))


def warn_other_kind(folder: str, video: bool, model: str) -> None:
    """Say, as a warning, how many files of ``folder`` a model reading only videos (``video``) or
    only images leaves unread, if any: they would otherwise be skipped without a word."""
    others = _images(folder) if video else find_videos(folder)
    if others:
        kind = ("image" if video else "video") + ("s" if len(others) > 1 else "")
        log.warning("%d %s in '%s' not read (first: '%s'): %s is %s model", len(others), kind, folder, others[0],
                    model, "a video" if video else "an image")


def batch_inputs(path: str) -> tuple[list[str], str]:
    """The inputs of a folder (every photo and video under it) or of a list file (one path per line,
    relative paths taken from the list file's folder, ``#`` comments and blank lines ignored), and
    the folder their output paths are relative to."""
    if os.path.isdir(path):
        files = _files(path, (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES))
        if not files:
            raise UserInputError(f"no images or videos found in '{path}'; give a folder of inputs or a list file")
        return files, path
    if not os.path.isfile(path):
        raise UserInputError(f"list file '{path}' does not exist; give a folder or a .txt file of paths")
    base = os.path.dirname(os.path.abspath(path))
    files: dict[str, str] = {}  # the file itself (normalised) -> the path as listed, the first time
    twice = []
    with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is not part of the first path
        for line in fh:
            line = line.strip()
            if line and not line.startswith("#"):
                f = line if os.path.isabs(line) else os.path.join(base, line)
                key = os.path.normcase(os.path.realpath(f))
                if key in files:
                    twice.append(line)
                else:
                    files[key] = f
    if not files:
        raise UserInputError(f"list file '{path}' names no inputs; give one path per line")
    if twice:  # explained once: a second time it would be done twice and need a second output name
        log.warning("%d line(s) of '%s' name an input listed before (first: '%s'); each input is explained once",
                    len(twice), path, twice[0])
    return list(files.values()), base
