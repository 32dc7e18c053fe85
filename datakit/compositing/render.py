"""Draw one composite: choose each effect's on/off and strength from the item's seed, then blend.

Each effect draws its random numbers from its own generator (item seed + effect name), so turning one
effect off does not change what the others do, and the same item always looks the same.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from datakit.compositing import blending as bl
from datakit.compositing.placement import Placement, SubjectShape

EFFECTS = ("feather", "light_wrap", "shadow", "harmonise", "grain", "artefacts")


def effect_rng(seed: int, name: str) -> np.random.Generator:
    """A generator private to one effect of one item."""
    return np.random.default_rng([int(seed) & ((1 << 63) - 1), zlib.crc32(name.encode("utf-8"))])


def _r(x: float) -> float:
    return round(float(x), 4)


def choose_effects(
    seed: int,
    *,
    disabled: frozenset[str] | set[str],
    sharp: float,
    noise_bg: float,
    noise_fg: float,
    framing: str,
    on_ground: bool,
    ground_known: bool,
    short_side: int,
    subject_px: float,
    out_format: str,
) -> dict:
    """Every effect's on/off and strength for one composite (recorded in the manifest as is)."""
    plan: dict = {}

    g = effect_rng(seed, "feather")
    jitter = g.uniform(0.75, 1.3)
    plan["feather"] = {"on": "feather" not in disabled, "sigma": _r(bl.feather_sigma(sharp, short_side) * jitter), "bg_sharpness": _r(sharp)}

    g = effect_rng(seed, "light_wrap")
    on, strength, radius = g.random() < 0.5, g.uniform(0.15, 0.45), g.uniform(0.006, 0.014) * short_side
    plan["light_wrap"] = {"on": bool(on and "light_wrap" not in disabled), "strength": _r(strength), "radius": _r(max(2.0, radius))}

    g = effect_rng(seed, "shadow")
    draws = g.random(9)
    full_on_ground = framing == "full" and on_ground and "shadow" not in disabled
    contact_p, contact_gain = (0.85, 1.0) if ground_known else (0.5, 0.7)
    plan["contact_shadow"] = {
        "on": bool(full_on_ground and draws[0] < contact_p),
        "opacity": _r((0.3 + 0.3 * draws[1]) * contact_gain),
        "width": _r(0.8 + 0.5 * draws[2]),  # times the feet's width
        "flatness": _r(0.12 + 0.1 * draws[3]),  # ellipse height / width
    }
    plan["cast_shadow"] = {
        "on": bool(full_on_ground and ground_known and draws[4] < 0.6),
        "opacity": _r(0.15 + 0.2 * draws[5]),
        # > 0: thrown behind the subject (lit from the front); now and then toward the viewer (backlit).
        "squash": _r((0.15 + 0.25 * draws[6]) if draws[7] < 0.85 else -(0.08 + 0.12 * draws[6])),
        "shear": _r(-1.0 + 2.0 * draws[8]),
        "blur": _r(max(1.0, (0.008 + 0.012 * g.random()) * subject_px)),
    }

    g = effect_rng(seed, "harmonise")
    on, strength, tint = g.random() < 0.7, g.uniform(0.05, 0.25), g.uniform(0.0, 0.08)
    plan["harmonise"] = {"on": bool(on and "harmonise" not in disabled), "strength": _r(strength), "tint": _r(tint)}

    g = effect_rng(seed, "grain")
    target = math.sqrt(max(0.0, noise_bg**2 - noise_fg**2))
    on, factor, mono = g.random() < 0.85, g.uniform(0.8, 1.1), g.random() < 0.6
    plan["grain"] = {
        "on": bool(on and target > 0.003 and "grain" not in disabled),
        "sigma": _r(min(0.05, target * factor)),
        "mono": bool(mono),
        "bg_noise": _r(noise_bg),
        "subject_noise": _r(noise_fg),
    }

    g = effect_rng(seed, "artefacts")
    u, factor, quality = g.random(), g.uniform(0.7, 0.92), int(g.integers(80, 96))
    if "artefacts" in disabled:
        kind = "none"
    elif out_format == "jpg":  # the saved JPEG already shares its artefacts across the frame
        kind = "none" if u < 0.45 else "resample"
    else:
        kind = "none" if u < 0.25 else ("resample" if u < 0.65 else "jpeg")
    value = _r(factor) if kind == "resample" else (quality if kind == "jpeg" else None)
    plan["artefacts"] = {"on": kind != "none", "kind": kind, "value": value}
    return plan


def scaled_layer(rgba: np.ndarray, placement: Placement, frame_h: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The subject flipped/scaled/rotated as a premultiplied layer, and its integer top-left in the frame."""
    if placement.flip:
        rgba = rgba[:, ::-1]
    h, w = rgba.shape[:2]
    s = placement.scale
    x0 = placement.center_x - w * s / 2
    y0 = placement.center_y - h * s / 2
    rows = h
    if placement.rotation == 0.0:
        # Rows below the frame are never seen (upper-body and portrait crops): do not resample them.
        rows = int(min(h, math.ceil((frame_h - y0) / s) + 4))
        rows = max(rows, 1)
    new_w = max(1, int(round(w * s)))
    new_h = max(1, int(round(rows * s)))
    p, a = bl.resize_layer(bl.premultiply(np.ascontiguousarray(rgba[:rows])), new_w, new_h)
    if placement.rotation != 0.0:
        p, a, dx, dy = bl.rotate_layer(p, a, placement.rotation)
        x0 -= dx
        y0 -= dy
    return p, a, int(round(x0)), int(round(y0))


def _clip_box(box, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return max(0, int(math.floor(x0))), max(0, int(math.floor(y0))), min(w, int(math.ceil(x1))), min(h, int(math.ceil(y1)))


def render(
    bg: np.ndarray,
    rgba: np.ndarray,
    shape: SubjectShape,
    placement: Placement,
    *,
    seed: int,
    disabled: frozenset[str] | set[str] = frozenset(),
    ground_known: bool = True,
    out_format: str = "png",
) -> tuple[np.ndarray, dict]:
    """Composite the cut-out `rgba` (uint8, cropped to its subject) onto `bg` (uint8 RGB); returns (image, effects)."""
    frame_h, frame_w = bg.shape[:2]
    short = min(frame_w, frame_h)
    p, a, x0, y0 = scaled_layer(rgba, placement, frame_h)
    lh, lw = a.shape
    sub_box = _clip_box((x0, y0, x0 + lw, y0 + lh), frame_w, frame_h)
    if sub_box[2] <= sub_box[0] or sub_box[3] <= sub_box[1]:
        raise ValueError("the subject landed outside the frame")  # placement guarantees otherwise: a bug

    # Measure the background where the subject goes, and the subject's own noise.
    mx = int(0.1 * (sub_box[2] - sub_box[0]))
    my = int(0.1 * (sub_box[3] - sub_box[1]))
    m0, m1, m2, m3 = _clip_box((sub_box[0] - mx, sub_box[1] - my, sub_box[2] + mx, sub_box[3] + my), frame_w, frame_h)
    gray_bg = bl.luminance(bl.to_float(bg[m1:m3, m0:m2]))
    sharp = bl.sharpness(gray_bg)
    noise_bg = bl.noise_level(gray_bg)
    noise_fg = bl.noise_level(bl.luminance(p), weights=a)

    plan = choose_effects(
        seed, disabled=disabled, sharp=sharp, noise_bg=noise_bg, noise_fg=noise_fg, framing=placement.framing,
        on_ground=placement.on_ground, ground_known=ground_known, short_side=short,
        subject_px=shape.height * placement.scale, out_format=out_format,
    )

    # Region of interest: the subject, its feathered/wrapped rim and its shadows.
    pad = 3.0 * max(plan["feather"]["sigma"] * 1.5, plan["light_wrap"]["radius"] if plan["light_wrap"]["on"] else 0.0) + 2
    boxes = [(x0 - pad, y0 - pad, x0 + lw + pad, y0 + lh + pad)]
    contact = plan["contact_shadow"]
    cast = plan["cast_shadow"]
    feet_y = placement.feet_y
    if contact["on"] and feet_y is not None:
        sh = shape.mirrored() if placement.flip else shape
        left, right = sh.bottom_span()
        s = placement.scale
        box_x0 = placement.center_x - shape.width * s / 2
        feet_cx = box_x0 + (left + right + 1) / 2 * s
        half_w = max(2.0, (right - left + 1) * s / 2 * contact["width"])
        half_h = max(1.0, half_w * contact["flatness"])
        contact_geom = (feet_cx, feet_y - half_h * 0.3, half_w, half_h, max(1.0, half_h * 0.6))
        boxes.append((feet_cx - half_w * 1.6, feet_y - half_h * 3, feet_cx + half_w * 1.6, feet_y + half_h * 3))
    if cast["on"] and feet_y is not None:
        above = max(0.0, feet_y - y0)
        shift = cast["shear"] * above
        reach = cast["squash"] * above
        ext = 3 * cast["blur"]
        boxes.append((x0 + min(0.0, shift) - ext, min(feet_y, feet_y - reach) - ext, x0 + lw + max(0.0, shift) + ext, max(feet_y, feet_y - reach) + ext))
    rx0, ry0, rx1, ry1 = _clip_box(
        (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)), frame_w, frame_h
    )
    rh, rw = ry1 - ry0, rx1 - rx0
    # The subject's own region (inside the shadows' one): the colour effects only matter where the
    # feathered alpha reaches, and a cast shadow can make the whole region several times larger.
    qx0, qy0, qx1, qy1 = _clip_box(boxes[0], frame_w, frame_h)
    qh, qw = qy1 - qy0, qx1 - qx0

    # The layer in subject-region coordinates (clipped where it leaves the frame).
    pr = np.zeros((qh, qw, 3), dtype=np.float32)
    ar = np.zeros((qh, qw), dtype=np.float32)
    sx0, sy0 = max(0, qx0 - x0), max(0, qy0 - y0)
    sx1, sy1 = min(lw, qx1 - x0), min(lh, qy1 - y0)
    dx0, dy0 = x0 + sx0 - qx0, y0 + sy0 - qy0
    pr[dy0 : dy0 + sy1 - sy0, dx0 : dx0 + sx1 - sx0] = p[sy0:sy1, sx0:sx1]
    ar[dy0 : dy0 + sy1 - sy0, dx0 : dx0 + sx1 - sx0] = a[sy0:sy1, sx0:sx1]

    # Shadows darken the ground before the subject is laid on it.
    shadow = None
    if contact["on"] and feet_y is not None:
        cx, cy, hw, hh, blur = contact_geom
        shadow = bl.contact_shadow((rh, rw), cx - rx0, cy - ry0, hw, hh, blur) * contact["opacity"]
    if cast["on"] and feet_y is not None:
        cs = bl.cast_shadow(a, (x0 - rx0, y0 - ry0), feet_y - ry0, (rh, rw), cast["squash"], cast["shear"], cast["blur"]) * cast["opacity"]
        shadow = cs if shadow is None else 1.0 - (1.0 - shadow) * (1.0 - cs)
    if shadow is not None:
        shaded = bl.to_float(bg[ry0:ry1, rx0:rx1])
        shaded *= (1.0 - shadow)[..., None]
        bg_roi = shaded[qy0 - ry0 : qy1 - ry0, qx0 - rx0 : qx1 - rx0]
    else:
        bg_roi = bl.to_float(bg[qy0:qy1, qx0:qx1])

    if plan["feather"]["on"]:
        colour, a_f = bl.feather(pr, ar, plan["feather"]["sigma"])
    else:
        colour, a_f = pr / np.maximum(ar, bl.EPS)[..., None], ar
    if plan["harmonise"]["on"]:
        colour, stats = bl.harmonise(colour, ar, bg_roi, 1.0 - ar, plan["harmonise"]["strength"], plan["harmonise"]["tint"])
        plan["harmonise"].update(stats)
    if plan["grain"]["on"]:
        colour = bl.add_grain(colour, plan["grain"]["sigma"], effect_rng(seed, "grain-noise"), mono=plan["grain"]["mono"])

    # comp = bg * (1 - a) + colour * a, as bg + (colour - bg) * a in place (colour is ours to reuse).
    comp = np.subtract(colour, bg_roi, out=colour)
    comp *= a_f[..., None]
    comp += bg_roi
    if plan["light_wrap"]["on"]:
        comp = bl.light_wrap(comp, bg_roi, a_f, plan["light_wrap"]["radius"], plan["light_wrap"]["strength"])

    out = bg.copy()
    if shadow is not None:
        out[ry0:ry1, rx0:rx1] = bl.to_uint8(shaded)
    out[qy0:qy1, qx0:qx1] = bl.to_uint8(comp)
    art = plan["artefacts"]
    if art["on"]:
        out = bl.shared_artefacts(out, art["kind"], art["value"])
    return out, plan
