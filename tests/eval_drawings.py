"""Test images with a known answer for the eval metrics, drawn at any size (32 px up).

Each drawing is what a human would call it: a white or off-white studio background, a snow field,
an overcast sky, busy scenes, a subject on white, a subject on a scene. Colours are plain sRGB
values; every drawing gets a little pixel noise, as generated images have.
"""

from __future__ import annotations

import numpy as np

SUBJECT_RED = (205, 40, 45)
SUBJECT_YELLOW = (250, 205, 40)
SUBJECT_WHITE = (250, 250, 250)


def _noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def _grid(s: int):
    yy, xx = np.mgrid[:s, :s].astype(np.float64) / max(1, s - 1)
    return yy, xx


def flat(s: int, colour, rng) -> np.ndarray:
    return _noise(np.broadcast_to(np.array(colour, np.float64), (s, s, 3)).copy(), rng)


def white(s: int, rng) -> np.ndarray:
    return flat(s, (253, 253, 253), rng)


def off_white(s: int, rng) -> np.ndarray:
    """Cream paper with a soft vignette: still a white background to a viewer."""
    yy, xx = _grid(s)
    vignette = 10 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    img = np.stack([243 - vignette, 239 - vignette, 228 - vignette], axis=2)
    return _noise(img, rng)


def light_grey(s: int, rng) -> np.ndarray:
    return flat(s, (196, 196, 198), rng)


def gradient(s: int, rng) -> np.ndarray:
    """A smooth blue-to-pink studio gradient: plain, not white."""
    yy, _ = _grid(s)
    top, bottom = np.array([90, 140, 220.0]), np.array([235, 170, 200.0])
    return _noise(top + (bottom - top) * yy[..., None], rng)


def _sky(yy, top, bottom):
    top, bottom = np.array(top, np.float64), np.array(bottom, np.float64)
    return top + (bottom - top) * yy[..., None]


def _trees(img, s, horizon, rng, colour=(35, 70, 45)):
    """A row of dark conifers standing on the horizon."""
    yy, xx = np.mgrid[:s, :s]
    for cx in np.linspace(0.05, 0.95, 7) * s:
        h = s * rng.uniform(0.12, 0.22)
        half = h * 0.35
        inside = (yy <= horizon * s) & (yy >= horizon * s - h) & (np.abs(xx - cx) <= half * (yy - (horizon * s - h)) / h)
        img[inside] = colour


def snow_field(s: int, rng) -> np.ndarray:
    """Pale blue sky, a line of trees, sunlit snow with blue shadow drifts."""
    yy, xx = _grid(s)
    horizon = 0.35
    img = _sky(yy / horizon, (120, 170, 230), (200, 220, 245))
    snow = np.array([247.0, 249, 253])
    shadow = np.array([182.0, 200, 228])
    drift = np.sin(xx * 9 + yy * 14) + 0.6 * np.sin(xx * 23 - yy * 5)
    shade = np.clip((drift - 0.1) / 0.6, 0, 1)[..., None]
    ground = snow + (shadow - snow) * shade
    img = np.where((yy >= horizon)[..., None], ground, img)
    _trees(img, s, horizon, rng)
    return _noise(img, rng)


def snow_overcast(s: int, rng) -> np.ndarray:
    """A snow field under a flat grey overcast sky: bright, but no white background."""
    img = snow_field(s, rng).astype(np.float64)
    yy, _ = _grid(s)
    sky = _sky(yy / 0.35, (178, 180, 186), (200, 202, 206))
    img = np.where((yy < 0.35 - 0.2)[..., None], sky, img)
    return _noise(img, rng)


def overcast_sky(s: int, rng) -> np.ndarray:
    """A sky of grey clouds filling the frame."""
    yy, xx = _grid(s)
    clouds = np.sin(xx * 7 + 1) * np.sin(yy * 5 + 2) + 0.5 * np.sin(xx * 17 + yy * 11)
    base = 196 + 14 * clouds
    img = np.stack([base, base + 2, base + 6], axis=2)
    return _noise(img, rng)


def beach(s: int, rng) -> np.ndarray:
    """Sky, sea and sand in three bands."""
    yy, _ = _grid(s)
    img = _sky(yy, (60, 130, 220), (150, 200, 240))
    img = np.where(((yy >= 0.45) & (yy < 0.62))[..., None], np.array([20, 140, 170.0]), img)
    img = np.where((yy >= 0.62)[..., None], np.array([225, 200, 150.0]), img)
    return _noise(img, rng)


def forest(s: int, rng) -> np.ndarray:
    """Dense trunks and foliage in many greens and browns."""
    img = np.zeros((s, s, 3))
    yy, xx = np.mgrid[:s, :s]
    img[:] = (60, 110, 50)
    for _ in range(40):
        cx, cy, r = rng.uniform(0, s), rng.uniform(0, s * 0.7), rng.uniform(s * 0.05, s * 0.15)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.choice([(30, 80, 35), (80, 150, 60), (110, 170, 70), (20, 60, 30)])
    for cx in rng.uniform(0, s, 6):
        img[(np.abs(xx - cx) < max(1, s * 0.03)) & (yy > s * 0.3)] = (90, 60, 35)
    img[yy > s * 0.85] = (70, 120, 45)
    return _noise(img, rng)


def city(s: int, rng) -> np.ndarray:
    """Buildings with windows against a sky, a road."""
    img = np.zeros((s, s, 3))
    yy, xx = np.mgrid[:s, :s]
    img[:] = (150, 190, 235)
    x = 0
    while x < s:
        w = int(rng.uniform(0.12, 0.25) * s) + 1
        top = int(rng.uniform(0.1, 0.45) * s)
        img[top:, x:x + w] = rng.choice([(120, 110, 100), (170, 150, 130), (90, 95, 110), (200, 190, 170)])
        step = max(2, s // 16)
        for wy in range(top + step // 2, int(s * 0.8), step):
            for wx in range(x + 1, x + w - 1, step):
                img[wy:wy + max(1, step // 2), wx:wx + max(1, step // 2)] = (240, 230, 150)
        x += w
    img[yy > s * 0.8] = (60, 60, 65)
    img[(yy > s * 0.88) & (yy < s * 0.9) & ((xx // max(2, s // 8)) % 2 == 0)] = (240, 240, 240)
    return _noise(img, rng)


def mascot_rgba(s: int) -> np.ndarray:
    """The test subject as a cut-out: a red round body with a yellow face and a white belly, on transparency."""
    yy, xx = np.mgrid[:s, :s].astype(np.float64) / max(1, s - 1)
    img = np.zeros((s, s, 4), np.uint8)
    body = ((xx - 0.5) / 0.42) ** 2 + ((yy - 0.58) / 0.4) ** 2 < 1
    face = ((xx - 0.5) / 0.22) ** 2 + ((yy - 0.32) / 0.16) ** 2 < 1
    belly = ((xx - 0.5) / 0.14) ** 2 + ((yy - 0.7) / 0.12) ** 2 < 1
    img[body] = (*SUBJECT_RED, 255)
    img[face] = (*SUBJECT_YELLOW, 255)
    img[belly] = (*SUBJECT_WHITE, 255)
    return img


def place(background: np.ndarray, cutout: np.ndarray, *, scale: float = 0.55, bottom: bool = False) -> np.ndarray:
    """Paste a cut-out (nearest-neighbour resized) centred, or standing on the bottom edge."""
    s = background.shape[0]
    size = max(4, int(round(s * scale)))
    idx = (np.arange(size) * cutout.shape[0] / size).astype(int)
    small = cutout[idx][:, idx]
    y0 = s - size if bottom else (s - size) // 2
    x0 = (s - size) // 2
    out = background.copy()
    region = out[y0:y0 + size, x0:x0 + size]
    alpha = small[..., 3:4].astype(np.float64) / 255.0
    region[:] = (small[..., :3] * alpha + region * (1 - alpha)).astype(np.uint8)
    return out


def recoloured_mascot(s: int) -> np.ndarray:
    """Another object of the same shape in other colours (blue and green)."""
    img = mascot_rgba(s)
    red = (img[..., 0] == SUBJECT_RED[0]) & (img[..., 3] > 0)
    yellow = (img[..., 0] == SUBJECT_YELLOW[0]) & (img[..., 3] > 0)
    img[red, :3] = (40, 70, 200)
    img[yellow, :3] = (60, 170, 80)
    return img
