"""Where the ground is in a background that does not say: the horizon / floor line, estimated.

A plain image folder (the user's own photos) has no `ground_y`. Most scenes that have a ground show
it as a long, near-horizontal boundary: sky over land or sea, a wall over a floor. On a Lab copy
downscaled to 128 px wide we score every row of the middle band by

- how long an edge it carries: the vertical gradient that most of the columns share (a per-column
  maximum over a few rows, so a slightly tilted or wavy line still counts), and
- how different the image is above vs below it: colour means and texture of the two bands.

The best row (the lower of two similar ones: a room's floor seam, not its ceiling's) is the horizon.
Its confidence falls when the edge does not stand out of the calmer rows above it (clouds, bokeh
and stars make many weak lines) and when what lies below it is sky blue (a cloud bank's lower edge).
A subject standing on a ground plane seen from eye height has its feet well below the horizon (feet
on the horizon would mean infinitely far away), so the ground line handed to placement is part-way
from the horizon to the bottom edge, the same convention the procedural backgrounds use. No
convincing line (a flat image, a sky, a close-up texture): None, and placement keeps its
lower-part-of-the-frame default.

Pure numpy/OpenCV on a small thumbnail: deterministic, a few milliseconds per 1024 px image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Recorded in each estimated composite's task parameters: bump it when estimates change, so the
# composites that used the old ones are redone.
ESTIMATOR_VERSION = 1
# Width of the thumbnail every estimate works on (height follows the aspect ratio, capped).
WORK_WIDTH = 128
MAX_WORK_HEIGHT = 256
# Rows searched for a horizon (fractions of the height): a line at the very top or bottom is a frame
# edge or a border, not a horizon a subject could stand below.
BAND = (0.15, 0.9)
# The compared bands above and below a candidate row (fraction of the height).
CONTRAST_SPAN = 0.18
# Share of the columns that must carry the edge for it to count as "long".
EDGE_COVERAGE = 0.6
# Where feet go between the horizon and the bottom edge (procedural backgrounds stand at 0.55-0.75).
STAND_FRACTION = 0.65
# Calibration, on the procedural scenes (tests/test_composite_horizon.py): a horizon's edge stands
# PEAK_RATIO times above the median edge of the rows above it or more, and sqrt(edge x contrast)
# (Lab units) is ~15-60 for sky/ground or wall/floor lines, under ~8 for skies, space, underwater.
PEAK_RATIO = 6.0
FULL_QUALITY = 24.0
# Row weight from the top to the bottom of the image when choosing between lines.
LOWER_PREFERENCE = (0.8, 1.2)
# Lab b* of what lies below the line: at NEUTRAL_B or warmer it may be any ground; by SKY_BLUE_B it
# is most likely more sky (the factor is then 0.3).
NEUTRAL_B = -10.0
SKY_BLUE_B = -20.0
# Below this confidence the estimate is not used (quality 8: above every no-ground sky tried).
MIN_CONFIDENCE = 1.0 / 3.0


@dataclass(frozen=True)
class Horizon:
    """An estimated horizon and the ground line derived from it (fractions of the height from the top)."""

    horizon_y: float
    ground_y: float
    confidence: float  # 0..1

    def to_row(self) -> dict:
        return {"horizon_y": round(self.horizon_y, 4), "ground_y": round(self.ground_y, 4), "confidence": round(self.confidence, 3)}


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    """The image as float32 Lab at WORK_WIDTH wide (area-averaged, so noise and grain average out)."""
    h, w = rgb.shape[:2]
    tw = min(WORK_WIDTH, w)
    th = int(np.clip(round(h * tw / w), 16, MAX_WORK_HEIGHT))
    small = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def _long_edge_profile(lab: np.ndarray) -> np.ndarray:
    """Per row: the vertical-gradient strength that EDGE_COVERAGE of the columns reach (Lab units/row)."""
    # Colour edges count as well as brightness ones (green grass under a blue sky of equal lightness).
    grad = np.zeros(lab.shape[:2], np.float32)
    for c, weight in ((0, 1.0), (1, 0.5), (2, 0.5)):
        g = cv2.Sobel(lab[..., c], cv2.CV_32F, 0, 1, ksize=3) / 4.0
        grad += weight * np.abs(g)
    # A tilted or wavy line crosses neighbouring rows in different columns: take each column's
    # strongest response within +-2 rows.
    grad = cv2.dilate(grad, np.ones((5, 1), np.uint8))
    return np.quantile(grad, 1.0 - EDGE_COVERAGE, axis=1).astype(np.float32)


def _contrast_profile(lab: np.ndarray) -> np.ndarray:
    """Per row: how different the bands just above and just below are (colour means and texture)."""
    h = lab.shape[0]
    span = max(3, int(round(CONTRAST_SPAN * h)))
    # Texture: local detail of the lightness (sky and walls are smooth, ground is not).
    light = lab[..., 0]
    detail = np.abs(light - cv2.GaussianBlur(light, (0, 0), 1.5))
    feats = np.concatenate([lab.mean(axis=1), detail.mean(axis=1, keepdims=True) * 2.0], axis=1)
    csum = np.vstack([np.zeros((1, feats.shape[1]), np.float64), np.cumsum(feats, axis=0, dtype=np.float64)])
    ys = np.arange(1, h)
    a0, b1 = np.maximum(0, ys - span), np.minimum(h, ys + span)
    above = (csum[ys] - csum[a0]) / (ys - a0)[:, None]
    below = (csum[b1] - csum[ys]) / (b1 - ys)[:, None]
    out = np.zeros(h, np.float32)
    out[1:] = np.linalg.norm(above - below, axis=1)
    return out


def _ground_likeness(below: np.ndarray) -> float:
    """1 for ground-coloured pixels below the line, down to 0.3 for sky blue (a cloud bank's lower
    edge is a line too, with more sky under it). Snow and water are bluish but pass mostly."""
    if below.size == 0:
        return 1.0
    blueness = float(below[..., 2].mean())  # Lab b*: negative is blue
    return float(np.clip((blueness - SKY_BLUE_B) / (NEUTRAL_B - SKY_BLUE_B), 0.3, 1.0))


def estimate_horizon(rgb: np.ndarray) -> Horizon | None:
    """The horizon / floor line of an RGB uint8 image, or None when no convincing line is found."""
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    lab = _thumbnail(np.ascontiguousarray(rgb[..., :3]))
    h = lab.shape[0]
    edge = _long_edge_profile(lab)
    contrast = _contrast_profile(lab)
    lo, hi = int(BAND[0] * h), int(BAND[1] * h)
    # Both cues must agree: an edge that is not a boundary between different regions (a stripe, a
    # plank joint) or a slow gradient with no edge (a sky) scores low. sqrt keeps Lab units.
    score = np.sqrt(edge * contrast)
    # Of two similar lines the lower one wins: in a room the floor seam, not the ceiling's.
    prior = LOWER_PREFERENCE[0] + (LOWER_PREFERENCE[1] - LOWER_PREFERENCE[0]) * np.arange(h, dtype=np.float32) / h
    y = lo + int(np.argmax((score * prior)[lo:hi]))
    # A horizon is one line standing out above calm rows (sky, wall); clouds, bokeh and stars give
    # many weak, similar ones.
    calm = float(np.median(edge[lo // 2 : max(lo // 2 + 1, y - 2)]))
    peak = float(edge[y]) / (calm + 0.05)
    quality = float(score[y]) * min(1.0, peak / PEAK_RATIO) * _ground_likeness(lab[y + 1 :])
    confidence = float(np.clip(quality / FULL_QUALITY, 0.0, 1.0))
    if confidence < MIN_CONFIDENCE:
        return None
    horizon = (y + 0.5) / h
    ground = horizon + (1.0 - horizon) * STAND_FRACTION
    return Horizon(horizon_y=horizon, ground_y=float(min(ground, 0.97)), confidence=confidence)
