"""The horizon / floor-line estimate for plain background folders, alone and inside the composite stage."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datakit.compositing.horizon import estimate_horizon

W, H = 240, 180


def _outdoor(horizon: float, seed: int = 0, w: int = W, h: int = H, tilt_px: int = 0) -> np.ndarray:
    """A blue sky gradient over textured green ground whose top edge is at `horizon` (fraction of h)."""
    rng = np.random.default_rng(seed)
    ys = np.arange(h, dtype=np.float32)[:, None, None] / h
    sky = np.array([60, 110, 200], np.float32) * (1 - ys) + np.array([170, 200, 230], np.float32) * ys
    img = np.broadcast_to(sky, (h, w, 3)).copy()
    ground = np.array([70, 120, 50], np.float32) + rng.normal(0, 18, (h, w, 1)).astype(np.float32)
    ground = cv2.GaussianBlur(ground, (0, 0), 0.8).reshape(h, w, -1)
    line = horizon * h + np.linspace(-tilt_px / 2, tilt_px / 2, w, dtype=np.float32)[None, :]
    below = (np.arange(h, dtype=np.float32)[:, None] >= line)[..., None]
    img = np.where(below, ground, img)
    return np.clip(img, 0, 255).astype(np.uint8)


def _room(floor_line: float, seed: int = 0, w: int = W, h: int = H) -> np.ndarray:
    """A plain wall with a baseboard over a wooden plank floor meeting it at `floor_line`."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[:] = (205, 196, 180)
    fy = int(round(floor_line * h))
    img[fy - max(2, h // 40) : fy] = (235, 232, 226)  # baseboard
    planks = np.repeat(rng.uniform(0.8, 1.1, (1, w // 12 + 1)), 12, axis=1)[:, :w]
    floor = np.array([150, 100, 60], np.float32) * planks[..., None]
    floor = floor + rng.normal(0, 6, (h - fy, w, 1)).astype(np.float32)
    img[fy:] = floor
    img[fy:, ::12] *= 0.7  # plank joints
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("horizon", [0.3, 0.45, 0.6, 0.75])
def test_sky_over_ground_found_at_its_height(horizon):
    est = estimate_horizon(_outdoor(horizon, seed=int(horizon * 100)))
    assert est is not None
    assert abs(est.horizon_y - horizon) < 0.03
    # Feet go below the horizon, part-way to the bottom edge, and the estimate is sure of itself.
    assert est.horizon_y < est.ground_y < 1.0
    assert est.confidence > 0.6


def test_tilted_horizon_and_odd_aspect_ratios():
    est = estimate_horizon(_outdoor(0.5, tilt_px=8))
    assert est is not None and abs(est.horizon_y - 0.5) < 0.04
    for w, h in ((400, 120), (120, 300), (64, 64)):
        est = estimate_horizon(_outdoor(0.55, w=w, h=h))
        assert est is not None and abs(est.horizon_y - 0.55) < 0.05, (w, h)


@pytest.mark.parametrize("floor_line", [0.4, 0.55])
def test_indoor_wall_floor_seam(floor_line):
    est = estimate_horizon(_room(floor_line))
    assert est is not None
    assert abs(est.horizon_y - floor_line) < 0.04


def test_no_line_no_estimate():
    flat = np.full((H, W, 3), 128, np.uint8)
    assert estimate_horizon(flat) is None
    # A sky gradient has no edge; fine noise has no line; a vertical split is not horizontal.
    ys = np.linspace(40, 220, H, dtype=np.float32)[:, None, None]
    assert estimate_horizon(np.broadcast_to(ys, (H, W, 3)).astype(np.uint8)) is None
    noise = np.random.default_rng(1).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert estimate_horizon(noise) is None
    split = np.zeros((H, W, 3), np.uint8)
    split[:, W // 2 :] = (200, 180, 40)
    assert estimate_horizon(split) is None


def test_deterministic_and_accepts_grey():
    img = _outdoor(0.5, seed=3)
    assert estimate_horizon(img) == estimate_horizon(img.copy())
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    est = estimate_horizon(grey)
    assert est is not None and abs(est.horizon_y - 0.5) < 0.04


def test_procedural_scenes_ground_estimated_close_to_the_truth():
    """The backgrounds stage knows its scenes' ground line: the estimate from pixels should be close."""
    from datakit.backgrounds.procedural import PROCEDURAL_SCENES, render

    errors, missed = [], 0
    for scene in PROCEDURAL_SCENES:
        for seed in (11, 12):
            img, truth, _ = render(scene, seed, 192, 192)
            est = estimate_horizon(img)
            if truth is None:
                # Skies, space and underwater have no line to stand on: nothing (or, for a sea or
                # bokeh, a line low in the frame) comes back, never one in the top half.
                if scene.name in ("sky", "space", "underwater"):
                    assert est is None, scene.name
                assert est is None or est.ground_y > 0.6, scene.name
                continue
            if est is None:
                missed += 1
                continue
            errors.append(abs(est.ground_y - truth))
    assert missed <= 3  # of 36: a faint tiled-floor seam may go unseen (then: the default)
    assert float(np.mean(errors)) < 0.05
    assert max(errors) < 0.15


# ---------------------------------------------------------------------------------------------
# Inside the composite stage
# ---------------------------------------------------------------------------------------------


def _cutouts(folder: Path, n: int = 2) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        rgba = np.zeros((120, 60, 4), np.uint8)
        rgba[10:115, 12:48] = (200, 40 + 60 * i, 40, 255)
        rgba[..., 3] = cv2.GaussianBlur(rgba[..., 3], (0, 0), 1.0)
        Image.fromarray(rgba, "RGBA").save(folder / f"pose{i}.png")
        (folder / f"pose{i}.txt").write_text("1girl, solo, white background, full body\n")
    return folder


def _folder(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"photo{i}.png")
    return folder


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def _run(cut, bgs, out, **kw):
    from datakit.stages.composite import CompositeConfig, run_composite

    kw.setdefault("workers", 1)
    kw.setdefault("contact_sheet", False)
    return run_composite(CompositeConfig(input_dir=cut, out_dir=out, backgrounds=bgs, **kw))


def test_plain_folder_feet_on_the_estimated_ground(tmp_path):
    cut = _cutouts(tmp_path / "cut")
    horizons = [0.35, 0.5]
    bgs = _folder(tmp_path / "bgs", [_outdoor(h, seed=i) for i, h in enumerate(horizons)] + [np.full((H, W, 3), 90, np.uint8)])
    out = tmp_path / "out"
    _run(cut, bgs, out, per_background=3, framing="full=1", height_range="0.3-0.45")
    rows = _rows(out)
    assert len(rows) == 9
    for row in rows:
        i = int(row["background"][len("photo") : -len(".png")])
        feet = row["placement"]["feet_y"] / row["size"][1]
        if i < len(horizons):
            assert row["ground_source"] == "estimated"
            assert abs(row["horizon_y"] - horizons[i]) < 0.03
            assert 0.6 < row["ground_confidence"] <= 1.0
            assert row["ground_y"] > row["horizon_y"]
            # Feet on or below the estimated ground line (same size: no crop moves it).
            assert row["background_fit"]["ground_y"] == pytest.approx(row["ground_y"], abs=1e-3)
            assert feet >= row["ground_y"] - 1e-3
            assert row["placement"]["on_ground"]
            assert row["params"]["ground_estimate"] >= 1
        else:
            # A flat image: no line, so the old behaviour (feet in the lower 28% of the frame).
            assert row["ground_source"] == "none"
            assert row["ground_y"] is None and row["ground_confidence"] is None
            assert feet >= 0.72 - 1e-3


def test_manifest_and_option_take_precedence(tmp_path):
    cut = _cutouts(tmp_path / "cut", n=1)
    bgs = _folder(tmp_path / "bgs", [_outdoor(0.4)])
    rows = [{"file": "photo0.png", "source": "photo0.png", "tags": ["outdoors"], "ground_y": 0.9}]
    out = tmp_path / "opt"
    _run(cut, bgs, out, framing="full=1", ground_y="0.8")
    (row,) = _rows(out)
    assert row["ground_source"] == "option" and row["ground_y"] == 0.8 and row["horizon_y"] is None
    (bgs / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (bgs / "datakit.json").write_text(json.dumps({"stage": "backgrounds", "carry": {}}))
    out = tmp_path / "man"
    _run(cut, bgs, out, framing="full=1")
    (row,) = _rows(out)
    assert row["ground_source"] == "manifest" and row["ground_y"] == 0.9
    assert "ground_estimate" not in row.get("params", {})


def test_estimated_composites_identical_across_worker_counts(tmp_path):
    cut = _cutouts(tmp_path / "cut")
    bgs = _folder(tmp_path / "bgs", [_outdoor(0.45, seed=5), _room(0.5, seed=6)])
    a, b = tmp_path / "a", tmp_path / "b"
    _run(cut, bgs, a, per_background=2, workers=1)
    _run(cut, bgs, b, per_background=2, workers=2)
    files = sorted(p.name for p in a.glob("*.png"))
    assert len(files) == 4
    for name in files:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert [r["ground_y"] for r in _rows(a)] == [r["ground_y"] for r in _rows(b)]
