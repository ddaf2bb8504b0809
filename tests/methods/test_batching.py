"""Grouping inputs into fits: sizes, running out of memory, one input's failure."""

from __future__ import annotations

import logging
from typing import Sequence

import pytest

from video_iba import UserInputError
from video_iba.errors import OutOfMemory
from video_iba.methods.batching import AUTO_CUDA, FitBatches, check_batch_size


def test_sizes_given_or_chosen_from_the_device() -> None:
    assert FitBatches(None, "cpu").size == 1 and FitBatches(None, "cpu").automatic
    assert FitBatches(None, "cuda").size == AUTO_CUDA
    assert FitBatches(5, "cpu").size == 5 and not FitBatches(5, "cpu").automatic
    assert check_batch_size("auto") is None and check_batch_size(" 7 ") == 7
    for bad in ("0", "-2", "2.5", "x", 2.0, True, 5000):
        with pytest.raises(UserInputError, match="batch_size"):
            check_batch_size(bad)  # type: ignore[arg-type]


def test_groups_keep_the_order_and_pull_inputs_lazily() -> None:
    pulled: list[int] = []

    def items():  # type: ignore[no-untyped-def]
        for i in range(7):
            pulled.append(i)
            yield i

    groups: list[list[int]] = []

    def fit(g: Sequence[int]) -> list[int]:
        groups.append(list(g))
        assert len(pulled) <= g[-1] + 1  # never more inputs read than the fit needs
        return [10 * i for i in g]

    out = list(FitBatches(3).map(items(), fit))
    assert [(i, r) for i, r, _ in out] == [(i, 10 * i) for i in range(7)] and groups == [[0, 1, 2], [3, 4, 5], [6]]
    assert all(s >= 0 for *_, s in out) and out[0][2] == out[1][2] == out[2][2]  # a fit's seconds, shared


def test_running_out_of_memory_halves_the_size_once_logged(caplog: pytest.LogCaptureFixture) -> None:
    sizes: list[int] = []

    def fit(g: Sequence[int]) -> list[int]:
        sizes.append(len(g))
        if len(g) > 2:
            raise OutOfMemory("out of memory with 80 noisy replicas per network pass")
        return list(g)

    batches = FitBatches(8)
    with caplog.at_level(logging.INFO, logger="video_iba.methods.batching"):
        out = list(batches.map(range(9), fit))
    assert [i for i, *_ in out] == list(range(9)) and all(i == r for i, r, _ in out)
    assert sizes[:3] == [8, 4, 2] and set(sizes[3:]) <= {1, 2} and batches.size == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "continuing with 4" in warnings[0].getMessage()


def test_one_input_out_of_memory_alone_is_its_failure() -> None:
    def fit(g: Sequence[int]) -> list[int]:
        if 3 in g:
            raise OutOfMemory("out of memory")
        return list(g)

    out = {i: r for i, r, _ in FitBatches(4).map(range(6), fit)}
    assert isinstance(out[3], OutOfMemory) and [out[i] for i in (0, 1, 2, 4, 5)] == [0, 1, 2, 4, 5]


def test_a_failing_input_fails_alone_and_the_others_are_fitted() -> None:
    calls: list[list[int]] = []

    def fit(g: Sequence[int]) -> list[int]:
        calls.append(list(g))
        if 2 in g:
            raise ZeroDivisionError("a bug in input 2")
        return [-i for i in g]

    out = list(FitBatches(3).map(range(5), fit))
    assert [i for i, *_ in out] == [0, 1, 2, 3, 4]
    res = {i: r for i, r, _ in out}
    assert isinstance(res[2], ZeroDivisionError) and [res[i] for i in (0, 1, 3, 4)] == [0, -1, -3, -4]
    assert calls == [[0, 1, 2], [0], [1], [2], [3, 4]]
