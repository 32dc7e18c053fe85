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

from datakit.cutout.pixels import points


def quantise_alpha(alpha: np.ndarray) -> np.ndarray:
    """Float alpha 0..1 to uint8 with rounding (OpenCV: one fast pass)."""
    if not alpha.size:
        return np.zeros(alpha.shape, np.uint8)
    return cv2.convertScaleAbs(alpha.astype(np.float32, copy=False), alpha=255.0)


def decontaminate(
    rgb: np.ndarray, alpha8: np.ndarray, background: np.ndarray, out: np.ndarray | None = None
) -> np.ndarray:
    """F = (C - (1 - a) B) / a on partially transparent pixels; others unchanged (uint8 HxWx3).

    Writes into `out` (may be `rgb` itself), a copy of `rgb` when None. Only the edge pixels are
    touched, a few percent of the crop: they are gathered as a list.
    """
    if out is None:
        out = rgb[:, :, :3].copy()
    rows, cols = points(cv2.inRange(alpha8, 1, 254))
    if not len(rows):
        return out
    a = (alpha8[rows, cols].astype(np.float32) / 255.0)[:, None]
    c = rgb[rows, cols, :3].astype(np.float32)
    b = background[rows, cols] if background.ndim == 3 else np.broadcast_to(background, c.shape)
    f = (c - (1.0 - a) * b) / a
    out[rows, cols] = np.clip(np.rint(f), 0, 255).astype(np.uint8)
    return out


def _solid(h: int, w: int, rgba: tuple[int, int, int, int]) -> np.ndarray:
    """An HxWx4 uint8 image of one colour (filled as 32-bit words: numpy's per-channel fill is ~10x slower)."""
    out = np.empty((h, w, 4), np.uint8)
    out.reshape(-1).view(np.uint32)[:] = np.frombuffer(bytes(rgba), np.uint32)[0]
    return out


def bleed(rgb: np.ndarray, alpha8: np.ndarray, reach: int = 8) -> np.ndarray:
    """The RGBA image (straight alpha `alpha8`) with RGB under alpha 0 a smooth extension of the visible colours.

    Push-pull: premultiplied colour and weight are averaged down a pyramid, then the holes are filled
    from the coarser levels on the way up. The pyramid starts at half resolution: the fill only has
    to carry edge colours outward, and skipping the full-resolution level makes it several times
    cheaper; only the upsampling back to full size and the final composite touch every pixel.
    """
    h, w = alpha8.shape
    rgba = cv2.merge([*cv2.split(rgb[:, :, :3]), alpha8])
    visible = cv2.compare(alpha8, 0, cv2.CMP_GT)
    seen = cv2.countNonZero(visible)
    if seen == 0 or seen == h * w:
        return rgba
    # Weight by alpha: barely visible edge pixels have the least reliable decontaminated colour.
    # Premultiplied colour and weight in one 4-channel image, (aR, aG, aB, a) in 0..255: one resize
    # per level serves both. The first halving, of the full-size image, runs on 8-bit data in exact
    # 2x2 blocks (fast); the small levels below it are float.
    premult = cv2.multiply(rgba, cv2.merge([alpha8, alpha8, alpha8, np.full_like(alpha8, 255)]), scale=1.0 / 255.0)
    cur = _halve(premult).astype(np.float32)
    levels = [cur]
    while min(cur.shape[:2]) > 1:
        ch, cw = cur.shape[:2]
        cur = cv2.resize(cur, (max(1, (cw + 1) // 2), max(1, (ch + 1) // 2)), interpolation=cv2.INTER_AREA)
        levels.append(cur)
    top = levels[-1]
    filled = _unpremultiply(top)
    # Pull: from the coarsest level down, a level's own colour where it has weight, else the coarser
    # fill: colour = own * trust + coarser * (1 - trust) with trust = min(4 * weight, 1), weight in
    # 0..1. In premultiplied terms own * trust = premult / max(weight, 1/4): no division by ~0.
    # All four channels go through (OpenCV works per pixel on matching channel counts); the
    # fourth is ignored.
    for lv in reversed(levels[:-1]):
        up = cv2.resize(filled, (lv.shape[1], lv.shape[0]), interpolation=cv2.INTER_LINEAR)
        wt = lv[:, :, 3]
        own = np.float32(255.0) / np.maximum(wt, np.float32(255.0 / 4.0))
        coarse = np.maximum(np.float32(1.0) - wt * np.float32(4.0 / 255.0), np.float32(0.0))
        # Grey to 4 channels (the fourth set to 1) is the cheapest way to scale every channel per pixel.
        filled = cv2.add(
            cv2.multiply(lv, cv2.cvtColor(own, cv2.COLOR_GRAY2BGRA)),
            cv2.multiply(up, cv2.cvtColor(coarse, cv2.COLOR_GRAY2BGRA)),
        )
    # Beyond `reach` px from the subject one flat colour (the subject's average) does as well and
    # keeps the PNG small and fast to encode: a smooth fill everywhere costs 3x the bytes.
    flat = np.clip(np.rint(top[0, 0, :3] / max(float(top[0, 0, 3]), 1e-6) * 255.0), 0, 255).astype(np.uint8)
    out = _solid(h, w, (*(int(v) for v in flat), 0))
    half = cv2.convertScaleAbs(filled)  # rounds and saturates to uint8
    half[:, :, 3] = 0  # transparent where filled
    # A half-res pixel j covers pixels 2j and 2j+1 (see _halve): double it, then drop the padding.
    fill = cv2.resize(half, (w + w % 2, h + h % 2), interpolation=cv2.INTER_LINEAR)
    near = cv2.dilate(visible, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * reach + 1, 2 * reach + 1)))
    cv2.copyTo(fill[:h, :w], near, out)
    cv2.copyTo(rgba, visible, out)
    return out


def _halve(img: np.ndarray) -> np.ndarray:
    """Average 2x2 blocks; odd sizes are padded with zero weight first, so that every block is whole
    and OpenCV takes its fast exact path (its general area resampling is ~10x slower on 8-bit data)."""
    h, w = img.shape[:2]
    if h % 2 or w % 2:
        img = cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(img, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)


def _unpremultiply(level: np.ndarray) -> np.ndarray:
    """Colour (0..255) of a premultiplied 4-channel level with weight 0..255 in the fourth channel."""
    scale = np.float32(255.0) / np.maximum(level[:, :, 3], np.float32(1e-6))
    return cv2.multiply(level, cv2.cvtColor(scale, cv2.COLOR_GRAY2BGRA))


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
