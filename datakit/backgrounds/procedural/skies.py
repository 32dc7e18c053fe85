"""Sky only: a cloudy blue sky, a starry night over dark hills, outer space."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import blend, disc, fbm, jitter, rgb, smoothstep, soft_mask_below
from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.ground_layers import ridge
from datakit.backgrounds.procedural.outdoor import stand_height
from datakit.backgrounds.procedural.sky_layers import clouds, sky, stars


def draw_sky(rng, h, w) -> Drawn:
    img = sky(rng, h, w, 1.15, "day")
    img = clouds(rng, img, 1.4, "day", rng.uniform(0.35, 0.6))
    return Drawn(img, None, [])


def draw_starry_night(rng, h, w) -> Drawn:
    horizon = rng.uniform(0.7, 0.82)
    hy = int(h * horizon)
    img = sky(rng, h, w, horizon, "night")
    # A faint Milky Way band across the sky.
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(-0.8, 0.8)
    d = np.abs((yy - h * rng.uniform(0.2, 0.5)) - a * (xx - w / 2)) / (h * 0.18)
    band = np.exp(-d**2) * fbm(rng, h, w, cells=5, octaves=6)
    img += band[..., None] * np.array([0.16, 0.14, 0.22], np.float32)
    stars(rng, img, horizon, density=1.4)
    extra = []
    if rng.random() < 0.5:
        disc(img, h * rng.uniform(0.1, 0.3), w * rng.uniform(0.1, 0.9), w * 0.03, rgb("#e8e4d0"), softness=2)
        extra.append("moon")
    hill = jitter(rng, rgb("#05070d"), 0.01)
    img = ridge(rng, img, hy, h * 0.12, hill, cells=3, sharp=False, texture=False)
    img = blend(img, hill, soft_mask_below(np.full(w, hy, np.float32), h))
    return Drawn(img, stand_height(horizon, rng), extra)


def draw_space(rng, h, w) -> Drawn:
    img = np.zeros((h, w, 3), np.float32) + jitter(rng, rgb("#04040c"), 0.01)
    neb = fbm(rng, h, w, cells=3, octaves=7, persistence=0.55)
    neb2 = fbm(rng, h, w, cells=4, octaves=6)
    c1, c2 = [rgb(c) for c in [("#6a2c91", "#1f6fb2"), ("#a02f5a", "#2c3f9e"), ("#1b7f8a", "#6b2f9a")][rng.integers(3)]]
    m = smoothstep(0.45, 1.0, neb)[..., None]
    img += (c1 * neb2[..., None] + c2 * (1 - neb2[..., None])) * m * 0.7
    stars(rng, img, 1.0, density=1.2)
    extra = []
    if rng.random() < 0.5:
        r = w * rng.uniform(0.08, 0.2)
        cy, cx = h * rng.uniform(0.2, 0.8), w * rng.uniform(0.15, 0.85)
        yy, xx = np.ogrid[0:h, 0:w]
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2, dtype=np.float32)
        pm = np.clip((r - d) + 0.5, 0, 1)
        light = np.clip(1 - ((yy - cy + r * 0.5) ** 2 + (xx - cx + r * 0.5) ** 2) ** 0.5 / (2 * r), 0.05, 1)
        bands = 0.75 + 0.25 * np.sin((yy - cy) / r * rng.uniform(6, 14) + fbm(rng, h, w, 6, 3) * 2)
        pcol = jitter(rng, [rgb("#c98b5a"), rgb("#6a8fc9"), rgb("#8fb07a")][rng.integers(3)], 0.05)
        img = blend(img, pcol[None, None] * (light * bands)[..., None], pm)
        extra.append("planet")
    return Drawn(img, None, extra)
