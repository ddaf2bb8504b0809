"""Labels files: the class names of weights fine-tuned to classes of one's own."""

from __future__ import annotations

import json

import pytest

from video_iba import UserInputError
from video_iba.io import read_labels


def test_labels_from_text_and_json(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = tmp_path / "classes.txt"
    text.write_text("  riding a bike\nwalking the dog \n\n\n", encoding="utf-8")
    assert read_labels(str(text)) == ["riding a bike", "walking the dog"]
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(["a", "b", "c"]))
    assert read_labels(str(listed)) == ["a", "b", "c"]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"2": "c", "0": "a", "1": "b"}))
    assert read_labels(str(mapping)) == ["a", "b", "c"]
    config = tmp_path / "config.json"  # a Hugging Face configuration
    config.write_text(json.dumps({"model_type": "videomae", "id2label": {"0": "x", "1": "y"}}))
    assert read_labels(str(config)) == ["x", "y"]
    marked = tmp_path / "bom.txt"  # a byte-order mark, as some Windows editors write, and a path object
    marked.write_bytes("\ufeffa\r\nb\r\n".encode("utf-8"))
    assert read_labels(marked) == ["a", "b"]
    marked.with_suffix(".json").write_bytes(("\ufeff" + json.dumps(["a", "b"])).encode("utf-8"))
    assert read_labels(marked.with_suffix(".json")) == ["a", "b"]


@pytest.mark.parametrize("name,content,message", [
    ("gap.txt", "a\n\nb\n", "line 2 of the labels file .* is empty"),
    ("twice.txt", "a\nb\na\n", "names 'a' twice \\(classes 0 and 2\\)"),
    ("none.txt", "\n\n", "names no class"),
    ("keys.json", json.dumps({"0": "a", "2": "b"}), "keys '0', '2' .* must be the class indices 0 .. K-1"),
    ("words.json", json.dumps({"cat": "a"}), "must be the class indices"),
    ("broken.json", "[\"a\",", "is not valid JSON"),
    ("numbers.json", json.dumps([1, 2]), "holds no list of class names"),
])
def test_bad_labels_files_are_refused_in_one_line(tmp_path, name, content, message) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserInputError, match=message) as info:
        read_labels(str(path))
    assert "\n" not in str(info.value)
    with pytest.raises(UserInputError, match="labels file .* does not exist"):
        read_labels(str(tmp_path / "missing.txt"))


def test_numbered_class_index_files_give_their_names(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ucf = tmp_path / "classInd.txt"
    ucf.write_text("1 ApplyEyeMakeup\n2 ApplyLipstick\n3 Archery\n")  # UCF101's form: were names '1 ApplyEyeMakeup'
    assert read_labels(str(ucf)) == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    csv = tmp_path / "classes.csv"
    csv.write_text("0,walk\n1,run fast\n")
    assert read_labels(str(csv)) == ["walk", "run fast"]
    names = tmp_path / "names.txt"
    names.write_text("3 little pigs\n7 dwarfs\n")  # numbers that are not the indices belong to the names
    assert read_labels(str(names)) == ["3 little pigs", "7 dwarfs"]
