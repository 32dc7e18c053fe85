"""Water: a beach, the sea at sunset, a lake reflecting hills, underwater."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import (
    blend,
    disc,
    fbm,
    jitter,
    noise_1d,
    rgb,
    sample,
    smoothstep,
    soft_mask_below,
    tileable_fbm,
    vertical_gradient,
)
from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.ground_layers import ground_coords, ground_layer, ridge, water_layer
from datakit.backgrounds.procedural.outdoor import outdoor
from datakit.backgrounds.procedural.sky_layers import clouds, sky, sun_glow


def draw_beach(rng, h, w) -> Drawn:
    img, sky_img, hor, hy = outdoor(rng, h, w, "day", (0.42, 0.55))
    img = water_layer(rng, img, hy, "day", sky_img)
    # The shore: a wavy line between the sea and the sand, with a foam edge.
    shore = hy + (h - hy) * rng.uniform(0.25, 0.45) + noise_1d(rng, w, cells=3) * (h - hy) * 0.06
    haze = sky_img[hy].mean(axis=0)
    sand = ground_layer(rng, h, w, hy, "sand", haze)
    m = soft_mask_below(shore, h, feather=2.0)
    foam = soft_mask_below(shore - (h - hy) * 0.015, h, 2.0) * (1 - m)
    img = blend(img, np.array([0.86, 0.9, 0.92], np.float32), foam * 0.8)
    wet = soft_mask_below(shore, h, 2.0) * (1 - soft_mask_below(shore + (h - hy) * 0.06, h, 6.0))
    img = blend(img, sand * (1 - 0.25 * wet[..., None]), m)
    stand = float(np.clip(np.median(shore) / h + 0.5 * (1 - np.median(shore) / h), 0, 0.97))
    return Drawn(img, round(stand, 3), [])


def draw_sunset_sea(rng, h, w) -> Drawn:
    horizon = rng.uniform(0.5, 0.62)
    hy = int(h * horizon)
    img = sky(rng, h, w, horizon, "sunset")
    sun_x = w * rng.uniform(0.25, 0.75)
    sun_glow(img, hy - h * rng.uniform(0.02, 0.12), sun_x, w * rng.uniform(0.03, 0.05), rgb("#ffcf7a"))
    sky_img = img.copy()
    img = clouds(rng, img, horizon, "sunset", rng.uniform(0.2, 0.45))
    img = water_layer(rng, img, hy, "sunset", sky_img)
    # The sun's glitter path on the water.
    x, z = ground_coords(h, w, hy)
    band = np.exp(-((np.arange(w, dtype=np.float32) - sun_x) / (w * 0.06)) ** 2)[None, :]
    glit = sample(tileable_fbm(rng, 512, cells=12, octaves=3, aspect=5.0), x * 40, z * 90)
    path = band * smoothstep(0.55, 0.85, glit) * (np.arange(h) > hy)[:, None]
    img += (path[..., None] * rgb("#ffc070")) * 0.6
    return Drawn(img, None, [])


def draw_lake(rng, h, w) -> Drawn:
    img, sky_img, hor, hy = outdoor(rng, h, w, "day", (0.45, 0.55))
    haze = img[min(hy, h - 1)].mean(axis=0)
    col = jitter(rng, rgb("#4f6b4a"), 0.05)
    img = ridge(rng, img, hy, h * rng.uniform(0.15, 0.25), col, cells=3, sharp=True, haze=haze, haze_amt=0.3)
    mirror_src = img.copy()
    img = water_layer(rng, img, hy, "day", mirror_src)
    shore = hy + (h - hy) * rng.uniform(0.45, 0.6) + noise_1d(rng, w, 3) * (h - hy) * 0.05
    ground = ground_layer(rng, h, w, hy, "grass", haze)
    img = blend(img, ground, soft_mask_below(shore, h, 2.0))
    return Drawn(img, round(float(np.clip(np.median(shore) / h + 0.6 * (1 - np.median(shore) / h), 0, 0.97)), 3), [])


def draw_underwater(rng, h, w) -> Drawn:
    top, bottom = jitter(rng, rgb("#3fa3c4"), 0.05), jitter(rng, rgb("#06243f"), 0.03)
    img = vertical_gradient(h, w, [(0, top), (0.45, (top + bottom) / 2), (1, bottom)])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Light shafts from the surface, fanning out from a point above the frame.
    cx = w * rng.uniform(0.2, 0.8)
    ang = np.arctan2(xx - cx, yy + h * 0.6)
    shafts = 0.5 + 0.5 * np.sin(ang * rng.uniform(18, 30) + fbm(rng, h, w, 2, 3) * 0.6)
    shafts = smoothstep(0.6, 1.0, shafts) * smoothstep(0.9, 0.0, yy / h)
    img += shafts[..., None] * np.array([0.12, 0.2, 0.2], np.float32)
    # Brighter, rippled water just under the surface.
    ripple = fbm(rng, h, w, cells=8, octaves=4, aspect=3.0)
    img += (ripple * smoothstep(0.25, 0.0, yy / h))[..., None] * np.array([0.05, 0.1, 0.1], np.float32)
    for _ in range(int(rng.integers(25, 60))):  # bubbles: a faint fill and a brighter rim
        r = w * rng.uniform(0.003, 0.014)
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        disc(img, y, x, r, (0.75, 0.9, 0.95), alpha=0.25, softness=1)
        disc(img, y - r * 0.35, x - r * 0.35, r * 0.3, (0.95, 1, 1), alpha=0.6, softness=1)
    return Drawn(img, None, [])
