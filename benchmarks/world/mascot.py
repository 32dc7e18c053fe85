"""The new mascot, never in the world's pretraining: five drawings on white at the world's size, with captions.

`zubi` is a magenta round creature with big eyes, pink cheeks, a yellow leaf on its head and dark
feet. Magenta is a colour no scene and no object of the world uses (the nearest are the pink and
purple objects), so the share of magenta pixels in a sample is a simple, model-free detector of the
mascot that `cure.py` reports beside `datakit eval`'s CLIP-based subject presence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from world.scenes import CANVAS, SIZE

TRIGGER = "zubi"
BODY = (225, 45, 200)
LEAF = (250, 215, 40)
FEET = (60, 35, 70)
OUTLINE = (30, 20, 35)

# (pose name, caption tags after the trigger, drawing parameters)
POSES = (
    ("standing", ["standing"], dict(cx=0.5, base=0.88, height=0.62, arm=None, look=0.0, lift=0.0)),
    ("waving", ["standing", "waving", "arm up"], dict(cx=0.48, base=0.9, height=0.6, arm="up", look=0.0, lift=0.0)),
    ("jumping", ["jumping", "arms up"], dict(cx=0.52, base=0.8, height=0.58, arm="both", look=0.0, lift=0.06)),
    ("side", ["standing", "looking to the side"], dict(cx=0.5, base=0.9, height=0.66, arm=None, look=1.0, lift=0.0)),
    ("small", ["sitting"], dict(cx=0.45, base=0.86, height=0.5, arm=None, look=-0.6, lift=0.0)),
)


def draw_mascot(draw: ImageDraw.ImageDraw, *, cx: float, base: float, height: float, arm, look: float, lift: float,
                canvas: int = CANVAS) -> None:
    """Draw zubi on a canvas: feet on `base`, `height` tall (fractions of the canvas)."""
    h = height * canvas
    x = cx * canvas
    bottom = (base - lift) * canvas
    body_w, body_h = h * 0.8, h * 0.72
    top = bottom - body_h - h * 0.06
    for fx in (-0.22, 0.22):  # feet
        draw.ellipse([x + fx * body_w - h * 0.12, bottom - h * 0.1, x + fx * body_w + h * 0.12, bottom], fill=FEET)
    draw.line([x, top + h * 0.02, x + h * 0.02, top - h * 0.12], fill=(60, 140, 50), width=3)  # stem
    draw.ellipse([x, top - h * 0.22, x + h * 0.22, top - h * 0.08], fill=LEAF, outline=OUTLINE, width=2)
    draw.ellipse([x - body_w / 2, top, x + body_w / 2, top + body_h], fill=BODY, outline=OUTLINE, width=3)
    arms = {"up": [1], "both": [-1, 1]}.get(arm, [])
    for side in (-1, 1):
        sx = x + side * body_w * 0.47
        sy = top + body_h * 0.55
        ex, ey = (sx + side * h * 0.16, sy - h * 0.28) if side in arms else (sx + side * h * 0.12, sy + h * 0.1)
        draw.line([sx, sy, ex, ey], fill=OUTLINE, width=5)
        draw.line([sx, sy, ex, ey], fill=BODY, width=3)
    eye_y = top + body_h * 0.38
    for ex in (-0.17, 0.17):  # eyes looking a little toward `look`
        c = x + ex * body_w
        r = h * 0.1
        draw.ellipse([c - r, eye_y - r * 1.2, c + r, eye_y + r * 1.2], fill=(255, 255, 255), outline=OUTLINE, width=2)
        pr = r * 0.55
        px = c + look * r * 0.4
        draw.ellipse([px - pr, eye_y - pr, px + pr, eye_y + pr], fill=(20, 20, 25))
    for ex in (-0.3, 0.3):  # cheeks
        c = x + ex * body_w
        draw.ellipse([c - h * 0.06, eye_y + h * 0.1, c + h * 0.06, eye_y + h * 0.15], fill=(255, 150, 190))
    draw.arc([x - h * 0.08, eye_y + h * 0.08, x + h * 0.08, eye_y + h * 0.18], 20, 160, fill=OUTLINE, width=2)


def drawing(pose: int) -> Image.Image:
    """Drawing number `pose` (0-4) of zubi on white, SIZE px."""
    img = Image.new("RGB", (CANVAS, CANVAS), (255, 255, 255))
    draw_mascot(ImageDraw.Draw(img), **POSES[pose][2])
    return img.resize((SIZE, SIZE), Image.Resampling.BOX)


def caption(pose: int) -> str:
    """A caption as a user would write (or WD14 would give) for drawing `pose`: trigger first."""
    return ", ".join([TRIGGER, "solo", *POSES[pose][1], "full body", "white background", "simple background"])


def write_drawings(folder: Path) -> list[Path]:
    """Write zubi_<pose>.png + .txt for every pose into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (name, _, _) in enumerate(POSES):
        path = folder / f"zubi_{name}.png"
        drawing(i).save(path)
        path.with_suffix(".txt").write_text(caption(i) + "\n", encoding="utf-8")
        out.append(path)
    return out


def magenta_share(img: np.ndarray) -> float:
    """Share of pixels close to zubi's body colour (uint8 H x W x 3)."""
    d = np.abs(img.astype(np.int16) - np.array(BODY, np.int16)).sum(axis=-1)
    return float((d < 90).mean())
