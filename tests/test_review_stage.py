"""`datakit review` without a browser (--accept-all, --decisions FILE): the stage contract, decisions
kept across upstream changes, rejected items listed, captions edited, and emit taking the result."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.stage import exit_code_for
from datakit.stages.review import ReviewConfig, run_review
from review_support import chain, manifest_rows, plain_folder, snapshot

QUIET = Reporter(quiet=True)


def blake(path: Path) -> str:
    """The content hash review.json keys decisions by: BLAKE2b-128 of the file's bytes, as in the manifests."""
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def decisions_file(path: Path, entries: dict) -> Path:
    path.write_text(json.dumps({"format": "datakit-review", "version": 1, "items": entries}))
    return path


def review(in_dir: Path, out: Path, **kw) -> dict:
    return run_review(ReviewConfig(input_dir=in_dir, out_dir=out, **kw), QUIET)


def test_accept_all_links_every_item_and_a_rerun_does_no_work(tmp_path):
    src = plain_folder(tmp_path / "in")
    before = snapshot(src)
    out = tmp_path / "out"
    info = review(src, out, accept_all=True)
    assert exit_code_for(info) == 0 and info["counts"]["out"] == 6 and info["review"]["rejected"] == 0
    for name in ("item00.png", "item01.jpg", "item04.jpg", "item00.txt", "item04.caption"):
        assert os.path.samefile(out / name, src / name), name  # hard links, not copies
    assert not (out / "item05.txt").exists()  # it had no caption
    rows = {r["key"]: r for r in manifest_rows(out)}
    assert rows["item05.png"]["warnings"] == ["no caption"]
    assert all(r["status"] == "ok" and r["decision"] == "keep" for r in rows.values())
    decided = json.loads((out / "review.json").read_text())["items"]
    assert decided["item03.png"] == {"hash": blake(src / "item03.png"), "action": "keep"}
    # datakit.json is written last
    assert all((out / "datakit.json").stat().st_mtime_ns >= p.stat().st_mtime_ns for p in out.iterdir())
    stamp = (out / "datakit.json").stat().st_mtime_ns
    again = review(src, out, accept_all=True)
    assert again.get("nothing_to_do") and again["counts"]["processed"] == 0
    assert (out / "datakit.json").stat().st_mtime_ns == stamp
    assert snapshot(src) == before  # IN untouched


def test_decisions_file_rejects_edits_and_emit_takes_the_result(tmp_path):
    from datakit.stages.emit import EmitConfig, run_emit

    src = plain_folder(tmp_path / "in")
    before = snapshot(src)
    dfile = decisions_file(tmp_path / "decisions.json", {
        "item01.jpg": {"hash": blake(src / "item01.jpg"), "action": "reject", "note": "subject cut off"},
        "item03.png": {"hash": blake(src / "item03.png"), "action": "reject"},
        "item00.png": {"hash": blake(src / "item00.png"), "action": "keep",
                       "tags": ["sail kun", "1girl", "beach", "sunset"], "base_tags": ["sail kun", "1girl", "solo", "smile", "outdoors"]},
    })
    out = tmp_path / "out"
    info = review(src, out, decisions=dfile)
    assert exit_code_for(info) == 0  # rejecting is not failing
    assert info["review"] == dict(info["review"], kept=4, rejected=2, edited=1, undecided=3)
    assert not (out / "item01.jpg").exists() and not (out / "item03.png").exists()
    assert (src / "item01.jpg").exists() and (src / "item03.png").exists()  # never deleted from IN
    rows = {r["key"]: r for r in manifest_rows(out)}
    assert rows["item01.jpg"]["status"] == "rejected" and rows["item01.jpg"]["reason"] == "rejected in review"
    assert rows["item01.jpg"]["note"] == "subject cut off" and rows["item01.jpg"]["file"] is None
    assert (out / "item00.txt").read_text() == "sail kun, 1girl, beach, sunset\n"
    assert not os.path.samefile(out / "item00.txt", src / "item00.txt")
    assert rows["item00.png"]["tags_before"] == ["sail kun", "1girl", "solo", "smile", "outdoors"]
    assert snapshot(src) == before
    stamp = (out / "datakit.json").stat().st_mtime_ns
    again = review(src, out, decisions=dfile)  # the same decisions again: no work
    assert again.get("nothing_to_do") and again["counts"]["processed"] == 0
    assert (out / "datakit.json").stat().st_mtime_ns == stamp

    ds = tmp_path / "dataset"
    emitted = run_emit(EmitConfig(out_dir=ds, concepts=[("sail_kun", out)], workers=1), QUIET)
    assert emitted["counts"]["out"] == 4
    folder = next((ds / "img").iterdir())
    assert sorted(p.name for p in folder.glob("*.txt"))[0] == "item00.txt"
    assert (folder / "item00.txt").read_text().startswith("sail kun, 1girl, beach, sunset")
    assert not list(folder.glob("item01.*")) and not list(folder.glob("item03.*"))


def test_a_changed_upstream_keeps_the_decisions_of_unchanged_items(tmp_path):
    src = plain_folder(tmp_path / "in")
    out = tmp_path / "out"
    review(src, out, decisions=decisions_file(tmp_path / "d.json", {
        "item01.jpg": {"hash": blake(src / "item01.jpg"), "action": "reject"},
        "item03.png": {"hash": blake(src / "item03.png"), "action": "reject"},
        "item00.png": {"hash": blake(src / "item00.png"), "tags": ["sail kun", "1girl", "beach"],
                       "base_tags": ["sail kun", "1girl", "solo", "smile", "outdoors"]},
    }))
    saved = tmp_path / "saved.json"
    saved.write_bytes((out / "review.json").read_bytes())
    # upstream changes: item03's image is redrawn, item00's caption gains a tag
    img = Image.open(src / "item03.png").convert("RGB")
    img.putpixel((5, 5), (0, 0, 0))
    img.save(src / "item03.png")
    (src / "item00.txt").write_text("sail kun, 1girl, solo, smile, outdoors, day\n")
    info = review(src, out, decisions=saved)
    rows = {r["key"]: r for r in manifest_rows(out)}
    assert rows["item01.jpg"]["status"] == "rejected"  # unchanged: still rejected
    assert rows["item03.png"]["status"] == "ok"  # changed: the old rejection no longer applies
    assert any("changed upstream" in w for w in rows["item03.png"]["warnings"])
    assert (out / "item00.txt").read_text() == "sail kun, 1girl, day, beach\n"  # the edit, re-applied to the new caption
    assert info["counts"]["reused"] == 4  # only the two changed items were redone


def test_accept_all_will_not_silently_discard_a_review(tmp_path):
    src = plain_folder(tmp_path / "in")
    out = tmp_path / "out"
    review(src, out, decisions=decisions_file(tmp_path / "d.json", {"item02.png": {"hash": blake(src / "item02.png"), "action": "reject"}}))
    with pytest.raises(UsageError, match="would discard"):
        review(src, out, accept_all=True)
    info = review(src, out, accept_all=True, force=True)
    assert info["review"]["rejected"] == 0 and (out / "item02.png").exists()


def test_undecided_and_stale_items_are_named(tmp_path):
    src = plain_folder(tmp_path / "in", n=3)
    out = tmp_path / "out"
    reporter = Reporter(quiet=True)
    dfile = decisions_file(tmp_path / "d.json", {"item00.png": {"hash": "0" * 32, "action": "reject"}})
    run_review(ReviewConfig(input_dir=src, out_dir=out, decisions=dfile), reporter)
    text = "\n".join(reporter.warnings)
    assert "1 item(s) changed upstream" in text and "item00.png" in text
    assert "2 item(s) have no decision" in text and "item01.jpg" in text


def test_an_edit_that_drops_the_trigger_is_flagged(tmp_path):
    src = plain_folder(tmp_path / "in", n=2)
    rows = [{"file": n, "key": n, "status": "ok", "outputs": [n]} for n in ("item00.png", "item01.jpg")]
    (src / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (src / "datakit.json").write_text(json.dumps({"stage": "tags", "stages": ["tags"], "carry": {"trigger": "sail kun", "keep_tokens": 1}}))
    out = tmp_path / "out"
    info = review(src, out, decisions=decisions_file(tmp_path / "d.json", {
        "item00.png": {"hash": blake(src / "item00.png"), "tags": ["1girl", "smile"], "base_tags": ["sail kun", "1girl", "solo", "smile", "outdoors"]},
    }))
    row = {r["key"]: r for r in manifest_rows(out)}["item00.png"]
    assert any("trigger word 'sail kun' is no longer the first tag" in w for w in row["warnings"])
    assert info["carry"] == {"trigger": "sail kun", "keep_tokens": 1}  # passed on downstream


def test_facts_are_read_along_the_lineage(tmp_path):
    paths = chain(tmp_path)
    out = tmp_path / "reviewed"
    from datakit.inputs import discover
    from datakit.review.items import collect

    items = collect(discover(paths["tagged"])).items
    composite = {r["file"]: r for r in manifest_rows(paths["composite"])}
    assert items and all(i.facts.kind == "composite" for i in items)
    for item in items:
        row = composite[item.key]
        assert item.facts.fields["framing"] == row["framing"]
        assert item.facts.fields["subject height"] == round(row["placement"]["height_fraction"], 3)
        assert item.facts.fields["background"] == row["background"]
    info = review(paths["tagged"], out, accept_all=True)
    assert info["stages"] == ["cutout", "composite", "tag", "review"]
    # the next stage still sees composites: review changes captions, never images
    from datakit.tags.rewrite import image_stage

    assert image_stage(info) == "composite"
    # and reviewing the reviewed folder finds the same facts through review's own row
    again = collect(discover(out)).items
    assert [i.facts.fields["framing"] for i in again] == [i.facts.fields["framing"] for i in items]


def test_options_that_exclude_each_other_and_bad_addresses(tmp_path):
    src = plain_folder(tmp_path / "in", n=2)
    with pytest.raises(UsageError, match="exclude each other"):
        review(src, tmp_path / "o", accept_all=True, decisions=tmp_path / "d.json")
    with pytest.raises(UsageError, match="every address"):
        review(src, tmp_path / "o", host="0.0.0.0")
    with pytest.raises(UsageError, match="IP address"):
        review(src, tmp_path / "o", host="example.com")
    with pytest.raises(UsageError, match="OUT must differ from IN"):
        review(src, src, accept_all=True)


def test_an_interrupted_save_leaves_no_finished_looking_out(tmp_path, monkeypatch):
    import datakit.stages.review as stage

    src = plain_folder(tmp_path / "in")
    out = tmp_path / "out"
    review(src, out, accept_all=True)
    real = stage._write_item
    calls = []

    def dies_on_the_third(task, shared=None):
        calls.append(task.key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, shared)

    monkeypatch.setattr(stage, "_write_item", dies_on_the_third)
    dfile = decisions_file(tmp_path / "d.json", {k: {"hash": blake(src / k), "action": "reject"} for k in ("item00.png", "item01.jpg", "item02.png", "item03.png")})
    with pytest.raises(KeyboardInterrupt):
        review(src, out, decisions=dfile)
    assert not (out / "datakit.json").exists()  # downstream stages refuse the folder until a run finishes
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]
    monkeypatch.setattr(stage, "_write_item", real)
    info = review(src, out, decisions=dfile)
    assert info["review"]["rejected"] == 4 and (out / "datakit.json").exists()
