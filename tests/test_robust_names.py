"""Red team (issue 16): file names. Temporary names are short and fixed-length; inputs named with
241-255 bytes pass every stage (output names cut with a short hash, the full name kept in the
manifest); a composite joining two long stems is cut the same way; names with newlines, tabs or rich
markup crash nothing (the contact sheet did); symlink loops in IN are named as skipped."""

from __future__ import annotations

import json
import os
from pathlib import Path

from datakit.imageio import TMP_MARK, atomic_path, write_text_atomic
from datakit.manifest import read_manifest
from robust_util import datakit, make_backgrounds, make_cutouts, make_drawings

LIMIT = 255  # bytes per file name on ext4, APFS, NTFS, ...


def _longest(folder: Path) -> int:
    return max(len(p.name.encode()) for p in folder.rglob("*"))


def test_temporary_names_are_short_and_fixed_length(tmp_path):
    dest = tmp_path / ("x" * 251 + ".png")  # 255 bytes: the longest name a file can have
    seen = []
    with atomic_path(dest) as tmp:
        seen.append(tmp.name)
        tmp.write_bytes(b"data")
    write_text_atomic(tmp_path / "short.txt", "y")
    assert dest.read_bytes() == b"data"
    assert len(seen[0].encode()) <= 32 and seen[0].startswith(TMP_MARK)
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_inputs_named_with_241_to_255_bytes_pass_every_stage(tmp_path):
    names = ["a" * 237, "é" * 125 + "x", "b" * 251, "c" * 246]  # 241, 255, 255, 250 bytes with `.png`
    assert [len((n + ".png").encode()) for n in names] == [241, 255, 255, 250]
    src = make_drawings(tmp_path / "in", 4, names=names)
    bg = make_backgrounds(tmp_path / "bg", 2, names=["d" * 251, "e" * 200])
    steps = [
        ("cutout", src, tmp_path / "cut"),
        ("composite", tmp_path / "cut", tmp_path / "comp", "--backgrounds", bg, "--size", "96", "--bg-count", "2",
         "--per-background", "2"),
        ("tag", tmp_path / "comp", tmp_path / "tagged", "--model", "none"),
        ("tags", "rewrite", tmp_path / "tagged", tmp_path / "caps", "--trigger", "sail_kun"),
    ]
    for args in steps:
        done = datakit(*args, "-q", *(["-j", "1"] if args[0] in ("cutout", "composite") else []))
        assert done.returncode == 0, (args[0], done.stderr)
    done = datakit("emit", tmp_path / "ds", "--concept", f"orig={tmp_path / 'cut'}", "--concept", f"comp={tmp_path / 'caps'}", "-q")
    assert done.returncode == 0, done.stderr
    for folder in ("cut", "comp", "tagged", "caps", "ds"):
        assert _longest(tmp_path / folder) <= LIMIT
    # The full names stay on record: each cut-out's row keeps its source's full name.
    assert sorted(r["source"] for r in read_manifest(tmp_path / "cut")) == sorted(n + ".png" for n in names)
    assert len(list((tmp_path / "ds" / "img").rglob("*.png"))) == 8


def test_a_composite_of_two_long_stems_is_cut_with_a_hash_and_recorded(tmp_path):
    cut = make_cutouts(tmp_path / "cut", 2, names=["s" * 200, "t" * 200])
    bg = make_backgrounds(tmp_path / "bg", 2, names=["u" * 200, "v" * 200])
    out = tmp_path / "comp"
    done = datakit("composite", cut, out, "--backgrounds", bg, "--size", "96", "-j", "1", "--per-background", "2",
                   "--reuse-backgrounds", "--bg-count", "3", "-q")
    assert done.returncode == 0, done.stderr
    rows = read_manifest(out)
    assert len(rows) == 6 and len({r["file"] for r in rows}) == 6
    for r in rows:
        full = r["params"]["full_name"]
        assert full.startswith(("s" * 200 + "__", "t" * 200 + "__")) and len(full.encode()) > LIMIT
        assert len(r["file"].encode()) <= LIMIT and (out / r["file"]).is_file()
    # Re-running finds the same names: nothing to do.
    again = datakit("composite", cut, out, "--backgrounds", bg, "--size", "96", "-j", "1", "--per-background", "2",
                    "--reuse-backgrounds", "--bg-count", "3")
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_symlink_loops_in_in_are_named_as_skipped(tmp_path):
    src = make_drawings(tmp_path / "in", 2)
    os.symlink("loop.png", src / "loop.png")
    os.symlink("ping.png", src / "pong.png")
    os.symlink("pong.png", src / "ping.png")
    os.symlink(tmp_path / "nowhere.png", src / "dangling.png")
    os.mkfifo(src / "pipe.png")  # reading it would wait forever
    done = datakit("tag", src, tmp_path / "out", "--model", "none")
    assert done.returncode == 3, done.stderr  # done, some inputs skipped
    for name in ("loop.png", "ping.png", "pong.png"):
        assert f"skipped {name}: symbolic link loop" in done.stderr
    assert "skipped dangling.png: broken symbolic link" in done.stderr
    assert "skipped pipe.png: not a regular file" in done.stderr
    skipped = {r["source"] for r in read_manifest(tmp_path / "out") if r["status"] == "skipped"}
    assert skipped == {"loop.png", "ping.png", "pong.png", "dangling.png", "pipe.png"}


ODD = ["new\nline", "tab\there", "[bold red]markup[red]x", "[link=file:x]y", "z" * 246, "emoji 🙂 name"]


def test_odd_file_names_crash_nothing_across_stages(tmp_path):
    cut = make_cutouts(tmp_path / "cut", len(ODD), names=ODD)
    bg = make_backgrounds(tmp_path / "bg", 3, names=["plain", "bg\nnewline", "[i]bg"])
    comp = tmp_path / "comp"
    done = datakit("composite", cut, comp, "--backgrounds", bg, "--size", "96", "-j", "2", "--per-background", "2")
    assert done.returncode == 0, done.stderr
    assert (comp / "contact_sheet.png").is_file()
    again = datakit("composite", cut, comp, "--backgrounds", bg, "--size", "96", "-j", "2", "--per-background", "2")
    assert again.returncode == 0, again.stderr  # the contact sheet crashed on every re-run
    assert datakit("tag", comp, tmp_path / "tagged", "--model", "none", "-q").returncode == 0
    assert datakit("tags", "rewrite", tmp_path / "tagged", tmp_path / "caps", "--trigger", "sail_kun", "-q").returncode == 0
    assert datakit("tags", "stats", tmp_path / "caps", "--tokenizer", "none", "--json").returncode == 0
    em = datakit("emit", tmp_path / "ds", "--concept", f"comp={tmp_path / 'caps'}", "--json")
    assert em.returncode == 0, em.stderr
    assert json.loads(em.stdout)["counts"]["out"] == 6
    # Bad files with odd names are named on one line each, markup shown as written.
    (cut / "bad\nname [red]x.png").write_bytes(b"not an image")
    bad = datakit("cutout", cut, tmp_path / "cut2", "-j", "1", "-q")
    assert bad.returncode == 3 and "skipped bad\\nname [red]x.png: " in bad.stderr, bad.stderr
