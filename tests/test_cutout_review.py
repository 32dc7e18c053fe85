"""review.png: every cut-out on a checkerboard and a dark colour, enclosed regions outlined in their decision's colour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from drawings import labelled, numbers_of, scene
from PIL import Image

from datakit.console import Reporter
from datakit.cutout import review as R
from datakit.cutout.holes_file import HoleChoice, write_holes
from datakit.stages.cutout import CutoutConfig, run_cutout


def _count(img: np.ndarray, colour) -> int:
    return int((np.abs(img.astype(int) - np.array(colour)).max(axis=2) <= 2).sum())


def test_render_review_draws_panels_outlines_and_numbers(tmp_path: Path):
    rgba = np.zeros((100, 80, 4), np.uint8)
    rgba[10:90, 10:70] = (250, 250, 250, 255)  # a white subject: invisible on white, plain on dark
    rgba[40:60, 30:50, 3] = 0  # a cut hole
    marks = [
        R.HoleMark(1, "cut", False, [(30, 40), (50, 40), (50, 60), (30, 60)]),
        R.HoleMark(2, "kept", True, [(15, 15), (25, 15), (25, 25), (15, 25)]),
        R.HoleMark(3, "kept", False, [(55, 70), (65, 70), (65, 80), (55, 80)]),
    ]
    entries = [R.ReviewEntry("a.png", rgba, marks), R.ReviewEntry("b.png", rgba[:, :, :].copy(), [], note="low confidence")]
    dest = tmp_path / "review.png"
    assert R.render_review(entries, dest, cell=120) == 2
    sheet = np.asarray(Image.open(dest).convert("RGB"))
    # Two tiles side by side, each two panels of 120 px.
    assert sheet.shape[1] >= 2 * (2 * 120 + R.PAD)
    tile = sheet[R.PAD : R.PAD + 120, R.PAD : R.PAD + 2 * 120 + R.PAD]
    for colour in (R.CUT, R.FLAGGED, R.KEPT):
        assert _count(tile[:, :120], colour) > 20 and _count(tile[:, 120 + R.PAD :], colour) > 20
    # The checkerboard shows through the cut hole on the left panel, the dark colour on the right.
    left, right = tile[:, :120], tile[:, 120 + R.PAD :]
    oy, ox = (120 - 100) // 2, (120 - 80) // 2
    hole_l = left[oy + 45 : oy + 55, ox + 35 : ox + 45].reshape(-1, 3)
    assert {tuple(c) for c in hole_l} <= {R.CHECKER[0], R.CHECKER[1]}
    assert (right[oy + 50, ox + 40] == R.DARK).all()
    assert (right[oy + 20, ox + 60] == (250, 250, 250)).all()  # the subject on the dark panel


def test_names_with_control_characters_are_written_on_one_line_as_escapes(tmp_path: Path):
    """A file may be named with a newline or a tab: the sheet shows it escaped (Pillow cannot measure
    multi-line text, and a second line would fake a label), exactly as a name spelled with escapes."""
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[5:35, 5:25] = (200, 40, 40, 255)
    odd, spelled = tmp_path / "odd.png", tmp_path / "spelled.png"
    R.render_review([R.ReviewEntry("new\nline\ttab.png", rgba, [], note="a\nb")], odd, cell=120)
    R.render_review([R.ReviewEntry("new\\nline\\ttab.png", rgba, [], note="a\\nb")], spelled, cell=120)
    assert (np.asarray(Image.open(odd)) == np.asarray(Image.open(spelled))).all()


def test_reduce_averages_areas_and_keeps_small_images():
    rgba = np.zeros((400, 200, 4), np.uint8)
    rgba[:, :100] = (255, 0, 0, 255)
    rgba[:, 100:] = (255, 0, 0, 0)  # hidden RGB bled from the edge, as the cut-out has it
    small, scale = R.reduce(rgba, 100)
    assert small.shape == (100, 50, 4) and scale == 0.25
    assert (small[:, :25, 0] == 255).all() and (small[:, 25:, 3] == 0).all() and (small[:, :25, 3] == 255).all()
    same, one = R.reduce(rgba[:50, :60], 100)
    assert one == 1.0 and same.shape == (50, 60, 4)
    odd, third = R.reduce(rgba[:301, :150], 100)  # whole 4x4 blocks: 75 x 37
    assert odd.shape == (75, 37, 4) and third == 0.25


def test_entry_from_row_moves_outlines_into_the_cut_out():
    row = {"file": "x.png", "crop_box": [100, 50, 300, 250], "confidence": "low",
           "holes": [{"number": 4, "action": "kept", "flagged": True, "contour": [[110, 60], [120, 60], [120, 70]]}]}
    entry = R.entry_from_row(row, np.zeros((100, 100, 4), np.uint8), scale=0.5)
    assert entry.name == "x.png" and entry.note == "low confidence"
    assert entry.holes[0].number == 4 and entry.holes[0].contour == [(5.0, 5.0), (10.0, 5.0), (10.0, 10.0)]
    assert entry.holes[0].colour == R.FLAGGED


def test_stage_writes_review_as_a_side_file(tmp_path: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    s = scene("wave", "white", "png", 160)
    Image.fromarray(s.image).save(inp / "wave.png")
    Image.fromarray(scene("bust", "grey", "jpeg85", 160).image).save(inp / "bust.jpg")
    out = tmp_path / "out"
    reporter = Reporter(quiet=True)
    info = run_cutout(CutoutConfig(inp, out, workers=1), reporter)
    assert info.review == "review.png" and (out / "review.png").is_file()
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all("review.png" not in r["outputs"] for r in rows)  # not an item, not an item's side file
    assert any("review.png" in w and "holes-file" in w for w in reporter.warnings)  # the flagged regions are named
    sheet = np.asarray(Image.open(out / "review.png").convert("RGB"))[:-20]  # the tiles, without the legend
    assert _count(sheet, R.FLAGGED) > 50 and _count(sheet, R.CUT) == 0
    # Cut the gaps through a holes file: the sheet now shows them in the cut colour.
    gaps = numbers_of(next(r for r in rows if r["source"] == "wave.png")["holes"], labelled(s, "gap"))
    write_holes(tmp_path / "holes.toml", {"wave": HoleChoice(cut=tuple(gaps))})
    run_cutout(CutoutConfig(inp, out, workers=1, holes_file=tmp_path / "holes.toml"), Reporter(quiet=True))
    assert _count(np.asarray(Image.open(out / "review.png").convert("RGB"))[:-20], R.CUT) > 50
    # Nothing to do and the sheet deleted: it comes back. --no-review writes none and changes no item.
    (out / "review.png").unlink()
    again = run_cutout(CutoutConfig(inp, out, workers=1, holes_file=tmp_path / "holes.toml"), Reporter(quiet=True))
    assert again.nothing_to_do and (out / "review.png").is_file()
    out2 = tmp_path / "out2"
    info2 = run_cutout(CutoutConfig(inp, out2, workers=1, review=False), Reporter(quiet=True))
    assert not (out2 / "review.png").exists() and not (out2 / ".review").exists()
    # The review is not part of the config that decides whether items are redone.
    assert {k: v for k, v in info2.config.items() if k != "out_dir"} == {k: v for k, v in info.config.items() if k != "out_dir"}
    assert "review" not in info2.config and "holes_file" not in info2.config
