"""Aspect-ratio buckets, the resize into a bucket, and each epoch's batches (kohya's arithmetic).

- Buckets: every (w, h) on the bucket_reso_steps grid with area <= resolution², both orientations
  (kohya's model_util.make_bucket_resolutions); an image goes to the bucket of the nearest aspect
  ratio (BucketManager.select_bucket), or with bucket_no_upscale to its own size rounded down.
- Resize: scaled to cover the bucket (sizes rounded as kohya rounds them), then centre-cropped; AREA
  when shrinking, Lanczos when enlarging, or the subset's resize_interpolation.
- Batches: repeats expanded, grouped by bucket, shuffled by (seed, epoch).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# kohya's resize_interpolation names (library/utils.py) and the OpenCV filter used for each.
INTERPOLATIONS = ("lanczos", "nearest", "bilinear", "linear", "bicubic", "cubic", "area", "box")


def make_buckets(resolution: tuple[int, int], min_size: int, max_size: int, steps: int) -> list[tuple[int, int]]:
    """kohya's bucket list: every (w, h) on the step grid with area <= resolution area, both orientations."""
    max_area = resolution[0] * resolution[1]
    resos = set()
    side = int(math.sqrt(max_area) // steps) * steps
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // steps) * steps)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += steps
    return sorted(resos)


def assign_buckets(entries, spec) -> dict[tuple[int, int], int]:
    """Give each entry its bucket; returns {bucket: image count}."""
    res = spec.resolution
    if not spec.enable_bucket:
        for e in entries:
            e.bucket = res
    else:
        steps = spec.bucket_reso_steps
        buckets = make_buckets(res, min(spec.min_bucket_reso, *res), max(spec.max_bucket_reso, *res), steps)
        ratios = np.array([w / h for w, h in buckets])
        max_area = res[0] * res[1]
        for e in entries:
            w, h = e.size
            if spec.bucket_no_upscale and w * h <= max_area:
                e.bucket = (max(steps, w - w % steps), max(steps, h - h % steps))
            elif (w, h) in buckets:
                e.bucket = (w, h)
            else:
                e.bucket = buckets[int(np.argmin(np.abs(ratios - w / h)))]
    counts: dict[tuple[int, int], int] = {}
    for e in entries:
        counts[e.bucket] = counts.get(e.bucket, 0) + 1
    return counts


def _cv2_filter(name: str | None, shrinking: bool) -> int:
    import cv2

    if name is None:
        return cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    return {"lanczos": cv2.INTER_LANCZOS4, "nearest": cv2.INTER_NEAREST_EXACT, "bilinear": cv2.INTER_LINEAR,
            "linear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
            "box": cv2.INTER_AREA}[name]


def load_for_bucket(path: Path, bucket: tuple[int, int], *, alpha_mask: bool,
                    interpolation: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """RGB float image in [-1, 1] (H, W, 3) resized to cover the bucket and centre-cropped; alpha (H, W) when asked.

    Like kohya, RGB comes from convert("RGB"): transparent pixels show whatever colour lies under them.
    """
    import cv2

    from datakit.imageio import open_image

    loaded = open_image(path)
    rgba = np.asarray(loaded.image.convert("RGBA"))
    h, w = rgba.shape[:2]
    bw, bh = bucket
    scale = max(bw / w, bh / h)
    nw, nh = max(bw, int(w * scale + 0.5)), max(bh, int(h * scale + 0.5))
    if (nw, nh) != (w, h):
        rgba = cv2.resize(rgba, (nw, nh), interpolation=_cv2_filter(interpolation, nw <= w and nh <= h))
    top, left = (nh - bh) // 2, (nw - bw) // 2
    crop = rgba[top:top + bh, left:left + bw]
    rgb = crop[..., :3].astype(np.float32) / 127.5 - 1.0
    mask = crop[..., 3].astype(np.float32) / 255.0 if alpha_mask else None
    return rgb, mask


def epoch_batches(entries, spec, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's batches of entry indices: repeats expanded, grouped by bucket, shuffled by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    by_bucket: dict[tuple[int, int], list[int]] = {}
    for i, e in enumerate(entries):
        by_bucket.setdefault(e.bucket, []).extend([i] * spec.subsets[e.subset].num_repeats)
    batches = []
    for bucket in sorted(by_bucket):
        items = by_bucket[bucket]
        items = [items[j] for j in rng.permutation(len(items))]
        batches.extend(items[k:k + batch_size] for k in range(0, len(items), batch_size))
    return [batches[j] for j in rng.permutation(len(batches))]


def batches_per_epoch(entries, spec, batch_size: int) -> int:
    by_bucket: dict[tuple[int, int], int] = {}
    for e in entries:
        by_bucket[e.bucket] = by_bucket.get(e.bucket, 0) + spec.subsets[e.subset].num_repeats
    return sum(math.ceil(n / batch_size) for n in by_bucket.values())
