"""Vectorised noise and drawing primitives for procedural backgrounds (NumPy + OpenCV, float32 RGB 0..1).

Value noise is a small grid of random numbers upsampled with bicubic interpolation; summing a few
octaves gives fractal (fBm) noise. One cv2.resize per octave keeps a 1024 px texture to a few ms.
"""

from __future__ import annotations

import cv2
import numpy as np


def rgb(hex_or_tuple) -> np.ndarray:
    """A colour as float32 RGB 0..1 from '#rrggbb' or a 0..255 tuple."""
    if isinstance(hex_or_tuple, str):
        h = hex_or_tuple.lstrip("#")
        return np.array([int(h[i : i + 2], 16) for i in (0, 2, 4)], np.float32) / 255.0
    return np.asarray(hex_or_tuple, np.float32) / 255.0


def jitter(rng: np.random.Generator, color: np.ndarray, amount: float = 0.06) -> np.ndarray:
    """The colour with a small random shift per channel and in brightness (per-image palette variety)."""
    shift = rng.normal(0, amount / 2, 3) + rng.normal(0, amount)
    return np.clip(color + shift, 0, 1).astype(np.float32)


def value_noise(rng: np.random.Generator, h: int, w: int, cells_y: float, cells_x: float) -> np.ndarray:
    """Smooth noise in 0..1 with about cells_x x cells_y features across the image."""
    cells_x, cells_y = max(cells_x, 0.5), max(cells_y, 0.5)
    # Big features are computed at a reduced size (24 px per cell is smooth enough) and scaled up.
    f = min(1.0, 24.0 / min(w / cells_x, h / cells_y))
    hh, ww = max(2, int(np.ceil(h * f))), max(2, int(np.ceil(w * f)))
    sx, sy = ww / cells_x, hh / cells_y
    gy, gx = int(np.ceil(cells_y)) + 3, int(np.ceil(cells_x)) + 3
    grid = rng.random((gy, gx), dtype=np.float32)
    big = cv2.resize(grid, (int(np.ceil(gx * sx)), int(np.ceil(gy * sy))), interpolation=cv2.INTER_CUBIC)
    # Start inside the second cell: the first and last cells are only there for the cubic kernel.
    oy = int(sy + rng.uniform(0, sy))
    ox = int(sx + rng.uniform(0, sx))
    out = big[oy : oy + hh, ox : ox + ww]
    if (hh, ww) != (h, w):
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def _normalise(total: np.ndarray) -> np.ndarray:
    """Stretch to 0..1 using robust limits measured on a subsample (a full sort costs more than the noise)."""
    lo, hi = np.percentile(total[::4, ::4], (1, 99))
    return np.clip((total - lo) * (1.0 / max(hi - lo, 1e-6)), 0, 1).astype(np.float32)


def fbm(
    rng: np.random.Generator,
    h: int,
    w: int,
    cells: float = 4.0,
    octaves: int = 5,
    persistence: float = 0.5,
    aspect: float = 1.0,
) -> np.ndarray:
    """Fractal noise normalised to 0..1; aspect > 1 stretches features horizontally (clouds, water)."""
    total = np.zeros((h, w), np.float32)
    amp, norm, c = 1.0, 0.0, cells
    for _ in range(octaves):
        cx = c * w / max(h, w)
        cy = c * h / max(h, w) * aspect
        total += amp * value_noise(rng, h, w, cy, cx)
        norm += amp
        amp *= persistence
        c *= 2.0
        if c > max(h, w) / 2:  # finer than two pixels adds nothing
            break
    return _normalise(total / norm)


def noise_1d(rng: np.random.Generator, w: int, cells: float, octaves: int = 5, persistence: float = 0.5) -> np.ndarray:
    """Fractal 1-D noise in -1..1 (ridge lines, skylines)."""
    total = np.zeros(w, np.float32)
    amp, norm, c = 1.0, 0.0, cells
    for _ in range(octaves):
        n = max(2, int(c) + 3)
        pts = rng.uniform(-1, 1, n).astype(np.float32)
        x = np.linspace(1, n - 2, w, dtype=np.float32)
        total += amp * np.interp(x, np.arange(n), pts).astype(np.float32)
        norm += amp
        amp *= persistence
        c *= 2
    total = total / norm
    total = cv2.GaussianBlur(total[None, :], (0, 0), sigmaX=max(0.5, w / (cells * 40)))[0]
    return total


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    """Hermite ramp from 0 at e0 to 1 at e1."""
    t = np.clip((np.asarray(x, np.float32) - np.float32(e0)) * np.float32(1.0 / (e1 - e0)), 0, 1)
    return t * t * (3 - 2 * t)


def vertical_gradient(h: int, w: int, stops: list[tuple[float, np.ndarray]]) -> np.ndarray:
    """An HxWx3 image whose colour runs through (position 0..1, colour) stops from top to bottom."""
    ys = np.linspace(0, 1, h, dtype=np.float32)
    pos = np.array([p for p, _ in stops], np.float32)
    cols = np.stack([c for _, c in stops]).astype(np.float32)
    column = np.stack([np.interp(ys, pos, cols[:, i]) for i in range(3)], axis=1)
    return np.broadcast_to(column[:, None, :], (h, w, 3)).copy()


def blend(base: np.ndarray, color, mask: np.ndarray) -> np.ndarray:
    """base where mask is 0, colour (or image) where mask is 1 (float32 throughout: this runs a lot)."""
    m = np.asarray(mask, np.float32)
    if m.ndim == 2:
        m = m[..., None]
    out = np.asarray(color, np.float32) - base
    out *= m
    out += base
    return out


def soft_mask_below(profile_y: np.ndarray, h: int, feather: float = 1.5) -> np.ndarray:
    """HxW mask that is 1 below a per-column y profile (in pixels), anti-aliased."""
    ys = np.arange(h, dtype=np.float32)[:, None]
    return np.clip((ys - profile_y[None, :]) / feather + 0.5, 0, 1)


def disc(img: np.ndarray, cy: float, cx: float, r: float, color, alpha: float = 1.0, softness: float = 1.0,
         additive: bool = False) -> None:
    """Draw an anti-aliased (optionally soft-edged) filled circle into img in place, touching only its box."""
    h, w = img.shape[:2]
    pad = r + softness + 2
    y0, y1 = int(max(0, cy - pad)), int(min(h, cy + pad + 1))
    x0, x1 = int(max(0, cx - pad)), int(min(w, cx + pad + 1))
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.ogrid[y0:y1, x0:x1]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2, dtype=np.float32)
    m = np.clip((r - d) / max(softness, 0.5) + 0.5, 0, 1)[..., None] * alpha
    patch = img[y0:y1, x0:x1]
    col = np.asarray(color, np.float32)
    img[y0:y1, x0:x1] = patch + col * m if additive else patch * (1 - m) + col * m


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur (sigma in pixels)."""
    if sigma <= 0.3:
        return img
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma)


def finish(img: np.ndarray, rng: np.random.Generator, *, grain: float = 0.012, vignette: float = 0.18) -> np.ndarray:
    """Vignette + film grain (so flat areas do not band), clipped and converted to uint8 RGB."""
    h, w = img.shape[:2]
    if vignette > 0:
        yy = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
        xx = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
        v = 1 - vignette * np.clip(xx * xx * 0.6 + yy * yy * 0.6 - 0.15, 0, 1)
        img = img * v[..., None]
    if grain > 0:
        img = img + rng.normal(0, grain, (h, w, 1)).astype(np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def tileable_fbm(rng: np.random.Generator, size: int, cells: int = 4, octaves: int = 5, persistence: float = 0.5,
                 aspect: float = 1.0) -> np.ndarray:
    """Seamlessly tiling fractal noise (size x size, 0..1), for textures sampled with wrap-around."""
    total = np.zeros((size, size), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        nx = max(1, cells * 2**o)
        ny = max(1, int(round(nx * aspect)))
        if size / nx < 2:
            break
        grid = rng.random((ny, nx), dtype=np.float32)
        padded = np.pad(grid, 2, mode="wrap")
        cy, cx = size / ny, size / nx
        big = cv2.resize(padded, (int(round((nx + 4) * cx)), int(round((ny + 4) * cy))), interpolation=cv2.INTER_CUBIC)
        y0, x0 = int(round(2 * cy)), int(round(2 * cx))
        total += amp * big[y0 : y0 + size, x0 : x0 + size]
        norm += amp
        amp *= persistence
    return _normalise(total / norm)


def sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sample a tiling texture at texel coordinates (u, v) (any real values; wraps around)."""
    th, tw = tex.shape[:2]
    mx = np.mod(u, tw).astype(np.float32)
    my = np.mod(v, th).astype(np.float32)
    return cv2.remap(tex, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
