"""Forests: layers of trunks under their canopies, green or autumn, sometimes with sunbeams."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import blend, fbm, jitter, noise_1d, rgb, smoothstep, soft_mask_below, value_noise
from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.ground_layers import ground_layer
from datakit.backgrounds.procedural.outdoor import outdoor, stand_height


def draw_forest(rng, h, w, autumn: bool = False) -> Drawn:
    img, _, hor, hy = outdoor(rng, h, w, "day", (0.6, 0.7), cloud_cov=rng.uniform(0.1, 0.3))
    haze = img[min(hy, h - 1)].mean(axis=0) * 0.7 + img[0].mean(axis=0) * 0.3
    if autumn:
        leaves = [rgb("#c8621e"), rgb("#b8401f"), rgb("#d69a2a"), rgb("#a8521a")]
    else:
        leaves = [rgb("#2f5a26"), rgb("#3d6b2c"), rgb("#264d22"), rgb("#4b7a30")]
    trunk = jitter(rng, rgb("#3b2a1e"), 0.03)
    ys = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    # Far away: a hazy wall of treetops standing on the horizon.
    far_top = hy - h * (0.18 + 0.12 * (noise_1d(rng, w, cells=12) + 1) / 2)
    far = jitter(rng, leaves[0], 0.05) * 0.8
    tex = fbm(rng, h, w, cells=30, octaves=3)
    img = blend(img, (far[None, None] * (0.8 + 0.3 * tex[..., None])) * 0.45 + haze * 0.55, soft_mask_below(far_top, h))
    # Three layers of trunks, thin and hazy far away, thick and dark close by, each under its canopy.
    for layer in range(3):
        t = (layer + 1) / 3
        amt = 0.6 * (1 - t)
        base_y = hy + (h - hy) * 0.3 * t
        for _ in range(int(rng.integers(5, 10) * (2 - t))):
            cx = rng.uniform(-0.02, 1.02) * w
            tw = w * rng.uniform(0.006, 0.014) * (0.6 + 3 * t * t)
            x0, x1 = int(max(0, cx - tw / 2)), int(min(w, cx + tw / 2))
            if x1 <= x0:
                continue
            shade = np.linspace(0.55, 1.2, x1 - x0, dtype=np.float32)[None, :, None]
            bark = 0.85 + 0.3 * value_noise(rng, int(base_y), x1 - x0, 40, 1)[..., None]
            img[: int(base_y), x0:x1] = (trunk * shade * bark) * (1 - amt) + haze * amt
        col = jitter(rng, leaves[int(rng.integers(len(leaves)))], 0.05)
        canopy = fbm(rng, h, w, cells=5 + 8 * (1 - t), octaves=6)
        line = 0.12 + 0.2 * (1 - t) * rng.uniform(0.6, 1.2)
        cm = smoothstep(0.5, 0.58, canopy + (line - ys) * 1.6)
        light = fbm(rng, h, w, cells=14, octaves=3)
        ccol = col[None, None] * (0.55 + 0.6 * canopy[..., None] * (0.7 + 0.5 * light[..., None]))
        img = blend(img, ccol * (1 - amt) + haze * amt, cm)
    ground_y = hy + (h - hy) * 0.3
    ground = ground_layer(rng, h, w, hy, "leaves" if autumn else "grass", haze * 0.5 + leaves[0] * 0.5)
    img = blend(img, ground, soft_mask_below(np.full(w, ground_y, np.float32), h, 4.0))
    extra = []
    if rng.random() < 0.5:  # a few soft sunbeams slanting through the trees
        ang = rng.uniform(-0.6, 0.6)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        u = (xx - ang * yy) / w
        beams = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(3, 6))):
            beams += np.exp(-(((u - rng.uniform(-0.2, 1.2)) / rng.uniform(0.01, 0.03)) ** 2))
        beams *= smoothstep(1.0, 0.1, yy / h) * 0.22
        img += beams[..., None] * np.array([1.0, 0.95, 0.75], np.float32)
        extra.append("light rays")
    return Drawn(img, stand_height(hor + (1 - hor) * 0.3, rng), extra)


def draw_autumn_forest(rng, h, w) -> Drawn:
    return draw_forest(rng, h, w, autumn=True)
