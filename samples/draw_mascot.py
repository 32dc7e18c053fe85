"""Draw Sail-kun, datakit's own sample mascot, in four poses (deterministic, no assets needed).

Usage: python samples/draw_mascot.py [OUT_DIR]   (default: samples/subjects next to this script)

Each pose becomes OUT_DIR/<pose>.png (1024x1024 RGB) and OUT_DIR/<pose>.txt (its Danbooru caption).
The drawings carry the cases a cut-out must survive: white regions inside the subject (shirt,
socks, the whites of the eyes) behind a dark outline, 1-2 px hair strands (the ahoge), a
see-through loop (the arm on the hip), anti-aliased outlines, flat colours with cel shadows, and
one off-white background.

Shapes are rasterised as masks at SCALE times the final size; each part is painted back to front
as a dark outline (the mask grown by a round kernel) under its flat fill, then the whole picture
is box-filtered down, which gives anti-aliased edges. Only Pillow, NumPy and OpenCV are used and
nothing random is involved, so the same library versions give the same pixels.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

SIZE = 1024  # final image side, px
SCALE = 3  # supersampling factor: shapes are drawn at SIZE*SCALE and box-filtered down
OUTLINE = 4.5  # outline width in final px

WHITE_BG = (255, 255, 255)
OFF_WHITE_BG = (250, 248, 241)  # one pose uses it so background estimation has work to do

INK = (44, 34, 48)  # outlines
SKIN, SKIN_SHADE = (255, 226, 204), (241, 190, 168)
HAIR, HAIR_SHADE, HAIR_LIGHT, HAIR_INK = (132, 84, 52), (98, 60, 38), (176, 122, 80), (58, 36, 26)
SHIRT, SHIRT_SHADE = (255, 255, 255), (220, 226, 240)
COLLAR, COLLAR_SHADE = (38, 62, 128), (28, 46, 98)
KERCHIEF, KERCHIEF_SHADE = (214, 48, 58), (168, 30, 42)
SHORTS, SHORTS_SHADE = (74, 118, 200), (54, 90, 160)
SOCK, SOCK_SHADE = (255, 255, 255), (222, 226, 238)
SHOE, SHOE_LIGHT = (112, 64, 40), (156, 100, 66)
IRIS, IRIS_DARK = (58, 126, 214), (28, 64, 132)
MOUTH, TONGUE = (150, 40, 52), (236, 120, 122)
BLUSH = (255, 188, 186)

Point = tuple[float, float]


@dataclass
class Pose:
    """Joint positions (final px) and expression for one drawing."""

    name: str
    arms: tuple[list[Point], list[Point]]  # (image-left arm, image-right arm): shoulder, elbow, wrist
    legs: tuple[list[Point], list[Point]]  # hip, knee, ankle
    open_hands: tuple[bool, bool] = (False, False)
    mouth_open: bool = False
    dy: float = 0.0  # whole-body vertical offset (jumping)
    background: tuple[int, int, int] = WHITE_BG
    tags: list[str] = field(default_factory=list)


class Painter:
    """A supersampled RGB canvas that paints outlined flat-colour masks."""

    def __init__(self, background: tuple[int, int, int], dy: float = 0.0):
        self.n = SIZE * SCALE
        self.dy = dy
        self.rgb = np.empty((self.n, self.n, 3), np.uint8)
        self.rgb[:] = background
        r = int(round(OUTLINE * SCALE))
        self.kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        self.grow = r

    # -- shapes (arguments in final px; body offset applied here) ----------------------------
    def _xy(self, p: Point) -> tuple[float, float]:
        return (p[0] * SCALE, (p[1] + self.dy) * SCALE)

    def _layer(self) -> tuple[Image.Image, ImageDraw.ImageDraw]:
        img = Image.new("L", (self.n, self.n), 0)
        return img, ImageDraw.Draw(img)

    @staticmethod
    def _mask(img: Image.Image) -> np.ndarray:
        return np.asarray(img) > 127

    def ellipse(self, c: Point, rx: float, ry: float) -> np.ndarray:
        img, d = self._layer()
        x, y = self._xy(c)
        d.ellipse([x - rx * SCALE, y - ry * SCALE, x + rx * SCALE, y + ry * SCALE], fill=255)
        return self._mask(img)

    def polygon(self, points: list[Point]) -> np.ndarray:
        img, d = self._layer()
        d.polygon([self._xy(p) for p in points], fill=255)
        return self._mask(img)

    def capsule(self, points: list[Point], r: float) -> np.ndarray:
        """A chain of round-capped thick segments (limbs)."""
        img, d = self._layer()
        pts = [self._xy(p) for p in points]
        d.line(pts, fill=255, width=int(round(2 * r * SCALE)), joint="curve")
        for x, y in pts:
            d.ellipse([x - r * SCALE, y - r * SCALE, x + r * SCALE, y + r * SCALE], fill=255)
        return self._mask(img)

    # -- painting -----------------------------------------------------------------------------
    def paint(self, mask: np.ndarray, fill: tuple[int, int, int], outline: bool = True) -> None:
        """Paint `mask` with `fill`, over a dark outline band around it."""
        if outline:
            ys, xs = np.nonzero(mask)
            if len(ys) == 0:
                return
            g = self.grow + 2
            y0, y1 = max(0, ys.min() - g), min(self.n, ys.max() + g + 1)
            x0, x1 = max(0, xs.min() - g), min(self.n, xs.max() + g + 1)
            grown = cv2.dilate(mask[y0:y1, x0:x1].astype(np.uint8), self.kernel) > 0
            self.rgb[y0:y1, x0:x1][grown] = INK
        self.rgb[mask] = fill

    def stroke(self, points: list[Point], width: float, colour: tuple[int, int, int]) -> None:
        """A plain line (no outline) `width` final px wide: hair strands, collar stripes, brows."""
        img, d = self._layer()
        d.line([self._xy(p) for p in points], fill=255, width=max(1, int(round(width * SCALE))), joint="curve")
        self.rgb[self._mask(img)] = colour

    def result(self) -> Image.Image:
        """Box-filter down to the final size (anti-aliased edges)."""
        return Image.fromarray(self.rgb, "RGB").reduce(SCALE)


def bezier(p0: Point, p1: Point, p2: Point, p3: Point, steps: int = 40) -> list[Point]:
    """Points on a cubic Bezier curve."""
    out = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
        out.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return out


def shifted(mask: np.ndarray, dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """The mask moved by (dx, dy) final px (vacated cells empty): mask & ~shifted(...) is a rim."""
    sx, sy = int(round(dx * SCALE)), int(round(dy * SCALE))
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(0, sy):h + min(0, sy), max(0, sx):w + min(0, sx)] = mask[max(0, -sy):h - max(0, sy), max(0, -sx):w - max(0, sx)]
    return out


def toward(a: Point, b: Point, t: float) -> Point:
    """The point a fraction t of the way from a to b."""
    return (a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t)


# ---------------------------------------------------------------------------------------------
# The character, part by part (back to front). Head centre (512, 300); feet near y = 930.
# ---------------------------------------------------------------------------------------------

HEAD = (512.0, 300.0)
HEAD_RX, HEAD_RY = 172.0, 158.0


def draw_legs(p: Painter, pose: Pose) -> None:
    for i, leg in enumerate(pose.legs):
        hip, knee, ankle = leg
        side = -1 if i == 0 else 1
        leg_mask = p.capsule(leg, 25)
        p.paint(leg_mask, SKIN)
        p.rgb[leg_mask & ~shifted(leg_mask, -side * 12)] = SKIN_SHADE  # shade on the outer side
        sock = p.capsule([toward(knee, ankle, 0.45), ankle], 27)
        p.paint(sock, SOCK)
        p.rgb[sock & ~shifted(sock, -side * 14)] = SOCK_SHADE
        toe = (ankle[0] + side * 14, ankle[1] + 30)
        shoe = p.ellipse(toe, 40, 24)
        p.paint(shoe, SHOE)
        p.rgb[shoe & p.ellipse((toe[0] + side * 8, toe[1] - 8), 16, 7)] = SHOE_LIGHT


def draw_shorts(p: Painter) -> None:
    shorts = p.polygon([(430, 640), (594, 640), (604, 742), (522, 742), (512, 712), (502, 742), (420, 742)])
    p.paint(shorts, SHORTS)
    p.rgb[shorts & p.polygon([(560, 640), (604, 640), (610, 750), (570, 750)])] = SHORTS_SHADE


def draw_torso(p: Painter) -> None:
    # Neck first, so the collar's V shows skin at the throat.
    p.paint(p.polygon([(490, 420), (534, 420), (536, 480), (488, 480)]), SKIN)
    shirt = p.polygon([(446, 462), (578, 462), (606, 658), (418, 658)]) | p.ellipse((446, 490), 32, 30) | p.ellipse(
        (578, 490), 32, 30
    )
    p.paint(shirt, SHIRT)
    # Cel shadow down the right flank and under the collar.
    p.rgb[shirt & p.polygon([(566, 470), (640, 470), (640, 660), (578, 660), (584, 560)])] = SHIRT_SHADE
    p.rgb[shirt & p.polygon([(440, 640), (612, 640), (612, 660), (440, 660)])] = SHIRT_SHADE
    # Sailor collar: a navy band over the shoulders with a V to the chest, two white stripes.
    collar = p.polygon([(430, 456), (594, 456), (598, 500), (512, 594), (426, 500)])
    p.paint(collar, COLLAR)
    p.rgb[collar & p.polygon([(560, 456), (600, 456), (600, 520), (540, 560)])] = COLLAR_SHADE
    for inset in (10, 19):
        p.stroke([(432 + inset, 492), (512, 580 - inset * 1.3), (592 - inset, 492)], 3.2, SHIRT)
    # The V opening shows the throat.
    vee = p.polygon([(482, 456), (542, 456), (512, 530)])
    p.paint(vee, SKIN)
    p.rgb[vee & p.polygon([(482, 456), (542, 456), (542, 475), (482, 475)])] = SKIN_SHADE
    # Red neckerchief: a knot and two tails.
    p.paint(p.polygon([(512, 546), (540, 610), (522, 616), (512, 580)]), KERCHIEF_SHADE)
    p.paint(p.polygon([(512, 546), (484, 612), (502, 618), (512, 580)]), KERCHIEF)
    p.paint(p.ellipse((512, 540), 22, 17), KERCHIEF)


def draw_arm(p: Painter, arm: list[Point], open_hand: bool, side: int) -> None:
    shoulder, elbow, wrist = arm
    p.paint(p.capsule(arm, 20), SKIN)
    hand_c = toward(elbow, wrist, 1.18)
    if open_hand:
        # An open palm: a round hand with four short fingers fanned away from the forearm.
        ang = math.atan2(wrist[1] - elbow[1], wrist[0] - elbow[0])
        fingers = []
        for k, spread in enumerate((-0.55, -0.18, 0.18, 0.55)):
            length = 52 if k in (1, 2) else 44
            a = ang + spread
            fingers.append(p.capsule([hand_c, (hand_c[0] + length * math.cos(a), hand_c[1] + length * math.sin(a))], 10))
        thumb_a = ang - side * 1.3
        fingers.append(p.capsule([hand_c, (hand_c[0] + 36 * math.cos(thumb_a), hand_c[1] + 36 * math.sin(thumb_a))], 9.5))
        hand = p.ellipse(hand_c, 23, 23)
        for f in fingers:
            hand = hand | f
        p.paint(hand, SKIN)
    else:
        p.paint(p.ellipse(hand_c, 25, 24), SKIN)
    # Short white sleeve over the top of the upper arm.
    sleeve = p.capsule([shoulder, toward(shoulder, elbow, 0.42)], 31)
    p.paint(sleeve, SHIRT)
    p.rgb[sleeve & p.capsule([toward(shoulder, elbow, 0.42)], 31) & ~p.capsule([toward(shoulder, elbow, 0.30)], 31)] = SHIRT_SHADE
    # Navy cuff stripe on the sleeve's hem.
    hem = toward(shoulder, elbow, 0.42)
    ang = math.atan2(elbow[1] - shoulder[1], elbow[0] - shoulder[0]) + math.pi / 2
    dx, dy = 27 * math.cos(ang), 27 * math.sin(ang)
    p.stroke([(hem[0] - dx, hem[1] - dy), (hem[0] + dx, hem[1] + dy)], 6, COLLAR)


def hair_mask(p: Painter) -> np.ndarray:
    """Front hair: a cap over the head whose lower edge is a row of pointed bangs."""
    cx, cy = HEAD
    cap = p.ellipse((cx, cy - 22), HEAD_RX + 14, HEAD_RY + 8)
    # Bangs: a zig-zag lower edge across the forehead, long side locks at the cheeks.
    edge = [(cx - 190, cy + 80), (cx - 168, cy + 92), (cx - 150, cy - 10), (cx - 128, cy + 10), (cx - 104, cy - 40),
            (cx - 78, cy - 6), (cx - 52, cy - 52), (cx - 22, cy - 8), (cx + 4, cy - 56), (cx + 30, cy - 10),
            (cx + 58, cy - 50), (cx + 86, cy - 6), (cx + 110, cy - 40), (cx + 132, cy + 10), (cx + 152, cy - 10),
            (cx + 170, cy + 92), (cx + 192, cy + 80)]
    above = p.polygon([(cx - 200, cy - 260), (cx + 200, cy - 260), *reversed(edge)])
    return cap & above


def draw_head(p: Painter, pose: Pose) -> None:
    cx, cy = HEAD
    # Back hair: only its sides show, beside the cheeks.
    back = p.ellipse((cx, cy - 10), HEAD_RX + 12, HEAD_RY + 6) & p.polygon([(0, 0), (SIZE, 0), (SIZE, cy + 96), (0, cy + 96)])
    p.paint(back, HAIR_SHADE)
    face = p.ellipse(HEAD, HEAD_RX, HEAD_RY) | p.ellipse((cx, cy + 70), 120, 92)
    p.paint(face, SKIN)
    # Shadow that the bangs cast on the forehead.
    hair = hair_mask(p)
    p.rgb[face & shifted(hair, dy=16)] = SKIN_SHADE
    draw_face(p, pose)
    p.paint(hair, HAIR)
    p.rgb[hair & p.ellipse((cx + 100, cy - 60), 110, 140) & ~p.ellipse((cx + 70, cy - 80), 120, 150)] = HAIR_SHADE
    # A glossy highlight band.
    p.rgb[hair & p.ellipse((cx - 20, cy - 108), 118, 26) & ~p.ellipse((cx - 20, cy - 96), 104, 20)] = HAIR_LIGHT
    # The ahoge: two hair strands 1-2 px wide curling up from the crown (the thin-structure case).
    top = (cx + 10, cy - HEAD_RY - 28)
    p.stroke(bezier(top, (cx + 8, cy - 230), (cx + 70, cy - 262), (cx + 46, cy - 222)), 1.6, HAIR_INK)
    p.stroke(bezier((cx - 6, top[1] + 2), (cx - 20, cy - 240), (cx - 70, cy - 246), (cx - 52, cy - 212)), 1.3, HAIR_INK)
    p.stroke(bezier((cx + 2, top[1]), (cx + 2, cy - 220), (cx + 20, cy - 250), (cx + 12, cy - 250)), 1.2, HAIR_INK)


def draw_face(p: Painter, pose: Pose) -> None:
    cx, cy = HEAD
    for side in (-1, 1):
        ex, ey = cx + side * 66, cy + 26
        eye = p.ellipse((ex, ey), 30, 40)
        p.paint(eye, SHIRT)  # the white of the eye: white inside the subject
        iris = eye & p.ellipse((ex + side * 2, ey + 6), 22, 32)
        p.rgb[iris] = IRIS
        p.rgb[iris & p.ellipse((ex + side * 2, ey - 14), 26, 16)] = IRIS_DARK
        p.rgb[eye & p.ellipse((ex + side * 2, ey + 8), 10, 15)] = INK
        p.rgb[p.ellipse((ex - 8, ey - 8), 8, 9)] = SHIRT  # catch-lights
        p.rgb[p.ellipse((ex + 9, ey + 18), 4, 4)] = SHIRT
        # Upper lash line, thicker than the outline.
        p.stroke(bezier((ex - 34, ey - 22), (ex - 18, ey - 46), (ex + 18, ey - 46), (ex + 34, ey - 22)), 6, INK)
        p.stroke(bezier((ex - 26, ey - 70), (ex - 10, ey - 80), (ex + 12, ey - 80), (ex + 28, ey - 72)), 4, HAIR_INK)
        p.rgb[p.ellipse((cx + side * 112, cy + 84), 26, 12)] = BLUSH
    if pose.mouth_open:
        mouth = p.polygon(bezier((cx - 30, cy + 100), (cx - 22, cy + 142), (cx + 22, cy + 142), (cx + 30, cy + 100)))
        p.paint(mouth, MOUTH)
        p.rgb[mouth & p.ellipse((cx, cy + 132), 20, 12)] = TONGUE
    else:
        p.stroke(bezier((cx - 26, cy + 104), (cx - 12, cy + 120), (cx + 12, cy + 120), (cx + 26, cy + 104)), 4, INK)


def draw(pose: Pose) -> Image.Image:
    """Render one pose at SIZE x SIZE."""
    p = Painter(pose.background, dy=pose.dy)
    draw_legs(p, pose)
    draw_shorts(p)
    draw_torso(p)
    for side, (arm, open_hand) in zip((-1, 1), zip(pose.arms, pose.open_hands)):
        draw_arm(p, arm, open_hand, side)
    draw_head(p, pose)
    return p.result()


# ---------------------------------------------------------------------------------------------
# Poses and their captions (Danbooru tags, spaces form; true to each picture).
# ---------------------------------------------------------------------------------------------

COMMON = ["solo", "1boy", "male focus", "chibi", "brown hair", "short hair", "ahoge", "blue eyes", "sailor collar",
          "blue sailor collar", "red neckerchief", "white shirt", "short sleeves", "blue shorts", "white socks",
          "brown footwear", "blush", "full body", "looking at viewer", "white background", "simple background"]

STANDING_LEGS = ([(478, 718), (474, 805), (472, 872)], [(546, 718), (550, 805), (552, 872)])
LEFT_ARM_DOWN = [(446, 482), (414, 566), (404, 640)]
RIGHT_ARM_DOWN = [(578, 482), (610, 566), (620, 640)]

POSES = [
    Pose("standing", (LEFT_ARM_DOWN, RIGHT_ARM_DOWN), STANDING_LEGS,
         tags=["standing", "arms at sides", "smile", "closed mouth"]),
    Pose("waving", (LEFT_ARM_DOWN, [(578, 482), (686, 452), (742, 372)]), STANDING_LEGS,
         open_hands=(False, True), mouth_open=True, tags=["standing", "waving", "arm up", "smile", "open mouth"]),
    Pose("hand_on_hip", (LEFT_ARM_DOWN, [(578, 482), (706, 560), (640, 640)]), STANDING_LEGS,
         tags=["standing", "hand on hip", "smile", "closed mouth"]),
    Pose("jumping", ([(446, 482), (358, 436), (300, 358)], [(578, 482), (666, 436), (724, 358)]),
         ([(478, 718), (432, 790), (452, 858)], [(546, 718), (592, 790), (572, 858)]),
         open_hands=(True, True), mouth_open=True, dy=-16, background=OFF_WHITE_BG,
         tags=["jumping", "arms up", "smile", "open mouth"]),
]


def caption(pose: Pose) -> str:
    """The pose's caption: its own tags spliced into the common ones."""
    tags = COMMON[:]
    at = tags.index("full body")
    return ", ".join(tags[:at] + pose.tags + tags[at:])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "subjects"
    out.mkdir(parents=True, exist_ok=True)
    for pose in POSES:
        img = draw(pose)
        img.save(out / f"{pose.name}.png", optimize=True)
        (out / f"{pose.name}.txt").write_text(caption(pose) + "\n", encoding="utf-8")
        print(f"wrote {out / pose.name}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
