"""The folder engine: the user's own photos, scaled to cover the target size and cropped to it."""

from __future__ import annotations

import numpy as np
from PIL import Image

CROPS = ("center", "random")


def cover_crop(img: Image.Image, width: int, height: int, mode: str, rng: np.random.Generator) -> tuple[Image.Image, list[int]]:
    """Scale `img` to cover width x height (Lanczos), then crop; returns the image and the crop box in the source.

    The box is in source pixels [left, top, right, bottom], so the manifest says which part was used.
    """
    if mode not in CROPS:
        raise ValueError(f"crop mode {mode!r}")
    sw, sh = img.size
    scale = max(width / sw, height / sh)
    # The source region that maps onto the output, in source pixels.
    cw, ch = width / scale, height / scale
    if mode == "center":
        left, top = (sw - cw) / 2, (sh - ch) / 2
    else:
        left, top = rng.uniform(0, max(sw - cw, 0)), rng.uniform(0, max(sh - ch, 0))
    box = (left, top, left + cw, top + ch)
    out = img.convert("RGB").resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    return out, [int(round(v)) for v in box]
