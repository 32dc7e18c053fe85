"""Optional edge refinement with closed-form matting (pymatting), limited to a narrow band.

Closed-form matting recovers fine semi-transparent detail (hair, soft shading at the silhouette)
better than a colour-distance ratio, but costs seconds per megapixel, so it only runs when asked
(--matting) and only on a tight crop around the subject with a trimap whose unknown region is a
few pixels either side of the current edge.
"""

from __future__ import annotations

import contextlib
import io

import cv2
import numpy as np

from datakit.errors import require


def refine_alpha(rgb: np.ndarray, alpha: np.ndarray, band: int = 3) -> np.ndarray:
    """Re-estimate alpha within `band` px of the edge with pymatting's closed-form matting."""
    if not ((alpha > 0.01) & (alpha < 0.99)).any() and not (alpha > 0.5).any():
        return alpha
    pymatting = require("pymatting", "--matting")
    hard = (alpha > 0.5).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    sure_fg = cv2.erode(hard, k) > 0
    sure_bg = cv2.dilate(hard, k) == 0
    ys, xs = np.nonzero(~sure_bg)
    if len(ys) == 0:
        return alpha
    pad = band + 2
    y0, y1 = max(0, ys.min() - pad), min(alpha.shape[0], ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(alpha.shape[1], xs.max() + 1 + pad)
    trimap = np.full((y1 - y0, x1 - x0), 0.5)
    trimap[sure_fg[y0:y1, x0:x1]] = 1.0
    trimap[sure_bg[y0:y1, x0:x1]] = 0.0
    image = rgb[y0:y1, x0:x1, :3].astype(np.float64) / 255.0
    # pymatting prints solver notes on stdout, which would corrupt `--json` output: keep them.
    with contextlib.redirect_stdout(io.StringIO()):
        refined = pymatting.estimate_alpha_cf(image, trimap)
    out = alpha.copy()
    unknown = trimap == 0.5
    region = out[y0:y1, x0:x1]
    region[unknown] = np.clip(refined[unknown], 0.0, 1.0).astype(np.float32)
    return out
