"""Checks before a dataset is trained on: perceptual near-duplicates, bucket upscaling, tiny images.

Buckets follow kohya's scheme (documented in sd-scripts' config and training guides): widths from
min to max bucket resolution in `steps`, each paired with the tallest height whose area stays within
resolution^2; an image goes to the bucket with the closest aspect ratio and is resized to cover it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an RGB uint8 array (robust to resizing and re-encoding)."""
    import cv2

    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    # The DC term says only how bright the image is; compare the rest against their median.
    bits = low > np.median(low[1:])
    return int("".join("1" if b else "0" for b in bits), 2)


def hamming(a: int, b: int) -> int:
    """Number of differing bits."""
    return bin(a ^ b).count("1")


def near_duplicates(hashes: dict[str, int], threshold: int = 3) -> list[tuple[str, str, int]]:
    """Pairs of items whose hashes differ by at most `threshold` bits, sorted by distance then name."""
    keys = sorted(hashes)
    pairs = []
    for i, a in enumerate(keys):
        for b in keys[i + 1 :]:
            d = hamming(hashes[a], hashes[b])
            if d <= threshold:
                pairs.append((a, b, d))
    return sorted(pairs, key=lambda p: (p[2], p[0], p[1]))


def bucket_resolutions(resolution: int, min_reso: int, max_reso: int, steps: int = 64) -> list[tuple[int, int]]:
    """The (width, height) buckets kohya builds for a square training resolution."""
    max_area = resolution * resolution
    side = int(math.sqrt(max_area) // steps) * steps
    buckets = {(side, side)}
    width = min_reso
    while width <= max_reso:
        height = min(max_reso, (max_area // width) // steps * steps)
        if height >= min_reso:
            buckets.add((width, height))
            buckets.add((height, width))
        width += steps
    return sorted(buckets)


@dataclass
class BucketFit:
    """Where an image lands and by how much it is scaled to get there."""

    bucket: tuple[int, int]
    scale: float

    @property
    def upscaled(self) -> bool:
        return self.scale > 1.0 + 1e-6


def fit_bucket(width: int, height: int, buckets: list[tuple[int, int]]) -> BucketFit:
    """The bucket with the closest aspect ratio, and the scale that makes the image cover it."""
    ar = width / height
    bw, bh = min(buckets, key=lambda b: (abs(b[0] / b[1] - ar), -b[0] * b[1]))
    return BucketFit((bw, bh), max(bw / width, bh / height))
