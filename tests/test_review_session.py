"""The review session's state: changes from the page (single, bulk, undo), their checks, the draft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datakit.errors import UsageError
from datakit.inputs import discover
from datakit.review.items import collect
from datakit.review.session import DRAFT_FILE, ReviewSession, SessionHooks
from review_support import plain_folder


@pytest.fixture
def session(tmp_path):
    src = plain_folder(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    saved = []
    s = ReviewSession(collect(discover(src)), {}, out, SessionHooks(save=lambda d: saved.append(dict(d)) or {"counts": {}}))
    s.saved = saved
    return s


def state(s) -> dict:
    return {i["key"]: i for i in s.state()["items"]}


def test_decide_undo_and_the_draft(session):
    session.apply([{"key": "item01.jpg", "action": "reject", "note": "  cut   off  "}])
    item = state(session)["item01.jpg"]
    assert item["action"] == "reject" and item["note"] == "cut off"
    draft = json.loads((session.out / DRAFT_FILE).read_text())
    assert draft["items"]["item01.jpg"]["action"] == "reject" and "decided" in draft["items"]["item01.jpg"]
    session.apply([{"key": "item01.jpg", "action": None}])
    assert state(session)["item01.jpg"]["action"] is None
    assert session.changes == 2
    session.save()
    assert session.changes == 0 and not (session.out / DRAFT_FILE).exists() and len(session.saved) == 1


def test_bulk_add_and_remove_on_a_selection(session):
    keys = ["item00.png", "item02.png", "item05.png"]
    session.apply([{"key": k, "add": ["night sky"]} for k in keys])
    items = state(session)
    assert all(items[k]["tags"][-1] == "night sky" and items[k]["edited"] for k in keys)
    assert not items["item01.jpg"]["edited"]
    # removing it again (any spelling) brings the captions back to the upstream ones: no edit left
    session.apply([{"key": k, "remove": ["Night_Sky"]} for k in keys])
    items = state(session)
    assert all(not items[k]["edited"] and items[k]["tags"] == items[k]["upstream_tags"] for k in keys)
    assert session.decisions["item00.png"].tags is None
    # adding a tag an item already has (another spelling) does not repeat it
    session.apply([{"key": "item01.jpg", "add": ["long hair"]}])
    assert state(session)["item01.jpg"]["tags"].count("long_hair") == 1 and not state(session)["item01.jpg"]["edited"]


def test_a_caption_edit_keeps_the_tags_as_written(session):
    session.apply([{"key": "item01.jpg", "tags": ["sail kun", "\\(cosplay\\)", "  beach "]}])
    item = state(session)["item01.jpg"]
    assert item["tags"] == ["sail kun", "\\(cosplay\\)", "beach"] and item["edited"]
    assert session.decisions["item01.jpg"].base_tags == item["upstream_tags"]


@pytest.mark.parametrize("changes, message", [
    ([], "list of 1 to"),
    ("reject", "list of 1 to"),
    ([{"key": "nope.png", "action": "reject"}], "no item"),
    ([{"key": "item00.png"}], "nothing to change"),
    ([{"key": "item00.png", "action": "delete"}], "keep, reject or null"),
    ([{"key": "item00.png", "tags": "a, b"}], "list of strings"),
    ([{"key": "item00.png", "tags": ["a\tb"]}], "control character"),
    ([{"key": "item00.png", "add": ["x" * 201]}], "at most 200"),
    ([{"key": "item00.png", "note": "x" * 600}], "at most 500"),
    ([{"key": "item00.png", "rename": "../x"}], "unknown field rename"),
])
def test_bad_changes_change_nothing(session, changes, message):
    with pytest.raises(UsageError, match=message):
        session.apply(changes)
    assert session.changes == 0 and not (session.out / DRAFT_FILE).exists()


def test_holes_need_a_cutout_with_numbered_regions(session):
    with pytest.raises(UsageError, match="has no enclosed region 1"):
        session.decide_hole("item00.png", 1, "cut")
