"""Smooth backdrop surfaces and the colour distance to a backdrop.

`fit_background` fits a per-channel quadratic surface to samples (by default a thin strip along the
image border) with iterative outlier rejection, so a subject touching the border or JPEG ringing
does not bend it. The per-pixel estimate (datakit.cutout.backdrop) uses it to tell which border
cells are backdrop at all, and falls back on it when nothing along the border is calm.
`colour_distance` / `distance_region` measure every pixel's distance to a backdrop estimate, in
the box that can hold subject pixels only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

# Samples of a smooth surface are this many pixels apart before bilinear upsampling.
GRID_STEP = 8
# Noise floor (8-bit levels per channel): clean PNG art has zero noise, but the threshold derived
# from it must still sit above rounding and faint paper texture.
MIN_SIGMA = 1.0


class BorderFlatness:
    """Whether a backdrop estimate's border is one smooth backdrop (needs `inlier_fraction`, `sigma`)."""

    inlier_fraction: float
    sigma: float

    def is_flat(self, min_inliers: float = 0.9) -> bool:
        """True when the border is one smooth backdrop (the flat method's precondition)."""
        return self.flatness_problem(min_inliers) is None

    def flatness_problem(self, min_inliers: float = 0.9) -> str | None:
        """Why the border is not one smooth backdrop, in words (None when it is)."""
        if self.inlier_fraction < min_inliers:
            return f"only {self.inlier_fraction:.0%} of it matches one smooth colour"
        if self.sigma > 12.0:
            return f"it is too noisy (noise {self.sigma:.1f} levels, the limit is 12)"
        return None


@dataclass
class BackgroundModel(BorderFlatness):
    """A fitted backdrop: polynomial coefficients per channel, noise level, and how well the border fits."""

    coeffs: np.ndarray  # (n_terms, 3) in 0..255 units, for normalised coordinates in [-1, 1]
    degree: int
    sigma: float  # robust per-channel noise of the border around the surface (8-bit levels)
    inlier_fraction: float  # share of border samples that match the surface
    border_spread: float  # colour range of the fitted surface along the border (flatness)
    mean_colour: tuple[int, int, int]  # the surface's average over the border, for the manifest

    def render(self, height: int, width: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The surface as an HxWx3 float32 image (0..255), or only its part in `box` (x, y, w, h).

        A quadratic is smooth: it is evaluated on a grid 8x coarser and resized (bilinear), which is
        exact to far below one 8-bit level and several times cheaper than evaluating every pixel.
        """
        if height > 4 * GRID_STEP and width > 4 * GRID_STEP:
            off = (GRID_STEP - 1) / 2.0
            return upsample_grid(
                lambda r0, r1, c0, c1: self.evaluate(np.arange(r0, r1) * GRID_STEP + off, np.arange(c0, c1) * GRID_STEP + off, height, width),
                GRID_STEP, height, width, box,
            )
        x, y, bw, bh = box if box is not None else (0, 0, width, height)
        return self.evaluate(np.arange(y, y + bh), np.arange(x, x + bw), height, width)

    def render8(self, height: int, width: int) -> np.ndarray:
        """The surface as HxWx3 uint8, within 1.5 levels of `render` (for quick screening only)."""
        import cv2

        step = 8
        if height > 4 * step and width > 4 * step:
            gh, gw = -(-height // step), -(-width // step)
            off = (step - 1) / 2.0
            coarse = self.evaluate(np.arange(gh) * step + off, np.arange(gw) * step + off, height, width)
            coarse = cv2.convertScaleAbs(coarse)
            # 8-bit bilinear: samples rounded (0.5), output rounded (0.5), fixed-point weights (< 0.2).
            full = cv2.resize(coarse, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)
            return full[:height, :width]
        return cv2.convertScaleAbs(self.render(height, width))

    def evaluate(self, rows: np.ndarray, cols: np.ndarray, height: int, width: int) -> np.ndarray:
        """The surface at the given pixel rows and columns of a height x width frame (float32, len(rows) x len(cols) x 3)."""
        ys = (rows / max(1, height - 1) * 2.0 - 1.0).astype(np.float32)
        xs = (cols / max(1, width - 1) * 2.0 - 1.0).astype(np.float32)
        c = self.coeffs.astype(np.float32)
        # Separable evaluation: a quadratic in x and y costs a few broadcasts, not a dense design matrix.
        out = np.empty((len(ys), len(xs), 3), np.float32)
        for ch in range(3):
            k = c[:, ch]
            row = k[0] + (k[1] * xs + (k[3] * xs * xs if self.degree >= 2 else 0.0))
            col = k[2] * ys + (k[5] * ys * ys if self.degree >= 2 else 0.0)
            plane = row[None, :] + col[:, None]
            if self.degree >= 2:
                plane += k[4] * (ys[:, None] * xs[None, :])
            out[:, :, ch] = plane
        return out



def upsample_grid(samples, step: int, height: int, width: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """Bilinear upsampling of a grid of samples every `step` px to a frame, or to only its part in `box` (x, y, w, h).

    Sample k sits at pixel k*step + (step-1)/2, where cv2.resize's centre-aligned bilinear puts it,
    so every output pixel p is interpolated at exactly p (clamped beyond the outermost samples).
    `samples(r0, r1, c0, c1)` gives the float32 samples of grid rows r0..r1-1 and columns c0..c1-1.
    A box takes the samples around it, plus one on each side so that its edge pixels are
    interpolated, not clamped, unless the frame's edge clamps them too: it gets exactly the values
    of the whole frame's render there, for the cost of the box.
    """
    import cv2

    x, y, bw, bh = box if box is not None else (0, 0, width, height)
    gh, gw = -(-height // step), -(-width // step)
    c0, c1 = max(0, x // step - 1), min(gw, (x + bw - 1) // step + 2)
    r0, r1 = max(0, y // step - 1), min(gh, (y + bh - 1) // step + 2)
    coarse = np.ascontiguousarray(samples(r0, r1, c0, c1), dtype=np.float32)
    if step == 1:
        return np.ascontiguousarray(coarse[y - r0 : y - r0 + bh, x - c0 : x - c0 + bw])
    full = cv2.resize(coarse, ((c1 - c0) * step, (r1 - r0) * step), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(full[y - r0 * step : y - r0 * step + bh, x - c0 * step : x - c0 * step + bw])


def _design(xs: np.ndarray, ys: np.ndarray, degree: int) -> np.ndarray:
    cols = [np.ones_like(xs), xs, ys]
    if degree >= 2:
        cols += [xs * xs, xs * ys, ys * ys]
    else:
        cols += [np.zeros_like(xs)] * 3
    return np.stack(cols, axis=1)


def _least_squares(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve min |A x - b| through the 6x6 normal equations.

    OpenCV's small matrix products stay off the threaded BLAS, whose start-up costs more than the
    tiny solve and which competes with the process pool for cores (and are ~10x faster than einsum).
    """
    import cv2

    ata = cv2.mulTransposed(A, True)
    atb = cv2.gemm(A, b, 1.0, None, 0.0, flags=cv2.GEMM_1_T)
    ata += np.eye(len(ata)) * 1e-9  # unused terms (degree 0) give zero columns
    return np.linalg.solve(ata, atb)


def _apply(A: np.ndarray, coeffs: np.ndarray) -> np.ndarray:
    """A @ coeffs (n x 6 by 6 x 3), single-threaded (see _least_squares)."""
    import cv2

    return cv2.gemm(np.ascontiguousarray(A), np.ascontiguousarray(coeffs), 1.0, None, 0.0)


def border_samples(shape: tuple[int, int], width: int | None = None, max_samples: int = 3000):
    """Row/column indices of a thin strip along the four edges, evenly subsampled."""
    h, w = shape
    bw = width or max(2, round(0.008 * min(h, w)))
    bw = min(bw, max(1, h // 4), max(1, w // 4))
    per_side = max(8, max_samples // (4 * bw))
    rows, cols = [], []
    xs = np.unique(np.linspace(0, w - 1, min(w, per_side)).astype(int))
    ys = np.unique(np.linspace(0, h - 1, min(h, per_side)).astype(int))
    for k in range(bw):
        rows += [np.full(len(xs), k), np.full(len(xs), h - 1 - k), ys, ys]
        cols += [xs, xs, np.full(len(ys), k), np.full(len(ys), w - 1 - k)]
    return np.concatenate(rows), np.concatenate(cols)


def fit_background(
    rgb: np.ndarray,
    *,
    degree: int = 2,
    rows: np.ndarray | None = None,
    cols: np.ndarray | None = None,
    iterations: int = 3,
) -> BackgroundModel:
    """Fit a smooth colour surface to border pixels (or the given sample pixels), robust to outliers."""
    h, w = rgb.shape[:2]
    if rows is None or cols is None:
        rows, cols = border_samples((h, w))
    vals = rgb[rows, cols, :3].astype(np.float64)
    xs = (cols / max(1, w - 1)) * 2.0 - 1.0
    ys = (rows / max(1, h - 1)) * 2.0 - 1.0
    A = _design(xs.astype(np.float64), ys.astype(np.float64), degree)

    # Start from the per-channel median (a constant surface): robust even when half the border is subject.
    coeffs = np.zeros((6, 3))
    coeffs[0] = np.median(vals, axis=0)
    inliers = np.ones(len(vals), bool)
    sigma = MIN_SIGMA
    for _ in range(iterations):
        resid = vals - _apply(A, coeffs)
        dist = np.sqrt((resid**2).sum(axis=1))
        # Robust scale from the median distance (chi with 3 dof: median ~ 1.54 sigma).
        sigma = max(MIN_SIGMA, float(np.median(dist[inliers] if inliers.any() else dist)) / 1.54)
        inliers = dist <= max(4.0 * sigma, 6.0)
        if inliers.sum() < 12:  # too few to fit a surface: keep the constant
            break
        fit_deg = degree if inliers.sum() >= 60 else 0
        Ai = A[inliers] if fit_deg == degree else _design(xs[inliers], ys[inliers], fit_deg)
        coeffs = _least_squares(Ai, vals[inliers])
        if fit_deg == 0:
            coeffs[1:] = 0.0
    resid = vals - _apply(A, coeffs)
    dist = np.sqrt((resid**2).sum(axis=1))
    good = dist <= max(4.0 * sigma, 6.0)
    if good.any():
        sigma = max(MIN_SIGMA, float(np.median(dist[good])) / 1.54)
    fitted = _apply(A, coeffs)
    spread = float((fitted.max(axis=0) - fitted.min(axis=0)).max()) if len(fitted) else 0.0
    mean = tuple(int(v) for v in np.clip(np.round(fitted.mean(axis=0)), 0, 255))
    return BackgroundModel(
        coeffs=coeffs,
        degree=degree,
        sigma=sigma,
        inlier_fraction=float(good.mean()) if len(good) else 0.0,
        border_spread=spread,
        mean_colour=mean,  # type: ignore[arg-type]
    )


def _metric(chroma_weight: float) -> np.ndarray:
    """3x3 matrix taking an RGB difference to (luma, weighted chroma) whose length is the distance."""
    # BT.601 luma and colour differences, scaled so that an RGB grey step keeps its Euclidean length.
    ycc = np.array([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc *= np.sqrt(3.0)
    ycc[1:] *= np.sqrt(chroma_weight)
    return ycc.astype(np.float32)


# JPEG stores colour at half resolution and coarser than brightness, so at edges the colour of a
# pixel is off by far more than its brightness. Chroma counts at 0.35 of luma: JPEG ringing drops
# under the backdrop threshold while a pure colour edge still stands well above it. The alpha
# estimate is a ratio of distances along one mix line, which any linear metric leaves unchanged.
CHROMA_WEIGHT = float(os.environ.get("DATAKIT_CUTOUT_CHROMA", "0.35"))
METRIC = _metric(CHROMA_WEIGHT)


def colour_distance(rgb: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Distance of every pixel to the background surface (float32; luma-weighted, see METRIC)."""
    import cv2

    # OpenCV subtracts, transforms and squares in vectorised passes (numpy's strided channel sum is
    # much slower); the subtraction converts the 8-bit image on the fly.
    diff = cv2.subtract(rgb[:, :, :3], background, dtype=cv2.CV_32F)
    t = cv2.transform(diff, METRIC)
    cv2.multiply(t, t, dst=diff)  # buffers reused: fresh large arrays cost page faults
    d = cv2.transform(diff, np.ones((1, 3), np.float32))
    return cv2.sqrt(d, dst=d)


# Largest stretch METRIC applies to an RGB difference: bounds the distance from the largest channel step.
METRIC_GAIN = float(np.linalg.norm(METRIC.astype(np.float64), 2) * np.sqrt(3.0))


def distance_region(
    rgb: np.ndarray, model: BackgroundModel, threshold: float, pad: int = 0
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """colour_distance inside the smallest box that holds every pixel able to reach `threshold`.

    Returns (distances in the box, the backdrop rendered in the box, (x, y, w, h) of the box), the
    box grown by `pad` px on each side (within the frame); every pixel outside the box is surely
    below the threshold. A pixel whose every channel is within threshold / METRIC_GAIN of the
    backdrop cannot reach it: one 8-bit comparison over the frame finds the box (usually the subject
    with its soft edges), and the backdrop and the float distance are computed inside it only.
    """
    import cv2

    h, w = rgb.shape[:2]
    limit = threshold / METRIC_GAIN - 1.5  # the 8-bit backdrop is at most 1.5 levels off
    if limit > 0:
        diff = cv2.absdiff(rgb[:, :, :3], model.render8(h, w))
        # Channels side by side as one wide single-channel image: a pixel may reach the threshold
        # when any of its channels does, and the box of those columns, divided by 3, is its box.
        cv2.compare(diff.reshape(h, w * 3), limit, cv2.CMP_GE, dst=diff.reshape(h, w * 3))
        x, y, bw, bh = cv2.boundingRect(diff.reshape(h, w * 3))
        if not (bw and bh):
            return np.zeros((0, 0), np.float32), np.zeros((0, 0, 3), np.float32), (0, 0, 0, 0)
        x0, x1 = max(0, x // 3 - pad), min(w, (x + bw - 1) // 3 + 1 + pad)
        y0, y1 = max(0, y - pad), min(h, y + bh + pad)
        box = (x0, y0, x1 - x0, y1 - y0)
    else:
        box = (0, 0, w, h)
    x, y, bw, bh = box
    bg = model.render(h, w, box)
    return colour_distance(rgb[y : y + bh, x : x + bw], bg), bg, box


def distance_map(rgb: np.ndarray, model: BackgroundModel, threshold: float) -> np.ndarray:
    """colour_distance for the whole frame, computed exactly only where it can reach `threshold`; 0 elsewhere."""
    d_box, _, (x, y, bw, bh) = distance_region(rgb, model, threshold)
    d = np.zeros(rgb.shape[:2], np.float32)
    d[y : y + bh, x : x + bw] = d_box
    return d
