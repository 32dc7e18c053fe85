"""The world's objects: sixteen kinds of thing in ten colours, drawn with an outline like a simple drawing.

Each drawer paints one object standing on (cx, base) with the given height, on a 2x canvas. The
tag is "<colour> <kind>" (e.g. "red ball"), the Danbooru habit of colour + noun.
"""

from __future__ import annotations

import numpy as np
from PIL import ImageDraw

OUTLINE = (25, 25, 30)

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 60), "yellow": (245, 210, 40),
    "purple": (140, 60, 190), "orange": (245, 140, 30), "pink": (245, 130, 180), "black": (40, 40, 45),
    "brown": (130, 80, 40), "white": (248, 248, 248),
}


def _shade(rgb, f: float):
    return tuple(int(np.clip(c * f, 0, 255)) for c in rgb)


def ball(d: ImageDraw.ImageDraw, cx, base, s, col, rng):
    r = s // 2
    d.ellipse([cx - r, base - 2 * r, cx + r, base], fill=col, outline=OUTLINE, width=2)
    d.arc([cx - r + 4, base - 2 * r + 4, cx + r - 4, base - 4], 200, 260, fill=(255, 255, 255), width=2)


def star(d, cx, base, s, col, rng):
    r, cy = s / 2, base - s / 2
    pts = []
    for k in range(10):
        a = -np.pi / 2 + k * np.pi / 5
        rr = r if k % 2 == 0 else r * 0.45
        pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
    d.polygon(pts, fill=col, outline=OUTLINE, width=2)


def heart(d, cx, base, s, col, rng):
    r = s / 4
    top = base - s
    d.ellipse([cx - 2 * r, top, cx, top + 2 * r], fill=col, outline=OUTLINE, width=2)
    d.ellipse([cx, top, cx + 2 * r, top + 2 * r], fill=col, outline=OUTLINE, width=2)
    d.polygon([(cx - 2 * r + 1, top + r + 2), (cx + 2 * r - 1, top + r + 2), (cx, base)], fill=col, outline=OUTLINE, width=2)
    d.rectangle([cx - 2 * r + 3, top + r, cx + 2 * r - 3, top + r + 4], fill=col)


def box(d, cx, base, s, col, rng):
    h = s * 0.8
    d.rectangle([cx - h / 2, base - h, cx + h / 2, base], fill=col, outline=OUTLINE, width=2)
    d.polygon([(cx - h / 2, base - h), (cx - h / 4, base - h - h / 4), (cx + h * 0.75, base - h - h / 4), (cx + h / 2, base - h)],
              fill=_shade(col, 1.2), outline=OUTLINE, width=2)
    d.polygon([(cx + h / 2, base), (cx + h / 2, base - h), (cx + h * 0.75, base - h - h / 4), (cx + h * 0.75, base - h / 4)],
              fill=_shade(col, 0.7), outline=OUTLINE, width=2)


def flower(d, cx, base, s, col, rng):
    head = base - s * 0.65
    d.line([cx, base, cx, head], fill=(40, 130, 40), width=3)
    d.ellipse([cx, base - s * 0.35, cx + s * 0.25, base - s * 0.22], fill=(50, 150, 50))
    r = s * 0.15
    for k in range(6):
        a = k * np.pi / 3
        px, py = cx + r * 1.3 * np.cos(a), head + r * 1.3 * np.sin(a)
        d.ellipse([px - r, py - r, px + r, py + r], fill=col, outline=OUTLINE, width=1)
    d.ellipse([cx - r * 0.8, head - r * 0.8, cx + r * 0.8, head + r * 0.8], fill=(250, 220, 60), outline=OUTLINE, width=1)


def bird(d, cx, base, s, col, rng):
    w, h = s, s * 0.6
    top = base - h
    d.ellipse([cx - w / 2, top, cx + w / 4, base], fill=col, outline=OUTLINE, width=2)
    d.ellipse([cx, top - h * 0.3, cx + w / 2, top + h * 0.45], fill=col, outline=OUTLINE, width=2)
    d.polygon([(cx + w / 2, top + h * 0.05), (cx + w * 0.7, top + h * 0.12), (cx + w / 2, top + h * 0.2)], fill=(245, 160, 30))
    d.ellipse([cx + w * 0.3, top - h * 0.05, cx + w * 0.38, top + h * 0.05], fill=OUTLINE)
    d.polygon([(cx - w / 2, top + h * 0.3), (cx - w * 0.75, top), (cx - w * 0.6, top + h * 0.55)], fill=_shade(col, 0.8), outline=OUTLINE)


def house(d, cx, base, s, col, rng):
    w = s * 0.8
    wall_top = base - s * 0.55
    d.rectangle([cx - w / 2, wall_top, cx + w / 2, base], fill=(235, 225, 200), outline=OUTLINE, width=2)
    d.polygon([(cx - w / 2 - 3, wall_top), (cx, base - s), (cx + w / 2 + 3, wall_top)], fill=col, outline=OUTLINE, width=2)
    d.rectangle([cx - w * 0.12, base - s * 0.3, cx + w * 0.12, base], fill=(120, 80, 40), outline=OUTLINE, width=1)


def car(d, cx, base, s, col, rng):
    w, h = s * 1.4, s * 0.45
    wheel = s * 0.16
    body_bottom = base - wheel
    d.rectangle([cx - w / 2, body_bottom - h, cx + w / 2, body_bottom], fill=col, outline=OUTLINE, width=2)
    d.polygon([(cx - w / 4, body_bottom - h), (cx - w / 6, body_bottom - h * 1.8), (cx + w / 4, body_bottom - h * 1.8),
               (cx + w / 3, body_bottom - h)], fill=col, outline=OUTLINE, width=2)
    d.rectangle([cx - w / 7, body_bottom - h * 1.65, cx + w / 5, body_bottom - h * 1.1], fill=(170, 210, 240))
    for wx in (cx - w / 3, cx + w / 3):
        d.ellipse([wx - wheel, base - 2 * wheel, wx + wheel, base], fill=(30, 30, 30))


def umbrella(d, cx, base, s, col, rng):
    r = s * 0.5
    top = base - s
    d.line([cx, top + r * 0.5, cx, base - 2], fill=OUTLINE, width=2)
    d.arc([cx - 6, base - 8, cx, base - 2], 0, 180, fill=OUTLINE, width=2)
    d.pieslice([cx - r, top, cx + r, top + 2 * r * 0.8], 180, 360, fill=col, outline=OUTLINE, width=2)


def mushroom(d, cx, base, s, col, rng):
    d.rectangle([cx - s * 0.15, base - s * 0.5, cx + s * 0.15, base], fill=(240, 230, 210), outline=OUTLINE, width=2)
    d.pieslice([cx - s / 2, base - s, cx + s / 2, base - s * 0.2], 180, 360, fill=col, outline=OUTLINE, width=2)
    for k in range(3):
        px, py = cx + (k - 1) * s * 0.25, base - s * 0.78 + (k % 2) * s * 0.08
        d.ellipse([px - 2, py - 2, px + 2, py + 2], fill=(255, 255, 255))


def cup(d, cx, base, s, col, rng):
    w, h = s * 0.6, s * 0.75
    d.polygon([(cx - w / 2, base - h), (cx + w / 2, base - h), (cx + w * 0.4, base), (cx - w * 0.4, base)], fill=col, outline=OUTLINE, width=2)
    d.arc([cx + w * 0.3, base - h * 0.8, cx + w * 0.8, base - h * 0.3], 270, 90, fill=OUTLINE, width=3)


def balloon(d, cx, base, s, col, rng):
    r = s * 0.3
    top = base - s
    d.line([cx, top + 2 * r * 1.2, cx + 2, base], fill=OUTLINE, width=1)
    d.ellipse([cx - r, top, cx + r, top + 2 * r * 1.2], fill=col, outline=OUTLINE, width=2)


def apple(d, cx, base, s, col, rng):
    r = s * 0.42
    d.ellipse([cx - r, base - 2 * r, cx + r, base], fill=col, outline=OUTLINE, width=2)
    d.line([cx, base - 2 * r, cx + 2, base - 2 * r - s * 0.18], fill=(90, 60, 30), width=2)
    d.ellipse([cx + 2, base - 2 * r - s * 0.2, cx + s * 0.25, base - 2 * r - s * 0.08], fill=(60, 160, 60))


def cat(d, cx, base, s, col, rng):
    w = s * 0.7
    d.ellipse([cx - w / 2, base - s * 0.55, cx + w / 2, base], fill=col, outline=OUTLINE, width=2)
    hr = s * 0.22
    hy = base - s * 0.6
    d.polygon([(cx - hr, hy - hr * 0.5), (cx - hr * 0.9, hy - hr * 1.6), (cx - hr * 0.2, hy - hr * 0.9)], fill=col, outline=OUTLINE)
    d.polygon([(cx + hr, hy - hr * 0.5), (cx + hr * 0.9, hy - hr * 1.6), (cx + hr * 0.2, hy - hr * 0.9)], fill=col, outline=OUTLINE)
    d.ellipse([cx - hr, hy - hr, cx + hr, hy + hr], fill=col, outline=OUTLINE, width=2)
    d.line([cx + w / 2 - 2, base - s * 0.2, cx + w / 2 + s * 0.2, base - s * 0.5], fill=col, width=3)


def rocket(d, cx, base, s, col, rng):
    w = s * 0.3
    d.rectangle([cx - w / 2, base - s * 0.75, cx + w / 2, base - s * 0.1], fill=(230, 230, 235), outline=OUTLINE, width=2)
    d.polygon([(cx - w / 2, base - s * 0.75), (cx, base - s), (cx + w / 2, base - s * 0.75)], fill=col, outline=OUTLINE, width=2)
    d.polygon([(cx - w / 2, base - s * 0.35), (cx - w, base), (cx - w / 2, base - s * 0.1)], fill=col, outline=OUTLINE)
    d.polygon([(cx + w / 2, base - s * 0.35), (cx + w, base), (cx + w / 2, base - s * 0.1)], fill=col, outline=OUTLINE)
    d.ellipse([cx - w * 0.25, base - s * 0.6, cx + w * 0.25, base - s * 0.45], fill=(120, 180, 230))


def hat(d, cx, base, s, col, rng):
    w = s * 1.1
    d.ellipse([cx - w / 2, base - s * 0.2, cx + w / 2, base], fill=col, outline=OUTLINE, width=2)
    d.rectangle([cx - w * 0.28, base - s * 0.75, cx + w * 0.28, base - s * 0.1], fill=col, outline=OUTLINE, width=2)
    d.rectangle([cx - w * 0.28, base - s * 0.3, cx + w * 0.28, base - s * 0.2], fill=(30, 30, 30))


DRAWERS = {
    "ball": ball, "star": star, "heart": heart, "box": box, "flower": flower, "bird": bird, "house": house,
    "car": car, "umbrella": umbrella, "mushroom": mushroom, "cup": cup, "balloon": balloon, "apple": apple,
    "cat": cat, "rocket": rocket, "hat": hat,
}
KINDS = tuple(DRAWERS)
# Width of each kind relative to its height, to keep objects inside the frame.
WIDTH = {"car": 1.5, "hat": 1.1, "bird": 1.4, "box": 1.1}


def draw_object(draw: ImageDraw.ImageDraw, kind: str, colour: str, cx: float, base: float, size: float,
                rng: np.random.Generator) -> None:
    """Draw one object of `kind` in `colour`, standing on (cx, base), `size` px tall (canvas pixels)."""
    DRAWERS[kind](draw, cx, base, size, COLOURS[colour], rng)
