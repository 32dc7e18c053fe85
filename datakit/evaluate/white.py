"""white_rate: is a sample's background white or near-white? Decided on the border, side by side.

A pixel is near-white when it is light (CIELAB L* >= 90, about sRGB 226 grey) and nearly neutral
(chroma C* <= 10, which admits off-white, cream and paper tones but not pale blue sky or blue
snow shadows). A side of the border is white when most of its pixels are; the background is white
when at least three of the four sides are, so a subject cut at the bottom edge still counts.

What it cannot tell: a blown-out white sky over fresh snow with no horizon is, in pixels, a white
background, and is counted as one. An overcast sky is grey (L* well under 90) and is not; a snow
field has a sky above it and blue shadows on it, so its sides do not all pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datakit.evaluate.border import Sides, image_sides

WHITE_L = 90.0
WHITE_CHROMA = 10.0
SIDE_SHARE = 0.6  # a side is white when this share of its pixels is near-white
SIDES_NEEDED = 3


@dataclass(frozen=True)
class WhiteVerdict:
    """The decision and its evidence: the near-white share of each side."""

    white: bool
    side_shares: dict[str, float]


def near_white(lab: np.ndarray) -> np.ndarray:
    """Boolean mask of near-white pixels of a CIELAB array."""
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    return (lab[..., 0] >= WHITE_L) & (chroma <= WHITE_CHROMA)


def white_from_sides(sides: Sides) -> WhiteVerdict:
    """The white-background decision from already computed border sides."""
    shares = {name: float(near_white(band).mean()) for name, band in sides.items()}
    votes = sum(share >= SIDE_SHARE for share in shares.values())
    return WhiteVerdict(white=votes >= SIDES_NEEDED, side_shares=shares)


def white_background(image) -> WhiteVerdict:
    """Whether the background of an image (PIL or array) is white or near-white."""
    return white_from_sides(image_sides(image))
