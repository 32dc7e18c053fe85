"""Sparse pixel sets: the edge band is a few percent of the frame, so it is handled as a list of pixels.

OpenCV's scan for nonzero pixels is several times faster than numpy's on such sparse masks, and
row/column index arrays gather from and scatter to any array view without copying the image.
"""

from __future__ import annotations

import cv2
import numpy as np


def points(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the nonzero pixels of a 2-D uint8 (or bool) mask, in row-major order."""
    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    pts = cv2.findNonZero(mask)
    if pts is None:
        empty = np.zeros(0, np.intp)
        return empty, empty
    pts = pts.reshape(-1, 2)
    return pts[:, 1].astype(np.intp), pts[:, 0].astype(np.intp)

