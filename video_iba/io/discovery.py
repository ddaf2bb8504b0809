"""Which files are inputs: photos and videos by suffix (an animated GIF is a video), in folders and
list files."""

from __future__ import annotations

import filecmp
import logging
import os
from pathlib import Path
from typing import Sequence

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


def shared_files(files: Sequence[str], others: Sequence[str]) -> list[str]:
    """The files of ``files`` that are also in ``others``: the same file (by its real path, so a
    subfolder or a link counts) or a copy of one (the same size and bytes; only files of a size
    some file of ``others`` has are read)."""
    real = {os.path.normcase(os.path.realpath(o)) for o in others}
    by_size: dict[int, list[str]] = {}
    for o in others:
        by_size.setdefault(os.path.getsize(o), []).append(o)
    return [f for f in files if os.path.normcase(os.path.realpath(f)) in real
            or any(filecmp.cmp(f, o, shallow=False) for o in by_size.get(os.path.getsize(f), []))]


def batch_inputs(path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> tuple[list[str], str]:
    """The inputs of a folder (every photo and video under it), of a list file (one path per line,
    relative paths taken from the list file's folder, ``#`` comments and blank lines ignored) or of
    a list of paths, and the folder their output paths are relative to (a list's: the folder
    holding them all). An input named twice is kept once, with a warning."""
    if not isinstance(path, (str, os.PathLike)):
        listed = [os.fspath(p) for p in path]
        if not listed:
            raise UserInputError("the list of inputs is empty; give at least one path")
        files = _unique(listed, listed, "the list of inputs")
        return files, os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    path = os.fspath(path)
    if os.path.isdir(path):
        files = _files(path, (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES))
        if not files:
            raise UserInputError(f"no images or videos found in '{path}'; give a folder of inputs or a list file")
        return files, path
    if not os.path.isfile(path):
        raise UserInputError(f"list file '{path}' does not exist; give a folder or a .txt file of paths")
    if not path.lower().endswith(".txt"):
        raise UserInputError(f"'{path}' is one input, not a folder or a .txt list of inputs; explain one file with "
                             f"explain_file, or give a list of paths")
    base = os.path.dirname(os.path.abspath(path))
    lines = []
    try:
        with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is not part of the first path
            lines = [line.strip() for line in fh]
    except UnicodeDecodeError:
        raise UserInputError(f"list file '{path}' is not UTF-8 text; give one path per line") from None
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise UserInputError(f"list file '{path}' names no inputs; give one path per line")
    return _unique([line if os.path.isabs(line) else os.path.join(base, line) for line in lines], lines,
                   f"'{path}'"), base


def _unique(files: Sequence[str], given: Sequence[str], where: str) -> list[str]:
    """``files`` without the second and later names of one file (``given``: as written, for the
    warning): each input is explained once, under its own name."""
    kept: dict[str, str] = {}
    twice = []
    for f, g in zip(files, given):
        key = os.path.normcase(os.path.realpath(f))
        if key in kept:
            twice.append(g)
        else:
            kept[key] = f
    if twice:
        entries, verb = ("1 entry", "names") if len(twice) == 1 else (f"{len(twice)} entries", "name")
        log.warning("%s of %s %s an input listed before (first: '%s'); each input is explained once", entries, where,
                    verb, twice[0])
    return list(kept.values())
