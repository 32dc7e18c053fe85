"""Checks before a dataset is trained on: perceptual near-duplicates, bucket upscaling, captions, flattening.

Buckets follow kohya's scheme (documented in sd-scripts' config and training guides): widths from
min to max bucket resolution in `steps`, each paired with the tallest height whose area stays within
resolution^2; an image goes to the bucket with the closest aspect ratio and is resized to cover it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from datakit.console import Reporter
from datakit.results import Record


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


@dataclass
class Findings(Record):
    """What the checks over the whole dataset found (datakit.json `findings`, the report's Checks)."""

    near_duplicates: list[dict] = field(default_factory=list)  # {"a", "b", "distance"} per pair
    upscaled: list[dict] = field(default_factory=list)  # {"item", "size", "bucket", "scale"}
    no_caption: list[str] = field(default_factory=list)  # item keys
    caption_clash: list[str] = field(default_factory=list)
    caption_from_dot_caption: list[str] = field(default_factory=list)
    flattened: list[str] = field(default_factory=list)
    over_75_tokens: dict[str, list[str]] = field(default_factory=dict)  # concept -> caption files kohya truncates


def find_problems(rows: list[dict], *, dup_threshold: int, resolution: int, flatten_color: str,
                  reporter: Reporter) -> Findings:
    """Checks over the emitted items' manifest rows (duplicates, upscales, captions, flattening), each warned once."""
    hashes = {r["key"]: int(r["phash"], 16) for r in rows if r.get("phash")}
    found = Findings(
        near_duplicates=[{"a": a, "b": b, "distance": d} for a, b, d in near_duplicates(hashes, dup_threshold)],
        upscaled=[{"item": r["key"], "size": r["size"], "bucket": r["bucket"], "scale": r["upscale"]}
                  for r in rows if r.get("upscale") and r["upscale"] > 1.0 + 1e-6],
        no_caption=[r["key"] for r in rows if not r.get("caption") and not r.get("is_reg")],
        caption_clash=[r["key"] for r in rows if any("clash" in w for w in r.get("warnings", []))],
        caption_from_dot_caption=[r["key"] for r in rows if r.get("caption_source") == ".caption"],
        flattened=[r["key"] for r in rows if any("flattened" in w for w in r.get("warnings", []))],
    )
    if found.near_duplicates:
        sample = ", ".join(f"{d['a']} ~ {d['b']}" for d in found.near_duplicates[:3])
        reporter.warn(f"{len(found.near_duplicates)} near-duplicate pair(s) (perceptual hash within {dup_threshold} bits): {sample}")
    if found.upscaled:
        reporter.warn(f"{len(found.upscaled)} image(s) will be upscaled into their {resolution}px bucket (blurry training data): "
                      + _first(u["item"] for u in found.upscaled))
    if found.no_caption:
        reporter.warn(f"{len(found.no_caption)} image(s) have no caption; kohya trains them on the class tokens alone: "
                      + _first(found.no_caption))
    if found.caption_clash:
        reporter.warn(f"{len(found.caption_clash)} image(s) have both .txt and .caption captions that differ; the .txt ones are used")
    if found.caption_from_dot_caption:
        reporter.warn(f"{len(found.caption_from_dot_caption)} caption(s) came from .caption files and were written as .txt")
    if found.flattened:
        reporter.warn(f"{len(found.flattened)} transparent image(s) flattened onto {flatten_color} "
                      "(use --alpha-mask NAME to keep them RGBA and train with a masked loss)")
    return found


def long_captions(stats: dict[str, dict], reporter: Reporter) -> dict[str, list[str]]:
    """Caption files over CLIP's 75-token window per concept (from `tags stats` summaries), warned once."""
    over = {name: s["clip_tokens"]["over_window_files"] for name, s in stats.items()
            if s.get("clip_tokens", {}).get("over_window")}
    if over:
        n = sum(len(v) for v in over.values())
        exact = all(s["clip_tokens"].get("exact") for name, s in stats.items() if name in over)
        reporter.warn(f"{n} caption(s) exceed 75 CLIP tokens{'' if exact else ' (estimated)'} ({', '.join(f'{k}: {len(v)}' for k, v in over.items())}); "
                      "kohya truncates them unless trained with --max_token_length 150 or 225")
    return over


def _first(items, shown: int = 3) -> str:
    items = list(items)
    return ", ".join(items[:shown]) + (" ..." if len(items) > shown else "")
