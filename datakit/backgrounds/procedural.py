"""Procedural scenes drawn in code: skies, horizons, mountains, skylines, rooms, night lights, water.

Each scene is a function `draw(rng, h, w) -> Drawn`; everything random comes from `rng` (the
item's own generator), so an image is a pure function of its seed and size. Images are built in
float32 RGB 0..1 and converted once at the end (noise.finish). A scene's tags list only what every
variation of it really shows; parts drawn only sometimes (a moon, a window) add their own tag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from datakit.backgrounds.noise import (
    blend,
    blur,
    disc,
    fbm,
    finish,
    jitter,
    noise_1d,
    rgb,
    sample,
    smoothstep,
    soft_mask_below,
    tileable_fbm,
    value_noise,
    vertical_gradient,
)


@dataclass
class Drawn:
    """A drawn scene: the image, where a subject would stand (fraction of height, None: no ground), extra tags."""

    image: np.ndarray  # float32 HxWx3, 0..1
    ground_y: float | None
    extra_tags: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Skies
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Ground plane (perspective-correct textures)
# ---------------------------------------------------------------------------------------------


def ground_coords(h: int, w: int, hy: int, cam_height: float = 1.0, focal: float | None = None):
    """World (x, z) on a flat ground for every pixel below the horizon row hy; z is the distance."""
    focal = focal or w * 0.9
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    dy = np.maximum(ys - hy, 0.5)
    z = focal * cam_height / dy
    x = (xs - w / 2) * z / focal
    return np.broadcast_to(x, (h, w)), np.broadcast_to(z, (h, w))


def ground_layer(rng, h, w, hy, kind: str, haze: np.ndarray) -> np.ndarray:
    """A textured ground image (full frame, meaningful below hy), fading into `haze` at the horizon."""
    x, z = ground_coords(h, w, hy)
    T = 512
    if kind == "grass":
        base = [rgb("#4f7d2c"), rgb("#6a8f33"), rgb("#3e6b2a"), rgb("#7d9a3c")][rng.integers(4)]
        base = jitter(rng, base, 0.05)
        patch = tileable_fbm(rng, T, cells=3, octaves=4)
        blades = tileable_fbm(rng, T, cells=32, octaves=3, aspect=0.25)
        p = sample(patch, x * 18, z * 18)
        b = sample(blades, x * 120, z * 120)
        # Close to the camera the ground-plane texture is magnified into streaks; blades drawn in
        # screen space (tall thin noise, a few pixels wide) take over there.
        near_blades = fbm(rng, h, w, cells=max(8.0, w / 7), octaves=2, aspect=0.3)
        t_near = smoothstep(0.15, 0.6, np.clip((np.arange(h, dtype=np.float32) - hy) / max(h - hy, 1), 0, 1))[:, None]
        b = b * (1 - t_near) + near_blades * t_near
        col = base[None, None] * (0.72 + 0.45 * p[..., None]) * (0.75 + 0.4 * b[..., None])
        col += (rgb("#b5a642") - base)[None, None] * (smoothstep(0.7, 1.0, p) * 0.35)[..., None]
    elif kind == "sand":
        base = jitter(rng, [rgb("#d9b98a"), rgb("#cfae7e"), rgb("#e0c49a")][rng.integers(3)], 0.04)
        patch = tileable_fbm(rng, T, cells=3, octaves=4)
        grain = tileable_fbm(rng, T, cells=64, octaves=2)
        p = sample(patch, x * 20, z * 20)
        rip = 0.5 + 0.5 * np.sin(z * 9 + sample(patch, x * 40, z * 40) * 6 + x * 1.5)
        g = sample(grain, x * 200, z * 200)
        col = base[None, None] * (0.8 + 0.22 * p[..., None] + 0.08 * rip[..., None] + 0.06 * g[..., None])
    elif kind == "snow":
        base = jitter(rng, rgb("#d4dded"), 0.02)
        patch = tileable_fbm(rng, T, cells=3, octaves=5)
        p = sample(patch, x * 15, z * 15)
        col = base[None, None] * (0.82 + 0.14 * p[..., None])
        col = col + np.array([-0.03, -0.01, 0.02], np.float32) * (1 - p[..., None])
    elif kind == "asphalt":
        base = jitter(rng, rgb("#4a4a4d"), 0.03)
        grain = tileable_fbm(rng, T, cells=48, octaves=3)
        stains = tileable_fbm(rng, T, cells=3, octaves=4)
        col = base[None, None] * (0.8 + 0.3 * sample(grain, x * 150, z * 150)[..., None]) * (
            0.85 + 0.25 * sample(stains, x * 10, z * 10)[..., None]
        )
    elif kind == "leaves":
        base = jitter(rng, rgb("#8a4b22"), 0.05)
        spots = tileable_fbm(rng, T, cells=40, octaves=2)
        patch = tileable_fbm(rng, T, cells=4, octaves=4)
        s = sample(spots, x * 90, z * 90)
        p = sample(patch, x * 15, z * 15)
        orange, red, yellow = rgb("#c8621e"), rgb("#9a2f1c"), rgb("#d6a030")
        col = base[None, None] * (0.7 + 0.4 * p[..., None])
        col = blend(col, orange, smoothstep(0.55, 0.7, s) * 0.8)
        col = blend(col, red, smoothstep(0.75, 0.85, p) * 0.5)
        col = blend(col, yellow, smoothstep(0.85, 0.95, s) * 0.7)
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    # Distant ground fades into the horizon haze; near ground is slightly darker.
    t = np.clip((np.arange(h, dtype=np.float32) - hy) / max(h - hy, 1), 0, 1)[:, None, None]
    fog = np.exp(-t * 9.0)
    col = col * (1 - 0.12 * t) * (1 - fog) + haze[None, None] * fog
    return col.astype(np.float32)


def water_layer(rng, img, hy: int, tod: str, sky_img: np.ndarray) -> np.ndarray:
    """Sea or lake below hy: the sky mirrored, darkened, broken up by stretched wave streaks."""
    h, w = img.shape[:2]
    x, z = ground_coords(h, w, hy)
    waves = tileable_fbm(rng, 512, cells=6, octaves=5, aspect=4.0)
    n = sample(waves, x * 25, z * 60)
    rows = np.clip(2 * hy - np.arange(h) - 1, 0, h - 1)
    mirror = sky_img[rows]
    deep = {"day": rgb("#1d4f7a"), "sunset": rgb("#3a2d4a"), "night": rgb("#050a18")}[tod]
    deep = jitter(rng, deep, 0.04)
    t = np.clip((np.arange(h, dtype=np.float32) - hy) / max(h - hy, 1), 0, 1)[:, None, None]
    mix = 0.35 + 0.4 * (1 - t)
    col = mirror * mix + deep[None, None] * (1 - mix)
    col *= (0.82 + 0.3 * n[..., None])
    crest = smoothstep(0.8, 0.95, n)[..., None] * (0.25 if tod != "night" else 0.08)
    col += crest
    below = (np.arange(h) >= hy)[:, None, None]
    return np.where(below, col, img).astype(np.float32)


def ridge(rng, img, hy: int, height: float, color, *, cells: float, sharp: bool, haze=None, haze_amt=0.0,
          texture: bool = True, snowcap=None) -> np.ndarray:
    """A mountain or hill silhouette standing on the horizon row hy (height in pixels)."""
    h, w = img.shape[:2]
    n = noise_1d(rng, w, cells=cells, octaves=6)
    shape = (1 - np.abs(n)) ** 2 if sharp else (n + 1) / 2
    shape = shape / max(shape.max(), 1e-6)
    top = hy - height * (0.25 + 0.75 * shape)
    mask = soft_mask_below(top, h)
    col = np.asarray(color, np.float32)
    layer = np.broadcast_to(col, img.shape).copy()
    if texture:
        t = fbm(rng, h, w, cells=cells * 2, octaves=5, aspect=0.6)
        layer *= (0.8 + 0.35 * t[..., None])
    if snowcap is not None:
        ys = np.arange(h, dtype=np.float32)[:, None]
        depth = (ys - top[None, :]) / max(height, 1)
        t2 = fbm(rng, h, w, cells=cells * 3, octaves=4)
        cap = smoothstep(0.35, 0.2, depth + 0.25 * (t2 - 0.5))
        layer = blend(layer, np.asarray(snowcap, np.float32) * (0.85 + 0.15 * t2[..., None]), cap)
    if haze is not None and haze_amt > 0:
        layer = layer * (1 - haze_amt) + np.asarray(haze, np.float32) * haze_amt
    return blend(img, layer, mask)


# ---------------------------------------------------------------------------------------------
# Outdoor scenes
# ---------------------------------------------------------------------------------------------


# Light on the ground by time of day: warm and dimmer at sunset, dark blue at night.
GROUND_TINT = {"day": np.ones(3, np.float32), "sunset": np.array([0.95, 0.72, 0.6], np.float32),
               "night": np.array([0.2, 0.24, 0.36], np.float32)}


def _outdoor(rng, h, w, tod, horizon_range=(0.5, 0.68), cloud_cov=None):
    horizon = rng.uniform(*horizon_range)
    img = sky(rng, h, w, horizon, tod)
    if tod == "sunset":  # the low sun, behind the clouds and the land drawn later
        sun_glow(img, h * horizon - h * rng.uniform(0.03, 0.12), w * rng.uniform(0.2, 0.8), w * rng.uniform(0.025, 0.045),
                 rgb("#ffcf7a"))
    sky_img = img.copy()
    if cloud_cov != 0:
        img = clouds(rng, img, horizon, tod, cloud_cov)
    return img, sky_img, horizon, int(h * horizon)


def _stand(horizon: float, rng) -> float:
    """Where a subject's feet go: part-way between the horizon and the bottom edge."""
    return round(horizon + (1 - horizon) * rng.uniform(0.55, 0.75), 3)


def draw_grass_field(rng, h, w, tod: str = "day") -> Drawn:
    img, _, hor, hy = _outdoor(rng, h, w, tod, cloud_cov=None if tod == "day" else rng.uniform(0.15, 0.35))
    haze = img[min(hy, h - 1)].mean(axis=0)
    extra = []
    if rng.random() < 0.6:
        hill = jitter(rng, rgb("#5f7f5a"), 0.05) * GROUND_TINT[tod]
        img = ridge(rng, img, hy, h * rng.uniform(0.05, 0.12), hill, cells=3, sharp=False, haze=haze, haze_amt=0.45)
        extra.append("hill")
    ground = ground_layer(rng, h, w, hy, "grass", haze) * GROUND_TINT[tod]
    img = blend(img, ground, soft_mask_below(np.full(w, hy, np.float32), h))
    return Drawn(img, _stand(hor, rng), extra)


def draw_sunset_field(rng, h, w) -> Drawn:
    return draw_grass_field(rng, h, w, "sunset")


def draw_beach(rng, h, w) -> Drawn:
    img, sky_img, hor, hy = _outdoor(rng, h, w, "day", (0.42, 0.55))
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


def draw_mountains(rng, h, w) -> Drawn:
    img, _, hor, hy = _outdoor(rng, h, w, "day", (0.6, 0.72))
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
    return Drawn(img, _stand(hor, rng), [])


def draw_snowy_mountain(rng, h, w) -> Drawn:
    img, _, hor, hy = _outdoor(rng, h, w, "day", (0.58, 0.7))
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
    return Drawn(img, _stand(hor, rng), extra)


def draw_desert(rng, h, w) -> Drawn:
    cover = float(rng.choice([0.0, 0.2]))
    img, sky_img, hor, hy = _outdoor(rng, h, w, "day", (0.5, 0.64), cloud_cov=cover)
    img = img * 0.85 + rgb("#e8c9a0")[None, None] * 0.15  # warm, hazy desert air
    haze = img[min(hy, h - 1)].mean(axis=0)
    dune = jitter(rng, rgb("#c99a62"), 0.04)
    img = ridge(rng, img, hy, h * 0.07, dune * 0.95, cells=2, sharp=False, haze=haze, haze_amt=0.4)
    img = ridge(rng, img, int(hy + h * 0.06), h * 0.09, dune, cells=1.5, sharp=False)
    ground = ground_layer(rng, h, w, hy, "sand", haze)
    img = blend(img, ground, soft_mask_below(np.full(w, hy + h * 0.06, np.float32), h, 3.0))
    return Drawn(img, _stand(hor + 0.06, rng), ["cloud"] if cover > 0 else [])


def draw_forest(rng, h, w, autumn: bool = False) -> Drawn:
    img, _, hor, hy = _outdoor(rng, h, w, "day", (0.6, 0.7), cloud_cov=rng.uniform(0.1, 0.3))
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
    return Drawn(img, _stand(hor + (1 - hor) * 0.3, rng), extra)


def draw_autumn_forest(rng, h, w) -> Drawn:
    return draw_forest(rng, h, w, autumn=True)


def draw_lake(rng, h, w) -> Drawn:
    img, sky_img, hor, hy = _outdoor(rng, h, w, "day", (0.45, 0.55))
    haze = img[min(hy, h - 1)].mean(axis=0)
    col = jitter(rng, rgb("#4f6b4a"), 0.05)
    img = ridge(rng, img, hy, h * rng.uniform(0.15, 0.25), col, cells=3, sharp=True, haze=haze, haze_amt=0.3)
    mirror_src = img.copy()
    img = water_layer(rng, img, hy, "day", mirror_src)
    shore = hy + (h - hy) * rng.uniform(0.45, 0.6) + noise_1d(rng, w, 3) * (h - hy) * 0.05
    ground = ground_layer(rng, h, w, hy, "grass", haze)
    img = blend(img, ground, soft_mask_below(shore, h, 2.0))
    return Drawn(img, round(float(np.clip(np.median(shore) / h + 0.6 * (1 - np.median(shore) / h), 0, 0.97)), 3), [])


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
    return Drawn(img, _stand(horizon, rng), extra)


def draw_night_city(rng, h, w) -> Drawn:
    return _city(rng, h, w, "night")


def draw_sunset_city(rng, h, w) -> Drawn:
    return _city(rng, h, w, "sunset")


def draw_city_street(rng, h, w) -> Drawn:
    return _city(rng, h, w, "day")


def _city(rng, h, w, tod: str) -> Drawn:
    night, sunset = tod == "night", tod == "sunset"
    img, _, hor, hy = _outdoor(rng, h, w, tod, (0.55, 0.66), cloud_cov=0 if night else None)
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
    return Drawn(img, _stand(hor, rng), [])


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


# ---------------------------------------------------------------------------------------------
# Indoor rooms: a box seen in one-point perspective, each pixel classified by the nearest plane.
# ---------------------------------------------------------------------------------------------

WALL_COLORS = ["#d9cdb8", "#c9d3d6", "#d6c2c2", "#c8d1b9", "#b9c4d9", "#e0d2b0", "#a9b8a6", "#d8b9a0"]


def draw_room(rng, h, w, floor: str = "wood") -> Drawn:
    # Camera at height 1 above the floor, looking straight at the back wall; the eye line sits high
    # so the floor (where the subject stands) fills more of the frame than the ceiling.
    focal = w * rng.uniform(0.55, 0.8)
    vx, vy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.3, 0.42)
    half_w = rng.uniform(1.5, 2.6)  # room half-width: narrower than the view, so side walls show
    ceil_h = rng.uniform(1.5, 1.9)  # ceiling height above the floor
    depth = rng.uniform(3.0, 5.0)
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    dy, dx = ys - vy, xs - vx
    inf = np.float32(1e9)
    with np.errstate(divide="ignore", invalid="ignore"):
        z_floor = np.where(dy > 0, focal * 1.0 / dy, inf) + 0 * dx
        z_ceil = np.where(dy < 0, focal * (ceil_h - 1.0) / -dy, inf) + 0 * dx
        z_left = np.where(dx < 0, focal * half_w / -dx, inf) + 0 * dy
        z_right = np.where(dx > 0, focal * half_w / dx, inf) + 0 * dy
    z_back = np.full((h, w), depth, np.float32)
    zs = np.stack([z_floor, z_ceil, z_left, z_right, z_back]).astype(np.float32)
    surf = np.argmin(zs, axis=0)
    z = np.min(zs, axis=0)
    wx = dx * z / focal  # world x
    wy = -dy * z / focal  # world height relative to the camera (floor at -1)

    wall = jitter(rng, rgb(WALL_COLORS[rng.integers(len(WALL_COLORS))]), 0.04)
    img = np.zeros((h, w, 3), np.float32)
    T = 512
    plaster = tileable_fbm(rng, T, cells=8, octaves=4)
    # Walls: plain plaster or vertical stripes (wallpaper), a baseboard along the floor.
    striped = rng.random() < 0.45
    wall_u = np.where(surf == 4, wx, z)  # along-wall coordinate
    wall_tex = 0.93 + 0.07 * sample(plaster, wall_u * 60, wy * 60)
    wall_col = wall[None, None] * wall_tex[..., None]
    if striped:
        period = rng.uniform(0.25, 0.5)
        stripe = (np.mod(wall_u / period, 1.0) < 0.5).astype(np.float32)
        stripe = blur(stripe, 0.7)
        wall_col = wall_col * (1 - 0.1 * stripe[..., None])
    base = (wy < -1 + 0.12)
    wall_col = np.where(base[..., None], jitter(rng, rgb("#f0ece4") * 0.85, 0.03), wall_col)
    is_wall = (surf >= 2)[..., None]
    img = np.where(is_wall, wall_col, img)
    # Floor.
    if floor == "wood":
        plank_w = rng.uniform(0.18, 0.3)
        wood = jitter(rng, [rgb("#8a5a34"), rgb("#a8743f"), rgb("#6e4527"), rgb("#b98b58")][rng.integers(4)], 0.04)
        grain = tileable_fbm(rng, T, cells=4, octaves=5, aspect=0.08)
        idx = np.floor(wx / plank_w)
        plank_rand = np.mod(np.sin(idx * 12.9898 + rng.uniform(0, 100)) * 43758.5453, 1.0).astype(np.float32)
        joint = np.mod(z / rng.uniform(1.2, 2.0) + plank_rand * 3, 1.0)
        g = sample(grain, wx * 200 + idx * 37, z * 30)
        floor_col = wood[None, None] * (0.8 + 0.25 * plank_rand[..., None]) * (0.85 + 0.25 * g[..., None])
        seam = np.minimum(np.abs(np.mod(wx / plank_w, 1.0) - 0.0), np.abs(np.mod(wx / plank_w, 1.0) - 1.0)) * plank_w
        seam_px = seam * focal / np.maximum(z, 1e-3)
        floor_col *= (1 - 0.35 * smoothstep(1.2, 0.0, seam_px))[..., None]
        floor_col *= (1 - 0.3 * (joint < 0.01))[..., None]
        tags = ["wooden floor"]
    else:
        tile = rng.uniform(0.35, 0.6)
        c1 = jitter(rng, [rgb("#d0ccc4"), rgb("#b5c2c8"), rgb("#c9b9a3")][rng.integers(3)] * 0.92, 0.03)
        checker = rng.random() < 0.5
        c2 = c1 * 0.55 if checker else c1 * 0.95
        iu, iv = np.floor(wx / tile), np.floor(z / tile)
        par = np.mod(iu + iv, 2)[..., None]
        floor_col = c1 * (1 - par) + c2 * par
        fu, fv = np.mod(wx / tile, 1.0), np.mod(z / tile, 1.0)
        grout = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * tile * focal / np.maximum(z, 1e-3)
        floor_col = floor_col * (1 - 0.3 * smoothstep(1.5, 0.0, grout))[..., None]
        floor_col *= (0.9 + 0.1 * sample(plaster, wx * 80, z * 80))[..., None]
        tags = ["tiles", "tiled floor"]
    img = np.where((surf == 0)[..., None], floor_col, img)
    ceil_col = np.clip(wall * 1.02 + 0.03, 0, 0.86)
    img = np.where((surf == 1)[..., None], ceil_col[None, None] * np.ones_like(img), img)
    extra = []
    # A window on the back wall shows the sky (and sometimes a city) outside.
    if rng.random() < 0.55:
        wx0, wx1 = sorted(rng.uniform(-half_w * 0.8, half_w * 0.8, 2))
        if wx1 - wx0 > 0.6:
            wy0, wy1 = -1 + rng.uniform(0.6, 0.9), min(ceil_h - 1 - 0.15, -1 + rng.uniform(1.7, 2.2))
            px0, px1 = int(vx + wx0 * focal / depth), int(vx + wx1 * focal / depth)
            py0, py1 = int(vy - wy1 * focal / depth), int(vy - wy0 * focal / depth)
            if py1 - py0 > 8 and px1 - px0 > 8:
                outside = sky(rng, py1 - py0, px1 - px0, 1.0, "day")
                outside = clouds(rng, outside, 1.3, "day", 0.4)
                frame = max(2, int((px1 - px0) * 0.04))
                img[py0 - frame : py1 + frame, px0 - frame : px1 + frame] = rgb("#efe9df") * 0.9
                img[py0:py1, px0:px1] = outside
                img[py0:py1, (px0 + px1) // 2 - frame // 2 : (px0 + px1) // 2 + frame // 2 + 1] = rgb("#efe9df") * 0.9
                extra.append("window")
    # Lighting: darker with distance and towards the corners; a soft pool of light on the floor.
    shade = 1.0 - 0.35 * smoothstep(1.0, depth, z)
    shade *= np.where(surf == 2, 0.85, np.where(surf == 3, 0.92, 1.0))
    img *= shade[..., None]
    img = blur(img, 0.5)
    floor_line = (vy + focal * 1.0 / depth) / h  # where the floor meets the back wall
    stand = floor_line + (1 - floor_line) * rng.uniform(0.45, 0.7)
    return Drawn(img, round(float(min(stand, 0.97)), 3), tags + extra)


def draw_wood_room(rng, h, w) -> Drawn:
    return draw_room(rng, h, w, "wood")


def draw_tiled_room(rng, h, w) -> Drawn:
    return draw_room(rng, h, w, "tiles")


# ---------------------------------------------------------------------------------------------
# The scene list
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProceduralScene:
    """A scene the procedural engine can draw: its name, a describing prompt, tags true of every variation."""

    name: str
    prompt: str
    tags: tuple[str, ...]
    draw: Callable[[np.random.Generator, int, int], Drawn]


PROCEDURAL_SCENES: tuple[ProceduralScene, ...] = (
    ProceduralScene("grass field", "a green grass field under a blue sky with clouds",
                    ("outdoors", "sky", "cloud", "day", "blue sky", "grass", "field", "horizon"), draw_grass_field),
    ProceduralScene("sunset field", "a grass field at sunset, the sun low over the horizon",
                    ("outdoors", "sunset", "sky", "cloud", "orange sky", "grass", "field", "horizon", "evening"),
                    draw_sunset_field),
    ProceduralScene("beach", "a sandy beach by the ocean on a sunny day",
                    ("outdoors", "beach", "ocean", "sand", "sky", "cloud", "day", "blue sky", "horizon", "water"), draw_beach),
    ProceduralScene("sunset sea", "the sea at sunset, the sun low over the water",
                    ("outdoors", "ocean", "sunset", "sky", "cloud", "orange sky", "sun", "horizon", "water", "evening"),
                    draw_sunset_sea),
    ProceduralScene("mountains", "green valley with mountains in the distance",
                    ("outdoors", "mountain", "sky", "cloud", "day", "blue sky", "grass", "nature", "landscape"), draw_mountains),
    ProceduralScene("snowy mountain", "snowy mountains and a snowfield in winter",
                    ("outdoors", "snow", "mountain", "winter", "sky", "cloud", "day", "landscape"), draw_snowy_mountain),
    ProceduralScene("desert", "sand dunes in a desert under a hazy sky",
                    ("outdoors", "desert", "sand", "sky", "day", "horizon"), draw_desert),
    ProceduralScene("forest", "inside a green forest, tree trunks and leaves",
                    ("outdoors", "forest", "nature", "tree", "grass", "day"), draw_forest),
    ProceduralScene("autumn forest", "a forest in autumn with red and orange leaves on the ground",
                    ("outdoors", "forest", "nature", "tree", "autumn", "autumn leaves", "day"), draw_autumn_forest),
    ProceduralScene("lake", "a calm lake reflecting hills, grass on the shore",
                    ("outdoors", "lake", "water", "reflection", "sky", "cloud", "day", "grass", "nature"), draw_lake),
    ProceduralScene("sky", "blue sky with white clouds",
                    ("sky", "cloud", "blue sky", "day", "cloudy sky"), draw_sky),
    ProceduralScene("starry night", "a starry night sky over dark hills",
                    ("outdoors", "night", "night sky", "starry sky", "star (sky)", "silhouette"), draw_starry_night),
    ProceduralScene("city night", "a city skyline at night with lit windows and a road",
                    ("outdoors", "night", "city", "cityscape", "building", "city lights", "night sky", "road", "street"),
                    draw_night_city),
    ProceduralScene("city street", "a city street by day with buildings and a road",
                    ("outdoors", "city", "building", "road", "street", "sky", "day", "cloud"), draw_city_street),
    ProceduralScene("city sunset", "a city street at sunset, building silhouettes against an orange sky",
                    ("outdoors", "city", "building", "road", "street", "sunset", "sky", "orange sky", "evening"),
                    draw_sunset_city),
    ProceduralScene("bokeh lights", "out-of-focus lights at night",
                    ("night", "bokeh", "blurry background", "lights", "dark background"), draw_bokeh),
    ProceduralScene("underwater", "underwater in clear blue water with light rays and bubbles",
                    ("underwater", "water", "bubble", "light rays", "blue theme"), draw_underwater),
    ProceduralScene("space", "outer space with stars and a nebula",
                    ("space", "star (sky)", "starry sky", "nebula", "dark background"), draw_space),
    ProceduralScene("wooden room", "an empty room with a wooden floor and plain walls",
                    ("indoors", "room", "wall", "wooden floor"), draw_wood_room),
    ProceduralScene("tiled room", "an empty room with a tiled floor",
                    ("indoors", "room", "wall", "tiles", "tiled floor"), draw_tiled_room),
)


def scene_by_name(name: str) -> ProceduralScene:
    """The procedural scene with this name (KeyError otherwise)."""
    for s in PROCEDURAL_SCENES:
        if s.name == name:
            return s
    raise KeyError(name)


def render(scene: ProceduralScene, seed: int, width: int, height: int) -> tuple[np.ndarray, float | None, list[str]]:
    """Draw a scene deterministically from a seed: (uint8 RGB array, ground_y, tags)."""
    rng = np.random.default_rng(seed)
    drawn = scene.draw(rng, height, width)
    img = finish(drawn.image.astype(np.float32), rng)
    tags = list(dict.fromkeys([*scene.tags, *drawn.extra_tags]))
    return img, drawn.ground_y, tags
