"""Cities: a street with a skyline by day, at sunset and at night; out-of-focus night lights."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import blend, blur, disc, jitter, rgb, soft_mask_below, vertical_gradient
from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.ground_layers import ground_coords, ground_layer
from datakit.backgrounds.procedural.outdoor import GROUND_TINT, outdoor, stand_height
from datakit.backgrounds.procedural.sky_layers import stars


def draw_night_city(rng, h, w) -> Drawn:
    return _city(rng, h, w, "night")


def draw_sunset_city(rng, h, w) -> Drawn:
    return _city(rng, h, w, "sunset")


def draw_city_street(rng, h, w) -> Drawn:
    return _city(rng, h, w, "day")


def _city(rng, h, w, tod: str) -> Drawn:
    night, sunset = tod == "night", tod == "sunset"
    img, _, hor, hy = outdoor(rng, h, w, tod, (0.55, 0.66), cloud_cov=0 if night else None)
    if night:
        stars(rng, img, hor, density=0.3)
    haze = img[min(hy, h - 1)].mean(axis=0)
    for layer in range(3):
        t = layer / 2
        x = 0.0
        base_col = rgb({"night": "#1a2236", "sunset": "#3b2d48", "day": "#6c7c94"}[tod]) * (1 - 0.35 * t)
        while x < w:
            bw = w * rng.uniform(0.04, 0.12) * (1 + 0.6 * t)
            bh = h * rng.uniform(0.08, 0.35) * (1 - 0.35 * t)
            x0, x1 = int(x), int(min(w, x + bw))
            y0 = int(max(0, hy - bh))
            col = jitter(rng, base_col, 0.03) * (1 - 0.3 * (1 - t) * (tod == "day")) + haze * (0.35 * (1 - t))
            img[y0:hy, x0:x1] = col
            # Windows: a grid, lit at random at night, glassy by day.
            cw, ch = max(2, int(bw / rng.integers(4, 8))), max(2, int(h * 0.012 * (1 + t)))
            for wy in range(y0 + ch, hy - ch, ch * 2):
                for wx in range(x0 + cw // 2, x1 - cw, cw * 2):
                    if night or sunset:
                        if rng.random() < (0.45 if night else 0.15):
                            img[wy : wy + ch, wx : wx + cw] = jitter(rng, rgb("#f2c46b"), 0.08) * (0.6 + 0.4 * t)
                    else:
                        img[wy : wy + ch, wx : wx + cw] = col * 0.75 + rgb("#a9c4e0") * 0.25 * rng.uniform(0.5, 1)
            x = x1 + w * rng.uniform(0, 0.01)
    ground = ground_layer(rng, h, w, hy, "asphalt", haze) * (GROUND_TINT["sunset"] if sunset else 1.0)
    gx, gz = ground_coords(h, w, hy)
    # Lane markings: a dashed centre line and two edge lines converging to the vanishing point.
    half = rng.uniform(2.0, 3.5)
    line = (np.abs(gx) < 0.08) & (np.mod(gz, 6.0) < 3.0)
    edges = np.abs(np.abs(gx) - half) < 0.1
    marks = (line | edges).astype(np.float32)
    marks = blur(marks, 0.6)
    mcol = rgb("#d8d2b0") if not night else rgb("#7f7a68")
    ground = blend(ground, mcol, marks * 0.85)
    sidewalk = blend(ground, jitter(rng, rgb("#8d8a86") * (0.5 if night else 1), 0.03), (np.abs(gx) > half + 0.2).astype(np.float32))
    img = blend(img, sidewalk, soft_mask_below(np.full(w, hy, np.float32), h))
    if night:
        for _ in range(int(rng.integers(8, 20))):  # glow of street lights near the horizon
            disc(img, hy - h * rng.uniform(0.0, 0.05), rng.uniform(0, w), w * rng.uniform(0.005, 0.02),
                 jitter(rng, rgb("#ffcf80"), 0.08) * 0.6, alpha=0.8, softness=w * 0.01, additive=True)
    return Drawn(img, stand_height(hor, rng), [])


def draw_bokeh(rng, h, w) -> Drawn:
    top, bottom = jitter(rng, rgb("#0b0d1a"), 0.02), jitter(rng, rgb("#241a2e"), 0.03)
    img = vertical_gradient(h, w, [(0, top), (1, bottom)])
    palette = [rgb(c) for c in ("#ffb347", "#ff6f61", "#ffd56b", "#6fb7ff", "#c38bff", "#8affc1")]
    chosen = [palette[i] for i in rng.choice(len(palette), size=int(rng.integers(2, 4)), replace=False)]
    layer = np.zeros_like(img)
    for _ in range(int(rng.integers(40, 90))):
        r = w * rng.uniform(0.015, 0.07)
        col = jitter(rng, chosen[int(rng.integers(len(chosen)))], 0.05) * rng.uniform(0.15, 0.45)
        disc(layer, rng.uniform(0, h), rng.uniform(0, w), r, col, softness=r * 0.12, additive=True)
    img += blur(layer, w / 600)
    return Drawn(img, None, [])
