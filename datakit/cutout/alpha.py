"""Alpha from a background model: border-connected fill, holes, specks, soft anti-aliased edges.

Only background connected to the image border is removed, so white regions inside the subject
(a shirt, the whites of the eyes) survive. Regions of background colour that the subject encloses
(the gap between an arm on the hip and the body) are judged one by one with a written rule, see
`classify_enclosed`. Edge pixels get a fractional alpha from how far their colour has moved from
the background towards the nearest fully-coloured subject pixel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

HOLE_POLICIES = ("auto", "keep", "cut")


@dataclass
class AlphaResult:
    """The alpha matte (float32 0..1) and what was decided on the way."""

    alpha: np.ndarray
    threshold: float
    holes: list[dict] = field(default_factory=list)  # enclosed background-coloured regions and the decision
    specks_removed: int = 0
    warnings: list[str] = field(default_factory=list)


def background_threshold(sigma: float) -> float:
    """Colour distance below which a pixel counts as backdrop: above noise, far below any real edge."""
    # 4.5 sigma of the per-channel noise, seen as a 3-channel distance, never under 10 levels (~2% of
    # the black-to-white distance, so anti-aliased pixels above 2-3% coverage stay subject).
    return float(max(10.0, 4.5 * sigma * 1.6))


def _border_labels(labels: np.ndarray) -> np.ndarray:
    edge = np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]])
    return np.unique(edge[edge > 0])


def _ring(mask: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Pixels at chessboard distance inner < dist <= outer from `mask` (uint8 in, bool out)."""
    k = np.ones((3, 3), np.uint8)
    near = cv2.dilate(mask, k, iterations=inner) if inner else mask
    far = cv2.dilate(mask, k, iterations=outer)
    return (far > 0) & (near == 0)


def silhouette_edge(rgb: np.ndarray, bg: np.ndarray, outside: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Typical colour (as residual to the backdrop) 2 px inside the outer silhouette, and its spread.

    In drawn art this is the outline; it is what a see-through gap is bounded by too.
    """
    ring = _ring(outside.astype(np.uint8), 1, 2) & ~low
    rows, cols = np.nonzero(ring)
    if len(rows) < 20:
        return None
    step = max(1, len(rows) // 4000)  # a median needs a few thousand samples, not every ring pixel
    rows, cols = rows[::step], cols[::step]
    vals = rgb[rows, cols, :3].astype(np.float32) - bg[rows, cols]
    med = np.median(vals, axis=0)
    spread = float(np.median(np.sqrt(((vals - med) ** 2).sum(axis=1))))
    return med, spread


def classify_enclosed(
    labels: np.ndarray,
    stats: np.ndarray,
    candidates: np.ndarray,
    rgb: np.ndarray,
    bg: np.ndarray,
    sigma: float,
    *,
    edge: tuple[np.ndarray, float] | None,
    low: np.ndarray,
    threshold: float,
    min_area: int,
    policy: str,
) -> tuple[list[int], list[dict]]:
    """Decide which enclosed backdrop-coloured regions are see-through holes.

    Rule (policy "auto"): an enclosed region of at least `min_area` pixels is a hole when
    1. it is indistinguishable from the backdrop: its mean colour equals the fitted backdrop there
       within 2.5 levels per channel and its noise is no stronger than the backdrop's (or 0.4 of the
       threshold, for JPEG ringing); and
    2. it is bounded by outline only: at least 85% of the pixels 2 px around it have the colour
       found 2 px inside the outer silhouette (the outline). A gap between an arm and the body is
       seen through the subject's outer contour; a white shirt or sock painted the exact backdrop
       colour meets other paint somewhere (shading, a collar, a stripe) and is kept.
    Smaller regions (eye whites, pinholes) are always kept. A white area bounded only by outline and
    painted exactly the backdrop colour is ambiguous: it is cut, and `--holes keep` keeps it.
    "keep" keeps every enclosed region, "cut" cuts every one of at least `min_area`.
    """
    holes: list[int] = []
    report: list[dict] = []
    big = [int(k) for k in candidates if stats[k, cv2.CC_STAT_AREA] >= min_area]
    if not big or policy == "keep":
        for k in big:
            report.append(_hole_row(stats, k, "kept", "--holes keep"))
        return holes, report
    h, w = labels.shape
    for k in big:
        if policy == "cut":
            holes.append(k)
            report.append(_hole_row(stats, k, "cut", "--holes cut"))
            continue
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        pad = 4
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
        region = labels[y0:y1, x0:x1] == k
        res = rgb[y0:y1, x0:x1, :3].astype(np.float32) - bg[y0:y1, x0:x1]
        r = res[region]
        mean = r.mean(axis=0)
        noise = float(np.sqrt(((r - mean) ** 2).sum(axis=1).mean()) / 1.6)
        offset = float(np.abs(mean).max())
        same = offset <= max(2.5, 0.5 * sigma) and noise <= max(1.5 * sigma + 1.5, 0.4 * threshold)
        outline_share = None
        if same and policy == "auto":
            # JPEG ringing leaves a rim of almost-backdrop pixels around the region: take it in first,
            # so the ring lands on the outline itself.
            rim = cv2.dilate(region.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            near = np.sqrt((res * res).sum(axis=2)) < 2.0 * threshold
            grown = region | (rim & near)
            ring = _ring(grown.astype(np.uint8), 1, 2) & ~low[y0:y1, x0:x1]
            if ring.any() and edge is not None:
                med, spread = edge
                dist = np.sqrt(((res[ring] - med) ** 2).sum(axis=1))
                outline_share = float((dist <= max(48.0, 3.0 * spread)).mean())
        bounded = outline_share is None or outline_share >= 0.85
        cut = same and bounded
        if not same:
            why = f"differs from the backdrop (colour offset {offset:.1f}, noise {noise:.1f})"
        elif not bounded:
            why = f"backdrop colour but bounded by paint, not only outline ({outline_share:.0%} outline)"
        else:
            share = f", {outline_share:.0%} outline around it" if outline_share is not None else ""
            why = f"matches the backdrop (colour offset {offset:.1f}, noise {noise:.1f}{share})"
        if cut:
            holes.append(k)
        report.append(_hole_row(stats, k, "cut" if cut else "kept", why))
    return holes, report


def _hole_row(stats: np.ndarray, k: int, action: str, why: str) -> dict:
    x, y, w, h, area = (int(v) for v in stats[k, :5])
    return {"bbox": [x, y, x + w, y + h], "area": area, "action": action, "why": why}


def soft_edges(d: np.ndarray, background: np.ndarray, band: int = 3, paint: float = 30.0) -> np.ndarray:
    """Alpha 1 inside the subject, 0 on the backdrop, fractional in a narrow band at the boundary.

    A pixel mixing backdrop B and subject colour F at coverage a has distance a*|F-B| to the backdrop,
    so a = d / d_F with d_F the distance of the most subject-like pixel within 2 px (the outline or
    fill it blends into). Deeper layers may only grow towards 1, and a layer that touches a fully
    covered pixel outside it is covered too: light fill behind a dark outline stays opaque. Behind a
    thin, partly covered outline, a pixel much closer to the backdrop colour than the outline but
    clearly paint (distance >= `paint`, far above noise) is fill, not a softer edge: opaque too.
    """
    fg = ~background
    alpha = fg.astype(np.float32)
    if not fg.any() or not background.any():
        return alpha
    dmax = cv2.dilate(d, np.ones((5, 5), np.uint8))
    ratio = np.clip(d / np.maximum(dmax, 1e-3), 0.0, 1.0)
    reached = background.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    prev = np.zeros_like(alpha)  # alpha of the previous layer only (0 elsewhere)
    prev_d = np.zeros_like(d)  # distance to the backdrop of the previous layer only
    for layer in range(band):
        grown = cv2.dilate(reached, kernel)
        ring = (grown > 0) & fg & (reached == 0)
        if not ring.any():
            break
        if layer == 0:
            vals = ratio[ring]
        else:
            outer = cv2.dilate(prev, kernel)[ring]
            # A soft edge keeps moving away from the backdrop colour as it goes inward. A pixel closer
            # to the backdrop than the edge pixel outside it is other paint (light fill behind a thin
            # outline): fully covered.
            outer_d = cv2.dilate(prev_d, kernel)[ring]
            behind = (d[ring] < 0.6 * outer_d) & (d[ring] >= paint)
            vals = np.where((outer >= 0.9) | behind, 1.0, np.maximum(ratio[ring], outer))
        alpha[ring] = vals
        prev = np.zeros_like(alpha)
        prev[ring] = vals
        prev_d = np.zeros_like(d)
        prev_d[ring] = d[ring]
        reached = grown
    return alpha


def thin_strands(alpha: np.ndarray, background: np.ndarray, rgb: np.ndarray, bg: np.ndarray, outline: np.ndarray) -> int:
    """Alpha of 1-2 px strands drawn in the outline colour, by projection onto that colour.

    A strand thinner than the anti-aliasing has no fully covered pixel, so the local-maximum rule
    would call its most covered pixel opaque and leave a light core. Where the subject is at most
    ~2 px thick and a pixel lies on the line from the backdrop to the outline colour, its coverage
    is its position along that line. Returns the number of pixels changed.
    """
    norm2 = float(outline @ outline)
    if norm2 < 400.0:  # outline too close to the backdrop to measure coverage against
        return 0
    fg = (~background).astype(np.uint8)
    # Parts thicker than 2 px survive a 3x3 erosion; whatever is not within 2 px of them is thin.
    core = cv2.erode(fg, np.ones((3, 3), np.uint8))
    near_core = cv2.dilate(core, np.ones((5, 5), np.uint8))
    thin = (fg > 0) & (near_core == 0)
    if not thin.any():
        return 0
    r = rgb[thin][:, :3].astype(np.float32) - bg[thin]
    proj = (r @ outline) / norm2
    perp = np.sqrt(np.maximum(((r - proj[:, None] * outline) ** 2).sum(axis=1), 0.0))
    ok = (perp <= max(12.0, 0.15 * np.sqrt(norm2))) & (proj > 0)
    vals = alpha[thin]
    vals[ok] = np.clip(proj[ok], 0.0, 1.0)
    alpha[thin] = vals
    return int(ok.sum())


def flat_alpha(
    d: np.ndarray,
    rgb: np.ndarray,
    bg: np.ndarray,
    sigma: float,
    *,
    holes: str = "auto",
    threshold: float | None = None,
    hole_min_fraction: float = 0.0015,
) -> AlphaResult:
    """Alpha for a subject on a flat backdrop `bg` (HxWx3 float), from the distance map `d`."""
    if holes not in HOLE_POLICIES:
        raise ValueError(f"holes must be one of {HOLE_POLICIES}")
    h, w = d.shape
    t = threshold if threshold is not None else background_threshold(sigma)
    low = d < t
    outside = border_fill(low)
    report: list[dict] = []
    x, y, bw, bh = cv2.boundingRect((~outside).astype(np.uint8))
    if not (bw and bh):
        return AlphaResult(alpha=np.zeros((h, w), np.float32), threshold=t)
    # From here on only the subject's box (plus a margin of backdrop) matters: far cheaper than the frame.
    pad = 8
    ys = slice(max(0, y - pad), min(h, y + bh + pad))
    xs = slice(max(0, x - pad), min(w, x + bw + pad))
    rgb_c, bg_c, low_c = rgb[ys, xs], bg[ys, xs], low[ys, xs]
    background = outside[ys, xs].copy()
    edge = silhouette_edge(rgb_c, bg_c, background, low_c)
    enclosed = (low_c & ~background).astype(np.uint8)
    if enclosed.any():
        min_area = max(16, int(hole_min_fraction * h * w))
        n, labels, stats, _ = cv2.connectedComponentsWithStats(enclosed, connectivity=4)
        candidates = np.arange(1, n)
        if (stats[candidates, cv2.CC_STAT_AREA] >= min_area).any():
            cut, report = classify_enclosed(
                labels, stats, candidates, rgb_c, bg_c, sigma,
                edge=edge, low=low_c, threshold=t, min_area=min_area, policy=holes,
            )
            for row in report:  # boxes in frame coordinates
                row["bbox"] = [row["bbox"][0] + xs.start, row["bbox"][1] + ys.start, row["bbox"][2] + xs.start, row["bbox"][3] + ys.start]
            if cut:
                background |= np.isin(labels, cut)
    alpha = np.zeros((h, w), np.float32)
    bgc = background
    if True:
        # Specks: tiny subject-coloured islands (dust, JPEG blocks) are backdrop. 8-connectivity so a
        # thin diagonal strand stays one piece with the subject it belongs to.
        speck_area = max(3, int(1e-5 * h * w))
        nf, flabels, fstats, _ = cv2.connectedComponentsWithStats((~bgc).astype(np.uint8), connectivity=8)
        small = np.flatnonzero(fstats[:, cv2.CC_STAT_AREA] < speck_area)
        small = small[small > 0]
        if len(small):
            bgc |= np.isin(flabels, small)
        ac = soft_edges(d[ys, xs], bgc, paint=3.0 * t)
        if edge is not None:
            thin_strands(ac, bgc, rgb[ys, xs], bg[ys, xs], edge[0].astype(np.float32))
        alpha[ys, xs] = ac
    result = AlphaResult(alpha=alpha, threshold=t, holes=report, specks_removed=int(len(small)))
    cut_holes = [r for r in report if r["action"] == "cut"]
    if cut_holes:
        biggest = max(r["area"] for r in cut_holes)
        if biggest > 0.02 * h * w:
            result.warnings.append(
                f"an enclosed region of {biggest} px matching the backdrop was made transparent (see-through gap); "
                "use --holes keep if it is part of the subject"
            )
    return result


def border_fill(low: np.ndarray) -> np.ndarray:
    """Pixels of `low` (bool) 4-connected to the image border: one flood fill from a 1 px frame.

    4-connectivity: the backdrop must not leak between two diagonal pixels of a 1 px line.
    """
    h, w = low.shape
    framed = np.ones((h + 2, w + 2), np.uint8)
    framed[1:-1, 1:-1] = low
    mask = np.zeros((h + 4, w + 4), np.uint8)
    cv2.floodFill(framed, mask, (0, 0), 2, loDiff=0, upDiff=0, flags=4)
    return framed[1:-1, 1:-1] == 2


def _border_connected_area(low: np.ndarray) -> int:
    return int(border_fill(low).sum())


def leak_check(d: np.ndarray, threshold: float, subject_area: int, gap: int = 3) -> float:
    """How much of the subject a backdrop fill leaking through outline gaps up to `gap` px removed.

    Closing the subject mask bridges small gaps; filling the backdrop from the border again shows how
    much less backdrop there is. A gain that is large next to the subject means the fill ran inside
    through a gap in the outline. Returned as a fraction of the subject's area. Runs at half
    resolution: it is a plausibility check, and a quarter of the pixels makes it cheap.
    """
    if subject_area <= 0:
        return 0.0
    h, w = d.shape
    scale = 2 if min(h, w) >= 256 else 1
    low = d < threshold
    if scale > 1:
        # A half-res pixel is backdrop only when all four of its pixels are: gaps never widen.
        low = cv2.resize(low.astype(np.uint8) * 255, (w // scale, h // scale), interpolation=cv2.INTER_AREA) == 255
    before = _border_connected_area(low)
    r = max(1, round(gap / scale))
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    closed = cv2.morphologyEx((~low).astype(np.uint8), cv2.MORPH_CLOSE, k)
    after = _border_connected_area(closed == 0)
    return max(0.0, (before - after) * scale * scale / subject_area)
