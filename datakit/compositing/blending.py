"""Blending that hides the cut: premultiplied resampling, feathering, light wrap, shadows, harmonisation,
grain matching and shared artefacts.

Arrays are float32 in 0..1. A subject layer is premultiplied colour P (HxWx3) and alpha A (HxW): resampling
premultiplied colour is what keeps the transparent pixels' colour (often the white of the original
drawing) from leaking into the edge as a halo. Every effect works on a region of interest around the
subject, so the cost does not grow with the frame size.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

EPS = 1e-6
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ------------------------------------------------------------------------------------------------
# Layers
# ------------------------------------------------------------------------------------------------
def premultiply(rgba: np.ndarray) -> np.ndarray:
    """uint8 RGBA with straight alpha -> uint8 RGBA with premultiplied colour (rounded)."""
    # OpenCV multiplies in 8 bits with rounding: round(c * a / 255), the same as (c * a + 127) // 255
    # (c * a is an integer, so the exact quotient is never a tie), channel by channel: 4x faster than
    # numpy's 16-bit arithmetic on interleaved channels.
    r, g, b, a = cv2.split(rgba)
    return cv2.merge([cv2.multiply(r, a, scale=1.0 / 255.0), cv2.multiply(g, a, scale=1.0 / 255.0), cv2.multiply(b, a, scale=1.0 / 255.0), a])


def resize_layer(premultiplied: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize a premultiplied uint8 RGBA layer -> (premultiplied colour, alpha) float32 0..1.

    Area averaging down (no aliasing), bicubic up. Resampling in 8 bits is cheap on big cut-outs and
    loses nothing visible: the colour is only ever used multiplied by its alpha.
    """
    width, height = max(1, int(width)), max(1, int(height))
    h, w = premultiplied.shape[:2]
    down = width * height <= w * h
    out = cv2.resize(premultiplied, (width, height), interpolation=cv2.INTER_AREA if down else cv2.INTER_CUBIC)
    r, g, b, alpha = cv2.split(out)
    # Premultiplied colour can never exceed its alpha; bicubic overshoot would draw a bright rim.
    # (Clamped in 8 bits, per plane, before the conversion: the same result at a fraction of the cost.)
    colour = cv2.merge([cv2.min(r, alpha), cv2.min(g, alpha), cv2.min(b, alpha)])
    return to_float(colour), to_float(alpha)


def rotate_layer(p: np.ndarray, a: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Rotate a premultiplied layer about its centre onto a canvas that holds it; returns the shift of the centre."""
    h, w = a.shape
    t = math.radians(degrees)
    c, s = abs(math.cos(t)), abs(math.sin(t))
    nw, nh = int(math.ceil(w * c + h * s)) + 2, int(math.ceil(w * s + h * c)) + 2
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    stacked = cv2.warpAffine(np.dstack([p, a]), m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return stacked[..., :3], np.ascontiguousarray(stacked[..., 3]), (nw - w) / 2, (nh - h) / 2


def gaussian(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; large radii run on a reduced copy (same look, a fraction of the cost)."""
    if sigma <= 0.05:
        return img
    h, w = img.shape[:2]
    factor = int(sigma // 3)
    if factor >= 2 and min(h, w) // factor >= 4:
        small = cv2.resize(img, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 -> float32 0..1 (a cast then an in-place scale: numpy's mixed-type multiply is ~5x slower)."""
    out = img.astype(np.float32)
    out *= np.float32(1.0 / 255.0)
    return out


def to_uint8(img: np.ndarray) -> np.ndarray:
    """float32 0..1 -> uint8, rounded and saturated, in one pass (inputs are never negative)."""
    return cv2.convertScaleAbs(img, alpha=255.0)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an HxWx3 float32 array (OpenCV: no BLAS threads inside pool workers)."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2GRAY)


# ------------------------------------------------------------------------------------------------
# Measuring the background
# ------------------------------------------------------------------------------------------------
def sharpness(gray: np.ndarray) -> float:
    """0 (soft, blurred) .. 1 (crisp): share of fine detail in the detail a coarser blur removes."""
    fine = float(np.mean(np.abs(gray - cv2.GaussianBlur(gray, (0, 0), 0.8))))
    coarse = float(np.mean(np.abs(gray - cv2.GaussianBlur(gray, (0, 0), 2.5))))
    if coarse < 2e-3:  # a flat area says nothing about focus: treat it as ordinary
        return 0.5
    ratio = fine / coarse
    # Measured on test images: ~0.15 for heavily blurred content, ~0.6+ for crisp edges and noise.
    return float(np.clip((ratio - 0.15) / 0.45, 0.0, 1.0))


# Statistics of large regions are taken on every other row and column: a quarter of the pixels
# gives the same median / mean to well under a percent, and sorting is the costly part.
SAMPLE_ABOVE = 256 * 256


def _sampled(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Every other row and column of each array when they are large, else the arrays as they are."""
    if arrays[0].shape[0] * arrays[0].shape[1] <= SAMPLE_ABOVE:
        return arrays
    return tuple(np.ascontiguousarray(x[::2, ::2]) for x in arrays)


def noise_level(gray: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Robust estimate of the per-pixel noise sigma (median absolute high-pass, 0..1 units)."""
    hp = gray - cv2.GaussianBlur(gray, (0, 0), 1.0)
    if weights is not None:
        hp, weights = _sampled(hp, weights)
        values = np.abs(hp[weights > 0.98])
        if values.size < 64:
            return 0.0
    else:
        values = np.abs(_sampled(hp)[0]).ravel()
    # 1.4826 * MAD is sigma for Gaussian noise; a sigma-1 high-pass keeps ~0.75 of white noise.
    return float(np.median(values) * 1.4826 / 0.75)


def feather_sigma(sharp: float, frame_short_side: int) -> float:
    """Alpha feather radius matched to the background's focus, in pixels of the frame."""
    px = (2.2 - 1.6 * sharp) * frame_short_side / 1024.0
    return float(max(0.6, px))


# ------------------------------------------------------------------------------------------------
# Effects on a region of interest
# ------------------------------------------------------------------------------------------------
def feather(p: np.ndarray, a: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Soften the alpha edge; returns straight colour (bled past the edge) and the feathered alpha.

    Colour just outside the silhouette comes from a normalised blur of the subject's own premultiplied
    colour, so the softened rim shows the subject's edge colour, never black or the old background.
    """
    a_f = cv2.GaussianBlur(a, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    bleed_sigma = max(sigma * 1.5, 1.0)
    pb = cv2.GaussianBlur(p, (0, 0), bleed_sigma, borderType=cv2.BORDER_REPLICATE)
    ab = cv2.GaussianBlur(a, (0, 0), bleed_sigma, borderType=cv2.BORDER_REPLICATE)
    # straight = p + (pb / ab) * (1 - a): the per-pixel factor is worked out on one channel, and the
    # three-channel work is done in place (these arrays are the size of the subject).
    gain = (1.0 - a) / np.maximum(ab, EPS)
    pb *= gain[..., None]
    pb += p
    return np.clip(pb, 0.0, 1.0, out=pb), a_f


def harmonise(colour: np.ndarray, weight: np.ndarray, bg: np.ndarray, bg_weight: np.ndarray, strength: float, tint: float) -> tuple[np.ndarray, dict]:
    """Move the subject's brightness/contrast a little toward the background's (colours keep their hue)."""
    # The statistics come from a sample of the pixels; the change itself is applied to all of them.
    c_s, w_s, b_s, bw_s = _sampled(colour, weight, bg, bg_weight)
    y_s, y_b = luminance(c_s), luminance(b_s)
    weight, bg_weight = w_s, bw_s
    ws, wb = weight.sum(), bg_weight.sum()
    if ws < 16 or wb < 16:
        return colour, {"skipped": "too few pixels"}
    mu_s = float((y_s * weight).sum() / ws)
    mu_b = float((y_b * bg_weight).sum() / wb)
    sd_s = math.sqrt(max(float((((y_s - mu_s) ** 2) * weight).sum() / ws), 1e-6))
    sd_b = math.sqrt(max(float((((y_b - mu_b) ** 2) * bg_weight).sum() / wb), 1e-6))
    gain = float(np.clip(1.0 + strength * (sd_b / sd_s - 1.0), 0.85, 1.15))
    shift = float(np.clip(strength * (mu_b - mu_s), -0.08, 0.08))
    # A faint cast of the background's average colour, relative to its grey.
    bg_mean = (b_s * bg_weight[..., None]).sum(axis=(0, 1)) / wb
    cast = (bg_mean - bg_mean.mean()) * tint
    # (colour - mu_s) * gain + mu_s + shift + cast, as one affine pass over the three channels.
    m = np.zeros((3, 4), dtype=np.float64)
    for c in range(3):
        m[c, c] = gain
        m[c, 3] = mu_s * (1.0 - gain) + shift + float(cast[c])
    out = cv2.transform(np.ascontiguousarray(colour, dtype=np.float32), m)
    return np.clip(out, 0.0, 1.0, out=out), {"gain": round(gain, 4), "shift": round(shift, 4), "cast": [round(float(c), 4) for c in cast]}


def add_grain(colour: np.ndarray, sigma: float, rng: np.random.Generator, *, mono: bool) -> np.ndarray:
    """Gaussian grain of `sigma` (0..1 units), luminance-only or per channel."""
    h, w = colour.shape[:2]
    shape = (h, w, 1) if mono else (h, w, 3)
    # Inverse-CDF sampling from 16-bit uniform integers: a true Gaussian (tails cut at 4.3 sigma)
    # at a third of the cost of standard_normal, which was a large share of a composite.
    table = _normal_quantiles() * np.float32(sigma)
    noise = np.take(table, rng.integers(0, 1 << 16, size=shape, dtype=np.uint16))
    out = colour + noise
    return np.clip(out, 0.0, 1.0, out=out)


@functools.cache
def _normal_quantiles() -> np.ndarray:
    """The standard normal's quantiles at the centres of 65536 equal-probability bins (float32)."""
    from statistics import NormalDist

    inv = NormalDist().inv_cdf
    return np.array([inv((i + 0.5) / 65536.0) for i in range(65536)], dtype=np.float32)


def light_wrap(comp: np.ndarray, bg: np.ndarray, a_f: np.ndarray, radius: float, strength: float) -> np.ndarray:
    """Let background light spill over the subject's rim, as real light wraps round an edge.

    A screen blend of the blurred background on the rim: a bright sky glows into the edge, a dark
    scene adds nothing (blending toward a dark background would draw a dark outline instead).
    """
    rim = a_f * (1.0 - gaussian(a_f, radius))
    w = np.clip(rim * 2.0, 0.0, 1.0) * strength
    # Screen: 1 - (1 - comp) * (1 - L) = comp + L * (1 - comp), with L = w * blurred bg; the three-
    # channel work in place on the blurred copy (one temporary instead of five).
    light = gaussian(bg, radius)
    light = light.copy() if light is bg else light
    light *= w[..., None]
    out = 1.0 - comp
    out *= light
    out += comp
    return out


def contact_shadow(shape: tuple[int, int], cx: float, cy: float, half_w: float, half_h: float, blur: float) -> np.ndarray:
    """A soft dark ellipse under the feet (0..1 mask)."""
    mask = np.zeros(shape, dtype=np.float32)
    cv2.ellipse(mask, (int(round(cx)), int(round(cy))), (max(1, int(round(half_w))), max(1, int(round(half_h)))), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    return gaussian(mask, blur)


def cast_shadow(a: np.ndarray, origin: tuple[float, float], feet_y: float, out_shape: tuple[int, int], squash: float, shear: float, blur: float) -> np.ndarray:
    """The subject's silhouette laid on the ground from the feet line (squashed and sheared), softened.

    `a` is the subject's alpha placed with its top-left at `origin` in the output region; squash > 0
    throws the shadow behind the subject (up the frame), < 0 toward the viewer.
    """
    ox, oy = origin
    # Map subject pixel (x, y) -> (x + shear*(feet - Y), feet - squash*(feet - Y)), Y = y + oy.
    m = np.array(
        [[1.0, -shear, ox + shear * (feet_y - oy)], [0.0, squash, feet_y - squash * (feet_y - oy)]], dtype=np.float64
    )
    warped = cv2.warpAffine(a, m, (out_shape[1], out_shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return gaussian(warped, blur)


def shared_artefacts(img: np.ndarray, kind: str, value: float) -> np.ndarray:
    """Give subject and background the same final artefacts: a resample or a JPEG round trip (uint8 RGB)."""
    if kind == "resample":
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(1, int(round(w * value))), max(1, int(round(h * value)))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if kind == "jpeg":
        # OpenCV's encoder expects BGR: swap so luma/chroma are computed from the true channels.
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(value)])
        if ok:
            return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return img
