"""Translucent parts (a veil, a glass): found where the layer crosses other paint, given alpha below 1.

Over the backdrop a translucent layer of colour F and opacity a shows C1 = a F + (1 - a) B: on its
own that is indistinguishable from opaque paint of colour C1. Where the same layer crosses opaque
paint X (the veil over the hair, the glass over the hand) it shows Q = a F + (1 - a) X, and the
unveiled paint X lies right across the layer's edge. So every pair of neighbouring flat colours
(Q, X) inside the subject with

    Q - C1 = s (X - B),   s = 1 - a,

is a vote for the layer's opacity. A candidate C1 (a flat colour touching the backdrop) becomes a
layer only when many pairs agree on s and F = (C1 - s B) / (1 - s) is a colour that exists; then
the pixels showing the layer over the backdrop get alpha a and their own colour solved from
C = a F + (1 - a) B, and the soft edge around them is scaled by a.

Opaque drawings rarely produce such agreeing pairs by chance: the pairs must be flat on both sides,
fit the relation within a few levels in every channel, and agree with each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datakit.cutout.background import METRIC
from datakit.cutout.pixels import points

# Opacities 0.1 .. 0.85 are looked for (s = 1 - opacity): nearly opaque paint is opaque.
S_RANGE = (0.15, 0.9)
# Pairs of pixels this far apart across an edge inside the subject are compared (across an
# anti-aliased edge, or a line drawn along the layer's edge).
_OFFSETS = tuple((dy * k, dx * k) for k in (3, 4, 5, 6) for dy, dx in ((0, 2), (2, 0), (1, 1), (1, -1)))
# At most this many pairs are voted with.
MAX_PAIRS = 20000
# Larger images are searched at a reduced size (the longer side about this): the layers are areas.
SEARCH_SIZE = 192


@dataclass
class Layer:
    """A translucent layer found in the subject."""

    colour: np.ndarray  # F, RGB 0..255
    opacity: float  # a
    votes: int  # pairs of neighbouring colours that agreed on it
    pixels: int = 0  # pixels over the backdrop given alpha a

    def describe(self) -> dict:
        """For the manifest."""
        return {
            "colour": [int(v) for v in np.clip(np.rint(self.colour), 0, 255)],
            "opacity": round(float(self.opacity), 3),
            "votes": int(self.votes),
            "pixels": int(self.pixels),
        }


def _dist(v: np.ndarray) -> np.ndarray:
    m = v @ METRIC.T
    return np.sqrt((m * m).sum(axis=-1))


def _flat(rgb: np.ndarray, limit: float) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood varies by at most `limit` levels in every channel."""
    k = np.ones((3, 3), np.uint8)
    spread = _channel_max(cv2.subtract(cv2.dilate(rgb, k), cv2.erode(rgb, k)))
    return spread <= limit


def _candidates(rgb, cand_mask, min_pixels):
    """Flat colours a few pixels inside the silhouette: (C1, pixel rows, cols) for each, most frequent first."""
    rows, cols = points(cand_mask)
    if len(rows) < min_pixels:
        return []
    c = rgb[rows, cols, :3].astype(np.int32)
    key = (c[:, 0] // 12) * 4096 + (c[:, 1] // 12) * 64 + c[:, 2] // 12
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    out = []
    for j in np.argsort(-counts)[:6]:
        if counts[j] < min_pixels:
            break
        sel = inverse == j
        out.append((np.median(c[sel], axis=0).astype(np.float32), rows[sel], cols[sel]))
    return out


def _channel_max(img: np.ndarray) -> np.ndarray:
    """Largest of the three channels per pixel (OpenCV: far cheaper than numpy's reduction)."""
    c = cv2.split(img)
    return cv2.max(cv2.max(c[0], c[1]), c[2])


def _pairs(rgb: np.ndarray, usable: np.ndarray, min_step: float) -> tuple[np.ndarray, np.ndarray]:
    """Colours of pixel pairs (both usable: flat paint) a few px apart with an edge between them."""
    h, w = usable.shape
    u8 = usable.view(np.uint8)
    firsts, seconds = [], []
    for dy, dx in _OFFSETS:
        y0, y1 = max(0, -dy), h - max(0, dy)
        x0, x1 = max(0, -dx), w - max(0, dx)
        if y1 <= y0 or x1 <= x0:
            continue
        # Most pairs lie inside one flat area: a cheap 8-bit screen keeps only those that differ.
        step = _channel_max(cv2.absdiff(rgb[y0:y1, x0:x1], rgb[y0 + dy : y1 + dy, x0 + dx : x1 + dx]))
        keep = cv2.bitwise_and(u8[y0:y1, x0:x1], u8[y0 + dy : y1 + dy, x0 + dx : x1 + dx])
        keep = cv2.bitwise_and(keep, cv2.compare(step, min_step / 3.0, cv2.CMP_GE))
        r, c = points(keep)
        if not len(r):
            continue
        p = rgb[r + y0, c + x0, :3].astype(np.float32)
        q = rgb[r + y0 + dy, c + x0 + dx, :3].astype(np.float32)
        differ = _dist(p - q) >= min_step
        firsts += [p[differ], q[differ]]
        seconds += [q[differ], p[differ]]
    if not firsts:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    q, x = np.concatenate(firsts), np.concatenate(seconds)
    pick = slice(None, None, max(1, len(q) // MAX_PAIRS))  # an even sample: the vote needs thousands, not all
    return q[pick], x[pick]


def _vote(q: np.ndarray, x: np.ndarray, c1: np.ndarray, b1: np.ndarray, min_votes: int, tol: float) -> tuple[float, int] | None:
    """The opacity the pairs agree on for the candidate (C1, B1), with its votes, or None."""
    xb = x - b1
    qc = q - c1
    xm, qm = xb @ METRIC.T, qc @ METRIC.T
    norm = (xm * xm).sum(axis=1)
    ok = (norm >= 30.0**2) & ((qm * qm).sum(axis=1) >= 8.0**2)
    if ok.sum() < min_votes:
        return None
    xm, qm, norm, xb_ok, qc_ok = xm[ok], qm[ok], norm[ok], xb[ok], qc[ok]
    s = (qm * xm).sum(axis=1) / norm
    # The relation must hold in every channel, not just in the weighted distance.
    resid = np.abs(qc_ok - s[:, None] * xb_ok).max(axis=1)
    good = (resid <= tol) & (s >= S_RANGE[0]) & (s <= S_RANGE[1])
    if good.sum() < min_votes:
        return None
    hist, edges = np.histogram(s[good], bins=40, range=S_RANGE)
    window = np.convolve(hist, np.ones(3, int), mode="same")
    j = int(np.argmax(window))
    if window[j] < min_votes:
        return None
    lo, hi = edges[max(0, j - 1)], edges[min(len(edges) - 1, j + 2)]
    near = s[good][(s[good] >= lo) & (s[good] <= hi)]
    return float(np.median(near)), int(len(near))


@dataclass
class LayerPixels:
    """What the layers change: alpha and colour at listed pixels of the box."""

    rows: np.ndarray
    cols: np.ndarray
    alpha: np.ndarray
    colour: np.ndarray  # n x 3


def _stray(rgb: np.ndarray, solid: np.ndarray) -> float:
    """How far pixels of solid paint stray from their 3x3 mean (median, levels): ~0 for clean art,
    a few levels for JPEG."""
    k = np.ones((3, 3), np.uint8)
    inner = cv2.erode(solid.view(np.uint8), k)
    if not cv2.countNonZero(inner):
        return 0.0
    diff = _channel_max(cv2.absdiff(rgb[:, :, :3], cv2.blur(rgb[:, :, :3], (3, 3))))
    return float(np.percentile(diff[inner.view(bool)], 75))


def find_layers(
    rgb: np.ndarray,
    bg: np.ndarray,
    alpha: np.ndarray,
    background: np.ndarray,
    *,
    threshold: float,
    frame: tuple[int, int] | None = None,
) -> tuple[list[Layer], LayerPixels | None]:
    """Translucent layers over the backdrop, and the alpha and colour they give their pixels (None: none).

    The arrays may cover a box of a larger frame (height, width): the search's scale follows the
    frame, so a box gives the same answer as the whole frame.
    """
    h, w = alpha.shape
    solid = (alpha >= 1.0) & ~background
    if cv2.countNonZero(solid.view(np.uint8)) < 64:
        return [], None
    fh, fw = frame or (h, w)
    k = max(1, round(max(fh, fw) / SEARCH_SIZE))
    if k > 1:  # search a reduced copy: block means, blocks wholly solid, blocks mostly backdrop
        size = (max(1, w // k), max(1, h // k))
        crop = (slice(0, size[1] * k), slice(0, size[0] * k))
        s_rgb = cv2.resize(rgb[crop][:, :, :3], size, interpolation=cv2.INTER_AREA)
        s_solid = cv2.erode(solid[crop].view(np.uint8), np.ones((k, k), np.uint8))[k // 2 :: k, k // 2 :: k].view(bool)
        s_back = background[crop][k // 2 :: k, k // 2 :: k]
        s_solid, s_back = s_solid[: size[1], : size[0]], np.ascontiguousarray(s_back[: size[1], : size[0]])
    else:
        s_rgb, s_solid, s_back = rgb[:, :, :3], solid, background
    # Flatness and the fit of a vote allow for the image's noise (JPEG), as seen at the search's scale.
    tol = float(np.clip(4.0 + 1.5 * _stray(s_rgb, s_solid), 4.0, 10.0))
    s_rgb = cv2.blur(s_rgb, (3, 3))
    usable = s_solid & _flat(s_rgb, tol)
    b8 = s_back.view(np.uint8)
    near = cv2.dilate(b8, np.ones((9, 9), np.uint8)).view(bool) & ~cv2.dilate(b8, np.ones((5, 5), np.uint8)).view(bool)
    scale = max(fh, fw) / 192.0
    min_votes = max(30, int(20 * min(scale, 3.0)))
    cands = _candidates(s_rgb, usable & near, 12)
    if not cands:
        return [], None
    q, x = _pairs(s_rgb, usable & ~near, min_step=25.0)
    if len(q) < min_votes:
        return [], None
    layers: list[Layer] = []
    taken = np.zeros((h, w), bool)
    out_alpha = alpha.copy()
    colour: dict[int, np.ndarray] = {}
    for c1, crow, ccol in cands:
        crow, ccol = np.minimum(crow * k + k // 2, h - 1), np.minimum(ccol * k + k // 2, w - 1)
        if taken[crow, ccol].mean() > 0.5:
            continue  # the same layer as one already found (its colour drifts with the backdrop)
        b1 = np.median(bg[crow, ccol], axis=0).astype(np.float32)
        found = _vote(q, x, c1, b1, min_votes, tol)
        if found is None:
            continue
        s, votes = found
        a = 1.0 - s
        f = (c1 - s * b1) / a
        if (f < -10).any() or (f > 265).any():
            continue  # no real colour would show C1 over B at this opacity
        f = np.clip(f, 0, 255)
        # The layer over the backdrop: solid pixels showing a F + s B(x) there, joined to the candidate's pixels.
        sr, sc = points(solid)
        pred = a * f + s * bg[sr, sc]
        close = _dist(rgb[sr, sc, :3].astype(np.float32) - pred) <= max(10.0, threshold, 2.0 * tol)
        match = np.zeros((h, w), np.uint8)
        match[sr[close], sc[close]] = 1
        n, labels = cv2.connectedComponents(match, connectivity=4)
        keep = np.zeros(n, bool)
        keep[np.unique(labels[crow, ccol])] = True
        keep[0] = False
        region = keep[labels]
        rr, rc = points(region)
        if not len(rr):
            continue
        taken |= region
        out_alpha[rr, rc] = a
        for r, c, col in zip(rr, rc, np.clip((rgb[rr, rc, :3].astype(np.float32) - s * bg[rr, rc]) / a, 0, 255)):
            colour[r * w + c] = col
        # Its soft edge against the backdrop mixes B with the layer as it shows there: scale by a.
        rim = cv2.dilate(region.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) & (alpha > 0) & (alpha < 1)
        er, ec = points(rim)
        out_alpha[er, ec] = alpha[er, ec] * a
        for r, c in zip(er, ec):
            colour[r * w + c] = f
        layers.append(Layer(colour=f, opacity=a, votes=votes, pixels=len(rr)))
    if not layers:
        return [], None
    idx = np.fromiter(colour.keys(), np.intp, len(colour))
    rows, cols = idx // w, idx % w
    return layers, LayerPixels(rows, cols, out_alpha[rows, cols], np.array(list(colour.values()), np.float32).reshape(-1, 3))
