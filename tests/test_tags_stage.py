"""The `tags rewrite` stage: outputs, hard links, manifest, carry, reuse, dry run, inputs untouched."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.manifest import read_manifest, read_stage_info
from datakit.stage import exit_code_for
from datakit.tags.rewrite import RewriteConfig, run_tags_rewrite
from datakit.tags.rules import load_rules, rules_from_dict

CAPTIONS = {
    "a": "1girl, solo, long_hair, very long hair, white_background, simple background, (smile:1.2), blue eyes",
    "b": "\ufeff1girl, short hair, Blue_Eyes, outdoors, tree\r\n",
    "c": None,  # an image without caption
}


def make_folder(folder: Path, captions: dict = CAPTIONS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (stem, text) in enumerate(captions.items()):
        Image.new("RGB", (32 + i, 32), (200, 10 * i, 30)).save(folder / f"{stem}.png")
        if text is not None:
            (folder / f"{stem}.txt").write_bytes(text.encode("utf-8"))
    return folder


def snapshot(folder: Path) -> dict:
    """Every file's bytes and mtime: proves a folder was not touched."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def run(in_dir, out_dir, doc=None, **kw):
    rules = rules_from_dict(doc or {})
    reporter = Reporter(quiet=True)
    info = run_tags_rewrite(RewriteConfig(input_dir=in_dir, out_dir=out_dir, rules=rules, **kw), reporter)
    return info, reporter


RULES = {"trigger": "sail_kun", "remove": ["*_background", "misspelt tagg"], "drop_implied": True}


def test_rewrite_outputs_links_manifest_and_carry(tmp_path):
    src = make_folder(tmp_path / "in")
    before = snapshot(src)
    out = tmp_path / "out"
    info, reporter = run(src, out, RULES)
    assert snapshot(src) == before  # inputs untouched
    assert info.counts.out == 3 and exit_code_for(info) == 0
    assert (out / "a.txt").read_text() == "sail_kun, 1girl, solo, very long hair, smile, blue eyes"
    assert (out / "b.txt").read_text() == "sail_kun, 1girl, short hair, Blue Eyes, outdoors, tree"
    assert (out / "c.txt").read_text() == "sail_kun"  # no caption: the trigger only (with a warning)
    for stem in "abc":  # images hard-linked, never re-encoded
        assert os.path.samefile(src / f"{stem}.png", out / f"{stem}.png")
    rows = {r["key"]: r for r in read_manifest(out)}
    a = rows["a.png"]
    assert a["file"] == "a.png" and a["outputs"] == ["a.png", "a.txt"]
    assert a["tags_before"][2] == "long_hair" and a["tags"][0] == "sail_kun"
    assert set(a["removed"]) == {"long_hair", "white_background", "simple background"}
    assert a["added"] == ["sail_kun"]
    assert a["hits"]["remove '*_background'"] == 2 and a["hits"]["drop_implied"] == 1
    assert rows["c.png"]["warnings"] and rows["c.png"]["caption_source"] is None
    stage = read_stage_info(out)
    assert stage["carry"] == {"trigger": "sail_kun", "keep_tokens": 1}
    assert stage["rule_hits"]["remove '*_background'"] == 2
    assert stage["rule_hits"]["remove 'misspelt tagg'"] == 0
    assert any("misspelt tagg" in w and "matched nothing" in w for w in stage["warnings"])
    assert any("had no caption" in w for w in reporter.warnings)


def test_rerun_reuses_and_changes_redo_only_what_they_affect(tmp_path):
    src = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    run(src, out, RULES)
    stamp = (out / "datakit.json").stat().st_mtime_ns
    info, _ = run(src, out, RULES)
    assert info.nothing_to_do and (out / "datakit.json").stat().st_mtime_ns == stamp
    (src / "b.txt").write_text("1girl, indoors")
    info, _ = run(src, out, RULES)
    assert info.counts.processed == 1 and info.counts.reused == 2
    assert (out / "b.txt").read_text() == "sail_kun, 1girl, indoors"
    info, _ = run(src, out, dict(RULES, trigger="other"))  # a rules change redoes every item
    assert info.counts.processed == 3
    assert (out / "a.txt").read_text().startswith("other, ")
    info, _ = run(src, out, dict(RULES, trigger="other"), force=True)
    assert info.counts.processed == 3


def test_idempotent_stage_output(tmp_path):
    src = make_folder(tmp_path / "in")
    doc = dict(RULES, order="alphabetical", drop_character_traits=True)
    run(src, tmp_path / "once", doc)
    run(tmp_path / "once", tmp_path / "twice", doc)  # reads the first run's manifest
    for stem in "abc":
        assert (tmp_path / "twice" / f"{stem}.txt").read_text() == (tmp_path / "once" / f"{stem}.txt").read_text()


def test_dry_run_writes_nothing_and_prints_diffs(tmp_path, capsys):
    src = make_folder(tmp_path / "in")
    before = snapshot(src)
    out = tmp_path / "out"
    info, reporter = run(src, out, RULES, dry_run=True)
    assert info is None and not out.exists() and snapshot(src) == before
    printed = capsys.readouterr().out
    assert "a.txt" in printed and "- white_background" in printed and "+ sail_kun" in printed
    assert "2  remove '*_background'" in printed
    assert "nothing was written" in printed
    assert any("misspelt tagg" in w for w in reporter.warnings)


def test_dry_run_json(tmp_path, capsys):
    src = make_folder(tmp_path / "in")
    rules = rules_from_dict(RULES)
    run_tags_rewrite(RewriteConfig(input_dir=src, out_dir=tmp_path / "o", rules=rules, dry_run=True),
                     Reporter(json_mode=True))
    doc = json.loads(capsys.readouterr().out)
    assert doc["dry_run"] and doc["counts"]["changed"] == 3
    assert {f["file"] for f in doc["files"]} == {"a.txt", "b.txt", "c.txt"}


def test_bad_image_in_user_folder_is_skipped_and_named(tmp_path):
    src = make_folder(tmp_path / "in")
    (src / "broken.png").write_bytes(b"not a png at all")
    (src / "broken.txt").write_text("1girl")
    (src / "empty.png").write_bytes(b"")
    info, _ = run(src, tmp_path / "out", RULES)
    assert info.counts.out == 3 and info.counts.skipped == 2
    assert {s.source for s in info.skipped} == {"broken.png", "empty.png"}
    assert exit_code_for(info) == 3
    assert not (tmp_path / "out" / "broken.txt").exists()


def test_upstream_manifest_stage_condition_and_side_files(tmp_path):
    src = make_folder(tmp_path / "composites", {"p1__bg000": "1boy, white background, outdoors", "p1__bg001": "1boy, sky"})
    Image.new("RGB", (8, 8)).save(src / "contact_sheet.png")  # not in the manifest: never an item
    rows = [{"file": f"{s}.png", "key": f"{s}.png", "status": "ok", "outputs": [f"{s}.png", f"{s}.txt"],
             "scene": "meadow"} for s in ("p1__bg000", "p1__bg001")]
    (src / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (src / "datakit.json").write_text(json.dumps({"stage": "composite", "carry": {"keep_tokens": 3}}))
    out = tmp_path / "out"
    info, _ = run(src, out, {"trigger": "sail_kun", "rule": [{"when_stage": "composite", "remove": "white background"}]})
    assert info.counts.out == 2 and not (out / "contact_sheet.png").exists()
    assert (out / "p1__bg000.txt").read_text() == "sail_kun, 1boy, outdoors"
    assert read_manifest(out)[0]["upstream"] == {"scene": "meadow"}
    assert read_stage_info(out)["carry"] == {"trigger": "sail_kun", "keep_tokens": 1}  # ours wins


def test_sample_rules_on_sample_subjects(tmp_path):
    root = Path(__file__).resolve().parent.parent / "samples"
    if not (root / "subjects").is_dir():
        pytest.skip("samples/subjects not present")
    rules = load_rules(root / "rules.toml")
    info = run_tags_rewrite(RewriteConfig(input_dir=root / "subjects", out_dir=tmp_path / "o", rules=rules),
                            Reporter(quiet=True))
    assert info.counts.skipped == 0 and info.counts.out >= 1
    for txt in (tmp_path / "o").glob("*.txt"):
        tags = txt.read_text().split(", ")
        assert tags[0] == "sail_kun" and "white background" in tags and "simple background" in tags


def test_usage_errors(tmp_path):
    src = make_folder(tmp_path / "in")
    with pytest.raises(UsageError, match="OUT must differ from IN"):
        run(src, src, RULES)
    with pytest.raises(UsageError, match="OUT must differ from IN"):
        run(src, src, RULES, dry_run=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images"):
        run(tmp_path / "empty", tmp_path / "o", RULES)
    with pytest.raises(UsageError, match="does not exist"):
        run(tmp_path / "missing", tmp_path / "o", RULES)


def test_two_workers_same_output(tmp_path):
    src = make_folder(tmp_path / "in")
    run(src, tmp_path / "w1", RULES, workers=1)
    run(src, tmp_path / "w2", RULES, workers=2)
    for stem in "abc":
        assert (tmp_path / "w1" / f"{stem}.txt").read_bytes() == (tmp_path / "w2" / f"{stem}.txt").read_bytes()


def test_a_rule_entry_absent_beside_a_matching_one_is_not_called_misspelt(tmp_path):
    src = make_folder(tmp_path / "in", {"a": "1girl, white background", "b": "1girl, white background, outdoors"})
    doc = {"rule": [{"name": "scene", "if_tag": "white background", "remove": ["white background", "simple background"]}]}
    info, reporter = run(src, tmp_path / "out", doc)
    assert info.rule_hits["rule 'scene': remove 'white background'"] == 2
    assert not any("simple background" in w for w in reporter.warnings)


def test_a_fired_rule_whose_entries_all_matched_nothing_is_still_a_warning(tmp_path):
    src = make_folder(tmp_path / "in", {"a": "1girl, white background"})
    doc = {"rule": [{"name": "scene", "if_tag": "white background", "remove": ["whit background", "simpel background"]}]}
    _, reporter = run(src, tmp_path / "out", doc)
    assert any("whit background" in w and "matched nothing" in w for w in reporter.warnings)
