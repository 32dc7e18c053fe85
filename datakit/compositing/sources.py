"""Cut-outs and backgrounds: checking them before planning, loading them in the workers."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from datakit.captions import parse_caption
from datakit.errors import ImageError, UsageError
from datakit.imageio import open_image
from datakit.inputs import InputItem, discover, read_caption_file

# A background smaller than this (shorter side, pixels) is a thumbnail or a mistake, not a scene.
MIN_BACKGROUND_SIDE = 64
# A cut-out whose subject is shorter than this cannot be enlarged into anything a model should learn.
MIN_SUBJECT_HEIGHT = 16
# Alpha at or above this counts as "subject" for bounding boxes (ignores faint matting dust).
ALPHA_THRESHOLD = 8


@dataclass
class Subject:
    """A usable cut-out: where it is and the size of its subject (alpha bounding box)."""

    key: str
    path: Path
    stem: str
    caption: Path | None
    width: int
    height: int


@dataclass
class Background:
    """A usable background and what is known about it."""

    key: str
    path: Path
    stem: str
    caption: Path | None
    width: int
    height: int
    tags: list[str] = field(default_factory=list)
    ground_y: float | None = None  # fraction of the height from the top; None: no ground / unknown
    ground_known: bool = False  # True when a backgrounds manifest said where (or that there is no) ground
    # Who said where the ground is: "manifest" (a backgrounds manifest), "option" (--ground-y), or
    # "none" (nobody: the composite worker estimates it from the image, see horizon.py).
    ground_source: str = "none"
    scene: str | None = None


def load_subjects(folder: Path) -> tuple[list[Subject], list[dict], dict | None]:
    """Usable cut-outs (checked once here), the unusable ones with their reasons, and upstream info."""
    inputs = discover(folder, stage="composite")
    if not inputs.items:
        raise UsageError(f"no images in {folder} (expected RGBA cut-outs, e.g. the output of `datakit cutout`)")
    subjects, skipped = [], list(inputs.skipped)
    for item in inputs.items:
        try:
            subjects.append(check_subject(item))
        except ImageError as exc:
            skipped.append({"source": item.key, "reason": str(exc)})
    if not subjects:
        reasons = "; ".join(f"{s['source']}: {s['reason']}" for s in skipped[:3])
        raise UsageError(f"no usable cut-outs in {folder} ({reasons})")
    return subjects, skipped, inputs.upstream


def check_backgrounds(folder: Path) -> tuple[list[Background], list[dict]]:
    """Usable backgrounds of a folder, and the unusable ones (named `folder/file`) with their reasons."""
    inputs = discover(folder, stage="composite")
    usable, skipped = [], []
    for entry in inputs.skipped:
        skipped.append({"source": f"{folder.name}/{entry['source']}", "reason": entry["reason"]})
    for item in inputs.items:
        try:
            usable.append(check_background(item))
        except ImageError as exc:
            skipped.append({"source": f"{folder.name}/{item.key}", "reason": str(exc)})
    return usable, skipped


def alpha_bbox(alpha: np.ndarray, threshold: int = ALPHA_THRESHOLD) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) exclusive bounds of alpha >= threshold, or None when there is none."""
    rows = np.flatnonzero((alpha >= threshold).any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero((alpha >= threshold).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def cut_out_array(path: Path) -> tuple[np.ndarray, list[str]]:
    """The cut-out as uint8 RGBA cropped to its subject; ImageError saying what is wrong otherwise."""
    loaded = open_image(path)
    if not loaded.has_alpha:
        raise ImageError(
            f"has no alpha channel ({loaded.source_mode}): not a cut-out; run `datakit cutout` on it first"
        )
    rgba = np.asarray(loaded.image)
    alpha = rgba[..., 3]
    if int(alpha.min()) >= 255:
        raise ImageError("its alpha is fully opaque: nothing is cut out; run `datakit cutout` on it first")
    box = alpha_bbox(alpha)
    if box is None:
        raise ImageError("its alpha is empty (fully transparent): there is no subject to composite")
    x0, y0, x1, y1 = box
    if y1 - y0 < MIN_SUBJECT_HEIGHT:
        raise ImageError(f"the subject is only {y1 - y0} px tall (at least {MIN_SUBJECT_HEIGHT} px needed)")
    return np.ascontiguousarray(rgba[y0:y1, x0:x1]), list(loaded.notes)


def check_subject(item: InputItem) -> Subject:
    """Open a cut-out once to check it can be composited; ImageError with the reason when not."""
    rgba, _ = cut_out_array(item.path)
    return Subject(key=item.key, path=item.path, stem=item.stem, caption=item.caption, width=rgba.shape[1], height=rgba.shape[0])


def check_background(item: InputItem) -> Background:
    """Read a background's header (no decoding) and what its manifest row or caption says about it."""
    try:
        if item.path.stat().st_size == 0:
            raise ImageError("zero-byte file")
        with Image.open(item.path) as img:
            width, height = img.size
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises several types for non-images
        raise ImageError(f"not an image Pillow can read ({type(exc).__name__})") from exc
    if min(width, height) < MIN_BACKGROUND_SIDE:
        raise ImageError(f"background is only {width}x{height} (at least {MIN_BACKGROUND_SIDE} px on each side needed)")
    row = item.row or {}
    if item.caption is not None:
        tags = parse_caption(read_caption_file(item.caption))
    else:
        tags = [str(t) for t in row.get("tags") or []]
    ground_known = "ground_y" in row
    ground = row.get("ground_y")
    if ground is not None:
        try:
            ground = float(ground)
        except (TypeError, ValueError):
            ground = None
        if ground is not None and not (math.isfinite(ground) and 0.0 < ground <= 1.0):
            ground = None
    return Background(
        key=item.key, path=item.path, stem=item.stem, caption=item.caption, width=width, height=height,
        tags=tags, ground_y=ground, ground_known=ground_known, scene=row.get("scene"),
        ground_source="manifest" if ground_known else "none",
    )


# Workers composite the same few subjects many times: keep the decoded ones (small LRU per process).
_SUBJECT_CACHE: "OrderedDict[tuple, tuple[np.ndarray, list[str]]]" = OrderedDict()
_SUBJECT_CACHE_SIZE = 8
_SUBJECT_CACHE_BYTES = 256 * 1024 * 1024  # a few huge cut-outs must not fill a worker's memory


def load_subject(path: Path) -> tuple[np.ndarray, list[str]]:
    """cut_out_array, memoised by (path, size, mtime)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    hit = _SUBJECT_CACHE.get(key)
    if hit is not None:
        _SUBJECT_CACHE.move_to_end(key)
        return hit
    value = cut_out_array(path)
    _SUBJECT_CACHE[key] = value
    while len(_SUBJECT_CACHE) > 1 and (
        len(_SUBJECT_CACHE) > _SUBJECT_CACHE_SIZE or sum(v[0].nbytes for v in _SUBJECT_CACHE.values()) > _SUBJECT_CACHE_BYTES
    ):
        _SUBJECT_CACHE.popitem(last=False)
    return value


def load_background(path: Path) -> tuple[np.ndarray, list[str]]:
    """A background as uint8 RGB (grey, palette, 16-bit handled by open_image; transparency flattened)."""
    loaded = open_image(path)
    notes = list(loaded.notes)
    if loaded.has_alpha:
        rgba = np.asarray(loaded.image).astype(np.float32)
        a = rgba[..., 3:4] / 255.0
        if float(a.min()) < 1.0:
            notes.append("background had transparency: flattened onto mid grey")
        rgb = rgba[..., :3] * a + 128.0 * (1.0 - a)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), notes
    return np.asarray(loaded.image.convert("RGB")), notes


def fit_background(rgb: np.ndarray, out_w: int, out_h: int, rng: np.random.Generator) -> tuple[np.ndarray, float, int, int]:
    """Cover-resize to out_w x out_h and crop at a seeded offset; returns (image, scale, crop_x, crop_y)."""
    h, w = rgb.shape[:2]
    if (w, h) == (out_w, out_h):
        return rgb, 1.0, 0, 0
    scale = max(out_w / w, out_h / h)
    nw, nh = max(out_w, int(math.ceil(w * scale))), max(out_h, int(math.ceil(h * scale)))
    resized = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    cx = int(rng.integers(0, nw - out_w + 1))
    cy = int(rng.integers(0, nh - out_h + 1))
    return np.ascontiguousarray(resized[cy : cy + out_h, cx : cx + out_w]), scale, cx, cy
