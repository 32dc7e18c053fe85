"""Test subjects with known alpha, drawn unlike samples/draw_mascot.py, and the cut-out quality measures.

Style: vector shapes given by signed distance functions (ellipses, capsules, polygons, rings),
rendered with analytic coverage (the overlap of a 1-px box filter with the shape across its edge)
and composited layer by layer with "over", so every pixel's true alpha and colour is known. No
supersampling and no outline grown from a mask, unlike the mascot. Four characters in three line
styles (thick outline, thin outline, no outline), with white clothing bounded only by outline,
see-through gaps between limbs, a gap through hair, a gap in a ring, translucent parts (a veil, a
glass) and subjects cut by the image border. Backdrops: white, off-white, grey, gradient,
vignette, paper texture and uneven scanner light, each optionally resampled from a larger drawing,
saved as PNG or JPEG.

Used by tests/test_cutout_drawn*.py and by `benchmarks/cutout.py --quality`.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

# -- shapes (signed distance in pixels: negative inside) ----------------------------------------------


def _norm(x, y):
    return np.sqrt(x * x + y * y)


def sd_ellipse(X, Y, cx, cy, rx, ry):
    """Approximate signed distance to an ellipse (exact for circles; first-order elsewhere)."""
    px, py = (X - cx) / rx, (Y - cy) / ry
    k0 = _norm(px, py)
    k1 = _norm(px / rx, py / ry)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def sd_segment(X, Y, ax, ay, bx, by):
    """Distance to the segment a-b."""
    pax, pay = X - ax, Y - ay
    bax, bay = bx - ax, by - ay
    h = np.clip((pax * bax + pay * bay) / max(bax * bax + bay * bay, 1e-9), 0.0, 1.0)
    return _norm(pax - bax * h, pay - bay * h)


def sd_path(X, Y, pts, r):
    """A capsule along a polyline of radius r (a limb, a strand, a tail)."""
    d = np.full(X.shape, np.inf, np.float32)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:]):
        d = np.minimum(d, sd_segment(X, Y, ax, ay, bx, by))
    return d - r


def sd_polygon(X, Y, pts):
    """Exact signed distance to a simple polygon."""
    pts = np.asarray(pts, np.float32)
    d = np.full(X.shape, np.inf, np.float32)
    inside = np.zeros(X.shape, bool)
    n = len(pts)
    for i in range(n):
        ax, ay = pts[i]
        bx, by = pts[i - 1]
        d = np.minimum(d, sd_segment(X, Y, ax, ay, bx, by))
        crosses = ((ay > Y) != (by > Y)) & (X < (bx - ax) * (Y - ay) / (by - ay + 1e-12) + ax)
        inside ^= crosses
    return np.where(inside, -d, d)


def sd_ring(X, Y, cx, cy, r, thickness):
    """A circular band of the given thickness around radius r."""
    return np.abs(_norm(X - cx, Y - cy) - r) - thickness / 2.0


def fill_coverage(sd):
    """Share of a pixel's box filter inside the shape (exact across a straight edge)."""
    return np.clip(0.5 - sd, 0.0, 1.0)


def stroke_coverage(sd, width):
    """Share of a pixel's box filter on a line of `width` px centred on the shape's edge."""
    return np.clip(np.minimum(sd + 0.5, width / 2.0) - np.maximum(sd - 0.5, -width / 2.0), 0.0, 1.0)


class Canvas:
    """Premultiplied colour and alpha, painted back to front with "over"."""

    def __init__(self, size: int):
        self.size = size
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        self.X, self.Y = xs + 0.5, ys + 0.5
        self.prem = np.zeros((size, size, 3), np.float64)
        self.alpha = np.zeros((size, size), np.float64)
        self.translucent = np.zeros((size, size), np.float64)  # coverage of translucent layers

    def u(self, v: float) -> float:
        """Unit (0..1 of the canvas) to pixels."""
        return v * self.size

    def paint(self, cov, colour, opacity: float = 1.0) -> None:
        a = cov.astype(np.float64) * opacity
        self.prem = self.prem * (1.0 - a[..., None]) + a[..., None] * np.asarray(colour, np.float64)
        self.alpha = self.alpha * (1.0 - a) + a
        if opacity < 1.0:
            self.translucent = np.maximum(self.translucent, cov)
        else:  # opaque paint on top hides what was translucent below it
            self.translucent = self.translucent * (1.0 - cov)

    def shape(self, sd, fill, line=None, width: float = 0.0, opacity: float = 1.0) -> None:
        """Fill a shape, then draw its outline centred on the edge (when a line colour and width are given)."""
        self.paint(fill_coverage(sd), fill, opacity)
        if line is not None and width > 0:
            self.paint(stroke_coverage(sd, width), line, opacity)


# -- characters ----------------------------------------------------------------------------------------


@dataclass
class Region:
    """A labelled enclosed region: a see-through gap, or a garment painted the backdrop's white."""

    name: str
    kind: str  # "gap" | "garment"
    point: tuple[float, float]  # (x, y) pixel inside it


@dataclass
class Drawing:
    """A subject with its truth: straight colour, alpha, translucent parts, labelled enclosed regions."""

    name: str
    style: str
    colour: np.ndarray  # HxWx3 float 0..255
    alpha: np.ndarray  # HxW float 0..1
    translucent: np.ndarray  # HxW float: coverage of translucent layers not hidden by opaque paint
    regions: list[Region] = field(default_factory=list)


WHITE = (255.0, 255.0, 255.0)


def _finish(c: Canvas, name: str, style: str, regions: list[Region]) -> Drawing:
    alpha = np.clip(c.alpha, 0.0, 1.0)
    colour = np.where(alpha[..., None] > 1e-9, c.prem / np.maximum(alpha[..., None], 1e-9), 0.0)
    return Drawing(name, style, np.clip(colour, 0, 255), alpha, c.translucent, regions)


def wave(size: int, jitter: float = 0.0) -> Drawing:
    """Thick outline; white shirt bounded only by outline; arm on the hip; a ponytail loop; legs cut by the frame."""
    c = Canvas(size)
    X, Y, u = c.X, c.Y, c.u
    j = jitter
    ink, lw = (28, 22, 38), max(2.0, 0.018 * size)
    skin, hair, skirt = (255, 224, 198), (222, 96, 58), (46, 66, 142)
    for x0, x1 in ((0.45, 0.41), (0.55, 0.60)):  # legs, running off the bottom edge
        c.shape(sd_path(X, Y, [(u(x0), u(0.72)), (u(x1), u(1.08))], u(0.034)), skin, ink, lw)
    c.shape(sd_polygon(X, Y, [(u(0.37), u(0.62)), (u(0.63), u(0.62)), (u(0.70), u(0.81)), (u(0.30), u(0.81))]), skirt, ink, lw)
    # The right arm on the hip: shoulder -> elbow -> hand, enclosing a gap with the torso.
    elbow = (u(0.83 + j), u(0.52))
    arm = [(u(0.60), u(0.43)), elbow, (u(0.62), u(0.635))]
    c.shape(sd_path(X, Y, arm, u(0.030)), skin, ink, lw)
    # Torso: a shirt of the backdrop's own white, bounded only by its outline.
    torso = sd_polygon(X, Y, [(u(0.40), u(0.40)), (u(0.60), u(0.40)), (u(0.625), u(0.64)), (u(0.375), u(0.64))])
    c.shape(torso, WHITE, ink, lw)
    c.shape(sd_ellipse(X, Y, u(0.62), u(0.635), u(0.035), u(0.032)), skin, ink, lw)  # the hand on the hip
    # The left arm raised and waving.
    c.shape(sd_path(X, Y, [(u(0.41), u(0.44)), (u(0.27), u(0.33)), (u(0.22 - j), u(0.17))], u(0.028)), skin, ink, lw)
    c.shape(sd_ellipse(X, Y, u(0.22 - j), u(0.15), u(0.036), u(0.038)), skin, ink, lw)
    # Ponytail loop (a ring of hair: the backdrop shows through it), then head, bangs, eyes.
    c.shape(sd_ring(X, Y, u(0.69), u(0.19), u(0.075), u(0.036)), hair, ink, lw)
    c.shape(sd_ellipse(X, Y, u(0.50), u(0.27), u(0.125), u(0.12)), skin, ink, lw)
    bangs = [(u(0.37), u(0.27)), (u(0.40), u(0.15)), (u(0.50), u(0.12)), (u(0.60), u(0.15)), (u(0.63), u(0.27)),
             (u(0.58), u(0.20)), (u(0.54), u(0.25)), (u(0.50), u(0.19)), (u(0.45), u(0.25)), (u(0.42), u(0.20))]
    c.shape(sd_polygon(X, Y, bangs), hair, ink, lw)
    for ex in (0.45, 0.55):
        c.shape(sd_ellipse(X, Y, u(ex), u(0.295), u(0.022), u(0.028)), WHITE, ink, lw * 0.6)
        c.paint(fill_coverage(sd_ellipse(X, Y, u(ex), u(0.30), u(0.009), u(0.014))), ink)
    # Strands above the head, 1 px and 2 px wide.
    c.paint(stroke_coverage(sd_path(X, Y, [(u(0.50), u(0.125)), (u(0.47), u(0.07)), (u(0.43), u(0.04))], 0.0), 1.0), ink)
    c.paint(stroke_coverage(sd_path(X, Y, [(u(0.52), u(0.125)), (u(0.56), u(0.06))], 0.0), 2.0), ink)
    regions = [
        Region("arm on hip", "gap", (u(0.70), u(0.53))),
        Region("ponytail loop", "gap", (u(0.69), u(0.19))),
        Region("white shirt", "garment", (u(0.50), u(0.54))),
    ]
    return _finish(c, "wave", "thick outline", regions)


def mage(size: int, jitter: float = 0.0) -> Drawing:
    """Thin outline; a white apron inside a robe; a veil over the hair and the backdrop; a staff ring; akimbo arm."""
    c = Canvas(size)
    X, Y, u = c.X, c.Y, c.u
    j = jitter
    ink, lw = (52, 40, 70), max(1.0, 0.0048 * size)
    skin, hair, robe, robe_dark = (250, 218, 196), (52, 48, 74), (122, 74, 164), (96, 54, 134)
    wood = (140, 92, 52)
    # Staff held on the left, reaching the top edge, with a ring near the top.
    c.shape(sd_path(X, Y, [(u(0.24), u(0.95)), (u(0.24), u(-0.05))], u(0.011)), wood, ink, lw)
    c.shape(sd_ring(X, Y, u(0.24), u(0.14), u(0.075), u(0.022)), (214, 176, 60), ink, lw)
    # Long hair behind, a braid looping out on the right (a gap through the hair).
    c.shape(sd_ellipse(X, Y, u(0.52), u(0.34), u(0.17), u(0.20)), hair, ink, lw)
    c.shape(sd_ring(X, Y, u(0.74 + j), u(0.42), u(0.07), u(0.03)), hair, ink, lw)
    # Robe with a shading band and a white apron fully inside it.
    robe_poly = [(u(0.40), u(0.44)), (u(0.64), u(0.44)), (u(0.76), u(0.96)), (u(0.28), u(0.96))]
    c.shape(sd_polygon(X, Y, robe_poly), robe, ink, lw)
    c.paint(fill_coverage(np.maximum(sd_polygon(X, Y, robe_poly), -(X - u(0.66)))), robe_dark)
    c.shape(sd_polygon(X, Y, [(u(0.45), u(0.56)), (u(0.59), u(0.56)), (u(0.63), u(0.88)), (u(0.41), u(0.88))]), WHITE, ink, lw)
    # Right arm akimbo (a gap between arm and robe), left arm reaching to the staff.
    c.shape(sd_path(X, Y, [(u(0.62), u(0.47)), (u(0.80 + j), u(0.60)), (u(0.665), u(0.70))], u(0.028)), robe, ink, lw)
    c.shape(sd_path(X, Y, [(u(0.42), u(0.47)), (u(0.30), u(0.58)), (u(0.25), u(0.56))], u(0.028)), robe, ink, lw)
    c.shape(sd_ellipse(X, Y, u(0.245), u(0.56), u(0.028), u(0.03)), skin, ink, lw)
    c.shape(sd_ellipse(X, Y, u(0.52), u(0.31), u(0.10), u(0.115)), skin, ink, lw)
    for ex in (0.48, 0.56):
        c.paint(fill_coverage(sd_ellipse(X, Y, u(ex), u(0.32), u(0.010), u(0.016))), ink)
    # A translucent veil over the top of the head, hanging past the hair over the backdrop.
    veil = sd_polygon(X, Y, [(u(0.36), u(0.16)), (u(0.52), u(0.10)), (u(0.68), u(0.16)), (u(0.72), u(0.36)),
                             (u(0.60), u(0.22)), (u(0.44), u(0.22)), (u(0.32), u(0.36))])
    c.shape(veil, (150, 96, 230), opacity=0.45)
    # Thin strands of hair over the forehead, 1 px wide.
    for dx in (-0.03, 0.0, 0.03):
        c.paint(stroke_coverage(sd_path(X, Y, [(u(0.52 + dx), u(0.20)), (u(0.50 + 1.5 * dx), u(0.27))], 0.0), 1.0), hair)
    regions = [
        Region("staff ring, right", "gap", (u(0.24 + 0.04), u(0.14))),
        Region("staff ring, left", "gap", (u(0.24 - 0.04), u(0.14))),
        Region("braid loop", "gap", (u(0.74 + j), u(0.42))),
        Region("akimbo arm", "gap", (u(0.70 + j / 2), u(0.59))),
        Region("white apron", "garment", (u(0.52), u(0.72))),
    ]
    return _finish(c, "mage", "thin outline", regions)


def blob(size: int, jitter: float = 0.0) -> Drawing:
    """No outline: a creature with a curled tail (a gap), a translucent glass over its hand, cut by the right edge."""
    c = Canvas(size)
    X, Y, u = c.X, c.Y, c.u
    j = jitter
    body, dark, belly = (86, 168, 112), (62, 134, 88), (206, 236, 190)
    # Tail curling back onto the body: the gap between them is enclosed.
    c.paint(fill_coverage(sd_path(X, Y, [(u(0.62), u(0.80)), (u(0.86), u(0.86)), (u(0.95), u(0.70)),
                                         (u(0.86 + j), u(0.56)), (u(0.70), u(0.58))], u(0.035))), dark)
    c.paint(fill_coverage(sd_ellipse(X, Y, u(0.52), u(0.60), u(0.24), u(0.30))), body)
    c.paint(fill_coverage(np.maximum(sd_ellipse(X, Y, u(0.52), u(0.60), u(0.24), u(0.30)), -(Y - u(0.78)))), dark)
    c.paint(fill_coverage(sd_ellipse(X, Y, u(0.50), u(0.66), u(0.12), u(0.14))), belly)
    # Feet and a big ear running off the right edge.
    c.paint(fill_coverage(sd_ellipse(X, Y, u(0.88), u(0.38), u(0.22), u(0.06))), dark)
    for fx in (0.42, 0.60):
        c.paint(fill_coverage(sd_ellipse(X, Y, u(fx), u(0.90), u(0.07), u(0.04))), dark)
    # Eyes: white without outline, pupils.
    for ex in (0.44, 0.58):
        c.paint(fill_coverage(sd_ellipse(X, Y, u(ex), u(0.44), u(0.04), u(0.05))), WHITE)
        c.paint(fill_coverage(sd_ellipse(X, Y, u(ex + 0.01), u(0.45), u(0.018), u(0.026))), (30, 30, 40))
    # Antennae: thin lines, 1.5 px.
    for ax in (-0.06, 0.06):
        c.paint(stroke_coverage(sd_path(X, Y, [(u(0.52 + ax), u(0.31)), (u(0.52 + 2.2 * ax), u(0.16))], 0.0), 1.5), dark)
    # Arm up, hand holding a glass in front of it; the glass reaches above the hand over the backdrop.
    c.paint(fill_coverage(sd_path(X, Y, [(u(0.34), u(0.58)), (u(0.20), u(0.50)), (u(0.20), u(0.40))], u(0.04))), body)
    glass = sd_polygon(X, Y, [(u(0.12), u(0.20)), (u(0.28), u(0.20)), (u(0.26), u(0.46)), (u(0.14), u(0.46))])
    c.paint(fill_coverage(glass), (70, 150, 225), opacity=0.4)
    c.paint(stroke_coverage(sd_segment(X, Y, u(0.12), u(0.20), u(0.28), u(0.20)), 2.0), (60, 120, 190))
    regions = [Region("curled tail", "gap", (u(0.82), u(0.70)))]
    return _finish(c, "blob", "no outline", regions)


def bust(size: int, jitter: float = 0.0) -> Drawing:
    """Thick outline, big head and shoulders cut by the bottom and left edges; a white collar; a hoop earring."""
    c = Canvas(size)
    X, Y, u = c.X, c.Y, c.u
    j = jitter
    ink, lw = (20, 26, 40), max(2.0, 0.022 * size)
    skin, hair, coat = (246, 206, 176), (40, 82, 170), (176, 48, 58)
    c.shape(sd_polygon(X, Y, [(u(-0.1), u(0.78)), (u(0.30), u(0.66)), (u(0.80), u(0.70)), (u(0.95), u(1.1)), (u(-0.1), u(1.1))]), coat, ink, lw)
    # A white collar bounded only by outline, with a notch.
    c.shape(sd_polygon(X, Y, [(u(0.30), u(0.66)), (u(0.50), u(0.62)), (u(0.72), u(0.69)), (u(0.52), u(0.80)), (u(0.46), u(0.74))]),
            WHITE, ink, lw)
    c.shape(sd_path(X, Y, [(u(0.50), u(0.56)), (u(0.50), u(0.66))], u(0.06)), skin, ink, lw)  # neck
    c.shape(sd_ellipse(X, Y, u(0.50 + j), u(0.38), u(0.22), u(0.24)), hair, ink, lw)
    c.shape(sd_ellipse(X, Y, u(0.50 + j), u(0.42), u(0.17), u(0.19)), skin, ink, lw)
    c.shape(sd_polygon(X, Y, [(u(0.33 + j), u(0.36)), (u(0.50 + j), u(0.22)), (u(0.67 + j), u(0.36)), (u(0.50 + j), u(0.30))]),
            hair, ink, lw)
    # Hoop earring: a ring hanging below the ear (a small gap).
    c.shape(sd_ring(X, Y, u(0.745 + j), u(0.50), u(0.055), u(0.014)), (236, 190, 60), ink, lw * 0.5)
    for ex in (0.43, 0.57):
        c.shape(sd_ellipse(X, Y, u(ex + j), u(0.44), u(0.03), u(0.035)), WHITE, ink, lw * 0.6)
        c.paint(fill_coverage(sd_ellipse(X, Y, u(ex + j), u(0.45), u(0.013), u(0.02))), ink)
    # Strands escaping the hair on the left: 1 px and 1.5 px.
    c.paint(stroke_coverage(sd_path(X, Y, [(u(0.30), u(0.30)), (u(0.22), u(0.20)), (u(0.20), u(0.10))], 0.0), 1.0), ink)
    c.paint(stroke_coverage(sd_path(X, Y, [(u(0.32), u(0.26)), (u(0.26), u(0.12))], 0.0), 1.5), ink)
    regions = [
        Region("white collar", "garment", (u(0.38), u(0.675))),
        Region("hoop earring", "gap", (u(0.755 + j), u(0.50))),
    ]
    return _finish(c, "bust", "thick outline", regions)


CHARACTERS = {"wave": wave, "mage": mage, "blob": blob, "bust": bust}


# -- backdrops ------------------------------------------------------------------------------------------

BACKDROPS = ("white", "offwhite", "grey", "gradient", "vignette", "paper", "scanner")


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in -1..1 with features about `cell` px wide (bicubic-upsampled random grid)."""
    gh, gw = max(2, int(h / cell) + 2), max(2, int(w / cell) + 2)
    grid = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def backdrop(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    """A backdrop (float HxWx3 0..255) of the given kind; `seed` varies texture and lighting."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    yy, xx = yy / max(1, h - 1), xx / max(1, w - 1)
    if kind == "white":
        return np.full((h, w, 3), 255.0)
    if kind == "offwhite":
        return np.broadcast_to(np.array([250.0, 245.0, 233.0]), (h, w, 3)).copy()
    if kind == "grey":
        return np.broadcast_to(np.array([198.0, 201.0, 206.0]), (h, w, 3)).copy()
    if kind == "gradient":
        # A curved two-colour gradient (not a plane, not a quadratic).
        t = 0.5 + 0.5 * np.sin(2.4 * xx + 1.6 * yy + rng.uniform(0, 3))
        a, b = np.array([252.0, 246.0, 236.0]), np.array([214.0, 226.0, 244.0])
        return a * (1 - t[..., None]) + b * t[..., None]
    if kind == "vignette":
        # A strong radial fall-off of high order, off-centre: far from a quadratic surface.
        cx, cy = 0.5 + rng.uniform(-0.1, 0.1), 0.5 + rng.uniform(-0.1, 0.1)
        r = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / 0.72
        fall = 1.0 - 0.34 * r**3.2
        return (np.array([250.0, 247.0, 242.0]) * fall[..., None]).clip(0, 255)
    if kind == "paper":
        # Off-white paper: blotchy tone, fine grain and fibres, a faint gradient.
        tone = 3.0 * _value_noise(rng, h, w, 24) + 2.0 * _value_noise(rng, h, w, 6)
        grain = rng.normal(0.0, 1.6, (h, w))
        fibres = np.zeros((h, w), np.float32)
        for _ in range(int(h * w / 900)):
            x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
            ang, length = rng.uniform(0, np.pi), rng.uniform(3, 10)
            x1, y1 = x0 + length * np.cos(ang), y0 + length * np.sin(ang)
            cv2.line(fibres, (int(x0 * 4), int(y0 * 4)), (int(x1 * 4), int(y1 * 4)), float(rng.uniform(-5, 4)), 1,
                     cv2.LINE_AA, shift=2)
        shade = tone + grain + fibres - 6.0 * yy
        return (np.array([244.0, 239.0, 226.0]) + shade[..., None] * np.array([1.0, 1.0, 0.95])).clip(0, 255)
    if kind == "scanner":
        # Uneven scanner light: a gutter shadow along one edge, a broad bright patch, a colour cast, sensor noise.
        side = rng.integers(0, 4)
        dist = [xx, 1 - xx, yy, 1 - yy][side]
        gutter = -48.0 * np.exp(-dist / 0.07)
        patch = 7.0 * np.exp(-(((xx - 0.7) ** 2 + (yy - 0.3) ** 2) / 0.08))
        falloff = -14.0 * (1 - np.cos(np.pi * dist)) / 2 * (dist < 1)
        light = 240.0 + gutter + patch + 0.3 * falloff
        img = light[..., None] * np.array([1.0, 0.985, 0.94]) + rng.normal(0.0, 1.2, (h, w, 3))
        return img.clip(0, 255)
    raise ValueError(kind)


# -- scenes: a drawing on a backdrop, optionally resampled, saved as PNG or JPEG ---------------------------


@dataclass
class Scene:
    """An input image and the truth it was made from (after any resampling)."""

    image: np.ndarray  # HxWx3 uint8, as decoded from the saved file
    colour: np.ndarray
    alpha: np.ndarray
    translucent: np.ndarray
    regions: list[Region]
    character: str
    style: str
    backdrop: str
    fmt: str  # "png" | "jpeg75" | ...
    resampled: str | None = None  # filter name when the drawing was made larger and resampled down

    @property
    def label(self) -> str:
        extra = f"+{self.resampled}" if self.resampled else ""
        return f"{self.character}/{self.backdrop}{extra}/{self.fmt}"


RESAMPLERS = {
    "area": lambda a, s: cv2.resize(a, s, interpolation=cv2.INTER_AREA),
    "bicubic": lambda a, s: _pil_resize(a, s, Image.Resampling.BICUBIC),
    "lanczos": lambda a, s: _pil_resize(a, s, Image.Resampling.LANCZOS),
}


def _pil_resize(arr: np.ndarray, size: tuple[int, int], method) -> np.ndarray:
    """Pillow's resampling (with its antialiasing support) of a float array, channel by channel."""
    chans = arr[..., None] if arr.ndim == 2 else arr
    out = [np.asarray(Image.fromarray(chans[..., k].astype(np.float32), mode="F").resize(size, method)) for k in range(chans.shape[2])]
    res = np.stack(out, axis=2).astype(np.float64)
    return res[..., 0] if arr.ndim == 2 else res


def encode(img: np.ndarray, fmt: str) -> np.ndarray:
    """Round-trip a uint8 RGB image through the named format (png, or jpeg75 / jpeg85 / jpeg95 with Pillow's defaults)."""
    if fmt == "png":
        return img
    quality = int(fmt.removeprefix("jpeg"))
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


@functools.lru_cache(maxsize=16)
def drawing(character: str, size: int, jitter: float = 0.0) -> Drawing:
    """A character drawn at a size (cached: scenes on many backdrops share it; do not modify it)."""
    return CHARACTERS[character](size, jitter)


def scene(character: str, kind: str, fmt: str = "png", size: int = 192, *, seed: int = 0,
          resample: str | None = None, factor: float = 2.6, jitter: float = 0.0) -> Scene:
    """Draw a character on a backdrop; with `resample`, draw it `factor` times larger and resample it down."""
    big = int(round(size * factor)) if resample else size
    d = drawing(character, big, jitter)
    bg = backdrop(kind, big, big, seed)
    a = d.alpha[..., None]
    img = d.colour * a + bg * (1.0 - a)
    colour, alpha, translucent = d.colour, d.alpha, d.translucent
    regions = d.regions
    if resample:
        fn = RESAMPLERS[resample]
        s = (size, size)
        prem = fn(d.colour * a, s)
        alpha = np.clip(fn(d.alpha, s), 0.0, 1.0)
        colour = np.clip(np.where(alpha[..., None] > 1e-6, prem / np.maximum(alpha[..., None], 1e-6), 0.0), 0, 255)
        translucent = np.clip(fn(d.translucent, s), 0.0, 1.0)
        img = fn(img, s)
        k = size / big
        regions = [Region(r.name, r.kind, (r.point[0] * k, r.point[1] * k)) for r in d.regions]
    img8 = encode(np.clip(np.rint(img), 0, 255).astype(np.uint8), fmt)
    return Scene(img8, colour, alpha, translucent, regions, character, d.style, kind, fmt, resample)


# -- measures --------------------------------------------------------------------------------------------


def place(rgba: np.ndarray, box, shape) -> np.ndarray:
    """A trimmed cut-out put back into its source frame (transparent elsewhere)."""
    h, w = shape
    full = np.zeros((h, w, 4), np.uint8)
    x0, y0, x1, y1 = box
    full[y0:y1, x0:x1] = rgba
    return full


def translucent_zone(s: Scene) -> np.ndarray:
    """Pixels of translucent parts (their edges included): left out of IoU and edge error, measured apart."""
    part = (s.translucent > 0.02) & (s.alpha < 0.98)
    return cv2.dilate(part.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def translucent_core(s: Scene) -> np.ndarray:
    """Inside translucent parts over the backdrop, away from their edges: where alpha error is measured."""
    core = (s.translucent > 0.999) & (s.alpha < 0.98) & (s.alpha > 0.02)
    return cv2.erode(core.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0


def iou(pred_alpha: np.ndarray, s: Scene) -> float:
    """IoU of alpha > 0.5 against the truth, translucent parts left out."""
    keep = ~translucent_zone(s)
    p, t = (pred_alpha > 0.5) & keep, (s.alpha > 0.5) & keep
    union = (p | t).sum()
    return float((p & t).sum() / union) if union else 1.0


def edge_band(s: Scene) -> np.ndarray:
    """Pixels within 2 px of the true edge (of alpha > 0.5), translucent parts left out."""
    mask = (s.alpha > 0.5).astype(np.uint8)
    k = np.ones((5, 5), np.uint8)
    return ((cv2.dilate(mask, k) - cv2.erode(mask, k)) > 0) & ~translucent_zone(s)


def edge_error(rgba_full: np.ndarray, s: Scene) -> float:
    """Mean |cut-out over black - truth over black| (0..1) within 2 px of the true edge."""
    band = edge_band(s)
    pa = rgba_full[:, :, 3:].astype(np.float64) / 255.0
    pred = rgba_full[:, :, :3].astype(np.float64) * pa
    true = s.colour * s.alpha[:, :, None]
    return float(np.abs(pred - true)[band].mean() / 255.0)


def translucent_alpha_error(pred_alpha: np.ndarray, s: Scene) -> float | None:
    """Mean |alpha - true alpha| inside translucent parts over the backdrop (None when the drawing has none)."""
    core = translucent_core(s)
    if not core.any():
        return None
    return float(np.abs(pred_alpha - s.alpha)[core].mean())


def region_mask(s: Scene, region: Region) -> np.ndarray:
    """The truth's pixels of a labelled region: the transparent (gap) or white (garment) area around its point."""
    x, y = int(region.point[0]), int(region.point[1])
    if region.kind == "gap":
        inside = s.alpha < 0.02
    else:
        inside = (s.alpha > 0.98) & (s.colour.min(axis=2) > 250)
    _, labels = cv2.connectedComponents(inside.astype(np.uint8), connectivity=4)
    k = labels[y, x]
    if k == 0:
        raise AssertionError(f"{s.label}: the point of {region.name} is not inside a {region.kind}")
    return labels == k


def numbers_of(holes: list[dict], regions: list[Region]) -> list[int]:
    """Manifest numbers of the enclosed regions (rows with a `contour` in source pixels) that hold one
    of the labelled `regions`: what a user reads off review.png and writes into holes.toml."""
    found = []
    for r in regions:
        for row in holes:
            c = np.asarray(row.get("contour", []), np.float32)
            if len(c) >= 3 and cv2.pointPolygonTest(c.reshape(-1, 1, 2), (float(r.point[0]), float(r.point[1])), False) >= 0:
                found.append(int(row["number"]))
    return sorted(set(found))


def labelled(s: Scene, kind: str) -> list[Region]:
    """The scene's labelled regions of one kind ("gap" or "garment")."""
    return [r for r in s.regions if r.kind == kind]
