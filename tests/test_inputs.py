"""discover(IN): the user's folder or an upstream stage's manifest; unique stems; captions."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from datakit.errors import UsageError
from datakit.inputs import discover, find_caption, read_caption_file, unique_stems
from datakit.manifest import write_manifest, write_stage_info


def _img(path: Path) -> Path:
    Image.new("RGB", (8, 8), (1, 2, 3)).save(path)
    return path


def test_plain_folder_lists_files_not_sidecars(tmp_path):
    _img(tmp_path / "b.png")
    _img(tmp_path / "a.jpg")
    (tmp_path / "a.txt").write_text("1girl")
    (tmp_path / "notes.md").write_text("x")
    (tmp_path / "meta.json").write_text("{}")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    _img(tmp_path / "sub" / "deep.png")  # not directly in IN: ignored
    (tmp_path / "readme.pdf").write_bytes(b"%PDF")  # not an image, but not a sidecar: an item to be skipped
    found = discover(tmp_path)
    assert found.upstream is None and found.skipped == []
    assert [i.key for i in found.items] == ["a.jpg", "b.png", "readme.pdf"]
    a = found.items[0]
    assert a.stem == "a" and a.caption == tmp_path / "a.txt" and a.caption_text() == "1girl"
    assert found.items[1].caption is None and found.items[1].caption_text() is None


def test_empty_folder_has_no_items(tmp_path):
    found = discover(tmp_path)
    assert found.items == [] and found.skipped == []


def test_missing_or_file_input_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        discover(tmp_path / "nope")
    f = _img(tmp_path / "x.png")
    with pytest.raises(UsageError, match="not a folder"):
        discover(f)


def test_same_stem_different_extension_both_survive(tmp_path):
    _img(tmp_path / "a.png")
    _img(tmp_path / "a.jpg")
    _img(tmp_path / "b.png")
    stems = {i.key: i.stem for i in discover(tmp_path).items}
    assert stems == {"a.jpg": "a_jpg", "a.png": "a_png", "b.png": "b"}


def test_unique_stems_never_collide():
    paths = [Path(p) for p in ["a.png", "a.jpg", "a_png.png", "A.PNG", "b.png", "noext", "noext.png"]]
    stems = unique_stems(paths)
    assert len(set(s.casefold() for s in stems.values())) == len(paths)
    assert stems[Path("b.png")] == "b"
    # Stems that clash (case-insensitively: a.png, a.jpg and A.PNG) all carry their extension.
    for p in ("a.png", "a.jpg", "A.PNG"):
        assert stems[Path(p)] != Path(p).stem


def test_unique_stems_is_order_independent():
    paths = [Path(p) for p in ["x.png", "x.jpg", "y.webp", "x.webp"]]
    assert unique_stems(paths) == unique_stems(list(reversed(paths)))


def test_unicode_names(tmp_path):
    _img(tmp_path / "pösé 猫.png")
    (tmp_path / "pösé 猫.txt").write_text("solo", encoding="utf-8")
    item = discover(tmp_path).items[0]
    assert item.key == "pösé 猫.png" and item.stem == "pösé 猫" and item.caption_text() == "solo"


def test_caption_lookup_prefers_txt(tmp_path):
    img = _img(tmp_path / "a.png")
    (tmp_path / "a.caption").write_text("from caption")
    assert find_caption(img) == tmp_path / "a.caption"
    (tmp_path / "a.txt").write_text("from txt")
    assert find_caption(img) == tmp_path / "a.txt"


@pytest.mark.parametrize(
    "data,expected",
    [
        ("\ufeff1girl, solo\r\n".encode("utf-8"), "1girl, solo"),
        (b"a,\rb\r\n", "a,\nb"),
        ("café, naïve".encode("latin-1"), "café, naïve"),
        (b"  spaced  \n\n", "spaced"),
    ],
)
def test_read_caption_file_tolerates_encodings(tmp_path, data, expected):
    p = tmp_path / "c.txt"
    p.write_bytes(data)
    assert read_caption_file(p) == expected


def _finished_stage(folder: Path, rows: list[dict], carry: dict | None = None) -> None:
    write_manifest(folder, rows)
    write_stage_info(folder, {"stage": "upstream", "counts": {}, "carry": carry or {}})


def test_upstream_manifest_lists_the_items(tmp_path):
    up = tmp_path / "up"
    up.mkdir()
    for name in ("p1.png", "p2.png", "contact_sheet.png", "bad.png"):
        _img(up / name)
    (up / "p1.txt").write_text("solo")
    _finished_stage(
        up,
        [
            {"file": "p1.png", "key": "p1.jpg", "status": "ok"},
            {"file": "p2.png", "key": "p2.jpg", "status": "ok"},
            {"file": None, "key": "bad.jpg", "status": "skipped", "reason": "truncated"},
            {"file": "gone.png", "key": "gone.jpg", "status": "ok"},
        ],
        carry={"trigger": "sail_kun"},
    )
    found = discover(up)
    # Side files (the contact sheet) are not items; keys are the upstream files' names.
    assert [i.key for i in found.items] == ["p1.png", "p2.png"]
    assert found.items[0].caption == up / "p1.txt" and found.items[0].row["key"] == "p1.jpg"
    assert found.skipped == [{"source": "gone.png", "reason": "listed in the upstream manifest but missing"}]
    assert found.upstream["carry"] == {"trigger": "sail_kun"}


def test_manifest_without_datakit_json_is_an_unfinished_stage(tmp_path):
    _img(tmp_path / "a.png")
    write_manifest(tmp_path, [{"file": "a.png", "key": "a.png", "status": "ok"}])
    with pytest.raises(UsageError, match="did not finish"):
        discover(tmp_path)


def test_corrupt_manifest_is_a_usage_error(tmp_path):
    (tmp_path / "manifest.jsonl").write_text('{"file": "a.png"}\n{not json\n')
    write_stage_info(tmp_path, {"stage": "x"})
    with pytest.raises(UsageError, match="line 2"):
        discover(tmp_path)


def test_corrupt_datakit_json_is_a_usage_error(tmp_path):
    write_manifest(tmp_path, [])
    (tmp_path / "datakit.json").write_text("{half")
    with pytest.raises(UsageError, match="corrupt"):
        discover(tmp_path)


def test_discover_never_changes_the_folder(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("x")
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    discover(tmp_path)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir()}
    assert before == after


@pytest.mark.skipif(os.name == "nt" or os.geteuid() == 0, reason="root reads everything")
def test_unreadable_file_is_still_listed(tmp_path):
    p = _img(tmp_path / "locked.png")
    p.chmod(0)
    try:
        assert [i.key for i in discover(tmp_path).items] == ["locked.png"]  # the stage skips it when opening
    finally:
        p.chmod(0o644)


def test_manifest_rows_roundtrip_unicode(tmp_path):
    rows = [{"file": "猫.png", "key": "猫.jpg", "status": "ok", "tags": ["white background"]}]
    write_manifest(tmp_path, rows)
    text = (tmp_path / "manifest.jsonl").read_text(encoding="utf-8")
    assert "猫" in text and json.loads(text.splitlines()[0]) == rows[0]
