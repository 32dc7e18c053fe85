"""Soft edges: the alpha and the true colour of every pixel where the subject meets the backdrop.

An edge pixel mixes the backdrop B (known per pixel) with the subject's colour F at coverage a:
C = a F + (1 - a) B. With F known, a is the position of C along the line from B to F (a
projection, which noise moves far less than the colour itself), and the pixel's colour in the
cut-out is F: over any new background it shows a F, exactly what the drawing had.

F is taken from the subject next to the pixel: the most subject-like pixel within 2 px (the
outline or fill the edge blends into). A line thinner than the anti-aliasing has no fully covered
pixel; when the pixel and its neighbour both lie on the line from B to the outline colour (the
typical colour just inside the silhouette), F is that outline colour instead. A pixel that is not
on the line from B to F at all is other paint (light fill behind a thin outline): opaque.

Only the `band` layers of pixels next to the backdrop are soft; they are a few percent of the
frame and are handled as lists of pixels, their neighbours looked up by offsets in padded buffers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from datakit.cutout.background import METRIC
from datakit.cutout.pixels import points

BAND = 3


@dataclass
class EdgeMatte:
    """Alpha of a box (float32 0..1) and the subject colour of its partly covered pixels."""

    alpha: np.ndarray
    rows: np.ndarray  # partly covered pixels (0 < alpha < 1)
    cols: np.ndarray
    colour: np.ndarray  # their subject colour (float32 n x 3)


def edge_layers(background: np.ndarray, band: int, soft: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and layer (0 = touching the backdrop) of subject pixels within `band` px of it,
    and per pixel of the box how many of the `band` growths reach it (layer = band - that);
    `soft` pixels are all in layer 0 and the layers beyond them count from them."""
    base = background.view(np.uint8) if soft is None else (background | soft).view(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    grown, reach = base, np.zeros_like(base)
    for _ in range(band):
        grown = cv2.dilate(grown, kernel)
        cv2.add(reach, grown, dst=reach)
    rows, cols = points(cv2.subtract(grown, background.view(np.uint8)))
    layer = band - reach[rows, cols].astype(np.intp)
    if soft is not None:
        layer[soft[rows, cols]] = 0
    return rows, cols, layer, reach


@functools.lru_cache(maxsize=4)
def _window_codes(h: int, w: int) -> np.ndarray:
    """(row mod 5) * 5 + (column mod 5) per pixel: within any 5x5 window each code occurs once."""
    return ((np.arange(h) % 5)[:, None] * 5 + (np.arange(w) % 5)[None, :]).astype(np.float32)


def window_argmax(d: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each listed pixel, the position of the largest `d` in the 5x5 window around it.

    One dilation over the box: the distance, quantised to 1/256 level, and the pixel's code in its
    window packed in one float32 (exact below 2^24), so the maximum carries its own position.
    """
    h, w = d.shape
    key = np.rint(cv2.min(d, 441.75) * np.float32(256.0))
    cv2.scaleAdd(key, 32.0, _window_codes(h, w), dst=key)
    best = cv2.dilate(key, np.ones((5, 5), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=-1.0)[rows, cols]
    code = np.rint(best % 32.0).astype(np.intp)
    fy = rows - 2 + (code // 5 - (rows - 2)) % 5
    fx = cols - 2 + (code % 5 - (cols - 2)) % 5
    return fy, fx


def edge_matte(
    d: np.ndarray,
    background: np.ndarray,
    rgb: np.ndarray,
    bg: np.ndarray,
    outline: np.ndarray | None,
    *,
    paint: float,
    band: int = BAND,
    soft: np.ndarray | None = None,
) -> EdgeMatte:
    """Alpha 1 inside the subject, 0 on the backdrop, soft in the `band` px next to it, with edge colours.

    `d` is the distance to the backdrop, `background` the pixels that are backdrop (bool), `outline`
    the colour of the drawing's lines (RGB; None: measured here), `paint` a distance far above noise
    (a pixel at least this far from the backdrop is surely paint), `soft` subject pixels only a
    little off the backdrop colour and joined to it (noise, faint edges): the outermost layer.
    """
    bg8 = background.view(np.uint8)
    alpha = np.float32(1.0) - bg8
    empty = np.zeros(0, np.intp)
    if cv2.countNonZero(bg8) in (0, bg8.size):
        return EdgeMatte(alpha, empty, empty, np.zeros((0, 3), np.float32))
    h, w = d.shape
    rows, cols, layer, reach = edge_layers(background, band, soft)
    if not len(rows):
        return EdgeMatte(alpha, empty, empty, np.zeros((0, 3), np.float32))
    # The most subject-like pixel within 2 px: its colour is F.
    fy, fx = window_argmax(d, rows, cols)
    c = rgb[rows, cols, :3].astype(np.float32)
    b = bg[rows, cols].astype(np.float32)
    f = rgb[fy, fx, :3].astype(np.float32)
    # Everything below compares colours in the luma-weighted space: transform each once.
    cm, fm = (c - b) @ METRIC.T, (f - b) @ METRIC.T
    a, resid = _project(cm, fm)
    if outline is None:
        outline = _line_colour(f, b, layer)
    if outline is not None:
        # Thin lines: C on the line from B to the line colour (at least as closely as on the line to
        # F), F not as far out: F is only partly covered too, the line colour is the truth. Only
        # pixels whose F is not the line colour already (most are: the outline itself) are asked.
        o = outline.astype(np.float32)[None, :] - b
        om = o @ METRIC.T
        af, _ = _project(fm, om)
        ask = np.flatnonzero(af < 0.98)
        a_o, r_o = _project(cm[ask], om[ask])
        tol = np.maximum(10.0, 0.05 * np.sqrt((om[ask] ** 2).sum(axis=1)))
        keep = (r_o <= tol) & (r_o < resid[ask] + 2.0) & (a_o > 0)
        thin = ask[keep]
        f[thin] = o[thin] + b[thin]
        a[thin], resid[thin] = a_o[keep], r_o[keep]
    dist = d[rows, cols]
    # Inside the outermost layer, not on the line from B to F and clearly paint: another colour
    # behind the edge (light fill behind a thin outline), fully covered. The outermost layer
    # touches the backdrop: it is always a mix with it (JPEG's colour smear moves it off the line).
    other = (resid > np.maximum(10.0, 0.12 * dist)) & (dist >= paint) & (layer > 0)
    # Inside the outermost layer with its most subject-like neighbour farther out: behind a line
    # that is darker than it (fill behind an outline), fully covered.
    f_layer = np.where(background[fy, fx], -1, band - reach[fy, fx].astype(np.intp))
    other |= (layer > 0) & (f_layer < layer) & (dist >= paint)
    a = np.where(other, np.float32(1.0), a)
    # Inner layers only grow towards 1: a layer touching a covered pixel outside it is covered too,
    # and one clearly lighter than the edge outside it is other paint behind a line: covered.
    pad_a = np.zeros((h + 2) * (w + 2), np.float32)
    at1 = (rows + 1) * (w + 2) + (cols + 1)
    nb = np.array([dy * (w + 2) + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    for k in range(band):
        sel = layer == k
        if not sel.any():
            break
        if k:
            outer = pad_a[at1[sel][None, :] + nb[:, None]].max(axis=0)
            lighter = (a[sel] < outer - 0.1) & (dist[sel] >= paint)
            a[sel] = np.where((outer >= 0.9) | lighter, np.float32(1.0), np.maximum(a[sel], outer))
        pad_a[at1[sel]] = a[sel]
    alpha[rows, cols] = a
    part = (a > 0) & (a < 1)
    return EdgeMatte(alpha, rows[part], cols[part], f[part])


def _line_colour(f: np.ndarray, b: np.ndarray, layer: np.ndarray) -> np.ndarray | None:
    """The colour of the drawing's lines: among the subject colours next to the backdrop, the most
    distant tenth (a thin line's most covered pixels come closest to its true colour), their median."""
    sel = layer == 0
    if sel.sum() < 20:
        return None
    fo, bo = f[sel], b[sel]
    diff = (fo - bo) @ METRIC.T
    dist = (diff * diff).sum(axis=1)
    far = dist >= np.percentile(dist, 90)
    return np.median(fo[far], axis=0)


def _project(vm: np.ndarray, um: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of v along u (clipped to 0..1) and v's distance from the line through u, both already
    in the luma-weighted space (x @ METRIC.T)."""
    uu = np.maximum((um * um).sum(axis=1), 1e-6)
    t = (vm * um).sum(axis=1) / uu
    perp = vm - t[:, None] * um
    return np.clip(t, 0.0, 1.0).astype(np.float32), np.sqrt((perp * perp).sum(axis=1)).astype(np.float32)
