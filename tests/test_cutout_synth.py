"""Synthetic subjects with known alpha for the cut-out tests, the quality metrics, and their own checks.

A subject is drawn at 4x with hard edges and reduced with area averaging, which gives true
anti-aliased coverage (alpha) and true colour for every pixel. It contains the hard cases: a white
shirt and eye whites inside the subject, 1-2 px strands, a see-through loop (an arm on the hip) and
dark anti-aliased outlines. Backdrops: white, off-white, grey, gradient, vignette; optional JPEG.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from drawings import place  # noqa: F401  (re-exported: the quality tests import it from here)
from PIL import Image, ImageDraw

SS = 4  # supersampling factor

OUTLINE = (40, 30, 50)
SKIN = (250, 214, 180)
SHIRT = (244, 244, 248)  # a white shirt on a white page: near-white, slightly tinted as painted
HAIR = (70, 110, 200)


def draw_subject(size: int = 256, variant: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (colour HxWx3 float 0..255, alpha HxW float 0..1) of a small mascot."""
    S = size * SS
    im = Image.new("RGBA", (S, S), (0, 0, 0, 0))
    dr = ImageDraw.Draw(im)
    u = S / 256.0  # drawing unit: coordinates below are on a 256 grid
    ow = max(SS, int(round(3 * u)))  # outline about 3 px at the output size

    def el(box, fill, width=ow):
        dr.ellipse([v * u for v in box], fill=fill, outline=OUTLINE + (255,), width=width)

    shift = 6 * variant
    # Arm on the hip: a thick ring whose inside is a see-through gap.
    el((150 + shift, 120, 214 + shift, 190), SKIN + (255,), width=ow)
    dr.ellipse([v * u for v in (166 + shift, 136, 198 + shift, 174)], fill=OUTLINE + (255,))
    dr.ellipse([(166 + shift) * u + ow, 136 * u + ow, (198 + shift) * u - ow, 174 * u - ow], fill=(0, 0, 0, 0))
    # Body with a white shirt.
    el((80, 100, 176, 230), SHIRT + (255,))
    # Head with hair, eye whites and pupils.
    el((78, 30, 178, 120), SKIN + (255,))
    dr.pieslice([v * u for v in (78, 26, 178, 110)], 180, 360, fill=HAIR + (255,), outline=OUTLINE + (255,), width=ow)
    for ex in (104, 140):
        el((ex, 66, ex + 16, 86), (255, 255, 255, 255), width=max(SS, ow // 2))
        dr.ellipse([(ex + 5) * u, 72 * u, (ex + 11) * u, 82 * u], fill=OUTLINE + (255,))
    # Antenna strands: 1 px and 2 px wide at the output size.
    dr.line([128 * u, 30 * u, 112 * u, 6 * u], fill=OUTLINE + (255,), width=SS * 1)
    dr.line([134 * u, 30 * u, 158 * u, 8 * u], fill=OUTLINE + (255,), width=SS * 2)
    dr.ellipse([154 * u, 4 * u, 164 * u, 14 * u], fill=(230, 60, 60, 255), outline=OUTLINE + (255,), width=SS)
    arr = np.asarray(im).astype(np.float64)
    a = arr[:, :, 3:] / 255.0
    prem = arr[:, :, :3] * a
    # Area reduction of premultiplied colour and coverage = exact anti-aliasing.
    prem_s = prem.reshape(size, SS, size, SS, 3).mean(axis=(1, 3))
    a_s = a.reshape(size, SS, size, SS, 1).mean(axis=(1, 3))
    colour = np.where(a_s > 0, prem_s / np.maximum(a_s, 1e-9), 0.0)
    return colour, a_s[:, :, 0]


def backdrop(kind: str, size: int) -> np.ndarray:
    """A backdrop image (float HxWx3, 0..255)."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    if kind == "white":
        b = np.full((size, size, 3), 255.0)
    elif kind == "offwhite":
        b = np.broadcast_to(np.array([250.0, 246.0, 236.0]), (size, size, 3)).copy()
    elif kind == "grey":
        b = np.full((size, size, 3), 205.0)
    elif kind == "gradient":
        b = (252.0 - 40.0 * yy - 10.0 * xx)[:, :, None] * np.array([1.0, 0.98, 0.95])
    elif kind == "vignette":
        r2 = (xx - 0.5) ** 2 + (yy - 0.5) ** 2
        b = (250.0 - 70.0 * r2)[:, :, None] * np.ones(3)
    else:
        raise ValueError(kind)
    return b


def compose(colour: np.ndarray, alpha: np.ndarray, bg: np.ndarray, jpeg: int | None = None) -> np.ndarray:
    """The subject over a backdrop as uint8 RGB; optionally through a JPEG round trip."""
    img = colour * alpha[:, :, None] + bg * (1.0 - alpha[:, :, None])
    img8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    if jpeg:
        buf = io.BytesIO()
        Image.fromarray(img8).save(buf, format="JPEG", quality=jpeg)
        img8 = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return img8


def iou(pred_alpha: np.ndarray, true_alpha: np.ndarray) -> float:
    """IoU of alpha > 0.5 against the truth."""
    p, t = pred_alpha > 0.5, true_alpha > 0.5
    union = (p | t).sum()
    return float((p & t).sum() / union) if union else 1.0


def edge_error(rgba: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> float:
    """Mean |cut-out over black - truth over black| (0..1) within 2 px of the true edge."""
    mask = (alpha > 0.5).astype(np.uint8)
    k = np.ones((5, 5), np.uint8)
    band = (cv2.dilate(mask, k) - cv2.erode(mask, k)) > 0
    pa = rgba[:, :, 3:].astype(np.float64) / 255.0
    pred = rgba[:, :, :3].astype(np.float64) * pa
    true = colour * alpha[:, :, None]
    return float(np.abs(pred - true)[band].mean() / 255.0)


# -- checks of the helpers themselves -----------------------------------------------------------


def test_truth_has_the_hard_cases():
    colour, alpha = draw_subject(256)
    # Soft anti-aliased edge pixels exist, and the see-through loop's inside is transparent.
    assert ((alpha > 0.05) & (alpha < 0.95)).sum() > 500
    assert alpha[155, 182] == 0.0
    # The shirt is near-white but inside the subject.
    assert alpha[180, 128] == 1.0 and np.allclose(colour[180, 128], SHIRT)


def test_metrics_detect_errors():
    colour, alpha = draw_subject(128)
    perfect = np.dstack([np.clip(np.rint(colour), 0, 255), np.rint(alpha * 255)]).astype(np.uint8)
    assert iou(perfect[:, :, 3] / 255.0, alpha) > 0.99  # only alpha == 0.5 ties may flip
    assert edge_error(perfect, colour, alpha) < 0.003
    # A hard (binarised) matte over white would leave a halo: the edge metric must see it.
    hard = perfect.copy()
    hard[:, :, 3] = np.where(alpha > 0.02, 255, 0)
    mixed = colour * alpha[:, :, None] + 255.0 * (1 - alpha[:, :, None])
    hard[:, :, :3] = np.clip(np.rint(mixed), 0, 255)
    assert edge_error(hard, colour, alpha) > 0.05
    assert iou(np.zeros_like(alpha), alpha) == 0.0
