"""Where the ground is in a background that does not say: the horizon / floor line, estimated.

A plain image folder (the user's own photos) has no `ground_y`. Most scenes that have a ground show
it as a long, near-horizontal boundary: sky over land or sea, a wall over a floor. On a grey copy
downscaled to ~128 px we score every row of the middle band by

- how long an edge it carries: the vertical gradient that most of the columns share (a per-column
  maximum over a few rows, so a slightly tilted or wavy line still counts), and
- how different the image is above vs below it: a colour/texture contrast between the two bands
  (sky is smoother and usually brighter or bluer than the ground).

The best row is the horizon; its score gives a confidence. A subject standing on a ground plane seen
from eye height has its feet well below the horizon (feet on the horizon would mean infinitely far
away), so the ground line handed to placement is part-way from the horizon to the bottom edge, the
same convention the procedural backgrounds use. No convincing line (a flat image, a sky, a close-up
texture): None, and placement keeps its lower-part-of-the-frame default.

Pure numpy/OpenCV on a fixed-size thumbnail: deterministic and about a millisecond per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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
STAND_FRACTION = 0.62
# Below this confidence the estimate is not used.
MIN_CONFIDENCE = 0.35


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
    out = np.zeros(h, np.float32)
    for y in range(1, h):
        a0, b1 = max(0, y - span), min(h, y + span)
        above = (csum[y] - csum[a0]) / (y - a0)
        below = (csum[b1] - csum[y]) / (b1 - y)
        out[y] = float(np.linalg.norm(above - below))
    return out


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
    # plank joint) or a slow gradient with no edge (a sky) scores low. sqrt keeps the units of each.
    score = np.sqrt(edge * contrast)
    y = lo + int(np.argmax(score[lo:hi]))
    # Confidence: a long edge of a few Lab units per row between regions >~10 Lab units apart is a
    # clear horizon; the figures were set on photos-like procedural scenes (see the tests).
    strength = float(edge[y]) / 2.0
    separation = float(contrast[y]) / 12.0
    confidence = float(np.clip(min(strength, separation, 1.0), 0.0, 1.0))
    if confidence < MIN_CONFIDENCE:
        return None
    horizon = (y + 0.5) / h
    ground = horizon + (1.0 - horizon) * STAND_FRACTION
    return Horizon(horizon_y=horizon, ground_y=float(min(ground, 0.97)), confidence=confidence)
