"""The cutout stage end to end: outputs, manifest, captions, re-runs, bad inputs, determinism."""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_cutout_synth import backdrop, compose, draw_subject

from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.stages.cutout import CutoutConfig, run_cutout


def subject_png(path: Path, size: int = 128, kind: str = "white", variant: int = 0) -> np.ndarray:
    colour, alpha = draw_subject(size, variant)
    img = compose(colour, alpha, backdrop(kind, size))
    Image.fromarray(img).save(path)
    return img


def run(inp: Path, out: Path, **kw) -> dict:
    kw.setdefault("workers", 1)
    return run_cutout(CutoutConfig(input_dir=inp, out_dir=out, **kw), Reporter(quiet=True))


def rows(out: Path) -> dict[str, dict]:
    return {r["source"]: r for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def tree_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def inp(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    subject_png(d / "pose1.png")
    subject_png(d / "pose2.png", kind="grey", variant=1)
    (d / "pose1.txt").write_text("sail kun, 1boy, white background\n", encoding="utf-8")
    return d


def test_outputs_manifest_and_caption(inp: Path, tmp_path: Path):
    out = tmp_path / "out"
    info = run(inp, out)
    assert info.counts.to_json() == {"in": 2, "out": 2, "reused": 0, "processed": 2, "skipped": 0, "failed": 0}
    # The items, the caption, the review sheet (a side file, not an item) and its reduced copies.
    assert sorted(p.name for p in out.iterdir()) == [
        ".review", "datakit.json", "manifest.jsonl", "pose1.png", "pose1.txt", "pose2.png", "review.png"]
    assert sorted(p.name for p in (out / ".review").iterdir()) == ["pose1.npy", "pose2.npy"]
    assert [r["file"] for r in rows(out).values()] == ["pose1.png", "pose2.png"]
    assert info.review == "review.png" and info.holes_file is None
    im = Image.open(out / "pose1.png")
    assert im.mode == "RGBA" and im.size[0] < 128  # trimmed
    # The caption is passed through as a hard link, not re-written.
    assert os.stat(out / "pose1.txt").st_ino == os.stat(inp / "pose1.txt").st_ino
    r = rows(out)["pose1.png"]
    assert r["method"] == "flat" and r["status"] == "ok"
    assert r["outputs"] == ["pose1.png", "pose1.txt"]
    assert len(r["crop_box"]) == 4 and r["background"]["hex"] == "#ffffff"
    assert 0.1 < r["alpha_coverage"] < 0.6 and r["confidence"] == "high"
    assert rows(out)["pose2.png"]["background"]["colour"] == [205, 205, 205]
    assert json.loads((out / "datakit.json").read_text())["stage"] == "cutout"


def test_rerun_does_no_work_and_inputs_are_untouched(inp: Path, tmp_path: Path):
    before = tree_hashes(inp)
    out = tmp_path / "out"
    run(inp, out)
    stamp = (out / "datakit.json").stat().st_mtime_ns
    again = run(inp, out)
    assert again.nothing_to_do and again.counts.processed == 0
    assert (out / "datakit.json").stat().st_mtime_ns == stamp
    assert tree_hashes(inp) == before
    # A changed option redoes the items; --force redoes them too.
    assert run(inp, out, margin=2).counts.processed == 2
    assert run(inp, out, margin=2, force=True).counts.processed == 2
    # A changed input redoes only that item.
    subject_png(inp / "pose2.png", variant=1)
    info = run(inp, out, margin=2)
    assert info.counts.processed == 1 and info.counts.reused == 1


def test_outputs_identical_for_any_worker_count(inp: Path, tmp_path: Path):
    run(inp, tmp_path / "w1", workers=1)
    run(inp, tmp_path / "w2", workers=2)
    a, b = tree_hashes(tmp_path / "w1"), tree_hashes(tmp_path / "w2")
    assert {k: v for k, v in a.items() if k.endswith(".png")} == {k: v for k, v in b.items() if k.endswith(".png")}


def test_bad_inputs_are_skipped_and_named(tmp_path: Path, monkeypatch):
    d = tmp_path / "in"
    d.mkdir()
    img = subject_png(d / "good.png")
    (d / "zero.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "notes.jpg").write_text("not an image at all", encoding="utf-8")
    before = tree_hashes(d)
    out = tmp_path / "out"
    info = run(d, out)
    assert info.counts.out == 1 and info.counts.skipped == 3
    reasons = {s.source: s.reason for s in info.skipped}
    assert "zero-byte" in reasons["zero.png"]
    assert "truncated" in reasons["truncated.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert rows(out)["zero.png"]["status"] == "skipped"
    assert tree_hashes(d) == before
    # A decompression bomb (here: anything over a tiny pixel limit) is skipped with its reason.
    monkeypatch.setenv("DATAKIT_MAX_PIXELS", "1000")
    info = run(d, tmp_path / "out2")
    assert "limit" in {s.source: s.reason for s in info.skipped}["good.png"]


def test_unusual_modes_and_names(tmp_path: Path):
    d = tmp_path / "in"
    d.mkdir()
    img = subject_png(d / "a.png")
    Image.fromarray(img).save(d / "a.jpg", quality=92)  # same stem as a.png: both must survive
    Image.fromarray(img).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    grey16 = (np.asarray(Image.fromarray(img).convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(grey16).save(d / "deep16.png")
    assert Image.open(d / "deep16.png").mode.startswith("I")
    Image.fromarray(img).save(d / "ポーズ①.png")
    # Palette with a transparent index: the backdrop is already transparent, its alpha is kept.
    pal = Image.fromarray(img).convert("RGB").quantize(16)
    idx = np.asarray(pal)
    pal.info["transparency"] = int(idx[0, 0])
    pal.save(d / "palette.png", transparency=int(idx[0, 0]))
    # EXIF orientation 6 (rotate 90 clockwise): the cut-out is upright.
    wide = np.asarray(Image.fromarray(img).resize((160, 96)))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(d / "rotated.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    info = run(d, out)
    assert info.counts.skipped == 0 and info.counts.failed == 0, info
    names = sorted(p.name for p in out.glob("*.png") if p.name != "review.png")
    assert names == sorted(["a_png.png", "a_jpg.png", "cmyk.png", "deep16.png", "ポーズ①.png", "palette.png", "rotated.png"])
    r = rows(out)
    assert r["palette.png"]["method"] == "alpha"
    assert r["rotated.jpg"]["source_size"] == [96, 160]
    assert any("EXIF" in w for w in r["rotated.jpg"]["warnings"])
    assert any("CMYK" in w for w in r["cmyk.jpg"]["warnings"])
    for name in names:
        assert Image.open(out / name).mode == "RGBA"


def test_empty_folder(tmp_path: Path):
    d = tmp_path / "empty"
    d.mkdir()
    info = run(d, tmp_path / "out")
    assert info.counts.in_ == 0 and info.counts.out == 0
    assert (tmp_path / "out" / "datakit.json").is_file()


def test_reads_an_upstream_manifest(inp: Path, tmp_path: Path):
    first = tmp_path / "first"
    run(inp, first)
    (first / "stray.png").write_bytes((first / "pose1.png").read_bytes())  # not in the manifest: ignored
    info = run(first, tmp_path / "second")
    assert info.counts.in_ == 2
    assert rows(tmp_path / "second")["pose1.png"]["method"] == "alpha"


def test_usage_errors(inp: Path, tmp_path: Path, monkeypatch):
    monkeypatch.delenv("DATAKIT_REMBG_MODEL", raising=False)
    with pytest.raises(UsageError, match="needs a model"):
        run(inp, tmp_path / "o", method="rembg")
    with pytest.raises(UsageError, match="--method"):
        run(inp, tmp_path / "o", method="magic")
    with pytest.raises(UsageError, match="must differ"):
        run(inp, inp)
    with pytest.raises(UsageError, match="does not exist"):
        run(tmp_path / "nope", tmp_path / "o")


def test_auto_without_model_names_both_options(tmp_path: Path):
    d = tmp_path / "in"
    d.mkdir()
    subject_png(d / "flat.png")
    photo = np.random.default_rng(3).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(photo).save(d / "photo.png")
    info = run(d, tmp_path / "out", method="auto")
    assert info.counts.out == 1
    reason = {s.source: s.reason for s in info.skipped}["photo.png"]
    assert "--method flat" in reason and "--method rembg" in reason
