"""Enclosed regions of backdrop colour: number them, and cut one only on evidence that it is a gap.

A region the subject encloses that has the backdrop's colour is either a see-through gap (an arm
on the hip) or paint the colour of the backdrop (a white shirt, an apron, a collar). On a plain
backdrop nothing in the pixels tells them apart reliably, and the costs are not symmetric: a cut
garment shows the background through the subject in every composite and teaches the adapter a
hole, a kept gap leaves a small patch of backdrop. So a region is made transparent only on
evidence:

- the user's holes file (`holes.toml`, see datakit.cutout.holes_file) lists it under `cut`;
- a segmentation model the user named sees backdrop there (its mask's mean over the region);
- `--holes cut` (every region) was asked for.

Otherwise it is kept and flagged: the manifest row says so and review.png outlines it with its
number, which is what the holes file refers to. Regions are numbered 1, 2, ... in the order of
their first pixel scanning rows from the top (the manifest lists them in that order).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datakit.cutout.holes_file import HoleChoice
from datakit.cutout.pixels import points

HOLE_POLICIES = ("auto", "keep", "cut")
# A segmenter's mean mask over a region: below this it saw backdrop (cut), above 1 - this subject (keep).
MODEL_BACKDROP = 0.35


@dataclass
class HoleEvidence:
    """What may decide enclosed regions besides --holes: the user's choices and a segmenter's mask."""

    choice: HoleChoice | None = None
    mask: np.ndarray | None = None  # the segmenter's soft mask (0..1) over the same pixels as the matte's region
    model: str | None = None  # the segmenter's name, for the manifest


def enclosed_components(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels (4-connected) of a sparse bool mask, the labels of at least `min_area` pixels in raster order
    of their first pixel, and OpenCV-style stats rows (x, y, w, h, area) for them (other rows: area only).

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


def _contour(region: np.ndarray, x0: int, y0: int) -> list[list[int]]:
    """The outer outline of a region (bool, in a box at x0, y0) as a simplified polygon of pixel corners."""
    cs, _ = cv2.findContours(region.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not cs:
        return []
    c = max(cs, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, 1.0, True).reshape(-1, 2)
    return [[int(px) + x0, int(py) + y0] for px, py in c]


def decide_holes(
    labels: np.ndarray,
    stats: np.ndarray,
    candidates: np.ndarray,
    rgb: np.ndarray,
    bg: np.ndarray,
    *,
    policy: str,
    evidence: HoleEvidence | None = None,
) -> tuple[list[int], list[dict]]:
    """The labels to make transparent and one manifest row per candidate region, numbered from 1."""
    if policy not in HOLE_POLICIES:
        raise ValueError(f"holes must be one of {HOLE_POLICIES}")
    evidence = evidence or HoleEvidence()
    h, w = labels.shape
    cut: list[int] = []
    rows: list[dict] = []
    for number, k in enumerate(candidates, start=1):
        x, y, bw, bh, area = (int(v) for v in stats[k, :5])
        x0, y0, x1, y1 = max(0, x - 1), max(0, y - 1), min(w, x + bw + 1), min(h, y + bh + 1)
        region = labels[y0:y1, x0:x1] == k
        # Colour statistics from a few thousand of its pixels (a large region is a garment's worth).
        s = max(1, int(np.sqrt(area / 4000)))
        sub = region[::s, ::s]
        res = rgb[y0:y1:s, x0:x1:s, :3][sub].astype(np.float32) - bg[y0:y1:s, x0:x1:s][sub]
        mean = res.mean(axis=0)
        offset = float(np.abs(mean).max())
        noise = float(np.sqrt(((res - mean) ** 2).sum(axis=1).mean()) / 1.6)
        action, by, why = _decide(number, region, (x0, y0), policy, evidence)
        if action == "cut":
            cut.append(int(k))
        rows.append(
            {
                "number": number,
                "bbox": [x, y, x + bw, y + bh],
                "area": area,
                "action": action,
                "by": by,
                "flagged": by == "default",
                "why": why,
                "offset": round(offset, 1),
                "noise": round(noise, 1),
                "contour": _contour(region, x0, y0),
            }
        )
    return cut, rows


def _decide(number: int, region: np.ndarray, origin: tuple[int, int], policy: str, evidence: HoleEvidence) -> tuple[str, str, str]:
    """(action, who decided, why) for one region: holes file, then --holes cut/keep, then a segmenter, else keep."""
    listed = evidence.choice.decision(number) if evidence.choice else None
    if listed:
        return ("cut" if listed == "cut" else "kept"), "holes file", f"listed under {listed} in the holes file"
    if policy == "cut":
        return "cut", "--holes cut", "--holes cut cuts every enclosed region"
    if policy == "keep":
        return "kept", "--holes keep", "--holes keep keeps every enclosed region"
    if evidence.mask is not None:
        x0, y0 = origin
        m = evidence.mask[y0 : y0 + region.shape[0], x0 : x0 + region.shape[1]][region]
        seen = float(m.mean()) if m.size else 1.0
        name = evidence.model or "the segmenter"
        if seen < MODEL_BACKDROP:
            return "cut", "segmenter", f"{name} sees backdrop here (mask {seen:.2f})"
        if seen > 1.0 - MODEL_BACKDROP:
            return "kept", "segmenter", f"{name} sees the subject here (mask {seen:.2f})"
        return "kept", "default", f"{name} is unsure (mask {seen:.2f}); kept: a gap or paint the backdrop's colour?"
    return "kept", "default", "kept: a see-through gap or paint the backdrop's colour? cut it with a holes file (cut = [n])"


def unknown_numbers(choice: HoleChoice | None, count: int) -> list[int]:
    """Numbers in the user's choices that this image does not have (it has regions 1..count)."""
    if choice is None:
        return []
    return sorted(n for n in choice.numbers() if n > count)
