"""plain_rate: is a sample's background flat and empty (a plain colour or a smooth gradient)?

Each side of the border is compared with a smooth colour ramp fitted along it (see
border.smooth_fit_residual). A side is plain when 80% of its pixels lie within delta E 6 of the
ramp (noise, grain and a soft vignette stay under it; a horizon, foliage, windows or a street do
not). The background is plain when at least three of the four sides are. White backgrounds are
plain too: plain_rate >= white_rate, and the difference is the flat grey, beige or gradient
backdrops that overfitting also produces.

What it cannot tell: a cloudless sky or a calm sea filling the whole frame is flat and counts as
plain although the prompt asked for it; scene_agreement says whether it is the right scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from datakit.evaluate.border import Sides, image_sides, smooth_fit_residual

PLAIN_DELTA_E = 6.0
PLAIN_QUANTILE = 0.8
SIDES_NEEDED = 3


@dataclass(frozen=True)
class PlainVerdict:
    """The decision and its evidence: each side's 80th-percentile distance from its smooth ramp."""

    plain: bool
    side_detail: dict[str, float]


def plain_from_sides(sides: Sides) -> PlainVerdict:
    """The plain-background decision from already computed border sides."""
    detail = {name: float(np.quantile(smooth_fit_residual(band), PLAIN_QUANTILE)) for name, band in sides.items()}
    votes = sum(value <= PLAIN_DELTA_E for value in detail.values())
    return PlainVerdict(plain=votes >= SIDES_NEEDED, side_detail=detail)


def plain_background(image) -> PlainVerdict:
    """Whether the background of an image (PIL or array) is flat and empty."""
    return plain_from_sides(image_sides(image))
