"""Colour palettes: a deterministic k-means in CIELAB, and the colours of an image's background.

The background colours of an image are the main colours of its border sides (see border.py); a pixel
within delta E 10 of one of them is taken for background. Both subject measures use this to set a
sample's own background aside, and to call a sample without any other pixels empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datakit.evaluate.border import Sides, to_lab, work_image
from datakit.evaluate.border import sides as border_sides

PALETTE_SIZE = 8
BACKGROUND_DELTA_E = 10.0
BACKGROUND_MIN_SHARE = 0.05  # a border colour covering this share of a side ...
BACKGROUND_MIN_SIDES = 2  # ... on this many sides is a background colour
FOREGROUND_MIN_SHARE = 0.02  # an image with less than this share of non-background pixels is empty


def _sq_dist(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Squared distances (n, k) between points and centres, by matrix product (fast for n x 3)."""
    d = (points**2).sum(axis=1)[:, None] - 2.0 * points @ centres.T + (centres**2).sum(axis=1)[None, :]
    return np.maximum(d, 0.0)


def nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the nearest centre, distance to it) for each point."""
    d = _sq_dist(np.asarray(points, np.float64).reshape(-1, 3), np.asarray(centres, np.float64))
    idx = np.argmin(d, axis=1)
    return idx, np.sqrt(d[np.arange(len(idx)), idx])


def kmeans(points: np.ndarray, k: int, *, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (farthest-point start): (centres, share of points per centre), empty centres dropped."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    k = min(k, len(points))
    centres = [points.mean(axis=0)]
    dist = ((points - centres[0]) ** 2).sum(axis=1)
    for _ in range(1, k):
        centres.append(points[int(np.argmax(dist))])
        dist = np.minimum(dist, ((points - centres[-1]) ** 2).sum(axis=1))
    centres = np.array(centres)
    for _ in range(iterations):
        labels, _ = nearest(points, centres)
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.stack([np.bincount(labels, weights=points[:, c], minlength=k) for c in range(3)], axis=1)
        moved = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centres)
        if np.allclose(moved, centres):
            break
        centres = moved
    labels, _ = nearest(points, centres)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    used = counts > 0
    return centres[used], counts[used] / counts.sum()


@dataclass(frozen=True)
class Background:
    """An image (at the working size, CIELAB), its background colours, and which pixels have them."""

    lab: np.ndarray
    colours: np.ndarray
    mask: np.ndarray

    @property
    def foreground_share(self) -> float:
        """Share of the pixels whose colour is not a background colour."""
        return float((~self.mask).mean())

    @property
    def has_foreground(self) -> bool:
        """False for an empty image: nothing in it differs from its background colours."""
        return self.foreground_share >= FOREGROUND_MIN_SHARE


def background_colours_of(sides: Sides) -> np.ndarray:
    """The main colours of an image's border: k-means centres that cover at least 5% of two sides or more.

    Two sides, because a subject often touches one edge (standing on the bottom, cut at the waist)
    and its colours must not be taken for the background, while a scene's sky or ground reaches
    at least the two sides beside it.
    """
    bands = [band.reshape(-1, 3) for _, band in sides.items()]
    centres, _ = kmeans(np.concatenate(bands), PALETTE_SIZE)
    votes = np.zeros(len(centres), dtype=int)
    for band in bands:
        idx, _ = nearest(band, centres)
        votes += np.bincount(idx, minlength=len(centres)) / len(band) >= BACKGROUND_MIN_SHARE
    return centres[votes >= BACKGROUND_MIN_SIDES]


def background_coloured(lab: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Mask of the CIELAB pixels within BACKGROUND_DELTA_E of any of the background colours."""
    if len(colours) == 0:
        return np.zeros(lab.shape[:-1], dtype=bool)
    _, dist = nearest(lab.reshape(-1, 3), colours)
    return dist.reshape(lab.shape[:-1]) <= BACKGROUND_DELTA_E


def background_from(lab: np.ndarray, sides: Sides | None = None) -> Background:
    """The background of a CIELAB work image (sides: its border bands, when already computed)."""
    colours = background_colours_of(sides if sides is not None else border_sides(lab))
    return Background(lab=lab, colours=colours, mask=background_coloured(lab, colours))


def background(image) -> Background:
    """The background of any image (PIL or array)."""
    return background_from(to_lab(work_image(image)))


def has_foreground(image) -> bool:
    """False for an empty image: nothing in it differs from its background colours."""
    return background(image).has_foreground
