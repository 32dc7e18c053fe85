"""Colour of the cut-out: remove the backdrop mixed into edge pixels, fill RGB under transparency.

Decontamination solves the compositing equation C = a F + (1 - a) B for F with the backdrop B we
estimated, so an anti-aliased edge pixel keeps only the subject's colour and shows no white halo on a
dark background. Under fully transparent pixels we bleed the nearest edge colours outward (a
push-pull pyramid), because tools that drop alpha (kohya's convert("RGB"), resizers that do not
premultiply) would otherwise expose black or white fringes.
"""

from __future__ import annotations

import cv2
import numpy as np


def quantise_alpha(alpha: np.ndarray) -> np.ndarray:
    """Float alpha 0..1 to uint8 with rounding (OpenCV: one fast pass)."""
    return cv2.convertScaleAbs(alpha.astype(np.float32, copy=False), alpha=255.0)


def decontaminate(rgb: np.ndarray, alpha8: np.ndarray, background: np.ndarray) -> np.ndarray:
    """F = (C - (1 - a) B) / a on partially transparent pixels; others unchanged (uint8 HxWx3)."""
    out = rgb[:, :, :3].copy()
    edge = (alpha8 > 0) & (alpha8 < 255)
    if not edge.any():
        return out
    a = (alpha8[edge].astype(np.float32) / 255.0)[:, None]
    c = rgb[:, :, :3][edge].astype(np.float32)
    b = background[edge] if background.ndim == 3 else np.broadcast_to(background, c.shape)
    f = (c - (1.0 - a) * b) / a
    out[edge] = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return out


def bleed(rgb: np.ndarray, alpha8: np.ndarray, reach: int = 8) -> np.ndarray:
    """Replace RGB where alpha is 0 by a smooth extension of the visible colours (push-pull).

    The pyramid starts at half resolution: the fill only has to carry edge colours outward, and
    skipping the full-resolution level makes it several times cheaper.
    """
    empty = alpha8 == 0
    if not empty.any() or empty.all():
        return rgb
    h, w = alpha8.shape
    # Weight by alpha: barely visible edge pixels have the least reliable decontaminated colour.
    # Premultiplied colour and weight in one 4-channel image: one resize per level serves both. The
    # first halving runs on 8-bit data (fast); precision only matters for the coarser levels.
    premult = cv2.multiply(rgb, cv2.merge([alpha8, alpha8, alpha8]), scale=1.0 / 255.0)
    rgbw = cv2.merge([*cv2.split(premult), alpha8])
    half = cv2.resize(rgbw, (max(1, (w + 1) // 2), max(1, (h + 1) // 2)), interpolation=cv2.INTER_AREA)
    cur = half.astype(np.float32) * (1.0 / 255.0)
    cur[:, :, :3] *= 255.0
    levels = [cur]
    while True:
        ch, cw = cur.shape[:2]
        if min(ch, cw) <= 1:
            break
        cur = cv2.resize(cur, (max(1, (cw + 1) // 2), max(1, (ch + 1) // 2)), interpolation=cv2.INTER_AREA)
        levels.append(cur)
    if not levels:
        return rgb
    top = levels[-1]
    filled = top[:, :, :3] / np.maximum(top[:, :, 3:], 1e-6)
    # Pull: from the coarsest level down, a level's own colour where it has weight, else the coarser fill.
    for lv in reversed(levels[:-1]):
        up = cv2.resize(filled, (lv.shape[1], lv.shape[0]), interpolation=cv2.INTER_LINEAR)
        wt = lv[:, :, 3:]
        trust = np.minimum(wt * 4.0, 1.0)
        filled = (lv[:, :, :3] / np.maximum(wt, 1e-6)) * trust + up * (1.0 - trust)
    full = cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
    full8 = cv2.convertScaleAbs(full)  # rounds and saturates to uint8
    out = rgb.copy()
    # Beyond `reach` px from the subject one flat colour (the subject's average) does as well and
    # keeps the PNG small and fast to encode: a smooth fill everywhere costs 3x the bytes.
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1))
    near = cv2.dilate((~empty).astype(np.uint8), k)
    out[:] = np.clip(np.rint(top[0, 0, :3] / max(float(top[0, 0, 3]), 1e-6)), 0, 255).astype(np.uint8)
    cv2.copyTo(full8, near, out)
    cv2.copyTo(rgb, (~empty).astype(np.uint8), out)
    return out


def subject_box(alpha8: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1, exclusive) of visible pixels plus a margin, clamped; None if empty."""
    ys = np.flatnonzero(alpha8.any(axis=1))
    if len(ys) == 0:
        return None
    xs = np.flatnonzero(alpha8.any(axis=0))
    h, w = alpha8.shape
    return (
        max(0, int(xs[0]) - margin),
        max(0, int(ys[0]) - margin),
        min(w, int(xs[-1]) + 1 + margin),
        min(h, int(ys[-1]) + 1 + margin),
    )
