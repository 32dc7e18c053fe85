"""Red team (issue 16): every name that becomes a path, and every trigger word, is checked where it
enters: manifest `file` entries, OUT's own manifest, triggers from rules files, `--trigger` and an
upstream datakit.json, the caption separator, concept names. Real `datakit` processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from robust_util import datakit


def _captioned(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (80, 80), (40 * i, 120, 200)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text("1girl, solo, white_background", encoding="utf-8")
    return folder


def _finished_stage(folder: Path, rows: list[dict], carry: dict | None = None) -> Path:
    """A folder that reads as a finished upstream stage (manifest.jsonl + datakit.json)."""
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    info = {"stage": "tag", "stages": ["tag"], "counts": {}, "carry": carry or {}}
    (folder / "datakit.json").write_text(json.dumps(info), encoding="utf-8")
    return folder


def test_crafted_manifest_rows_outside_in_are_skipped_named_and_never_linked(tmp_path):
    src = _captioned(tmp_path / "in")
    secret = tmp_path / "secret.png"
    Image.new("RGB", (80, 80), "red").save(secret)
    os.symlink(secret, src / "sneaky.png")  # inside IN by name, outside by target
    rows = [{"file": "img0.png", "status": "ok"}, {"file": "/etc/hostname", "status": "ok"},
            {"file": "../secret.png", "status": "ok"}, {"file": "sneaky.png", "status": "ok"},
            {"file": "img1.png", "status": "ok"}]
    _finished_stage(src, rows)
    out = tmp_path / "out"
    done = datakit("tags", "rewrite", src, out, "--trigger", "sail_kun")
    assert done.returncode == 3, done.stderr  # finished, some inputs skipped
    for name in ("/etc/hostname", "../secret.png", "sneaky.png"):
        assert f"skipped {name}" in done.stderr and "points outside" in done.stderr
    made = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert made == ["datakit.json", "img0.png", "img0.txt", "img1.png", "img1.txt", "manifest.jsonl"]
    secret_inode = secret.stat().st_ino
    assert all(p.stat().st_ino != secret_inode for p in out.iterdir())
    hostname = Path("/etc/hostname")
    if hostname.exists():
        assert all(p.stat().st_ino != hostname.stat().st_ino for p in out.iterdir())


def test_a_crafted_out_manifest_never_deletes_or_moves_files_outside_out(tmp_path):
    src = _captioned(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    # A leftover manifest (no datakit.json: an interrupted run) whose row owns a file outside OUT:
    # finishing the run deletes the outputs of rows that no longer exist.
    row = {"key": "gone.png", "file": "../victim.txt", "outputs": ["../victim.txt"], "status": "ok"}
    (out / "manifest.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    done = datakit("tags", "rewrite", src, out)
    assert done.returncode == 0, done.stderr
    assert victim.read_text(encoding="utf-8") == "precious"
    assert "'../victim.txt' is not inside OUT" in done.stderr


@pytest.mark.parametrize("trigger, why", [("sail\nkun", "newline"), ("sail,kun", "comma"), ("sail\x00kun", "control")])
def test_trigger_in_a_rules_file_is_checked_naming_file_and_key(tmp_path, trigger, why):
    src = _captioned(tmp_path / "in")
    rules = tmp_path / "rules.toml"
    rules.write_text('# my rules\nremove = ["solo"]\ntrigger = ' + json.dumps(trigger) + "\n", encoding="utf-8")
    done = datakit("tags", "rewrite", src, tmp_path / "out", "--rules", rules)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"{rules}: line 3, `trigger`" in line and why in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("trigger", ["sail\nkun", "sail\tkun", "a, b"])
def test_trigger_option_is_checked(tmp_path, trigger):
    done = datakit("tags", "rewrite", _captioned(tmp_path / "in"), tmp_path / "out", "--trigger", trigger)
    assert done.returncode == 2 and "error: trigger word" in done.stderr and "(from --trigger)" in done.stderr


def test_a_carried_trigger_is_checked_where_it_enters(tmp_path):
    """A trigger carried in an upstream datakit.json (tags rewrite -> emit -> train) is a file's word."""
    src = _captioned(tmp_path / "in")
    _finished_stage(src, [{"file": "img0.png", "status": "ok"}], carry={"trigger": "/tmp/x\nsecond line", "keep_tokens": 1})
    done = datakit("emit", tmp_path / "ds", "--concept", f"mychar={src}")
    assert done.returncode == 2, done.stderr
    assert "newline" in done.stderr and str(src / "datakit.json") in done.stderr
    assert not (tmp_path / "ds" / "dataset.toml").exists()


@pytest.mark.parametrize("separator", [" ", ";", ", \n", "|", ""])
def test_a_separator_that_would_merge_tags_is_refused(tmp_path, separator):
    rules = tmp_path / "rules.toml"
    rules.write_text("[output]\nseparator = " + json.dumps(separator) + "\n", encoding="utf-8")
    done = datakit("tags", "rewrite", _captioned(tmp_path / "in"), tmp_path / "out", "--rules", rules)
    assert done.returncode == 2, done.stderr
    assert f"{rules}: line 2, `output.separator`" in done.stderr and "comma" in done.stderr


@pytest.mark.parametrize("separator", [",", ", ", " , "])
def test_comma_separators_still_work(tmp_path, separator):
    rules = tmp_path / "rules.toml"
    rules.write_text("[output]\nseparator = " + json.dumps(separator) + "\n", encoding="utf-8")
    done = datakit("tags", "rewrite", _captioned(tmp_path / "in", 1), tmp_path / "out", "--rules", rules, "-q")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "img0.txt").read_text(encoding="utf-8") == separator.join(
        ["1girl", "solo", "white background"])


def test_concept_names_never_leave_out(tmp_path):
    src = _captioned(tmp_path / "in")
    out = tmp_path / "deep" / "ds"
    done = datakit("emit", out, "--concept", f"../../../escape/x={src}", "--concept", f"/etc/y={src}", "-q")
    assert done.returncode == 0, done.stderr
    folders = sorted(p.name for p in (out / "img").iterdir())
    assert len(folders) == 2 and all("/" not in f and ".." not in f for f in folders)
    assert not (tmp_path / "escape").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["deep", "in"]


def test_a_crafted_thumbnail_path_never_pulls_a_file_into_the_report(tmp_path):
    src = _captioned(tmp_path / "in", 2)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"TOP-SECRET-BYTES")
    ds = tmp_path / "ds"
    assert datakit("emit", ds, "--concept", f"mychar={src}", "-q").returncode == 0
    rows = [json.loads(line) for line in (ds / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    rows[0]["thumb"] = "../secret.txt"  # the row is reused as it is: its image did not change
    (ds / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    Image.new("RGB", (80, 80), "blue").save(src / "img9.png")  # something new, so the report is rewritten
    done = datakit("emit", ds, "--concept", f"mychar={src}", "-q")
    assert done.returncode == 0, done.stderr
    import base64

    page = (ds / "report.html").read_text(encoding="utf-8")
    assert base64.b64encode(b"TOP-SECRET-BYTES").decode() not in page
