"""Colour palettes: a deterministic k-means in CIELAB, and the colours of an image's background.

The background colours of an image are the main colours of its border sides (see border.py); a pixel
within delta E 10 of one of them is taken for background. Both subject measures use this to set a
sample's own background aside, and to call a sample without any other pixels empty.
"""

from __future__ import annotations

import numpy as np

from datakit.evaluate.border import image_sides, to_lab, work_image

PALETTE_SIZE = 8
BACKGROUND_DELTA_E = 10.0
BACKGROUND_MIN_SHARE = 0.05  # a border colour covering this share of a side ...
BACKGROUND_MIN_SIDES = 2  # ... on this many sides is a background colour
FOREGROUND_MIN_SHARE = 0.02  # an image with less than this share of non-background pixels is empty


def kmeans(points: np.ndarray, k: int, *, iterations: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means (farthest-point start): (centres, share of points per centre), empty centres dropped."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        return np.zeros((0, 3)), np.zeros(0)
    k = min(k, len(points))
    centres = [points.mean(axis=0)]
    dist = np.linalg.norm(points - centres[0], axis=1)
    for _ in range(1, k):
        centres.append(points[int(np.argmax(dist))])
        dist = np.minimum(dist, np.linalg.norm(points - centres[-1], axis=1))
    centres = np.array(centres)
    for _ in range(iterations):
        labels = np.argmin(np.linalg.norm(points[:, None, :] - centres[None], axis=2), axis=1)
        moved = np.array([points[labels == i].mean(axis=0) if np.any(labels == i) else centres[i] for i in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    labels = np.argmin(np.linalg.norm(points[:, None, :] - centres[None], axis=2), axis=1)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    used = counts > 0
    return centres[used], counts[used] / counts.sum()


def background_colours(image) -> np.ndarray:
    """The main colours of an image's border: k-means centres that cover at least 5% of two sides or more.

    Two sides, because a subject often touches one edge (standing on the bottom, cut at the waist)
    and its colours must not be taken for the background, while a scene's sky or ground reaches
    at least the two sides beside it.
    """
    bands = [band.reshape(-1, 3) for _, band in image_sides(image).items()]
    centres, _ = kmeans(np.concatenate(bands), PALETTE_SIZE)
    votes = np.zeros(len(centres), dtype=int)
    for band in bands:
        nearest = np.argmin(np.linalg.norm(band[:, None, :] - centres[None], axis=2), axis=1)
        votes += np.bincount(nearest, minlength=len(centres)) / len(band) >= BACKGROUND_MIN_SHARE
    return centres[votes >= BACKGROUND_MIN_SIDES]


def background_coloured(lab: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Mask of the CIELAB pixels within BACKGROUND_DELTA_E of any of the background colours."""
    if len(colours) == 0:
        return np.zeros(lab.shape[:-1], dtype=bool)
    dist = np.linalg.norm(lab[..., None, :] - colours, axis=-1)
    return dist.min(axis=-1) <= BACKGROUND_DELTA_E


def foreground_share(image) -> float:
    """Share of an image's pixels whose colour is not one of its background colours."""
    lab = to_lab(work_image(image))
    return float((~background_coloured(lab, background_colours(image))).mean())


def has_foreground(image) -> bool:
    """False for an empty image: nothing in it differs from its background colours."""
    return foreground_share(image) >= FOREGROUND_MIN_SHARE
