"""Ground layers in perspective: textured ground planes (grass, sand, snow, asphalt, leaves), water, ridges."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import (
    blend,
    fbm,
    jitter,
    noise_1d,
    rgb,
    sample,
    smoothstep,
    soft_mask_below,
    tileable_fbm,
)


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
