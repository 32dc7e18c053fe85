"""Open land: grass fields (by day and at sunset), mountains, snowy mountains, desert dunes."""

from __future__ import annotations

import cv2
import numpy as np

from datakit.backgrounds.noise import blend, blur, jitter, rgb, soft_mask_below
from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.ground_layers import ground_layer, ridge
from datakit.backgrounds.procedural.outdoor import GROUND_TINT, outdoor, stand_height


def draw_grass_field(rng, h, w, tod: str = "day") -> Drawn:
    img, _, hor, hy = outdoor(rng, h, w, tod, cloud_cov=None if tod == "day" else rng.uniform(0.15, 0.35))
    haze = img[min(hy, h - 1)].mean(axis=0)
    extra = []
    if rng.random() < 0.6:
        hill = jitter(rng, rgb("#5f7f5a"), 0.05) * GROUND_TINT[tod]
        img = ridge(rng, img, hy, h * rng.uniform(0.05, 0.12), hill, cells=3, sharp=False, haze=haze, haze_amt=0.45)
        extra.append("hill")
    ground = ground_layer(rng, h, w, hy, "grass", haze) * GROUND_TINT[tod]
    img = blend(img, ground, soft_mask_below(np.full(w, hy, np.float32), h))
    return Drawn(img, stand_height(hor, rng), extra)


def draw_sunset_field(rng, h, w) -> Drawn:
    return draw_grass_field(rng, h, w, "sunset")


def draw_mountains(rng, h, w) -> Drawn:
    img, _, hor, hy = outdoor(rng, h, w, "day", (0.6, 0.72))
    haze = img[min(hy, h - 1)].mean(axis=0)
    far, near = jitter(rng, rgb("#6d7d9c"), 0.05), jitter(rng, rgb("#3f5a3c"), 0.05)
    n_layers = int(rng.integers(2, 4))
    for i in range(n_layers):
        t = i / max(n_layers - 1, 1)
        col = far * (1 - t) + near * t
        img = ridge(rng, img, hy, h * (0.42 - 0.25 * t) * rng.uniform(0.8, 1.1), col, cells=2.5 + 2 * t, sharp=True,
                    haze=haze, haze_amt=0.5 * (1 - t), snowcap=rgb("#e2e7ef") if i == 0 and rng.random() < 0.6 else None)
    ground = ground_layer(rng, h, w, hy, "grass", haze * 0.6 + near * 0.4)
    img = blend(img, ground, soft_mask_below(np.full(w, hy, np.float32), h))
    return Drawn(img, stand_height(hor, rng), [])


def draw_snowy_mountain(rng, h, w) -> Drawn:
    img, _, hor, hy = outdoor(rng, h, w, "day", (0.58, 0.7))
    haze = img[min(hy, h - 1)].mean(axis=0)
    for i in range(2):
        col = jitter(rng, rgb("#7e8aa6") if i == 0 else rgb("#5d6884"), 0.04)
        img = ridge(rng, img, hy, h * (0.4 - 0.15 * i), col, cells=2.5 + 2 * i, sharp=True, haze=haze,
                    haze_amt=0.35 * (1 - i), snowcap=rgb("#dfe6f0"))
    ground = ground_layer(rng, h, w, hy, "snow", haze)
    img = blend(img, ground, soft_mask_below(np.full(w, hy, np.float32), h))
    extra = []
    if rng.random() < 0.4:  # falling snow
        flakes = np.zeros((h, w), np.float32)
        n = int(w * h / 2500)
        for y, x, r, a in zip(rng.uniform(0, h, n), rng.uniform(0, w, n), rng.uniform(0.6, 2.4, n) * w / 1024,
                              rng.uniform(0.4, 0.8, n)):
            cv2.circle(flakes, (int(x), int(y)), max(1, int(round(r))), float(a), -1, lineType=cv2.LINE_AA)
        img = blend(img, np.array([0.9, 0.92, 0.96], np.float32), blur(flakes, 0.6 * w / 1024))
        extra.append("snowing")
    return Drawn(img, stand_height(hor, rng), extra)


def draw_desert(rng, h, w) -> Drawn:
    cover = float(rng.choice([0.0, 0.2]))
    img, sky_img, hor, hy = outdoor(rng, h, w, "day", (0.5, 0.64), cloud_cov=cover)
    img = img * 0.85 + rgb("#e8c9a0")[None, None] * 0.15  # warm, hazy desert air
    haze = img[min(hy, h - 1)].mean(axis=0)
    dune = jitter(rng, rgb("#c99a62"), 0.04)
    img = ridge(rng, img, hy, h * 0.07, dune * 0.95, cells=2, sharp=False, haze=haze, haze_amt=0.4)
    img = ridge(rng, img, int(hy + h * 0.06), h * 0.09, dune, cells=1.5, sharp=False)
    ground = ground_layer(rng, h, w, hy, "sand", haze)
    img = blend(img, ground, soft_mask_below(np.full(w, hy + h * 0.06, np.float32), h, 3.0))
    return Drawn(img, stand_height(hor + 0.06, rng), ["cloud"] if cover > 0 else [])
