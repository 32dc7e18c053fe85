"""Sky layers: gradients by time of day, fBm clouds, stars, a low sun."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import blend, disc, fbm, jitter, rgb, smoothstep, vertical_gradient


SKY_PALETTES = {
    # (zenith, horizon) colours; each image jitters them.
    "day": [("#2a64c0", "#a7cbe8"), ("#3b7dd8", "#b9d7ee"), ("#1f5aa8", "#8fbde3"), ("#4a86c9", "#c4d9e6")],
    "sunset": [("#2b3566", "#f4a251"), ("#3a2f5e", "#f08a4b"), ("#24305e", "#e9b06a"), ("#472a57", "#f27f5f")],
    "night": [("#03050f", "#18233f"), ("#060a1c", "#1f2b4d"), ("#02040a", "#14203a")],
}


def sky(rng: np.random.Generator, h: int, w: int, horizon: float, tod: str) -> np.ndarray:
    """A sky gradient down to the horizon (fraction of h), continued a little below it."""
    top, bottom = (rgb(c) for c in SKY_PALETTES[tod][rng.integers(len(SKY_PALETTES[tod]))])
    top, bottom = jitter(rng, top, 0.04), jitter(rng, bottom, 0.04)
    if tod == "sunset":
        mid = np.clip((top + bottom) / 2 + np.array([0.22, -0.02, 0.04], np.float32), 0, 1)
        stops = [(0.0, top), (horizon * 0.55, mid), (horizon, bottom), (1.0, bottom)]
    else:
        stops = [(0.0, top), (horizon, bottom), (1.0, bottom)]
    return vertical_gradient(h, w, stops)


def clouds(rng, img, horizon: float, tod: str, coverage: float | None = None) -> np.ndarray:
    """Soft fBm clouds, flattened towards the horizon and lit for the time of day."""
    h, w = img.shape[:2]
    coverage = rng.uniform(0.25, 0.6) if coverage is None else coverage
    n = fbm(rng, h, w, cells=rng.uniform(2.5, 4.5), octaves=6, aspect=rng.uniform(2.0, 3.5))
    mask = smoothstep(1 - coverage, 1 - coverage + 0.3, n)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    mask *= smoothstep(horizon, horizon * 0.75, ys)  # fade out at the horizon
    shade = fbm(rng, h, w, cells=6, octaves=4, aspect=2.0)
    if tod == "sunset":
        light, dark = rgb("#f6c2a0"), rgb("#8a5a78")
    elif tod == "night":
        light, dark = rgb("#3a4566"), rgb("#141b30")
    else:
        light, dark = rgb("#f0f2f6") * 0.97, rgb("#a9b4c6")
    color = dark[None, None] * (1 - shade[..., None]) + light[None, None] * shade[..., None]
    return blend(img, color, mask * 0.92)


def stars(rng, img, upto: float, density: float = 1.0) -> None:
    """Scattered stars of varied brightness above `upto` (fraction of height), in place."""
    h, w = img.shape[:2]
    n = int(w * h * upto / 900 * density)
    ys = rng.uniform(0, h * upto, n)
    xs = rng.uniform(0, w, n)
    bright = rng.power(3.0, n) * 0.9
    yi, xi = ys.astype(int), xs.astype(int)
    tint = np.stack([0.9 + 0.1 * rng.random(n), 0.9 + 0.1 * rng.random(n), np.ones(n)], 1).astype(np.float32)
    np.add.at(img, (yi, xi), tint * bright[:, None])
    for i in np.argsort(bright)[-max(3, n // 150):]:  # a few big ones with a glow
        disc(img, ys[i], xs[i], max(1.0, w / 700), (0.85, 0.88, 1.0), alpha=0.9, softness=1.5)


def sun_glow(img, cy, cx, radius, color, strength=0.9):
    """A sun disc with a wide additive halo."""
    h, w = img.shape[:2]
    yy, xx = np.ogrid[0:h, 0:w]
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2, dtype=np.float32) / max(radius, 1)
    halo = (np.exp(-d / 3.0) * 0.5 * strength)[..., None] * np.asarray(color, np.float32)
    img += halo
    disc(img, cy, cx, radius, np.clip(np.asarray(color) * 1.15, 0, 1), softness=radius * 0.15)
