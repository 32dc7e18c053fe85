"""The committed mascot samples: present, well-formed, captioned, and reproduced by their script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.captions import split_caption

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
SUBJECTS = SAMPLES / "subjects"
POSES = ["standing", "waving", "hand_on_hip", "jumping"]


def _load_script():
    spec = importlib.util.spec_from_file_location("draw_mascot", SAMPLES / "draw_mascot.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("pose", POSES)
def test_sample_is_1024_rgb_on_a_light_border(pose):
    path = SUBJECTS / f"{pose}.png"
    assert path.is_file(), f"missing committed sample {path}"
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.mode == "RGB"
        assert 900 <= img.width <= 1100 and 900 <= img.height <= 1100
        arr = np.asarray(img).astype(int)
    border = np.concatenate([arr[:8].reshape(-1, 3), arr[-8:].reshape(-1, 3), arr[:, :8].reshape(-1, 3), arr[:, -8:].reshape(-1, 3)])
    # One flat, light colour all round the border: white or off-white, no subject touching the edge.
    assert border.min() >= 235
    assert np.ptp(border, axis=0).max() == 0
    # A real subject in the middle: plenty of dark outline and non-background pixels.
    differs = np.abs(arr - border[0]).sum(axis=2) > 30
    assert 0.08 < differs.mean() < 0.6
    assert (arr.sum(axis=2) < 200).mean() > 0.005  # the dark outlines


@pytest.mark.parametrize("pose", POSES)
def test_sample_has_a_true_caption(pose):
    caption = SUBJECTS / f"{pose}.txt"
    assert caption.is_file()
    text = caption.read_text(encoding="utf-8")
    assert not text.startswith("\ufeff") and "\r" not in text
    tags = split_caption(text)
    assert len(tags) == len(set(tags)), "duplicate tags"
    for tag in ("solo", "white background", "simple background", "white shirt", "sailor collar", "ahoge", "full body"):
        assert tag in tags
    assert all("_" not in t for t in tags), "captions use the spaces form"


def test_pose_specific_tags():
    tags = {p: split_caption((SUBJECTS / f"{p}.txt").read_text(encoding="utf-8")) for p in POSES}
    assert "hand on hip" in tags["hand_on_hip"]
    assert "waving" in tags["waving"] and "open mouth" in tags["waving"]
    assert "jumping" in tags["jumping"] and "arms up" in tags["jumping"]
    assert "closed mouth" in tags["standing"] and "open mouth" not in tags["standing"]


def test_one_sample_is_off_white():
    corners = {}
    for pose in POSES:
        with Image.open(SUBJECTS / f"{pose}.png") as img:
            corners[pose] = img.getpixel((0, 0))
    assert sum(c == (255, 255, 255) for c in corners.values()) >= 2
    assert any(c != (255, 255, 255) for c in corners.values())


def test_hand_on_hip_has_a_see_through_loop():
    """A background-coloured region not connected to the border: the hole between arm and torso."""
    import cv2

    arr = np.asarray(Image.open(SUBJECTS / "hand_on_hip.png").convert("RGB")).astype(int)
    bg = np.all(arr == arr[0, 0], axis=2).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(bg, connectivity=4)
    border_labels = set(labels[0]) | set(labels[-1]) | set(labels[:, 0]) | set(labels[:, -1])
    holes = [stats[i, cv2.CC_STAT_AREA] for i in range(1, n) if i not in border_labels]
    # Eye catch-lights are white too, but small; the loop is a large enclosed background patch
    # to the image-right of the torso.
    big = [i for i in range(1, n) if i not in border_labels and stats[i, cv2.CC_STAT_AREA] > 1500]
    assert big, f"no enclosed background region (holes: {sorted(holes)[-5:]})"
    assert any(stats[i, cv2.CC_STAT_LEFT] > 560 for i in big)


def test_thin_strands_are_one_to_two_pixels_wide():
    """Above the hair cap (rows < 100 in `standing`) there are only the ahoge strands, 1-2 px wide."""
    import cv2

    grey = np.asarray(Image.open(SUBJECTS / "standing.png").convert("L"))
    strands = (grey[:100] < 200).astype(np.uint8)
    assert strands.sum() > 150, "no strands above the head"
    # Distance to the nearest background pixel: about 1 on a 1-2 px line, 2 or more on a 3 px one.
    depth = cv2.distanceTransform(strands, cv2.DIST_L2, 3)
    assert 0.5 < depth.max() < 2.0
    n_components = cv2.connectedComponents(strands, connectivity=8)[0] - 1
    assert n_components >= 2


def test_script_reproduces_the_committed_pngs(tmp_path):
    module = _load_script()
    assert module.main([str(tmp_path)]) == 0
    for pose in POSES:
        made = np.asarray(Image.open(tmp_path / f"{pose}.png"))
        committed = np.asarray(Image.open(SUBJECTS / f"{pose}.png"))
        assert made.shape == committed.shape
        assert np.array_equal(made, committed), (
            f"{pose}.png differs from what draw_mascot.py draws (after a Pillow/OpenCV upgrade: re-run the script)"
        )
        assert (tmp_path / f"{pose}.txt").read_text(encoding="utf-8") == (SUBJECTS / f"{pose}.txt").read_text(encoding="utf-8")


def test_samples_stay_commit_sized():
    total = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert total < 3 * 1024 * 1024
