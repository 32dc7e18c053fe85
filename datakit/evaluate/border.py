"""The background evidence of an image: its border band, split into four sides, in CIELAB.

A subject is usually framed in the middle, so the outer band of the image is where the background
shows. Each side (top, bottom, left, right) is judged on its own and the background is decided by a
vote of the sides, so a subject that touches one edge (a portrait cut at the waist) does not hide
the background, and a scene whose sides disagree (sky on top, snow below) is not taken for a flat one.

Images are first reduced to at most WORK_SIZE pixels on the short side with area averaging, so a
1024 px sample and a 32 px sample are judged on the same scale (detail per 1/64 of the image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WORK_SIZE = 64
BORDER_FRACTION = 0.125  # the band is 1/8 of the short side (8 px at 64 px, 4 px at 32 px) ...
MIN_BORDER = 2  # ... and never thinner than 2 px
SIDE_NAMES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class Sides:
    """The four border bands of an image in CIELAB: each (length, thickness, 3), length along the edge."""

    top: np.ndarray
    bottom: np.ndarray
    left: np.ndarray
    right: np.ndarray

    def items(self) -> list[tuple[str, np.ndarray]]:
        return [(name, getattr(self, name)) for name in SIDE_NAMES]


def as_rgb01(image) -> np.ndarray:
    """A PIL image or an HxWx3(4) array (uint8 or float 0..1) as float32 RGB in 0..1; alpha is dropped."""
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image, got an array of shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    return np.clip(arr.astype(np.float32), 0.0, 1.0)


def reduce(arr: np.ndarray) -> np.ndarray:
    """A float image (any channel count) reduced by area averaging so its short side is at most WORK_SIZE."""
    import cv2

    h, w = arr.shape[:2]
    if min(h, w) <= WORK_SIZE:
        return arr
    scale = WORK_SIZE / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(np.ascontiguousarray(arr), size, interpolation=cv2.INTER_AREA)


def work_image(image) -> np.ndarray:
    """The image as float RGB 0..1, reduced so its short side is at most WORK_SIZE."""
    return reduce(as_rgb01(image))


def to_lab(rgb01: np.ndarray) -> np.ndarray:
    """sRGB 0..1 -> CIELAB (L* 0..100, a*, b*), D65, as OpenCV converts float images."""
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(rgb01, dtype=np.float32), cv2.COLOR_RGB2Lab)


def border_width(height: int, width: int) -> int:
    """Thickness of the border band in pixels."""
    return max(MIN_BORDER, int(round(min(height, width) * BORDER_FRACTION)))


def sides(lab: np.ndarray) -> Sides:
    """The four border bands (corners belong to every side that touches them)."""
    h, w = lab.shape[:2]
    b = min(border_width(h, w), max(1, min(h, w) // 2))
    return Sides(
        top=lab[:b, :, :].transpose(1, 0, 2),
        bottom=lab[h - b:, :, :].transpose(1, 0, 2),
        left=lab[:, :b, :],
        right=lab[:, w - b:, :],
    )


def image_sides(image) -> Sides:
    """Border bands of any image, after reduction to the working size and conversion to CIELAB."""
    return sides(to_lab(work_image(image)))


def smooth_fit_residual(band: np.ndarray, *, degree: int = 2, trim: float = 0.2) -> np.ndarray:
    """Colour distance (CIE76 delta E) of each pixel of a band from a smooth colour ramp along it.

    The ramp is a polynomial in the position along the edge, fitted per Lab channel by least
    squares, then fitted again without the `trim` share of worst pixels so that a subject poking
    into the band does not bend it. A flat or gradient backdrop leaves only noise; a horizon, a
    tree or a window leaves large distances.
    """
    length, thick, _ = band.shape
    t = np.repeat(np.linspace(-1.0, 1.0, length), thick)
    values = band.reshape(-1, 3).astype(np.float64)
    basis = np.stack([t**k for k in range(degree + 1)], axis=1)
    keep = np.ones(len(t), dtype=bool)
    for _ in range(2):
        coef, *_ = np.linalg.lstsq(basis[keep], values[keep], rcond=None)
        dist = np.linalg.norm(values - basis @ coef, axis=1)
        if trim <= 0:
            break
        keep = dist <= np.quantile(dist, 1.0 - trim)
    return dist.reshape(length, thick)
