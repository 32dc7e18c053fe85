"""Subject presence without CLIP: does a sample hold the subject's colours, in the subject's proportions?

The subject's colour signature is a small palette (k-means in CIELAB) of the opaque pixels of its
cut-outs, each colour weighted by its share. In a sample, the colours of its own background (the
main colours of its border) are set aside first, so a white background does not pass for the white
of a subject, nor a forest for a green subject. What remains is matched to the palette (within
delta E 14); the score is the overlap (histogram intersection, 0..1) of the matched proportions
with the palette's, renormalised over the palette colours that were not set aside, and 0 when the
matched pixels cover under 2% of the image. A sample counts as showing the subject at score >= 0.5.

This is a colour/feature similarity, named so in the report (`subject_presence_colour`): a
different object in the same colours passes, and a subject drawn in the colours of the scene
around it is missed. With a CLIP model, `subject_presence` uses image similarity instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datakit.evaluate.border import reduce, to_lab
from datakit.evaluate.palette import FOREGROUND_MIN_SHARE, PALETTE_SIZE, Background, background, background_coloured, kmeans, nearest

MATCH_DELTA_E = 14.0
PRESENT_SCORE = 0.5
MAX_PIXELS_PER_CUTOUT = 4096


@dataclass(frozen=True)
class ColourSignature:
    """A subject's palette in CIELAB (k, 3) and the share of each colour (k,), summing to 1."""

    palette: np.ndarray
    weights: np.ndarray


def subject_pixels(image) -> np.ndarray:
    """CIELAB pixels of the subject in a cut-out: its opaque pixels, or for an image without alpha,
    the pixels that differ from its border colours (a drawing on a flat background)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 4:
        rgba = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
        # Premultiplied while reducing: the colour hidden under transparent pixels must not bleed in.
        small = reduce(np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=2))
        alpha = small[..., 3]
        rgb = small[..., :3] / np.maximum(alpha, 1e-6)[..., None]
        lab, mask = to_lab(np.clip(rgb, 0.0, 1.0)), alpha >= 0.5
    else:
        bg = background(arr)
        lab, mask = bg.lab, ~bg.mask
    pixels = lab[mask]
    if len(pixels) > MAX_PIXELS_PER_CUTOUT:  # each cut-out weighs about the same, whatever its size
        pixels = pixels[np.linspace(0, len(pixels) - 1, MAX_PIXELS_PER_CUTOUT).astype(int)]
    return pixels


def signature(cutouts: list) -> ColourSignature:
    """The colour signature of a subject from its cut-outs (RGBA arrays or images)."""
    pixels = [p for p in (subject_pixels(c) for c in cutouts) if len(p)]
    if not pixels:
        raise ValueError("the cut-outs hold no opaque pixels")
    palette, weights = kmeans(np.concatenate(pixels), PALETTE_SIZE)
    return ColourSignature(palette=palette, weights=weights)


def colour_score(image, sig: ColourSignature, bg: Background | None = None) -> float:
    """How well a sample's non-background colours match the subject's signature (0..1).

    bg: the sample's background, when already computed (palette.background).
    """
    bg = bg if bg is not None else background(image)
    pixels = bg.lab[~bg.mask]
    # Palette colours that are also the sample's background cannot be told from it: leave them out.
    usable = ~background_coloured(sig.palette, bg.colours)
    if not usable.any() or len(pixels) == 0:
        return 0.0
    palette, weights = sig.palette[usable], sig.weights[usable] / sig.weights[usable].sum()
    idx, dist = nearest(pixels, palette)
    matched = dist <= MATCH_DELTA_E
    if matched.sum() < FOREGROUND_MIN_SHARE * bg.mask.size:
        return 0.0
    shares = np.bincount(idx[matched], minlength=len(palette)) / matched.sum()
    return float(np.minimum(shares, weights).sum())


def colour_present(image, sig: ColourSignature) -> bool:
    """True when the sample's colour score reaches PRESENT_SCORE."""
    return colour_score(image, sig) >= PRESENT_SCORE
