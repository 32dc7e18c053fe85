"""Alpha from a backdrop estimate: border-connected fill, enclosed regions, specks, soft edges.

Only backdrop connected to the image border is removed, so white regions inside the subject (a
shirt, the whites of the eyes) survive. Enclosed regions of backdrop colour are numbered and cut
only on evidence (datakit.cutout.holes). Edge pixels get their alpha and colour from
datakit.cutout.edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from datakit.cutout.edges import edge_matte
from datakit.cutout.holes import HOLE_POLICIES, HoleEvidence, decide_holes, enclosed_components
from datakit.cutout.pixels import points
from datakit.cutout.translucent import find_layers

@dataclass
class AlphaResult:
    """The alpha matte (float32 0..1) of a box of the frame and what was decided on the way."""

    alpha: np.ndarray
    threshold: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (x0, y0, x1, y1) the matte covers; 0 outside it
    holes: list[dict] = field(default_factory=list)  # enclosed background-coloured regions and the decision
    specks_removed: int = 0
    warnings: list[str] = field(default_factory=list)
    # Partly covered pixels (in the matte's box) and their subject colour.
    edge_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))
    edge_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))
    edge_colour: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    translucent: list[dict] = field(default_factory=list)  # translucent layers found (colour, opacity, votes, pixels)


# Backdrop-coloured pixels joined to the border through pixels below LOOSE x the threshold are backdrop.
LOOSE = 2.5


def background_threshold(sigma: float) -> float:
    """Colour distance below which a pixel counts as backdrop: above noise, far below any real edge."""
    # 4.5 sigma of the per-channel noise, seen as a 3-channel distance, never under 10 levels (~2% of
    # the black-to-white distance, so anti-aliased pixels above 2-3% coverage stay subject).
    return float(max(10.0, 4.5 * sigma * 1.6))


def _components(mask: np.ndarray, connectivity: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Labels of the connected parts of a bool mask and their areas (label 0, the rest, counts 0).

    OpenCV's labelling alone is ~10x faster than its labelling with statistics; the areas come from
    counting labels, and a mask in one piece (the usual subject) needs no counting at all.
    """
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=connectivity)
    if n <= 2:
        areas = np.zeros(n, np.intp)
        if n == 2:
            areas[1] = cv2.countNonZero(mask.view(np.uint8))
        return n, labels, areas
    areas = np.bincount(labels.reshape(-1), minlength=n)
    areas[0] = 0
    return n, labels, areas


def flat_alpha(
    d: np.ndarray,
    rgb: np.ndarray,
    bg: np.ndarray,
    sigma: float,
    *,
    holes: str = "auto",
    threshold: float | None = None,
    hole_min_fraction: float = 0.0015,
    frame: tuple[int, int] | None = None,
    evidence: HoleEvidence | None = None,
) -> AlphaResult:
    """Alpha for a subject on a flat backdrop `bg` (HxWx3 float), from the distance map `d`.

    `d`, `rgb` and `bg` may cover only a region of a larger frame of size `frame` (height, width),
    as long as every pixel outside the region is backdrop: those count as joined to the border. The
    matte returned covers `result.box` of the region (the subject with a margin); 0 elsewhere.
    Enclosed regions of backdrop colour are numbered and decided by datakit.cutout.holes (`evidence`:
    the user's holes-file entry and a segmenter's mask over the same region).
    """
    if holes not in HOLE_POLICIES:
        raise ValueError(f"holes must be one of {HOLE_POLICIES}")
    h, w = d.shape
    fh, fw = frame or (h, w)
    t = threshold if threshold is not None else background_threshold(sigma)
    if not d.size:
        return AlphaResult(alpha=np.zeros((0, 0), np.float32), threshold=t)
    low = d < t
    min_area = max(16, int(hole_min_fraction * fh * fw))
    outside = border_fill(low)
    # Backdrop cut off from the border only by noise (JPEG ringing on both sides of a narrow
    # channel) is still the backdrop: an area of backdrop colour that a looser threshold joins to
    # the border counts too, when it is as large as a hole may be (the odd pixels of a pale
    # paint close to the backdrop colour are not).
    loose = d < LOOSE * t
    joined = border_fill(loose)
    extra = cv2.bitwise_and(low.view(np.uint8), cv2.bitwise_xor(joined.view(np.uint8), outside.view(np.uint8))).view(bool)
    if cv2.countNonZero(extra.view(np.uint8)):
        ex, ey, ew, eh = cv2.boundingRect(extra.view(np.uint8))
        box = (slice(max(0, ey - 4), ey + eh + 4), slice(max(0, ex - 4), ex + ew + 4))
        part = extra[box]
        n, lab = cv2.connectedComponents(part.view(np.uint8), connectivity=4)
        join = np.bincount(lab.reshape(-1), minlength=n) >= min_area
        # ... and any pocket at most 3 px of near-backdrop colour away from the open backdrop.
        near = outside[box].view(np.uint8)
        for _ in range(3):
            near = cv2.dilate(near, np.ones((3, 3), np.uint8)) & loose[box].view(np.uint8)
        join[np.unique(lab[near.view(bool) & part])] = True
        join[0] = False
        outside[box] |= join[lab]
    report: list[dict] = []
    x, y, bw, bh = cv2.boundingRect(np.logical_not(outside).view(np.uint8))
    if not (bw and bh):
        return AlphaResult(alpha=np.zeros((0, 0), np.float32), threshold=t)
    # From here on only the subject's box (plus a margin of backdrop) matters: far cheaper than the frame.
    pad = 8
    ys = slice(max(0, y - pad), min(h, y + bh + pad))
    xs = slice(max(0, x - pad), min(w, x + bw + pad))
    rgb_c, bg_c, low_c = rgb[ys, xs], bg[ys, xs], low[ys, xs]
    background = outside[ys, xs].copy()
    # Pixels a little off the backdrop colour but joined to it (ringing, the faint end of an edge):
    # edge pixels, but they do not push the subject's soft edge inward.
    soft = joined[ys, xs] & ~low_c
    # Enclosed regions: backdrop-coloured pixels the subject walls off, with the noisy rim around
    # them (ringing shrinks a small gap's strictly backdrop-coloured core).
    enclosed = loose[ys, xs] & ~joined[ys, xs]
    # No enclosed region can reach min_area when all of them together do not: skip the labelling.
    if cv2.countNonZero(enclosed.view(np.uint8)) >= min_area:
        labels, big, stats = enclosed_components(enclosed, min_area)
        # A region is backdrop-coloured when half of it is within twice the threshold (JPEG darkens
        # a small gap walled in by dark lines by several levels).
        near = np.bincount(labels[enclosed & (d[ys, xs] < 2.0 * t)], minlength=len(stats))
        big = np.array([k for k in big if 2 * near[k] >= stats[k, cv2.CC_STAT_AREA]], np.intp)
        if len(big):
            if evidence is not None and evidence.mask is not None:
                evidence = HoleEvidence(evidence.choice, evidence.mask[ys, xs], evidence.model)
            cut, report = decide_holes(labels, stats, big, rgb_c, bg_c, policy=holes, evidence=evidence)
            for row in report:  # boxes and outlines in the coordinates of the region given
                row["bbox"] = [row["bbox"][0] + xs.start, row["bbox"][1] + ys.start, row["bbox"][2] + xs.start, row["bbox"][3] + ys.start]
                row["contour"] = [[px + xs.start, py + ys.start] for px, py in row["contour"]]
            for k in cut:  # each cut region within its own box: cheaper than a pass over the crop
                cx, cy, cw, ch = (int(v) for v in stats[k, :4])
                box = (slice(cy, cy + ch), slice(cx, cx + cw))
                # All of it is backdrop but its rim, where pixels off the backdrop colour may be
                # the anti-aliased edge of the paint around it: those stay soft edge pixels.
                region = labels[box] == k
                inner = cv2.erode(region.view(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).view(bool)
                background[box] |= region & (low_c[box] | inner)
                soft[box] |= region & ~background[box]
    # Specks: tiny subject-coloured islands (dust, JPEG blocks), and islands that nowhere stand
    # clearly off the backdrop (paper fibres, ringing), are backdrop. 8-connectivity so a thin
    # diagonal strand stays one piece with the subject it belongs to.
    speck_area = max(3, int(1e-5 * fh * fw))
    n, flabels, fareas = _components(np.logical_not(background), connectivity=8)
    lut = np.zeros(n, bool)
    lut[1:] = fareas[1:] < speck_area
    if n > 2:
        strong = np.bincount(flabels[d[ys, xs] >= LOOSE * t], minlength=n) > 0
        lut[1:] |= ~strong[1:]
    small = np.flatnonzero(lut)
    if len(small):
        background |= lut[flabels]
    # The soft rim is the backdrop's: only pixels next to it (a pale region touching the frame is not).
    soft &= cv2.dilate(background.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
    matte = edge_matte(d[ys, xs], background, rgb_c, bg_c, None, paint=3.0 * t, soft=soft & ~background)
    alpha, er, ec, ecol = matte.alpha, matte.rows, matte.cols, matte.colour
    layers, changed = find_layers(rgb_c, bg_c, alpha, background, threshold=t, frame=(fh, fw))
    if changed is not None:
        # The layers' pixels get their opacity and colour; other edge pixels keep theirs.
        alpha[changed.rows, changed.cols] = changed.alpha
        mark = np.zeros(alpha.shape, bool)
        mark[changed.rows, changed.cols] = True
        stay = ~mark[er, ec]
        er, ec = np.concatenate([er[stay], changed.rows]), np.concatenate([ec[stay], changed.cols])
        ecol = np.concatenate([ecol[stay], changed.colour])
    result = AlphaResult(
        alpha=alpha,
        edge_rows=er,
        edge_cols=ec,
        edge_colour=ecol,
        translucent=[layer.describe() for layer in layers],
        threshold=t,
        holes=report,
        specks_removed=int(len(small)),
        box=(xs.start, ys.start, xs.stop, ys.stop),
    )
    return result


def border_fill(low: np.ndarray) -> np.ndarray:
    """Pixels of `low` (bool) 4-connected to the image border: one flood fill from a 1 px frame.

    4-connectivity: the backdrop must not leak between two diagonal pixels of a 1 px line.
    """
    framed = cv2.copyMakeBorder(low.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=1)
    h, w = framed.shape
    mask = np.zeros((h + 2, w + 2), np.uint8)
    cv2.floodFill(framed, mask, (0, 0), 2, loDiff=0, upDiff=0, flags=4)
    return framed[1:-1, 1:-1] == 2


def _border_connected_area(low: np.ndarray) -> int:
    return int(border_fill(low).sum())


def leak_check(
    d: np.ndarray,
    threshold: float,
    subject_area: int,
    gap: int = 3,
    *,
    frame: tuple[int, int] | None = None,
    origin: tuple[int, int] = (0, 0),
) -> float:
    """How much of the subject a backdrop fill leaking through outline gaps up to `gap` px removed.

    Closing the subject mask bridges small gaps; filling the backdrop from the border again shows how
    much less backdrop there is. A gain that is large next to the subject means the fill ran inside
    through a gap in the outline. Returned as a fraction of the subject's area. Runs at half
    resolution: it is a plausibility check, and a quarter of the pixels makes it cheap.

    `d` may cover only a region of a frame of size `frame` at `origin` (x, y), all backdrop outside.
    """
    if subject_area <= 0 or not d.size:
        return 0.0
    h, w = d.shape
    fh, fw = frame or (h, w)
    scale = 2 if min(fh, fw) >= 256 else 1
    low = d < threshold
    if scale > 1:
        # Line the region up with the frame's 2x2 blocks by taking in the backdrop pixel next to it.
        x0, y0 = origin
        left, top = x0 % 2, y0 % 2
        right = (x0 + w) % 2 if x0 + w < fw else 0
        bottom = (y0 + h) % 2 if y0 + h < fh else 0
        if left or top or right or bottom:
            framed = cv2.copyMakeBorder(low.view(np.uint8), top, bottom, left, right, cv2.BORDER_CONSTANT, value=1)
            low = framed.view(bool)
        lh, lw = low.shape
        # A half-res pixel is backdrop only when all four of its pixels are: gaps never widen.
        low = cv2.resize(low.view(np.uint8) * 255, (lw // scale, lh // scale), interpolation=cv2.INTER_AREA) == 255
    before = _border_connected_area(low)
    r = max(1, round(gap / scale))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    closed = cv2.morphologyEx(np.logical_not(low).view(np.uint8), cv2.MORPH_CLOSE, k)
    after = _border_connected_area(closed == 0)
    return max(0.0, (before - after) * scale * scale / subject_area)
