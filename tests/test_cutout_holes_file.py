"""holes.toml: parse, write, round trip, edit one decision; malformed files are one clear usage error."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from datakit.cutout.holes_file import HoleChoice, format_holes, parse_holes, read_holes, with_decision, write_holes
from datakit.errors import UsageError


def test_parse_tables_per_stem():
    text = '[hand_on_hip]\ncut = [1]\n\n["pose 2"]\ncut = [3, 2]\nkeep = [1]\n\n[empty]\n'
    choices = parse_holes(text)
    assert choices["hand_on_hip"] == HoleChoice(cut=(1,), keep=())
    assert choices["pose 2"] == HoleChoice(cut=(2, 3), keep=(1,))
    assert choices["empty"] == HoleChoice()
    assert choices["pose 2"].decision(2) == "cut" and choices["pose 2"].decision(1) == "keep"
    assert choices["pose 2"].decision(9) is None
    assert choices["pose 2"].numbers() == {1, 2, 3}


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[a]\ncuts = [1]\n", "unknown key cuts"),
        ("[a]\ncut = 1\n", "must be a list"),
        ("[a]\ncut = [0]\n", "must be a list"),
        ("[a]\ncut = [true]\n", "must be a list"),
        ('[a]\ncut = ["1"]\n', "must be a list"),
        ("[a]\ncut = [1, 2]\nkeep = [2]\n", "both cut and keep"),
        ("a = 1\n", "must be a table"),
        ("[a\ncut = [1]\n", "not valid TOML"),
    ],
)
def test_malformed_files_say_where(text, needle):
    with pytest.raises(UsageError, match=needle):
        parse_holes(text, "my/holes.toml")
    with pytest.raises(UsageError, match="my/holes.toml"):
        parse_holes(text, "my/holes.toml")


def test_read_missing_or_folder(tmp_path: Path):
    with pytest.raises(UsageError, match="not found"):
        read_holes(tmp_path / "nope.toml")
    with pytest.raises(UsageError, match="folder"):
        read_holes(tmp_path)
    (tmp_path / "bad.toml").write_bytes(b"\xff\xfe[a]")
    with pytest.raises(UsageError, match="UTF-8"):
        read_holes(tmp_path / "bad.toml")


def test_write_then_read_round_trip_with_odd_stems(tmp_path: Path):
    choices = {
        "plain": HoleChoice(cut=(2, 1)),
        "with space": HoleChoice(keep=(4,)),
        'quote"and\\back': HoleChoice(cut=(3,), keep=(1,)),
        "ポーズ①": HoleChoice(cut=(1,)),
        "nothing": HoleChoice(),
    }
    dest = tmp_path / "holes.toml"
    write_holes(dest, choices, header="written by a test\nsecond line")
    text = dest.read_text(encoding="utf-8")
    assert text.startswith("# written by a test\n# second line\n")
    assert "[plain]\ncut = [1, 2]" in text and '["with space"]' in text
    assert "nothing" not in text  # an image with no decisions is left out
    # Any TOML reader reads it the same way (the standard library's, not only ours).
    raw = tomllib.loads(text)
    assert raw['quote"and\\back'] == {"cut": [3], "keep": [1]}
    back = read_holes(dest)
    assert back == {k: HoleChoice(tuple(sorted(v.cut)), tuple(sorted(v.keep))) for k, v in choices.items() if v.numbers()}
    assert [p.name for p in tmp_path.iterdir()] == ["holes.toml"]  # atomic write left no temporary file


def test_with_decision_moves_a_region_between_lists():
    start = {"a": HoleChoice(cut=(1,), keep=(2,))}
    moved = with_decision(start, "a", 2, "cut")
    assert moved["a"] == HoleChoice(cut=(1, 2), keep=())
    assert start["a"] == HoleChoice(cut=(1,), keep=(2,))  # the input is not changed
    assert with_decision(moved, "a", 1, None)["a"] == HoleChoice(cut=(2,), keep=())
    assert with_decision({}, "new", 3, "keep") == {"new": HoleChoice(keep=(3,))}
    with pytest.raises(ValueError):
        with_decision(start, "a", 0, "cut")
    with pytest.raises(ValueError):
        with_decision(start, "a", 1, "remove")
    assert format_holes(with_decision(start, "a", 1, None)) == "[a]\nkeep = [2]\n"
