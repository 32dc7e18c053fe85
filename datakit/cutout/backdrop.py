"""A backdrop estimate for every pixel: the backdrop seen from the border, interpolated inward.

A single smooth surface cannot follow a strong vignette, a scanner's gutter shadow, paper tone or
a gradient of arbitrary shape. Here the backdrop is measured where it is visible and interpolated
where the subject hides it:

1. The image is reduced to a grid of block means (about 100-130 cells a side), which averages
   away JPEG noise and paper grain while keeping lighting and tone.
2. A cell is *calm* when it is nearly the average of its neighbours in every direction: lighting
   of any shape passes (a ramp, a vignette, a gutter are smooth), an edge of paint does not. The
   calm cells connected to border cells that match the border's backdrop colour are the visible
   backdrop; one ring of cells next to anything else is dropped (it may hold anti-aliased paint).
3. A quadratic surface fitted robustly to those cells carries the overall trend under the subject
   (a cubic bulges where the subject hides a large area); the rest, what the surface misses, is
   interpolated inward along rows and columns from the nearest cells that see the backdrop.
4. The grid is interpolated bilinearly to full resolution, only in the box where it is needed.

Noise (and so the threshold) is measured on the full-resolution border against this estimate.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from datakit.cutout.background import METRIC, MIN_SIGMA, BackgroundModel, BorderFlatness, border_samples, fit_background, upsample_grid

# Cells on the long side of the grid are about this many (blocks of 2..12 px).
GRID_CELLS = 96
MAX_STEP = 12
POLY_DEGREE = 2
# A walled-off calm area joins the backdrop when 80% of its cells are within this distance of the estimate.
WALLED_MATCH = 15.0


@dataclass
class BackdropField(BorderFlatness):
    """The backdrop colour per pixel, stored as a grid of samples every `step` px (float32, 0..255)."""

    grid: np.ndarray  # (gh, gw, 3): sample (i, j) sits at pixel (i*step + (step-1)/2, j*step + (step-1)/2)
    step: int
    sigma: float  # robust per-channel noise of the border around the estimate (8-bit levels)
    inlier_fraction: float  # share of border samples that match the estimate
    border_spread: float  # colour range of the estimate along the border
    mean_colour: tuple[int, int, int]
    visible: float = 1.0  # share of the grid seen as backdrop (the rest interpolated)

    def render(self, height: int, width: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """The backdrop as float32 HxWx3, or only its part in `box` (x, y, w, h), exactly as in the whole render."""
        return upsample_grid(lambda r0, r1, c0, c1: self.grid[r0:r1, c0:c1], self.step, height, width, box)

    def render8(self, height: int, width: int) -> np.ndarray:
        """The backdrop as uint8 HxWx3, within 1.5 levels of `render` (for quick screening only)."""
        coarse = cv2.convertScaleAbs(self.grid)
        gh, gw = coarse.shape[:2]
        full = cv2.resize(coarse, (gw * self.step, gh * self.step), interpolation=cv2.INTER_LINEAR)
        return full[:height, :width]

    def at(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """The backdrop at given pixels (float32 n x 3), interpolated like `render`."""
        gh, gw = self.grid.shape[:2]
        off = (self.step - 1) / 2.0
        fy = np.clip((rows - off) / self.step, 0, gh - 1)
        fx = np.clip((cols - off) / self.step, 0, gw - 1)
        y0, x0 = np.floor(fy).astype(np.intp), np.floor(fx).astype(np.intp)
        y1, x1 = np.minimum(y0 + 1, gh - 1), np.minimum(x0 + 1, gw - 1)
        wy, wx = (fy - y0)[:, None], (fx - x0)[:, None]
        g = self.grid
        top = g[y0, x0] * (1 - wx) + g[y0, x1] * wx
        bottom = g[y1, x0] * (1 - wx) + g[y1, x1] * wx
        return (top * (1 - wy) + bottom * wy).astype(np.float32)



def grid_step(height: int, width: int) -> int:
    """Block size of the grid for an image of this size (at least 2, so that every cell averages
    some pixels and the noise around it can be measured; 1 for images too small for that)."""
    if min(height, width) < 8:
        return 1
    return int(np.clip(round(max(height, width) / GRID_CELLS), 2, MAX_STEP))


def block_means(rgb: np.ndarray, step: int) -> np.ndarray:
    """Means of step x step blocks (float32); the last row and column of blocks are padded by replication."""
    h, w = rgb.shape[:2]
    gh, gw = -(-h // step), -(-w // step)
    src = rgb[:, :, :3]
    if gh * step != h or gw * step != w:
        src = cv2.copyMakeBorder(src, 0, gh * step - h, 0, gw * step - w, cv2.BORDER_REPLICATE)
    if step == 1:
        return src.astype(np.float32)
    # OpenCV's 8-bit area reduction rounds each mean to a level: half a level off at worst, and far
    # cheaper than converting the whole frame to float first.
    return cv2.resize(src, (gw, gh), interpolation=cv2.INTER_AREA).astype(np.float32)


def _unevenness(grid: np.ndarray) -> np.ndarray:
    """Per cell: the largest second difference over the four directions (luma-weighted colour distance).

    A ramp, a vignette or a gutter shadow bends slowly and scores near zero; a cell on an edge of
    paint differs from the mean of its two neighbours by a good part of the step.
    """
    # Padding continues the grid linearly (2 c - inner neighbour): a ramp running off the frame,
    # such as a gutter shadow, stays calm up to its last cell.
    p = cv2.copyMakeBorder(grid, 1, 1, 1, 1, cv2.BORDER_REFLECT_101)
    p[0], p[-1] = 2 * p[1] - p[0], 2 * p[-2] - p[-1]
    p[:, 0], p[:, -1] = 2 * p[:, 1] - p[:, 0], 2 * p[:, -2] - p[:, -1]
    c = p[1:-1, 1:-1]
    out = np.zeros(grid.shape[:2], np.float32)
    for (a0, a1), (b0, b1) in (((1, 0), (1, 2)), ((0, 1), (2, 1)), ((0, 0), (2, 2)), ((0, 2), (2, 0))):
        na = p[a0 : a0 + c.shape[0], a1 : a1 + c.shape[1]]
        nb = p[b0 : b0 + c.shape[0], b1 : b1 + c.shape[1]]
        dev = cv2.transform(c - (na + nb) * 0.5, METRIC)
        out = np.maximum(out, np.sqrt((dev * dev).sum(axis=2)))
    return out


def push_pull(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Fill a grid where `weights` is 0 from the weighted values around it (a pyramid; values kept where weight 1)."""
    w = weights.astype(np.float32)
    levels = [(values * w[..., None], w)]
    while min(levels[-1][1].shape) > 1:
        pv, pw = levels[-1]
        size = (max(1, (pw.shape[1] + 1) // 2), max(1, (pw.shape[0] + 1) // 2))
        levels.append((cv2.resize(pv, size, interpolation=cv2.INTER_AREA), cv2.resize(pw, size, interpolation=cv2.INTER_AREA)))
    pv, pw = levels[-1]
    filled = pv / np.maximum(pw, 1e-6)[..., None]
    for pv, pw in reversed(levels[:-1]):
        up = cv2.resize(filled, (pw.shape[1], pw.shape[0]), interpolation=cv2.INTER_LINEAR)
        own = pv / np.maximum(pw, 1e-6)[..., None]
        trust = np.clip(pw * 2.0, 0.0, 1.0)[..., None]  # a quarter-covered block is already a fair estimate
        filled = own * trust + up * (1.0 - trust)
    return filled.astype(np.float32)


def line_fill(values: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Along every row, linear interpolation between the nearest seen cells left and right (the
    nearest one beyond the last), and the distance to the nearest seen cell; inf where a row sees nothing."""
    gh, gw = seen.shape
    xs = np.broadcast_to(np.arange(gw), (gh, gw))
    left = np.maximum.accumulate(np.where(seen, xs, -1), axis=1)
    right = np.minimum.accumulate(np.where(seen, xs, gw)[:, ::-1], axis=1)[:, ::-1]
    has_l, has_r = left >= 0, right < gw
    lc, rc = np.where(has_l, left, right), np.where(has_r, right, left)  # one-sided: the nearest one
    any_seen = has_l | has_r
    lc, rc = np.where(any_seen, lc, 0), np.where(any_seen, rc, 0)
    rows = np.arange(gh)[:, None]
    span = np.maximum(rc - lc, 1)
    t = np.where(rc > lc, (xs - lc) / span, 0.0).astype(np.float32)[..., None]
    out = values[rows, lc] * (1.0 - t) + values[rows, rc] * t
    dist = np.minimum(np.where(has_l, xs - left, gw), np.where(has_r, right - xs, gw)).astype(np.float32)
    dist[~any_seen] = np.inf
    return out.astype(np.float32), dist


def interpolate(values: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Fill a grid where `seen` is False from the seen cells nearest along its row and its column.

    The two lines are weighted by how close their nearest seen cell is, so a thin strip of hidden
    backdrop (under a subject standing on the frame's edge, in a gutter shadow) takes the values on
    either side of it in the same row, not the brighter ones above. Where neither line sees anything,
    a push-pull pyramid fills in.
    """
    rows, d_rows = line_fill(values, seen)
    cols_t, d_cols_t = line_fill(np.ascontiguousarray(values.transpose(1, 0, 2)), np.ascontiguousarray(seen.T))
    cols, d_cols = cols_t.transpose(1, 0, 2), d_cols_t.T
    w_r = 1.0 / (1.0 + d_rows) ** 2
    w_c = 1.0 / (1.0 + d_cols) ** 2
    total = w_r + w_c
    out = (rows * w_r[..., None] + cols * w_c[..., None]) / np.maximum(total, 1e-12)[..., None]
    blind = total <= 0
    if blind.any():
        out[blind] = push_pull(values, seen)[blind]
    out[seen] = values[seen]
    return out.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _design(gh: int, gw: int, degree: int) -> np.ndarray:
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float64)
    xs = xs.reshape(-1) / max(1, gw - 1) * 2 - 1
    ys = ys.reshape(-1) / max(1, gh - 1) * 2 - 1
    cols = [xs**i * ys**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    return np.stack(cols, axis=1).astype(np.float32)


def _robust_surface(grid: np.ndarray, mask: np.ndarray, degree: int) -> np.ndarray:
    """A polynomial surface of `degree` fitted to the masked cells, twice reweighted against outliers."""
    gh, gw = mask.shape
    A = _design(gh, gw, degree)
    vals = grid.reshape(-1, 3)
    sel = np.flatnonzero(mask.reshape(-1))
    if len(sel) < 4 * A.shape[1]:
        return np.broadcast_to(np.median(vals[sel], axis=0) if len(sel) else vals.mean(axis=0), grid.shape).astype(np.float32)
    step = max(1, len(sel) // 3000)  # a few thousand cells fix six coefficients
    sel = sel[::step]
    As, vs = A[sel].astype(np.float64), vals[sel].astype(np.float64)
    wts = np.ones(len(sel))
    for _ in range(2):
        # Weighted normal equations (six unknowns): far cheaper than an SVD solver, and well
        # conditioned on coordinates in -1..1.
        aw = As * wts[:, None]
        coef = np.linalg.solve(aw.T @ As + np.eye(A.shape[1]) * 1e-9, aw.T @ vs)
        resid = np.sqrt(((vs - As @ coef) ** 2).sum(axis=1))
        scale = max(1.0, float(np.median(resid)) * 1.5)
        wts = 1.0 / (1.0 + (resid / (3.0 * scale)) ** 2)  # Cauchy weights: far-off cells count little
    return (A @ coef.astype(np.float32)).reshape(gh, gw, 3)


def _border_cells(shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = True
    return m


def estimate_backdrop(rgb: np.ndarray, *, exclude: np.ndarray | None = None) -> BackdropField:
    """The backdrop of a drawing on a plain (possibly unevenly lit or textured) backdrop, per pixel.

    `exclude` (HxW bool, optional) marks pixels known not to be backdrop (a segmenter's subject).
    """
    h, w = rgb.shape[:2]
    step = grid_step(h, w)
    grid = block_means(rgb, step)
    gh, gw = grid.shape[:2]
    # The border's own smooth fit (on the grid's border cells: already averaged, and few) tells
    # which border cells are backdrop at all.
    ring = _border_cells((gh, gw))
    rows, cols = np.nonzero(ring)
    border = fit_background(grid, rows=rows, cols=cols)
    seeds = ring & _matches(grid, border)
    # Lightly smoothed first: JPEG turns a steep shadow into steps at its 8 px block edges.
    rough = _unevenness(cv2.GaussianBlur(grid, (3, 3), 0.8))
    # Noise of the unevenness measure on the backdrop itself (calm border cells) sets its limit.
    base = rough[seeds] if seeds.any() else rough[_border_cells((gh, gw))]
    limit = max(3.0, 4.0 * float(np.median(base)) if len(base) else 3.0)
    calm = rough <= limit
    if exclude is not None:
        calm &= ~_blocks_touching(exclude, step, (gh, gw))
    n, labels = cv2.connectedComponents(calm.view(np.uint8), connectivity=4)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[seeds & calm])] = True
    keep[0] = False
    visible = keep[labels]
    # Cells next to anything else may hold part of an anti-aliased edge: trust them less.
    inner = cv2.erode(visible.view(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE).view(bool)
    if inner.sum() >= 8:
        visible = inner
    if visible.sum() < 4:  # nothing calm along the border: the smooth border fit is all there is
        coarse = border.evaluate(np.arange(gh), np.arange(gw), gh, gw)
        return _finish(rgb, np.ascontiguousarray(coarse, dtype=np.float32), step, 0.0)
    surface = _robust_surface(grid, visible, POLY_DEGREE)
    rest = grid - surface
    if float(np.abs(rest[visible]).max()) <= 1.0:
        # The surface already explains all that is seen to within a level (flat digital art, a
        # plain gradient): nothing to interpolate, and nothing walled off can change that.
        return _finish(rgb, surface, step, float(visible.mean()))
    # Calm areas walled off from the border (a gap between limbs, or paint of the backdrop's colour)
    # that match the estimate closely are backdrop too: measured, not interpolated, the estimate
    # there follows a strong vignette that the interpolation alone would miss.
    walled = calm & ~keep[labels] & ~visible
    if walled.any():
        # (Compared with a quick push-pull estimate; the careful interpolation runs once, below.)
        diff = cv2.transform(rest - push_pull(rest, visible), METRIC)
        near = np.sqrt((diff * diff).sum(axis=2)) <= WALLED_MATCH
        sums = np.bincount(labels[walled], weights=near[walled], minlength=n)
        sizes = np.bincount(labels[walled], minlength=n)
        join = (sizes > 0) & (sums >= 0.8 * sizes)
        join[0] = False
        visible = visible | cv2.erode((join[labels] & walled).view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    return _finish(rgb, surface + interpolate(rest, visible), step, float(visible.mean()))


def estimate_from_mask(rgb: np.ndarray, backdrop: np.ndarray) -> BackdropField:
    """The backdrop where a mask (a segmenter's) says backdrop, interpolated under the rest.

    Any background, busy or not: no calmness is asked for, only blocks wholly inside the mask count.
    """
    h, w = rgb.shape[:2]
    step = grid_step(h, w)
    grid = block_means(rgb, step)
    gh, gw = grid.shape[:2]
    seen = ~_blocks_touching(~backdrop, step, (gh, gw))
    if seen.sum() < 4:  # the mask leaves no backdrop to see: fall back to the border's smooth fit
        rows, cols = np.nonzero(_border_cells((gh, gw)))
        border = fit_background(grid, rows=rows, cols=cols)
        coarse = border.evaluate(np.arange(gh), np.arange(gw), gh, gw)
        return _finish(rgb, np.ascontiguousarray(coarse, dtype=np.float32), step, 0.0)
    return _finish(rgb, push_pull(grid, seen), step, float(seen.mean()))


def _matches(grid: np.ndarray, model: BackgroundModel) -> np.ndarray:
    """Cells whose mean is within the border fit's own inlier distance of it (the fit made on the grid)."""
    gh, gw = grid.shape[:2]
    surf = model.evaluate(np.arange(gh), np.arange(gw), gh, gw)
    diff = cv2.transform(grid - surf, METRIC)
    dist = np.sqrt((diff * diff).sum(axis=2))
    return dist <= max(4.0 * model.sigma, 6.0) * np.sqrt(3.0)


def _blocks_touching(mask: np.ndarray, step: int, shape: tuple[int, int]) -> np.ndarray:
    """Grid cells holding at least one pixel of `mask`."""
    gh, gw = shape
    m = mask.view(np.uint8) if mask.dtype == bool else (mask > 0).view(np.uint8)
    h, w = m.shape
    if gh * step != h or gw * step != w:
        m = cv2.copyMakeBorder(m, 0, gh * step - h, 0, gw * step - w, cv2.BORDER_REPLICATE)
    return cv2.resize(m.astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA) > 0


def _finish(rgb: np.ndarray, grid: np.ndarray, step: int, visible: float) -> BackdropField:
    """Border statistics (noise, share matching, spread, mean colour) of a grid estimate."""
    h, w = rgb.shape[:2]
    field = BackdropField(grid=grid, step=step, sigma=MIN_SIGMA, inlier_fraction=1.0, border_spread=0.0,
                          mean_colour=(0, 0, 0), visible=visible)
    rows, cols = border_samples((h, w), max_samples=1500)
    est = field.at(rows.astype(np.float32), cols.astype(np.float32))
    dist = np.sqrt(((rgb[rows, cols, :3].astype(np.float32) - est) ** 2).sum(axis=1))
    sigma = max(MIN_SIGMA, float(np.median(dist)) / 1.54)  # chi with 3 dof: median ~ 1.54 sigma
    good = dist <= max(4.0 * sigma, 6.0)
    if good.any():
        sigma = max(MIN_SIGMA, float(np.median(dist[good])) / 1.54)
    field.sigma = sigma
    field.inlier_fraction = float(good.mean()) if len(good) else 0.0
    field.border_spread = float((est.max(axis=0) - est.min(axis=0)).max()) if len(est) else 0.0
    field.mean_colour = tuple(int(v) for v in np.clip(np.round(est.mean(axis=0)), 0, 255))  # type: ignore[assignment]
    return field
