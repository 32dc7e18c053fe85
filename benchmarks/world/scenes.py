"""The world's scenes: ten kinds of place, each drawn in code from a seeded generator, with its Danbooru tags.

Every scene is drawn at 2x (128 px) with PIL and reduced to 64 px with a box filter, which gives
anti-aliased edges for free. A scene returns the image and its ground line (where objects stand, as
a fraction of the height), so objects are placed the way they would be in a picture.

The white scene is exactly white (255): it is the "white background" that adapters leak. The snow
field is deliberately close to it (white ground) but has a pale blue sky, shading and trees, so a
white detector and the scene classifier have a hard case to tell apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SCALE = 2  # drawn at SIZE * SCALE, reduced with a box filter
CANVAS = SIZE * SCALE


@dataclass(frozen=True)
class Scene:
    """A kind of place: its name, its Danbooru tags (the first one is the tag that names it)."""

    name: str
    tags: tuple[str, ...]


SCENES: tuple[Scene, ...] = (
    Scene("white", ("white background", "simple background")),
    Scene("beach", ("beach", "ocean", "sand", "sky", "outdoors", "day", "horizon")),
    Scene("forest", ("forest", "tree", "nature", "outdoors")),
    Scene("city", ("city", "street", "building", "road", "outdoors")),
    Scene("snow", ("snow", "winter", "snowing", "outdoors", "pine tree")),
    Scene("night", ("night", "night sky", "starry sky", "moon", "outdoors")),
    Scene("room", ("indoors", "room", "wooden floor", "window", "wall")),
    Scene("grass", ("grass", "field", "blue sky", "cloud", "outdoors", "day")),
    Scene("underwater", ("underwater", "water", "bubble", "seaweed")),
    Scene("desert", ("desert", "sand", "dune", "outdoors", "cactus")),
)
SCENE_NAMES = tuple(s.name for s in SCENES)
SCENE_BY_NAME = {s.name: s for s in SCENES}


def _jitter(rng: np.random.Generator, rgb, amount: int = 18) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _vgradient(top, bottom, height: int, width: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height)[:, None, None]
    col = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return np.repeat(col, width, axis=1)


def _canvas_from(arr: np.ndarray) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    return img, ImageDraw.Draw(img)


def _sky(rng, h, top=(70, 130, 220), bottom=(170, 210, 245)):
    return _vgradient(_jitter(rng, top), _jitter(rng, bottom), h, CANVAS)


def _clouds(draw, rng, y_max: int, n: int) -> None:
    for _ in range(n):
        cx, cy = rng.integers(0, CANVAS), rng.integers(8, max(9, y_max - 10))
        w = rng.integers(18, 40)
        shade = int(rng.integers(235, 256))
        for k in range(3):
            ox = cx + (k - 1) * w // 2
            r = w // 3 + rng.integers(0, 6)
            draw.ellipse([ox - r, cy - r // 1.4, ox + r, cy + r // 1.4], fill=(shade, shade, shade))


def draw_white(rng) -> tuple[Image.Image, float]:
    img = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    return img, 0.82 + 0.08 * rng.random()


def draw_beach(rng) -> tuple[Image.Image, float]:
    horizon = int(CANVAS * (0.35 + 0.15 * rng.random()))
    shore = horizon + int(CANVAS * (0.15 + 0.12 * rng.random()))
    arr = np.zeros((CANVAS, CANVAS, 3))
    arr[:horizon] = _sky(rng, horizon)
    arr[horizon:shore] = _vgradient(_jitter(rng, (30, 90, 170)), _jitter(rng, (40, 150, 190)), shore - horizon, CANVAS)
    arr[shore:] = _vgradient(_jitter(rng, (235, 210, 150)), _jitter(rng, (215, 185, 125)), CANVAS - shore, CANVAS)
    img, draw = _canvas_from(arr)
    _clouds(draw, rng, horizon, int(rng.integers(0, 3)))
    if rng.random() < 0.6:
        sx, sy, r = rng.integers(10, CANVAS - 10), rng.integers(8, max(9, horizon - 12)), rng.integers(6, 11)
        draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=_jitter(rng, (255, 230, 90), 10))
    for _ in range(int(rng.integers(2, 5))):  # wave crests
        y = rng.integers(horizon + 3, shore)
        x = rng.integers(0, CANVAS - 20)
        draw.line([x, y, x + rng.integers(10, 30), y], fill=(235, 245, 250), width=2)
    draw.line([0, shore, CANVAS, shore], fill=(245, 245, 240), width=3)  # foam on the shore
    return img, (shore + (CANVAS - shore) * (0.4 + 0.4 * rng.random())) / CANVAS


def draw_forest(rng) -> tuple[Image.Image, float]:
    ground = int(CANVAS * (0.7 + 0.12 * rng.random()))
    arr = np.zeros((CANVAS, CANVAS, 3))
    arr[:ground] = _vgradient(_jitter(rng, (40, 90, 50)), _jitter(rng, (25, 60, 30)), ground, CANVAS)
    arr[ground:] = _vgradient(_jitter(rng, (70, 60, 35)), _jitter(rng, (50, 45, 25)), CANVAS - ground, CANVAS)
    img, draw = _canvas_from(arr)
    for _ in range(int(rng.integers(5, 9))):
        x = int(rng.integers(0, CANVAS))
        w = int(rng.integers(5, 12))
        top = int(rng.integers(0, ground // 2))
        draw.rectangle([x - w // 2, top, x + w // 2, ground + rng.integers(0, 6)], fill=_jitter(rng, (85, 55, 30), 15))
    for _ in range(int(rng.integers(8, 14))):
        x, y = rng.integers(0, CANVAS), rng.integers(-10, ground // 2)
        r = int(rng.integers(12, 24))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(rng, (45, 120, 50), 25))
    return img, (ground + (CANVAS - ground) * 0.5) / CANVAS


def draw_city(rng) -> tuple[Image.Image, float]:
    road = int(CANVAS * (0.72 + 0.1 * rng.random()))
    arr = np.zeros((CANVAS, CANVAS, 3))
    arr[:road] = _sky(rng, road, top=(150, 170, 195), bottom=(200, 205, 215))
    arr[road:] = _vgradient(_jitter(rng, (80, 80, 85), 10), _jitter(rng, (60, 60, 65), 10), CANVAS - road, CANVAS)
    img, draw = _canvas_from(arr)
    x = -int(rng.integers(0, 10))
    while x < CANVAS:
        w = int(rng.integers(18, 34))
        top = int(rng.integers(8, road - 30))
        base = _jitter(rng, [(120, 110, 100), (90, 95, 110), (150, 120, 95), (110, 115, 120)][rng.integers(0, 4)], 20)
        draw.rectangle([x, top, x + w, road], fill=base)
        lit = _jitter(rng, (240, 220, 130), 12)
        for wy in range(top + 4, road - 6, 8):
            for wx in range(x + 3, x + w - 4, 7):
                draw.rectangle([wx, wy, wx + 3, wy + 4], fill=lit if rng.random() < 0.6 else (60, 70, 90))
        x += w + int(rng.integers(0, 4))
    draw.rectangle([0, road, CANVAS, road + 3], fill=(150, 150, 150))  # kerb
    mid = road + (CANVAS - road) // 2
    for dx in range(int(rng.integers(0, 16)), CANVAS, 22):
        draw.rectangle([dx, mid - 1, dx + 11, mid + 1], fill=(235, 235, 235))
    return img, (road + 4) / CANVAS + 0.05 * rng.random()


def draw_snow(rng) -> tuple[Image.Image, float]:
    horizon = int(CANVAS * (0.4 + 0.15 * rng.random()))
    arr = np.zeros((CANVAS, CANVAS, 3))
    arr[:horizon] = _sky(rng, horizon, top=(150, 180, 215), bottom=(200, 215, 232))
    arr[horizon:] = _vgradient(_jitter(rng, (222, 230, 242), 8), _jitter(rng, (245, 247, 252), 5), CANVAS - horizon, CANVAS)
    img, draw = _canvas_from(arr)
    for _ in range(int(rng.integers(2, 6))):  # soft blue-grey drifts
        x, y = rng.integers(0, CANVAS), rng.integers(horizon + 8, CANVAS)
        w = int(rng.integers(20, 50))
        draw.ellipse([x - w, y - 4, x + w, y + 4], fill=_jitter(rng, (205, 215, 232), 6))
    for _ in range(int(rng.integers(3, 7))):  # pine trees on the horizon
        x = int(rng.integers(0, CANVAS))
        h = int(rng.integers(14, 30))
        base = horizon + int(rng.integers(-2, 6))
        draw.polygon([(x, base - h), (x - h // 3, base), (x + h // 3, base)], fill=_jitter(rng, (30, 70, 50), 10))
    for _ in range(int(rng.integers(15, 35))):  # falling snow
        x, y = rng.integers(0, CANVAS), rng.integers(0, CANVAS)
        draw.ellipse([x - 1, y - 1, x + 1, y + 1], fill=(250, 250, 255))
    return img, (horizon + (CANVAS - horizon) * (0.5 + 0.3 * rng.random())) / CANVAS


def draw_night(rng) -> tuple[Image.Image, float]:
    hill = int(CANVAS * (0.72 + 0.12 * rng.random()))
    arr = _vgradient(_jitter(rng, (10, 15, 45), 8), _jitter(rng, (35, 40, 90), 12), CANVAS, CANVAS)
    img, draw = _canvas_from(arr)
    for _ in range(int(rng.integers(25, 50))):
        x, y = rng.integers(0, CANVAS), rng.integers(0, hill)
        b = int(rng.integers(170, 256))
        r = 1 if rng.random() < 0.8 else 2
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(b, b, min(255, b + 20)))
    mx, my, mr = rng.integers(14, CANVAS - 14), rng.integers(10, hill // 2), int(rng.integers(8, 13))
    draw.ellipse([mx - mr, my - mr, mx + mr, my + mr], fill=_jitter(rng, (245, 235, 170), 8))
    pts = [(0, CANVAS)]
    for x in range(0, CANVAS + 16, 16):
        pts.append((x, hill + int(rng.integers(-6, 6))))
    pts.append((CANVAS, CANVAS))
    draw.polygon(pts, fill=_jitter(rng, (15, 25, 30), 6))
    return img, (hill + (CANVAS - hill) * 0.5) / CANVAS


def draw_room(rng) -> tuple[Image.Image, float]:
    floor = int(CANVAS * (0.65 + 0.12 * rng.random()))
    wall = _jitter(rng, [(230, 215, 185), (200, 220, 210), (225, 200, 205), (205, 210, 230)][rng.integers(0, 4)], 12)
    arr = np.zeros((CANVAS, CANVAS, 3))
    arr[:floor] = _vgradient(wall, tuple(c - 20 for c in wall), floor, CANVAS)
    arr[floor:] = _vgradient(_jitter(rng, (150, 100, 60), 15), _jitter(rng, (120, 75, 45), 15), CANVAS - floor, CANVAS)
    img, draw = _canvas_from(arr)
    for y in range(floor + 6, CANVAS, 9):  # floor planks
        draw.line([0, y, CANVAS, y], fill=(100, 65, 40), width=1)
    wx, ww = int(rng.integers(10, CANVAS - 50)), int(rng.integers(30, 44))
    wy, wh = int(rng.integers(10, 22)), int(rng.integers(28, 40))
    draw.rectangle([wx - 3, wy - 3, wx + ww + 3, wy + wh + 3], fill=(245, 245, 240))
    draw.rectangle([wx, wy, wx + ww, wy + wh], fill=_jitter(rng, (130, 185, 235), 15))
    draw.line([wx + ww // 2, wy, wx + ww // 2, wy + wh], fill=(245, 245, 240), width=2)
    draw.line([wx, wy + wh // 2, wx + ww, wy + wh // 2], fill=(245, 245, 240), width=2)
    if rng.random() < 0.5:  # a picture on the wall
        px = int(rng.integers(wx + ww + 8, CANVAS - 10)) if wx + ww + 18 < CANVAS else int(rng.integers(4, max(5, wx - 20)))
        draw.rectangle([px, wy + 6, px + 14, wy + 22], fill=(90, 60, 40))
        draw.rectangle([px + 2, wy + 8, px + 12, wy + 20], fill=_jitter(rng, (120, 160, 110), 40))
    return img, (floor + (CANVAS - floor) * (0.4 + 0.4 * rng.random())) / CANVAS


def draw_grass(rng) -> tuple[Image.Image, float]:
    horizon = int(CANVAS * (0.4 + 0.15 * rng.random()))
    arr = np.zeros((CANVAS, CANVAS, 3))
    arr[:horizon] = _sky(rng, horizon, top=(60, 130, 230), bottom=(150, 200, 250))
    arr[horizon:] = _vgradient(_jitter(rng, (120, 190, 70)), _jitter(rng, (70, 150, 40)), CANVAS - horizon, CANVAS)
    img, draw = _canvas_from(arr)
    _clouds(draw, rng, horizon, int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(40, 70))):  # blades of grass
        x, y = rng.integers(0, CANVAS), rng.integers(horizon + 4, CANVAS)
        draw.line([x, y, x + rng.integers(-2, 3), y - rng.integers(3, 7)], fill=_jitter(rng, (50, 120, 30), 20), width=1)
    for _ in range(int(rng.integers(0, 6))):  # a few small flowers
        x, y = rng.integers(0, CANVAS), rng.integers(horizon + 6, CANVAS)
        draw.ellipse([x - 1, y - 1, x + 2, y + 2], fill=[(250, 240, 90), (250, 250, 250), (240, 120, 160)][rng.integers(0, 3)])
    return img, (horizon + (CANVAS - horizon) * (0.5 + 0.3 * rng.random())) / CANVAS


def draw_underwater(rng) -> tuple[Image.Image, float]:
    bottom = int(CANVAS * (0.8 + 0.1 * rng.random()))
    arr = _vgradient(_jitter(rng, (40, 150, 190)), _jitter(rng, (10, 50, 110)), CANVAS, CANVAS)
    arr[bottom:] = _vgradient(_jitter(rng, (150, 140, 100), 12), _jitter(rng, (110, 100, 70), 12), CANVAS - bottom, CANVAS)
    img, draw = _canvas_from(arr)
    for _ in range(int(rng.integers(2, 4))):  # light rays
        x = int(rng.integers(0, CANVAS))
        draw.polygon([(x, 0), (x + 10, 0), (x + 30, bottom), (x + 22, bottom)], fill=_jitter(rng, (70, 170, 200), 10))
    for _ in range(int(rng.integers(3, 7))):  # seaweed
        x = int(rng.integers(0, CANVAS))
        h = int(rng.integers(25, 60))
        pts = [(x + int(4 * np.sin(k / 2.0 + rng.random())), bottom - k * h // 8) for k in range(9)]
        draw.line(pts, fill=_jitter(rng, (40, 130, 60), 20), width=4)
    for _ in range(int(rng.integers(5, 12))):  # bubbles
        x, y, r = rng.integers(0, CANVAS), rng.integers(0, bottom), int(rng.integers(2, 5))
        draw.ellipse([x - r, y - r, x + r, y + r], outline=(200, 235, 250), width=1)
    return img, (bottom + (CANVAS - bottom) * 0.5) / CANVAS


def draw_desert(rng) -> tuple[Image.Image, float]:
    horizon = int(CANVAS * (0.4 + 0.15 * rng.random()))
    arr = np.zeros((CANVAS, CANVAS, 3))
    arr[:horizon] = _sky(rng, horizon, top=(120, 170, 220), bottom=(235, 220, 180))
    img, draw = _canvas_from(arr)
    if rng.random() < 0.7:
        sx, sy, r = rng.integers(10, CANVAS - 10), rng.integers(8, max(9, horizon - 12)), int(rng.integers(7, 12))
        draw.ellipse([sx - r, sy - r, sx + r, sy + r], fill=_jitter(rng, (255, 240, 150), 8))
    colours = [_jitter(rng, (230, 170, 90), 12), _jitter(rng, (215, 150, 70), 12), _jitter(rng, (200, 135, 60), 12)]
    for band, col in enumerate(colours):  # dunes, back to front
        base = horizon + band * (CANVAS - horizon) // 3
        amp, phase, freq = 4 + 3 * band, rng.random() * 6.28, 0.03 + 0.03 * rng.random()
        pts = [(0, CANVAS)] + [(x, int(base + amp * np.sin(freq * x + phase))) for x in range(0, CANVAS + 8, 8)] + [(CANVAS, CANVAS)]
        draw.polygon(pts, fill=col)
    if rng.random() < 0.5:  # a cactus
        x = int(rng.integers(8, CANVAS - 8))
        base = horizon + int(rng.integers(4, 16))
        h = int(rng.integers(14, 24))
        green = _jitter(rng, (60, 130, 60), 15)
        draw.rectangle([x - 2, base - h, x + 2, base], fill=green)
        draw.rectangle([x - 7, base - h * 2 // 3, x - 5, base - h // 3], fill=green)
        draw.rectangle([x - 7, base - h // 3 - 2, x - 2, base - h // 3], fill=green)
    return img, (horizon + (CANVAS - horizon) * (0.5 + 0.3 * rng.random())) / CANVAS


DRAWERS = {
    "white": draw_white, "beach": draw_beach, "forest": draw_forest, "city": draw_city, "snow": draw_snow,
    "night": draw_night, "room": draw_room, "grass": draw_grass, "underwater": draw_underwater, "desert": draw_desert,
}


def draw_scene(name: str, rng: np.random.Generator) -> tuple[Image.Image, float]:
    """(a CANVAS-size RGB image of the scene, its ground line as a fraction of the height)."""
    return DRAWERS[name](rng)
