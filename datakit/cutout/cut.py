"""Cut one subject out of one image: flat-backdrop matte or a segmenter's mask, then shared finishing.

The flat method estimates the backdrop per pixel (datakit.cutout.backdrop), builds the matte with
its edge colours and translucent layers (datakit.cutout.alpha), and numbers the enclosed regions
(datakit.cutout.holes). Both methods end in `finish`: quantise alpha, give edge pixels their
subject colour (or decontaminate them against the backdrop), bleed RGB under transparent pixels,
trim. The result carries what the manifest records (crop box, backdrop, regions, coverage,
confidence and warnings).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from datakit.cutout.alpha import background_threshold, flat_alpha, leak_check
from datakit.cutout.backdrop import BackdropField, estimate_backdrop, estimate_from_mask
from datakit.cutout.background import distance_region
from datakit.cutout.holes import HOLE_POLICIES, HoleEvidence
from datakit.cutout.colour import bleed, decontaminate, quantise_alpha, subject_box

# A fill that leaks through outline gaps removes this share of the subject (or more) -> low confidence.
LEAK_LIMIT = 0.25
# The subject covering less than this share of the frame usually means the fill ate it.
MIN_COVERAGE = 0.01
# Backdrop kept around the pixels that may be subject when the matte is worked out (px).
REGION_MARGIN = 8


@dataclass
class CutOptions:
    """Per-image options of the cut-out (everything except the method and model)."""

    holes: str = "auto"  # auto | keep | cut: enclosed backdrop-coloured regions
    threshold: float | None = None  # backdrop colour distance (8-bit levels); None = from the noise
    matting: bool = False
    trim: bool = True
    margin: int = 8

    def __post_init__(self):
        if self.holes not in HOLE_POLICIES:
            raise ValueError(f"holes must be one of {HOLE_POLICIES}")


@dataclass
class Cutout:
    """An RGBA uint8 cut-out (straight alpha) and the facts the manifest records."""

    rgba: np.ndarray
    info: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class NoSubjectFound(ValueError):
    """The whole image matches the backdrop."""


def describe_border(model: BackdropField) -> dict:
    """Manifest facts about the backdrop model."""
    return {
        "colour": list(model.mean_colour),
        "hex": "#%02x%02x%02x" % model.mean_colour,
        "noise": round(model.sigma, 2),
        "border_match": round(model.inlier_fraction, 4),
        "spread": round(model.border_spread, 1),
    }


def cut_flat(
    rgb: np.ndarray, opts: CutOptions, evidence: HoleEvidence | None = None, *, backdrop: BackdropField | None = None
) -> Cutout:
    """Cut out a subject drawn on a plain (evenly or unevenly lit, textured) backdrop; no model weights.

    `evidence` may decide enclosed regions of backdrop colour: the user's holes-file entry for this
    image and a segmenter's soft mask of the whole frame (a hybrid: the flat matte keeps its exact edge).
    `backdrop` is this image's estimate when the caller has made it already.
    """
    h, w = rgb.shape[:2]
    model = backdrop if backdrop is not None else estimate_backdrop(rgb)
    threshold = opts.threshold if opts.threshold is not None else background_threshold(model.sigma)
    # Everything outside this region is surely backdrop: the matte is worked out inside it only. The
    # margin keeps a ring of backdrop around the subject, which the soft edges are measured against.
    d, bg, (rx, ry, rw, rh) = distance_region(rgb, model, threshold, pad=REGION_MARGIN)
    region = (slice(ry, ry + rh), slice(rx, rx + rw))
    warnings: list[str] = []
    if not model.is_flat():
        warnings.append(
            f"the border is not one flat backdrop ({model.flatness_problem()}); "
            "the flat method may be wrong here, try --method rembg"
        )
    if evidence is not None and evidence.mask is not None:
        evidence = HoleEvidence(evidence.choice, evidence.mask[region], evidence.model)
    res = flat_alpha(d, rgb[region], bg, model.sigma, holes=opts.holes, threshold=threshold, frame=(h, w), evidence=evidence)
    for row in res.holes:  # region -> frame coordinates
        x0, y0, x1, y1 = row["bbox"]
        row["bbox"] = [x0 + rx, y0 + ry, x1 + rx, y1 + ry]
        row["contour"] = [[px + rx, py + ry] for px, py in row["contour"]]
    alpha, origin, bg_origin = res.alpha, (rx + res.box[0], ry + res.box[1]), (rx, ry)
    if opts.matting:
        from datakit.cutout.matting import refine_alpha

        alpha, origin = refine_alpha(rgb, _frame_alpha(alpha, origin, (h, w))), (0, 0)
        bg, bg_origin = model.render(h, w), (0, 0)  # the refined edge may reach outside the region
    warnings += res.warnings
    subject_area = int(cv2.countNonZero(cv2.compare(alpha, 0.5, cv2.CMP_GT))) if alpha.size else 0
    leak = leak_check(d, res.threshold, subject_area, frame=(h, w), origin=(rx, ry))
    if leak > LEAK_LIMIT:
        warnings.append(
            f"the backdrop fill may have leaked through a gap in the outline (closing gaps of 3 px would add "
            f"{leak:.0%} to the subject); check the cut-out, or close the outline"
        )
    info = {
        "method": "flat",
        "background": describe_border(model),
        "threshold": round(res.threshold, 2),
        "holes": res.holes,
        "translucent": res.translucent,
        "specks_removed": res.specks_removed,
        "leak": round(leak, 4),
        "matting": bool(opts.matting),
    }
    # The edge matte knows the colour of every partly covered pixel; refined alpha needs decontaminating.
    colours = None if opts.matting else (res.edge_rows, res.edge_cols, res.edge_colour)
    try:
        return finish(rgb, alpha, bg, opts, info, warnings, origin=origin, bg_origin=bg_origin, colours=colours)
    except NoSubjectFound as exc:
        if not model.is_flat():
            raise NoSubjectFound(f"{exc} (the border is not one flat backdrop: try --method rembg)") from exc
        raise


def _frame_alpha(alpha: np.ndarray, origin: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
    """A matte covering a box at `origin` (x, y) placed in a zero frame of `shape`."""
    full = np.zeros(shape, np.float32)
    x, y = origin
    full[y : y + alpha.shape[0], x : x + alpha.shape[1]] = alpha
    return full


def background_from_mask(rgb: np.ndarray, mask: np.ndarray) -> tuple[BackdropField, np.ndarray]:
    """The backdrop where a segmenter says backdrop, interpolated under the subject."""
    h, w = rgb.shape[:2]
    model = estimate_from_mask(rgb, mask < 0.05)
    return model, model.render(h, w)


def cut_with_mask(rgb: np.ndarray, mask: np.ndarray, opts: CutOptions, method: str) -> Cutout:
    """Finish a cut-out from a segmenter's soft mask (0..1): clean specks, decontaminate, trim."""
    h, w = rgb.shape[:2]
    alpha = np.clip(mask.astype(np.float32), 0.0, 1.0)
    # Segmenters leave faint haze and islands; zero the haze, drop islands far smaller than the subject.
    alpha[alpha < 0.04] = 0.0
    hard = (alpha > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
    removed = 0
    if n > 2:
        areas = stats[1:, cv2.CC_STAT_AREA]
        keep_min = max(int(1e-4 * h * w), int(0.005 * areas.max()))
        small = np.flatnonzero(areas < keep_min) + 1
        if len(small):
            island = np.isin(labels, small)
            # Only the island core plus its soft rim: dilate the islands and clear them.
            island = cv2.dilate(island.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            alpha[island & ~cv2.dilate((hard & ~np.isin(labels, small)).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)] = 0.0
            removed = int(len(small))
    if opts.matting:
        from datakit.cutout.matting import refine_alpha

        alpha = refine_alpha(rgb, alpha)
    model, bg = background_from_mask(rgb, alpha)
    info = {"method": method, "background": describe_border(model), "specks_removed": removed, "matting": bool(opts.matting)}
    return finish(rgb, alpha, bg, opts, info, [])


def from_existing_alpha(rgba: np.ndarray, opts: CutOptions) -> Cutout:
    """The input already has a transparent backdrop: keep its alpha, only bleed and trim."""
    alpha = rgba[:, :, 3].astype(np.float32) / 255.0
    info = {"method": "alpha", "background": None}
    return finish(rgba[:, :, :3], alpha, None, opts, info, ["input already had transparency; its alpha was kept"])


def finish(
    rgb: np.ndarray,
    alpha: np.ndarray,
    bg: np.ndarray | None,
    opts: CutOptions,
    info: dict,
    warnings: list[str],
    *,
    origin: tuple[int, int] = (0, 0),
    bg_origin: tuple[int, int] = (0, 0),
    colours: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> Cutout:
    """Quantise, decontaminate, bleed, trim; fill coverage, crop box and confidence.

    `alpha` may cover only a box of the frame at `origin` (x, y): it is 0 everywhere else. `bg` may
    cover only a box at `bg_origin` that holds every partly transparent pixel. `colours` (rows,
    columns in the matte's box, RGB) gives the subject colour of edge pixels where it is known;
    other partly transparent pixels are decontaminated against `bg`.
    """
    h, w = rgb.shape[:2]
    a8 = quantise_alpha(alpha)
    box = subject_box(a8, 0)
    if box is None:
        raise NoSubjectFound("no subject found: the whole image matches the backdrop")
    ox, oy = origin
    if opts.trim:
        m = opts.margin
        x0, y0 = max(0, box[0] + ox - m), max(0, box[1] + oy - m)
        x1, y1 = min(w, box[2] + ox + m), min(h, box[3] + oy + m)
    else:
        x0, y0, x1, y1 = 0, 0, w, h
    # Work on the crop only: decontamination and bleeding cost scales with the pixels kept.
    a8_crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    sx0, sy0 = max(x0, ox), max(y0, oy)  # the part of the matte's box inside the crop
    sx1, sy1 = min(x1, ox + a8.shape[1]), min(y1, oy + a8.shape[0])
    a8_crop[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = a8[sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox]
    a8 = a8_crop
    crop = rgb[y0:y1, x0:x1, :3].copy()
    if bg is not None and colours is None:
        # Only partly transparent pixels change, all inside the matte's box: work on its part in the crop.
        bx, by = bg_origin
        ys, xs = slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0)
        decontaminate(crop[ys, xs], a8[ys, xs], bg[sy0 - by : sy1 - by, sx0 - bx : sx1 - bx], out=crop[ys, xs])
    if colours is not None and len(colours[0]):
        r, c = colours[0] + oy - y0, colours[1] + ox - x0
        inside = (r >= 0) & (r < y1 - y0) & (c >= 0) & (c < x1 - x0)
        crop[r[inside], c[inside]] = np.clip(np.rint(colours[2][inside]), 0, 255).astype(np.uint8)
    rgba = bleed(crop, a8)
    coverage = float(cv2.sumElems(a8)[0] / (255.0 * h * w))
    if coverage < MIN_COVERAGE:
        warnings.append(f"the subject covers only {coverage:.2%} of the image: the fill may have eaten it")
    info.update(
        {
            "crop_box": [int(x0), int(y0), int(x1), int(y1)],
            "source_size": [int(w), int(h)],
            "size": [int(x1 - x0), int(y1 - y0)],
            "alpha_coverage": round(coverage, 4),
            "confidence": "low" if warnings and info.get("method") != "alpha" else "high",
        }
    )
    return Cutout(rgba=rgba, info=info, warnings=warnings)
