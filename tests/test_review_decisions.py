"""review.json: parsing (strict, with clear errors), writing, and what a decision means for an item now."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datakit.errors import UsageError
from datakit.review.decisions import (
    Decision,
    format_decisions,
    merge_caption,
    parse_decisions,
    read_decisions,
    write_decisions,
)
from datakit.review.facts import Facts
from datakit.review.items import ReviewItem, vocabulary
from datakit.review.resolve import resolve

H1, H2 = "a" * 32, "b" * 32


def _item(tags, digest=H1) -> ReviewItem:
    return ReviewItem(index=0, key="x.png", path=Path("/nowhere/x.png"), stem="x", caption=None, tags=list(tags),
                      hash=digest, facts=Facts())


def test_round_trip_keeps_every_field(tmp_path):
    decisions = {
        "b.png": Decision(hash=H2, action="reject", note="cut off by the frame"),
        "a.png": Decision(hash=H1, action="keep", tags=["sail kun", "beach"], base_tags=["sail kun", "sky"],
                          holes={2: "cut", 1: "keep"}, decided="2025-01-01T00:00:00+00:00"),
        "empty.png": Decision(hash=H1),  # says nothing: left out
    }
    path = tmp_path / "review.json"
    assert write_decisions(path, decisions)
    data = json.loads(path.read_text())
    assert list(data["items"]) == ["a.png", "b.png"]  # sorted, empty entry dropped
    assert data["items"]["a.png"]["holes"] == {"1": "keep", "2": "cut"}
    back = read_decisions(path)
    assert back["a.png"] == decisions["a.png"] and back["b.png"] == decisions["b.png"]
    before = path.stat().st_mtime_ns
    assert not write_decisions(path, back)  # same content: not rewritten
    assert path.stat().st_mtime_ns == before


@pytest.mark.parametrize("text, message", [
    ("{", "not valid JSON"),
    ('{"items": {}}', "not a datakit review decisions file"),
    ('{"format": "datakit-review", "version": 9, "items": {}}', "version 9"),
    ('{"format": "datakit-review", "version": 1, "items": []}', "items must be an object"),
    ('{"format": "datakit-review", "version": 1, "items": {"a": {"hash": "zz"}}}', "hash must be"),
    ('{"format": "datakit-review", "version": 1, "items": {"a": {"hash": "ab", "action": "delete"}}}', "action must be one of"),
    ('{"format": "datakit-review", "version": 1, "items": {"a": {"hash": "ab", "tags": ["a, b"]}}}', "contains a comma"),
    ('{"format": "datakit-review", "version": 1, "items": {"a": {"hash": "ab", "tags": ["a\\nb"]}}}', "newline"),
    ('{"format": "datakit-review", "version": 1, "items": {"a": {"hash": "ab", "holes": {"0": "cut"}}}}', "holes entry"),
    ('{"format": "datakit-review", "version": 1, "items": {"a": {"hash": "ab", "holes": {"1": "erase"}}}}', "holes entry"),
    ('{"format": "datakit-review", "version": 1, "items": {"a": {"hash": "ab", "colour": 1}}}', "unknown field colour"),
])
def test_malformed_files_are_one_clear_usage_error(text, message):
    with pytest.raises(UsageError, match=message):
        parse_decisions(text, "my.json")


def test_missing_or_folder_decisions_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        read_decisions(tmp_path / "none.json")
    with pytest.raises(UsageError, match="is a folder"):
        read_decisions(tmp_path)


def test_three_way_merge_reapplies_an_edit_to_a_changed_caption():
    base = ["sail kun", "1girl", "white background", "sky"]
    edited = ["sail kun", "1girl", "sky", "beach"]  # removed white background, added beach
    # upstream unchanged: the edit itself
    assert merge_caption(base, base, edited) == edited
    # upstream changed (a tag added, one respelt): the edit's removals and additions, on the new caption
    current = ["sail kun", "1girl", "white_background", "sky", "smile"]
    assert merge_caption(current, base, edited) == ["sail kun", "1girl", "sky", "smile", "beach"]
    # upstream already added what the edit added: not twice
    assert merge_caption(["sail kun", "beach", "white background"], base, edited) == ["sail kun", "beach"]


def test_resolve_applies_only_to_the_same_image():
    item = _item(["sail kun", "sky"])
    fresh = resolve(item, Decision(hash=H1, action="reject", note="blurry"))
    assert fresh.action == "reject" and not fresh.kept and fresh.note == "blurry" and not fresh.stale
    changed = resolve(item, Decision(hash=H2, action="reject"))
    assert changed.action is None and changed.kept and changed.stale and "changed upstream" in changed.notes[0]
    assert resolve(item, None).action is None


def test_resolve_edit_and_a_caption_changed_upstream():
    item = _item(["sail kun", "sky", "smile"])
    d = Decision(hash=H1, tags=["sail kun", "beach"], base_tags=["sail kun", "sky"])
    r = resolve(item, d)
    assert r.tags == ["sail kun", "smile", "beach"] and r.edited
    assert any("caption changed upstream" in n for n in r.notes)
    # an "edit" that equals the caption is no edit
    assert not resolve(item, Decision(hash=H1, tags=["sail_kun", "Sky", "smile"], base_tags=item.tags)).edited


def test_vocabulary_counts_items_and_merges_spellings():
    vocab = vocabulary([["long hair", "smile"], ["long_hair", "sky"], ["Long hair", "smile", "smile"]])
    assert vocab[0] == ("long hair", 3) and ("smile", 2) in vocab and ("sky", 1) in vocab


def test_format_is_stable_json():
    text = format_decisions({"a": Decision(hash=H1, action="keep")})
    assert json.loads(text) == {"format": "datakit-review", "version": 1, "items": {"a": {"hash": H1, "action": "keep"}}}
