"""The composite stage end to end on small synthetic cut-outs and backgrounds."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datakit.compositing.placement import CROP_FILL
from datakit.errors import UsageError
from datakit.manifest import read_manifest
from datakit.stages.composite import CompositeConfig, run_composite

RED = (230, 20, 20)


def _figure(h: int = 240, w: int = 110, colour=RED, transparent_rgb=255) -> np.ndarray:
    """A head-and-body figure, hard alpha; transparent pixels keep a (white) colour like real cut-outs."""
    a = np.zeros((h, w), np.uint8)
    cv2.circle(a, (w // 2, h // 6), h // 7, 255, -1)
    cv2.rectangle(a, (w // 5, h // 4), (4 * w // 5, h - 1), 255, -1)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., :3] = transparent_rgb
    rgba[a > 0, :3] = colour
    rgba[..., 3] = a
    return rgba


def _write_cutouts(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(_figure(240 - 20 * i, 110 + 10 * i)).save(folder / f"pose{i}.png")
        (folder / f"pose{i}.txt").write_text("sail kun, 1girl, solo, white_background, simple background, full body, shoes, smile\n")
    return folder


def _write_backgrounds(folder: Path, n: int = 4, size=(256, 192), ground_y=0.6, colour=None, manifest=True) -> Path:
    """Backgrounds with a sky above the ground line and grass below, plus a backgrounds-style manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    rows = []
    w, h = size
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        if colour is not None:
            img[:] = colour
        else:
            gy = int(h * (ground_y or 0.6))
            img[:gy] = (40, 110 + 10 * i, 200)
            img[gy:] = (50, 140, 40 + 10 * i)
            img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        name = f"bg{i:03d}.png"
        Image.fromarray(img).save(folder / name)
        (folder / f"bg{i:03d}.txt").write_text("outdoors, grass, blue sky\n")
        rows.append({"file": name, "key": name, "status": "ok", "outputs": [name, f"bg{i:03d}.txt"],
                     "tags": ["outdoors", "grass", "blue sky"], "scene": "meadow", "ground_y": ground_y})
    if manifest:
        (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "datakit.json").write_text(json.dumps({"stage": "backgrounds", "carry": {}}))
    return folder


@pytest.fixture
def data(tmp_path):
    return _write_cutouts(tmp_path / "cut"), _write_backgrounds(tmp_path / "bgs")


def _run(cut, bgs, out, **kw) -> dict:
    kw.setdefault("workers", 1)
    return run_composite(CompositeConfig(input_dir=cut, out_dir=out, backgrounds=bgs, **kw))


def _red_mask(img: np.ndarray) -> np.ndarray:
    img = img.astype(int)
    return (img[..., 0] - np.maximum(img[..., 1], img[..., 2])) > 100


def _rows(out: Path) -> list[dict]:
    return [r for r in read_manifest(out) if r["status"] == "ok"]


def test_subject_in_frame_and_height_in_range_per_framing(tmp_path, data):
    cut, bgs = data
    out = tmp_path / "out"
    _run(cut, bgs, out, per_background=6, framing="full=1,upper=1,close=1", height_range="0.4-0.8")
    rows = _rows(out)
    assert {r["framing"] for r in rows} == {"full", "upper", "close"}
    for row in rows:
        img = np.asarray(Image.open(out / row["file"]).convert("RGB"))
        h, w = img.shape[:2]
        ys, xs = np.nonzero(_red_mask(img))
        assert ys.size > 0, row["file"]
        top, bottom = ys.min(), ys.max()
        if row["framing"] == "full":
            assert top > 0 and bottom < h - 1 and xs.min() > 0 and xs.max() < w - 1, row["file"]  # all of it inside
            assert 0.4 * h - 3 <= bottom - top + 1 <= 0.8 * h + 3, row["file"]
        else:
            lo, hi = CROP_FILL[row["framing"]]
            assert bottom == h - 1, row["file"]  # cut by the bottom edge
            # ...and cut clean: no feathered fade where the frame cuts the subject.
            centre = int(np.median(np.nonzero(_red_mask(img)[h - 1])[0]))
            edge_px, inside_px = img[h - 1, centre].astype(int), img[h - 12, centre].astype(int)
            assert np.abs(edge_px - inside_px).max() <= 30, (row["file"], edge_px, inside_px)
            assert lo * h - 3 <= h - top <= hi * h + 3, row["file"]
            # Never most of the subject cut away at the sides.
            assert xs.max() - xs.min() > 0.2 * w


def test_full_body_stands_on_the_ground_line(tmp_path, data):
    cut, bgs = data
    out = tmp_path / "out"
    _run(cut, bgs, out, per_background=4, framing="full=1", disable=["shadow"])
    for row in _rows(out):
        img = np.asarray(Image.open(out / row["file"]).convert("RGB"))
        feet = np.nonzero(_red_mask(img))[0].max()
        assert feet >= 0.6 * img.shape[0] - 4, row["file"]


def test_ground_option_for_plain_folders(tmp_path):
    cut = _write_cutouts(tmp_path / "cut", n=1)
    bgs = _write_backgrounds(tmp_path / "bgs", n=3, ground_y=0.5, manifest=False)
    out = tmp_path / "out"
    _run(cut, bgs, out, per_background=3, framing="full=1", ground_y="0.5", height_range="0.3-0.45")
    for row in _rows(out):
        assert row["placement"]["on_ground"] and row["placement"]["feet_y"] >= 0.5 * 192 - 1e-6
    _run(cut, bgs, out, per_background=3, framing="full=1", ground_y="none")
    assert not any(r["placement"]["on_ground"] or r["effects"]["contact_shadow"]["on"] for r in _rows(out))
    with pytest.raises(UsageError, match="--ground-y"):
        _run(cut, bgs, out, ground_y="low")


def test_edges_soft_no_white_halo_background_kept(tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    # Subject colour with no white in it; every transparent pixel is white, as in cut-outs of drawings.
    Image.fromarray(_figure(240, 110, colour=(200, 60, 60), transparent_rgb=255)).save(cut / "s.png")
    bgs = _write_backgrounds(tmp_path / "bgs", n=4, colour=(5, 5, 5), manifest=False)
    out = tmp_path / "out"
    # Colour-changing effects off, so every edge pixel must be a plain mix of subject and background.
    _run(cut, bgs, out, per_background=2, framing="full=1", disable=["harmonise", "artefacts"])
    for row in _rows(out):
        img = np.asarray(Image.open(out / row["file"]).convert("RGB")).astype(float)
        subject = img[..., 0] > 100
        assert subject.any()
        ring = cv2.dilate(subject.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        # Coverage from the red channel; a white fringe would make green exceed the mix it implies.
        cover = np.clip((img[..., 0] - 5) / (200 - 5), 0, 1)
        excess = img[..., 1] - (cover * 60 + (1 - cover) * 5)
        assert excess[ring].max() <= 10, (row["file"], excess[ring].max())
        # Soft edges: pixels between background and subject red along the rim.
        between = ring & (img[..., 0] > 30) & (img[..., 0] < 170)
        assert between.sum() >= 10, row["file"]
        # Away from the subject the background is the background, not white.
        far = ~cv2.dilate(subject.astype(np.uint8), np.ones((25, 25), np.uint8)).astype(bool)
        assert np.abs(img[far] - 5).max() <= 12, row["file"]


def test_captions_drop_white_background_and_add_scene_and_framing(tmp_path, data):
    cut, bgs = data
    out = tmp_path / "out"
    _run(cut, bgs, out, per_background=3, framing="full=1,upper=1,close=1")
    framing_tag = {"full": "full body", "upper": "upper body", "close": "portrait"}
    for row in _rows(out):
        caption = (out / row["outputs"][1]).read_text().strip()
        tags = [t.strip() for t in caption.split(",")]
        assert tags[0] == "sail kun"
        assert not any("background" in t for t in tags), caption
        assert {"outdoors", "grass", "blue sky", framing_tag[row["framing"]]} <= set(tags)
        assert len(tags) == len(set(tags))
        assert ("shoes" in tags) == (row["framing"] == "full")
        assert tags == row["tags"]


def test_same_bytes_whatever_the_worker_count(tmp_path, data):
    cut, bgs = data
    a, b = tmp_path / "a", tmp_path / "b"
    _run(cut, bgs, a, per_background=2, workers=1, flip=True, rotate=8)
    _run(cut, bgs, b, per_background=2, workers=2, flip=True, rotate=8)
    files = sorted(p.name for p in a.iterdir() if p.suffix in (".png", ".txt") and p.name != "contact_sheet.png")
    assert len(files) == 16
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_counts_and_names_with_k_and_side_files_are_not_items(tmp_path, data):
    cut, bgs = data
    out = tmp_path / "out"
    info = _run(cut, bgs, out, bg_count=3, per_background=2)
    rows = _rows(out)
    assert info["counts"]["out"] == 6 and len(rows) == 6
    names = sorted(r["file"] for r in rows)
    assert all(n.endswith((f"_k0.png", f"_k1.png")) and "__bg00" in n for n in names)
    assert {r["background"] for r in rows} == {"bg000.png", "bg001.png", "bg002.png"}
    # Subjects spread evenly, and a background's two composites show different subjects.
    subjects = [r["subject"] for r in rows]
    assert subjects.count("pose0.png") == subjects.count("pose1.png") == 3
    for bg in ("bg000.png", "bg001.png", "bg002.png"):
        assert len({r["subject"] for r in rows if r["background"] == bg}) == 2
    assert (out / "contact_sheet.png").is_file()
    assert "contact_sheet.png" not in names
    # The sheet is drawn from the workers' thumbnails; a smaller run removes the ones it no longer shows.
    assert sorted(p.stem for p in (out / ".thumbs").iterdir()) == sorted(n[:-4] for n in names)
    _run(cut, bgs, out, bg_count=2, per_background=2)
    assert len(list((out / ".thumbs").iterdir())) == 4 == len(_rows(out))
    # K = 1: plain names, one composite per background.
    out1 = tmp_path / "out1"
    _run(cut, bgs, out1)
    rows1 = _rows(out1)
    assert len(rows1) == 4 and all("_k" not in r["file"] for r in rows1)
    assert sorted(r["file"].split("__")[1] for r in rows1) == ["bg000.png", "bg001.png", "bg002.png", "bg003.png"]
    assert sorted(r["subject"] for r in rows1) == ["pose0.png", "pose0.png", "pose1.png", "pose1.png"]


def test_rerun_does_nothing_and_an_edited_cutout_redoes_only_its_composites(tmp_path, data):
    cut, bgs = data
    out = tmp_path / "out"
    _run(cut, bgs, out, per_background=2)
    again = _run(cut, bgs, out, per_background=2)
    assert again.get("nothing_to_do") and again["counts"]["processed"] == 0
    Image.fromarray(_figure(200, 90, colour=(220, 30, 30))).save(cut / "pose0.png")
    info = _run(cut, bgs, out, per_background=2)
    redone = info["counts"]["processed"]
    assert redone == sum(1 for r in _rows(out) if r["subject"] == "pose0.png") == 4
    assert info["counts"]["reused"] == 4


def test_jpg_and_webp_outputs(tmp_path, data):
    cut, bgs = data
    for fmt, ext in (("jpg", ".jpg"), ("webp", ".webp")):
        out = tmp_path / fmt
        _run(cut, bgs, out, bg_count=2, format=fmt, width=160, height=128)
        for row in _rows(out):
            assert row["file"].endswith(ext)
            with Image.open(out / row["file"]) as img:
                assert img.size == (160, 128) and img.mode == "RGB"


def test_bad_cutouts_and_backgrounds_are_skipped_and_named(tmp_path, data):
    cut, bgs = data
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(cut / "noalpha.png")
    Image.fromarray(np.zeros((64, 64, 4), np.uint8)).save(cut / "empty.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(bgs / "zz_tiny.png")
    (bgs / "zz_broken.png").write_bytes(b"not an image at all")
    # A plain folder (no manifest) so the odd backgrounds are items; greyscale must simply work.
    (bgs / "manifest.jsonl").unlink()
    (bgs / "datakit.json").unlink()
    Image.fromarray(np.full((128, 160), 120, np.uint8), mode="L").save(bgs / "grey.png")
    out = tmp_path / "out"
    info = _run(cut, bgs, out)
    reasons = {s["source"]: s["reason"] for s in info["skipped"]}
    assert "alpha" in reasons["noalpha.png"] and "cutout" in reasons["noalpha.png"]
    assert "empty" in reasons["empty.png"]
    assert "8x8" in reasons["bgs/zz_tiny.png"]
    assert "bgs/zz_broken.png" in reasons
    assert info["counts"]["out"] == 5  # bg000-bg003 + grey
    assert any(r["background"] == "grey.png" for r in _rows(out))
    skipped_rows = [r for r in read_manifest(out) if r["status"] == "skipped"]
    assert len(skipped_rows) == 4


def test_too_few_backgrounds_and_no_usable_cutouts_are_usage_errors(tmp_path, data):
    cut, bgs = data
    with pytest.raises(UsageError, match="--reuse-backgrounds"):
        _run(cut, bgs, tmp_path / "out", bg_count=10)
    info = _run(cut, bgs, tmp_path / "out", bg_count=6, reuse_backgrounds=True)
    assert info["counts"]["out"] == 6
    names = [r["file"] for r in _rows(tmp_path / "out")]
    assert len(set(names)) == 6 and any("_k1" in n for n in names)
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(bad / "photo.png")
    with pytest.raises(UsageError, match="no usable cut-outs"):
        _run(bad, bgs, tmp_path / "out2")


def test_cli_usage_error_and_partial_exit_codes(tmp_path, data, capsys):
    from datakit.cli.main import main

    cut, bgs = data
    with pytest.raises(SystemExit) as exc:
        main(["composite", str(cut), str(tmp_path / "o"), "--backgrounds", str(bgs), "--bg-count", "9", "-q"])
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(cut / "noalpha.png")
    with pytest.raises(SystemExit) as exc:
        main(["composite", str(cut), str(tmp_path / "o"), "--backgrounds", str(bgs), "-q", "-j", "1", "--size", "128"])
    assert exc.value.code == 3
    with Image.open(next((tmp_path / "o").glob("pose*.png"))) as img:
        assert img.size == (128, 128)


def test_every_effect_choice_is_recorded_and_varies(tmp_path, data):
    cut, bgs = data
    out = tmp_path / "out"
    _run(cut, bgs, out, per_background=8, framing="full=1")
    rows = _rows(out)
    for name in ("feather", "light_wrap", "contact_shadow", "cast_shadow", "harmonise", "artefacts"):
        states = {r["effects"][name]["on"] for r in rows}
        assert states == {True, False} or name == "feather", (name, states)
    assert len({r["effects"]["feather"]["sigma"] for r in rows}) > 1
    assert len({r["effects"]["artefacts"]["kind"] for r in rows}) > 1
    # Switched off means off everywhere.
    out2 = tmp_path / "off"
    _run(cut, bgs, out2, per_background=4, disable=["light_wrap", "shadow"])
    assert not any(r["effects"]["light_wrap"]["on"] or r["effects"]["contact_shadow"]["on"] for r in _rows(out2))


def test_generated_backgrounds_are_a_side_folder_and_feed_the_captions(tmp_path):
    cut = _write_cutouts(tmp_path / "cut")
    out = tmp_path / "out"
    info = run_composite(CompositeConfig(input_dir=cut, out_dir=out, bg_count=3, width=128, height=128, workers=1))
    assert info["counts"]["out"] == 3 and info["backgrounds"]["generated"]
    bg_rows = read_manifest(out / "backgrounds")
    assert len([r for r in bg_rows if r["status"] == "ok"]) == 3
    rows = _rows(out)
    assert all(not r["file"].startswith("backgrounds") for r in rows)
    by_bg = {r["file"]: r for r in bg_rows}
    for row in rows:
        scene_tags = [t for t in by_bg[row["background"]]["tags"] if t not in ("no humans",)]
        assert set(scene_tags) <= set(row["tags"])
    again = run_composite(CompositeConfig(input_dir=cut, out_dir=out, bg_count=3, width=128, height=128, workers=1))
    assert again.get("nothing_to_do")
    with pytest.raises(UsageError, match="no option 'bogus'"):
        run_composite(CompositeConfig(input_dir=cut, out_dir=out, bg_count=3, width=128, height=128, bg_options={"bogus": 1}))
