"""Red team (issue 16): no stage writes into its own IN or into a folder that is another input of the
run (emit's concept folders, composite's --backgrounds). Real `datakit` processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from robust_util import datakit, make_backgrounds, make_cutouts


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _captioned(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (96, 96), (50 * i, 100, 150)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text("mychar, 1girl", encoding="utf-8")
    return folder


def test_emit_refuses_a_concept_folder_inside_out_and_leaves_it_alone(tmp_path):
    ds = tmp_path / "ds"
    done = datakit("emit", ds, "--concept", f"mychar={_captioned(tmp_path / 'in', 3)}", "-q")
    assert done.returncode == 0, done.stderr
    (concept_dir,) = (ds / "img").iterdir()  # e.g. ds/img/34_mychar
    before = _tree(ds)
    # The red team's case: the emitted folder given back as a concept of the same OUT, with --copy.
    again = datakit("emit", ds, "--concept", f"mychar={concept_dir}", "--copy")
    assert again.returncode == 2, again.stderr
    assert "inside OUT" in again.stderr and "concept 'mychar'" in again.stderr
    assert concept_dir.is_dir() and _tree(ds) == before


def test_emit_refuses_out_that_is_a_concept_folder_or_the_reg_folder(tmp_path):
    src = _captioned(tmp_path / "in", 2)
    reg = _captioned(tmp_path / "reg", 2)
    before = _tree(tmp_path)
    assert datakit("emit", reg / "ds", "--concept", f"a={src}", "--reg", reg, "--reg-class", "girl").returncode == 2
    assert datakit("emit", src, "--concept", f"a={src}").returncode == 2
    assert _tree(tmp_path) == before


def test_composite_keeps_out_apart_from_its_backgrounds_folder(tmp_path):
    cut = make_cutouts(tmp_path / "cut", 2)
    bg = make_backgrounds(tmp_path / "bg", 3)
    out = tmp_path / "comp"
    assert datakit("composite", cut, out, "--backgrounds", bg, "--size", "96", "-j", "1", "-q").returncode == 0
    before = _tree(tmp_path)
    # The composites folder given as its own backgrounds: composites pasted onto composites, in place.
    same = datakit("composite", cut, out, "--backgrounds", out, "--size", "96", "-j", "1", "--force")
    assert same.returncode == 2 and "--backgrounds" in same.stderr, same.stderr
    # OUT inside the backgrounds folder: the run writes into a folder it reads.
    inside = datakit("composite", cut, bg / "comp", "--backgrounds", bg, "--size", "96", "-j", "1")
    assert inside.returncode == 2 and "is inside --backgrounds" in inside.stderr, inside.stderr
    # The backgrounds folder inside OUT (a user's folder kept in the output tree).
    user_bg = make_backgrounds(tmp_path / "out2" / "mine", 2)
    within = datakit("composite", cut, tmp_path / "out2", "--backgrounds", user_bg, "--size", "96", "-j", "1")
    assert within.returncode == 2 and "is inside OUT" in within.stderr, within.stderr
    assert {k: v for k, v in _tree(tmp_path).items() if not k.startswith("out2")} == before
