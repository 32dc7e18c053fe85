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

from datakit.cutout.pixels import points

HOLE_POLICIES = ("auto", "keep", "cut")


@dataclass
class AlphaResult:
    """The alpha matte (float32 0..1) of a box of the frame and what was decided on the way."""

    alpha: np.ndarray
    threshold: float
    box: tuple[int, int, int, int] = (0, 0, 0, 0)  # (x0, y0, x1, y1) the matte covers; 0 outside it
    holes: list[dict] = field(default_factory=list)  # enclosed background-coloured regions and the decision
    specks_removed: int = 0
    warnings: list[str] = field(default_factory=list)


def background_threshold(sigma: float) -> float:
    """Colour distance below which a pixel counts as backdrop: above noise, far below any real edge."""
    # 4.5 sigma of the per-channel noise, seen as a 3-channel distance, never under 10 levels (~2% of
    # the black-to-white distance, so anti-aliased pixels above 2-3% coverage stay subject).
    return float(max(10.0, 4.5 * sigma * 1.6))


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
    kernel = np.ones((3, 3), np.uint8)
    near = cv2.dilate(outside.view(np.uint8), kernel)
    far = cv2.dilate(near, kernel)
    ring = cv2.subtract(cv2.subtract(far, near), low.view(np.uint8))  # 2 px out, not backdrop-coloured
    rows, cols = points(ring)
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

    Only the `band` layers of pixels next to the backdrop change, a few percent of the frame: they
    are handled as a list of pixels, their neighbours looked up by offsets in a padded buffer.
    """
    bg8 = background.view(np.uint8)  # 0/1
    alpha = np.float32(1.0) - bg8
    if cv2.countNonZero(bg8) in (0, bg8.size):
        return alpha
    h, w = bg8.shape
    # Layer k (0-based) holds the subject pixels at chessboard distance k + 1 from the backdrop: each
    # growth of the backdrop by 1 px reaches them from step k + 1 on, so the count of steps that
    # reach a pixel names its layer.
    kernel = np.ones((3, 3), np.uint8)
    grown, reach_count = bg8, np.zeros_like(bg8)
    for _ in range(band):
        grown = cv2.dilate(grown, kernel)
        reach_count += grown
    rows, cols = points(cv2.subtract(grown, bg8))
    if not len(rows):
        return alpha
    layer_of = band - reach_count[rows, cols]
    dist = d[rows, cols].astype(np.float32)
    dmax = cv2.dilate(d, np.ones((5, 5), np.uint8))[rows, cols]
    ratio = np.clip(dist / np.maximum(dmax, 1e-3), 0.0, 1.0)
    # Neighbour lookups: the previous layer's alpha and distance scattered into zeroed buffers one
    # pixel larger on each side, read back at the 8 offsets around each pixel of the next layer.
    wp = w + 2
    at = (rows + 1) * wp + (cols + 1)
    offsets = [dy * wp + dx for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    prev_a = np.zeros((h + 2) * wp, np.float32)
    prev_d = np.zeros((h + 2) * wp, np.float32)
    prev = None
    for layer in range(band):
        sel = layer_of == layer
        if not sel.any():
            break
        if layer:
            here = at[sel]
            outer = np.max([prev_a[here + o] for o in offsets], axis=0)
            outer_d = np.max([prev_d[here + o] for o in offsets], axis=0)
            r, di = ratio[sel], dist[sel]
            # A soft edge keeps moving away from the backdrop colour as it goes inward. A pixel closer
            # to the backdrop than the edge pixel outside it is other paint (light fill behind a thin
            # outline): fully covered.
            behind = (di < 0.6 * outer_d) & (di >= paint)
            vals = np.where((outer >= 0.9) | behind, np.float32(1.0), np.maximum(r, outer))
            prev_a[prev] = 0.0
            prev_d[prev] = 0.0
        else:
            vals = ratio[sel]
        alpha[rows[sel], cols[sel]] = vals
        prev = at[sel]
        prev_a[prev] = vals
        prev_d[prev] = dist[sel]
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
    fg = 1 - background.view(np.uint8)
    # Parts thicker than 2 px survive a 3x3 erosion; whatever is not within 2 px of them is thin.
    core = cv2.erode(fg, np.ones((3, 3), np.uint8))
    near_core = cv2.dilate(core, np.ones((5, 5), np.uint8))
    rows, cols = points(cv2.compare(fg, near_core, cv2.CMP_GT))
    if not len(rows):
        return 0
    r = rgb[rows, cols, :3].astype(np.float32) - bg[rows, cols]
    proj = (r @ outline) / norm2
    perp = np.sqrt(np.maximum(((r - proj[:, None] * outline) ** 2).sum(axis=1), 0.0))
    ok = (perp <= max(12.0, 0.15 * np.sqrt(norm2))) & (proj > 0)
    alpha[rows[ok], cols[ok]] = np.clip(proj[ok], 0.0, 1.0)
    return int(ok.sum())


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


def _enclosed_components(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (4-connected) of a sparse bool mask, the labels of at least `min_area` pixels, and
    OpenCV-style stats rows (x, y, w, h, area) for them (other rows: area only).

    Areas and boxes come from the mask's pixel list: far cheaper than passes over the image.
    """
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=4)
    rows, cols = points(mask)
    lab = labels[rows, cols]
    areas = np.bincount(lab, minlength=n)
    areas[0] = 0
    big = np.flatnonzero(areas >= min_area)
    stats = np.zeros((n, 5), np.int64)
    stats[:, cv2.CC_STAT_AREA] = areas
    for k in big:
        sel = lab == k
        r, c = rows[sel], cols[sel]
        stats[k, :4] = (c.min(), r.min(), c.max() - c.min() + 1, r.max() - r.min() + 1)
    return labels, big, stats


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
) -> AlphaResult:
    """Alpha for a subject on a flat backdrop `bg` (HxWx3 float), from the distance map `d`.

    `d`, `rgb` and `bg` may cover only a region of a larger frame of size `frame` (height, width),
    as long as every pixel outside the region is backdrop: those count as joined to the border. The
    matte returned covers `result.box` of the region (the subject with a margin); 0 elsewhere.
    """
    if holes not in HOLE_POLICIES:
        raise ValueError(f"holes must be one of {HOLE_POLICIES}")
    h, w = d.shape
    fh, fw = frame or (h, w)
    t = threshold if threshold is not None else background_threshold(sigma)
    if not d.size:
        return AlphaResult(alpha=np.zeros((0, 0), np.float32), threshold=t)
    low = d < t
    outside = border_fill(low)
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
    edge = silhouette_edge(rgb_c, bg_c, background, low_c)
    enclosed = low_c & ~background
    min_area = max(16, int(hole_min_fraction * fh * fw))
    # No enclosed region can reach min_area when all of them together do not: skip the labelling.
    if cv2.countNonZero(enclosed.view(np.uint8)) >= min_area:
        labels, big, stats = _enclosed_components(enclosed, min_area)
        if len(big):
            cut, report = classify_enclosed(
                labels, stats, big, rgb_c, bg_c, sigma,
                edge=edge, low=low_c, threshold=t, min_area=min_area, policy=holes,
            )
            for row in report:  # boxes in the coordinates of the region given
                row["bbox"] = [row["bbox"][0] + xs.start, row["bbox"][1] + ys.start, row["bbox"][2] + xs.start, row["bbox"][3] + ys.start]
            for k in cut:  # each cut region within its own box: cheaper than a pass over the crop
                cx, cy, cw, ch = (int(v) for v in stats[k, :4])
                background[cy : cy + ch, cx : cx + cw] |= labels[cy : cy + ch, cx : cx + cw] == k
    # Specks: tiny subject-coloured islands (dust, JPEG blocks) are backdrop. 8-connectivity so a
    # thin diagonal strand stays one piece with the subject it belongs to.
    speck_area = max(3, int(1e-5 * fh * fw))
    n, flabels, fareas = _components(np.logical_not(background), connectivity=8)
    small = np.flatnonzero(fareas[1:] < speck_area) + 1
    if len(small):
        lut = np.zeros(n, bool)
        lut[small] = True
        background |= lut[flabels]
    alpha = soft_edges(d[ys, xs], background, paint=3.0 * t)
    if edge is not None:
        thin_strands(alpha, background, rgb_c, bg_c, edge[0].astype(np.float32))
    result = AlphaResult(
        alpha=alpha,
        threshold=t,
        holes=report,
        specks_removed=int(len(small)),
        box=(xs.start, ys.start, xs.stop, ys.stop),
    )
    cut_holes = [r for r in report if r["action"] == "cut"]
    if cut_holes:
        biggest = max(r["area"] for r in cut_holes)
        if biggest > 0.02 * fh * fw:
            result.warnings.append(
                f"an enclosed region of {biggest} px matching the backdrop was made transparent (see-through gap); "
                "use --holes keep if it is part of the subject"
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
