from datetime import UTC, datetime

import pytest

from memory_engine import _validation as check
from memory_engine.exceptions import (
    InvalidArgumentError,
    InvalidMemoryIdError,
    InvalidModeError,
    InvalidTextError,
    InvalidUserIdError,
)
from memory_engine.models import Kind, Role, SearchMode


@pytest.mark.parametrize("bad", ["", "   ", "\t\n", "x" * 257, None, 42, b"alice"])
def test_user_id_rejects(bad: object) -> None:
    with pytest.raises(InvalidUserIdError):
        check.user_id(bad)


@pytest.mark.parametrize("good", ["a", "x" * 256, "a}|@user_id:{b", "*", "-", "'\"", "üñî😀"])
def test_user_id_accepts_anything_nonblank_up_to_256(good: str) -> None:
    assert check.user_id(good) == good


@pytest.mark.parametrize("bad", ["", "  ", "x" * 101, "nul\x00byte", 3])
def test_text_rejects(bad: object) -> None:
    with pytest.raises(InvalidTextError):
        check.text(bad, max_chars=100)


def test_text_is_never_truncated() -> None:
    assert check.text("y" * 100, max_chars=100) == "y" * 100


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, True, "10"])
def test_k_range(bad: object) -> None:
    with pytest.raises(InvalidArgumentError):
        check.k(bad, max_k=1000)
    assert check.k(1000, max_k=1000) == 1000


def test_modes_kinds_roles() -> None:
    assert check.mode("keyword") is SearchMode.KEYWORD
    with pytest.raises(InvalidModeError, match="unknown search mode"):
        check.mode("semantic")
    with pytest.raises(InvalidModeError):
        check.mode(3)
    assert check.kinds(["fact", Kind.TURN]) == (Kind.FACT, Kind.TURN)
    assert check.kinds("summary") == (Kind.SUMMARY,)
    with pytest.raises(InvalidArgumentError):
        check.kinds([])
    with pytest.raises(InvalidArgumentError):
        check.kind("memo")
    assert check.role(None) is None
    assert check.role("assistant") is Role.ASSISTANT
    with pytest.raises(InvalidArgumentError):
        check.role("bot")


def test_memory_id_shape() -> None:
    assert check.memory_id("0" * 32) == "0" * 32
    for bad in ["0" * 31, "g" * 32, "../../etc", None, "0" * 32 + ":x"]:
        with pytest.raises(InvalidMemoryIdError):
            check.memory_id(bad)


def test_timestamps_and_importance() -> None:
    when = datetime(2026, 1, 2, tzinfo=UTC)
    assert check.timestamp(when, "t") == when.timestamp()
    assert check.timestamp(None, "t") is None
    for bad in [float("nan"), float("inf"), -5, "yesterday", True]:
        with pytest.raises(InvalidArgumentError):
            check.timestamp(bad, "t")
    assert check.importance(1) == 1.0
    for bad in [-0.1, 1.01, "high", None]:
        with pytest.raises(InvalidArgumentError):
            check.importance(bad)


def test_metadata_must_round_trip_json() -> None:
    assert check.metadata({"a": [1, {"b": None}]}) == {"a": [1, {"b": None}]}
    assert check.metadata(None) == {}
    for bad in [{"t": (1, 2)}, {1: "x"}, {"f": float("nan")}, {"o": object()}, ["x"]]:
        with pytest.raises(InvalidArgumentError):
            check.metadata(bad)
