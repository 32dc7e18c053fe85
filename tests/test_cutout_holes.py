"""Enclosed regions of backdrop colour: numbering, who decides, and the holes file through the stage and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from drawings import labelled, numbers_of, scene
from PIL import Image

from datakit.cli.main import main
from datakit.console import Reporter
from datakit.cutout.cut import CutOptions, cut_flat
from datakit.cutout.holes import HoleEvidence, decide_holes, enclosed_components
from datakit.cutout.holes_file import HoleChoice, write_holes
from datakit.errors import UsageError
from datakit.stages.cutout import CutoutConfig, run_cutout


def _blobs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three enclosed regions placed so that raster order differs from size order."""
    mask = np.zeros((60, 80), bool)
    mask[30:50, 5:20] = True  # second from the top, biggest
    mask[5:12, 50:70] = True  # first from the top
    mask[40:45, 60:66] = True  # third
    return mask, np.zeros((60, 80, 3), np.uint8) + 255, np.full((60, 80, 3), 255.0, np.float32)


def test_regions_are_numbered_in_raster_order_of_their_first_pixel():
    mask, rgb, bg = _blobs()
    labels, big, stats = enclosed_components(mask, min_area=10)
    _, rows = decide_holes(labels, stats, big, rgb, bg, policy="auto")
    assert [r["number"] for r in rows] == [1, 2, 3]
    assert [r["bbox"] for r in rows] == [[50, 5, 70, 12], [5, 30, 20, 50], [60, 40, 66, 45]]
    assert [r["area"] for r in rows] == [140, 300, 30]
    # Each outline encloses its region (corner points of the pixels it covers).
    c = np.array(rows[1]["contour"])
    assert c[:, 0].min() == 5 and c[:, 0].max() == 19 and c[:, 1].min() == 30 and c[:, 1].max() == 49


def test_who_decides_holes_file_then_flag_then_segmenter_then_default():
    mask, rgb, bg = _blobs()
    labels, big, stats = enclosed_components(mask, min_area=10)
    seg = np.ones(mask.shape, np.float32)
    seg[30:50, 5:20] = 0.05  # the segmenter sees backdrop in region 2
    seg[40:45, 60:66] = 0.5  # and cannot tell in region 3
    ev = HoleEvidence(choice=HoleChoice(cut=(1,)), mask=seg, model="tiny")
    cut, rows = decide_holes(labels, stats, big, rgb, bg, policy="auto", evidence=ev)
    assert [(r["action"], r["by"], r["flagged"]) for r in rows] == [
        ("cut", "holes file", False), ("cut", "segmenter", False), ("kept", "default", True)]
    assert "tiny" in rows[1]["why"] and "unsure" in rows[2]["why"]
    assert sorted(cut) == sorted(int(labels[r["bbox"][1], r["bbox"][0]]) for r in rows[:2])
    # --holes keep / cut decide what the file does not list; the file still wins.
    ev = HoleEvidence(choice=HoleChoice(keep=(2,)), mask=seg)
    _, rows = decide_holes(labels, stats, big, rgb, bg, policy="cut", evidence=ev)
    assert [(r["action"], r["by"]) for r in rows] == [("cut", "--holes cut"), ("kept", "holes file"), ("cut", "--holes cut")]
    _, rows = decide_holes(labels, stats, big, rgb, bg, policy="keep")
    assert {(r["action"], r["by"], r["flagged"]) for r in rows} == {("kept", "--holes keep", False)}
    with pytest.raises(ValueError):
        decide_holes(labels, stats, big, rgb, bg, policy="sometimes")


def test_without_evidence_nothing_is_cut_on_any_backdrop():
    for kind in ("white", "grey", "paper", "vignette"):
        s = scene("wave", kind, "png", 160)
        cut = cut_flat(s.image, CutOptions())
        assert cut.info["holes"] and all(r["action"] == "kept" for r in cut.info["holes"]), kind
        assert numbers_of(cut.info["holes"], labelled(s, "gap")), kind


def _folder(tmp_path: Path) -> tuple[Path, dict]:
    inp = tmp_path / "in"
    inp.mkdir()
    scenes = {}
    for name, kind in (("pose a", "white"), ("b", "grey")):
        s = scene("wave", kind, "png", 160)
        Image.fromarray(s.image).save(inp / f"{name}.png")
        scenes[name] = s
    return inp, scenes


def _rows(out: Path) -> dict:
    return {r["source"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def test_stage_holes_file_cuts_listed_regions_and_reruns_only_what_changed(tmp_path: Path):
    inp, scenes = _folder(tmp_path)
    out = tmp_path / "out"
    run_cutout(CutoutConfig(inp, out, workers=1), Reporter(quiet=True))
    first = _rows(out)
    gaps = {name: numbers_of(first[f"{name}.png"]["holes"], labelled(scenes[name], "gap")) for name in scenes}
    assert all(gaps.values())
    holes = tmp_path / "holes.toml"
    write_holes(holes, {"pose a": HoleChoice(cut=tuple(gaps["pose a"]))})
    info = run_cutout(CutoutConfig(inp, out, workers=1, holes_file=holes), Reporter(quiet=True))
    # Only the image whose entry appeared is redone; the other is reused.
    assert info.counts.processed == 1 and info.counts.reused == 1
    assert info.holes_file == str(holes)
    row = _rows(out)["pose a.png"]
    assert row["params"]["holes"] == {"cut": gaps["pose a"], "keep": []}
    assert {r["number"] for r in row["holes"] if r["action"] == "cut"} == set(gaps["pose a"])
    # The same file again: nothing to do. A changed entry: that image again.
    assert run_cutout(CutoutConfig(inp, out, workers=1, holes_file=holes), Reporter(quiet=True)).nothing_to_do
    write_holes(holes, {"pose a": HoleChoice(cut=tuple(gaps["pose a"][:1]))})
    assert run_cutout(CutoutConfig(inp, out, workers=1, holes_file=holes), Reporter(quiet=True)).counts.processed == 1


def test_stage_names_strangers_and_missing_numbers(tmp_path: Path):
    inp, _ = _folder(tmp_path)
    holes = tmp_path / "holes.toml"
    holes.write_text('[b]\ncut = [9]\n\n[nobody]\ncut = [1]\n', encoding="utf-8")
    reporter = Reporter(quiet=True)
    run_cutout(CutoutConfig(inp, tmp_path / "out", workers=1, holes_file=holes), reporter)
    assert any("nobody" in w and "not in" in w for w in reporter.warnings)
    row = _rows(tmp_path / "out")["b.png"]
    assert any("region 9" in w for w in row["warnings"])
    with pytest.raises(UsageError, match="not found"):
        run_cutout(CutoutConfig(inp, tmp_path / "o2", holes_file=tmp_path / "none.toml"), Reporter(quiet=True))


def test_cli_holes_file_option_and_a_bad_file_exits_2(tmp_path: Path, capsys):
    inp, _ = _folder(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text("[b]\ncuts = [1]\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["cutout", str(inp), str(tmp_path / "out"), "--holes-file", str(bad), "-j", "1", "-q"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "cuts" in err and "Traceback" not in err
    good = tmp_path / "holes.toml"
    good.write_text("[b]\nkeep = [1]\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exc:
        main(["cutout", str(inp), str(tmp_path / "out"), "--holes-file", str(good), "-j", "1", "--json"])
    assert exc.value.code == 0
    row = _rows(tmp_path / "out")["b.png"]
    assert [r["by"] for r in row["holes"] if r["number"] == 1] == ["holes file"]


def test_the_samples_holes_file_cuts_the_arm_gap_and_names_only_real_regions():
    """samples/holes.toml (the demo's) still fits the samples: every number it lists exists, and its
    cut is the one region that is backdrop seen between the bent arm and the body."""
    from datakit.cutout.holes_file import read_holes

    root = Path(__file__).resolve().parents[1] / "samples"
    choices = read_holes(root / "holes.toml")
    assert sorted(choices) == ["hand_on_hip", "jumping", "standing", "waving"]
    img = np.asarray(Image.open(root / "subjects" / "hand_on_hip.png").convert("RGB"))
    cut = cut_flat(img, CutOptions(), HoleEvidence(choice=choices["hand_on_hip"]))
    rows = {r["number"]: r for r in cut.info["holes"]}
    assert choices["hand_on_hip"].numbers() == set(rows)
    (gap,) = [r for r in rows.values() if r["action"] == "cut"]
    # The gap lies right of the shirt (region 3), and its middle is transparent now.
    assert gap["bbox"][0] > rows[3]["bbox"][0] and gap["by"] == "holes file"
    x0, y0, x1, y1 = gap["bbox"]
    alpha = cut.rgba[:, :, 3]
    bx, by = cut.info["crop_box"][:2]
    assert (alpha[(y0 + y1) // 2 - by, (x0 + x1) // 2 - bx]) == 0
    assert all(r["action"] == "kept" and not r["flagged"] for r in rows.values() if r is not gap)
