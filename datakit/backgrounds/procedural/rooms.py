"""Indoor rooms: a box seen in one-point perspective, each pixel classified by the nearest plane."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import blur, jitter, rgb, sample, smoothstep, tileable_fbm
from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.sky_layers import clouds, sky

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
