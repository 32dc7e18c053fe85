"""Concept names become folder names: no traversal, no separators, stable and readable."""

from __future__ import annotations

import pytest

from datakit.emit.names import sanitize_name, split_assignment
from datakit.errors import UsageError


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("sail_kun", "sail_kun"),
        ("sail kun with background", "sail_kun_with_background"),
        ("../../etc/passwd", "etc_passwd"),
        ("a/b\\c", "a_b_c"),
        ("..hidden", "hidden"),
        ("  spaced  ", "spaced"),
        ("ｆｕｌｌｗｉｄｔｈ", "fullwidth"),
        ("ねこ", "ねこ"),
        ("v1.0-final", "v1.0-final"),
        ("a:*?<>|b", "a_b"),
    ],
)
def test_sanitize(raw, expected):
    assert sanitize_name(raw) == expected
    assert sanitize_name(expected) == expected  # stable: sanitising twice changes nothing


@pytest.mark.parametrize("raw", ["", "..", ".", "///", "  ", "_-_"])
def test_nothing_usable_is_an_error(raw):
    with pytest.raises(UsageError):
        sanitize_name(raw)


def test_long_names_are_cut():
    assert len(sanitize_name("x" * 300)) == 64


def test_split_assignment():
    assert split_assignment("a=b=c", "--concept") == ("a", "b=c")
    with pytest.raises(UsageError):
        split_assignment("noequals", "--concept")
    with pytest.raises(UsageError):
        split_assignment("=dir", "--concept")
