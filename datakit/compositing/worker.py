"""One composite, start to finish (runs in a pool worker): load, place, render, caption, write.

All randomness comes from the task's seed (`effect_rng(task.seed, ...)`), so a composite is the
same bytes whatever the worker count or order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datakit.captions import format_caption, parse_caption
from datakit.compositing.captions import composite_tags
from datakit.compositing.config import FORMATS
from datakit.compositing.contact_sheet import CELL
from datakit.compositing.horizon import estimate_horizon
from datakit.compositing.placement import FRAMING_TAGS, choose_placement, shape_from_alpha
from datakit.compositing.render import effect_rng, render
from datakit.compositing.sources import Background, Subject, fit_background, load_background, load_subject
from datakit.errors import ImageError, StageError
from datakit.imageio import save_png_array_atomic, write_bytes_atomic, write_text_atomic
from datakit.inputs import read_caption_file
from datakit.pool import Task, TaskResult

# Enlarging a cut-out more than this makes a soft subject on a sharp background: worth a warning.
UPSCALE_WARNING = 2.0
PREVIEW_QUALITY = 85


@dataclass(frozen=True)
class CompositeShared:
    """What every composite of a run shares (sent to each pool worker once)."""

    out_dir: str
    size: tuple[int, int] | None  # (width, height); None: each background's own size
    format: str  # png | jpg | webp
    quality: int
    full_range: tuple[float, float]
    rotate: float
    flip: bool
    disabled: frozenset[str]
    underscores: bool
    trigger: str | None


def process_composite(task: Task, shared: CompositeShared) -> TaskResult:
    """Make one composite and its caption; with payload["preview"], also its contact-sheet cell (in memory)."""
    keep_big_buffers()
    subj: Subject = task.payload["subject"]
    bg: Background = task.payload["background"]
    framing = task.params["framing"]
    warnings: list[str] = []

    rgba, notes = load_subject(subj.path)
    warnings += [f"cut-out: {n}" for n in notes]
    try:
        bg_rgb, notes = load_background(bg.path)
    except ImageError as exc:
        raise ImageError(f"background {bg.key}: {exc}") from exc
    warnings += [f"background: {n}" for n in notes]

    out_w, out_h = shared.size or (bg_rgb.shape[1], bg_rgb.shape[0])
    fitted, bg_scale, crop_x, crop_y = fit_background(bg_rgb, out_w, out_h, effect_rng(task.seed, "background"))
    if bg_scale > UPSCALE_WARNING:
        warnings.append(f"background enlarged {bg_scale:.1f}x to {out_w}x{out_h}: it will look soft")
    ground = background_ground(bg, bg_rgb)
    ground_y = fitted_ground(ground["ground_y"], bg_rgb.shape[0], bg_scale, crop_y, out_h)
    horizon_y = fitted_ground(ground["horizon_y"], bg_rgb.shape[0], bg_scale, crop_y, out_h)

    shape = shape_from_alpha(rgba[..., 3])
    placement = choose_placement(
        effect_rng(task.seed, "placement"), framing, shape, out_w, out_h,
        ground_y=ground_y, ground_known=ground["known"], full_range=shared.full_range,
        max_rotation=shared.rotate, flip_probability=0.5 if shared.flip else 0.0,
    )
    warnings += placement.notes
    if placement.scale > UPSCALE_WARNING:
        warnings.append(f"cut-out enlarged {placement.scale:.1f}x: it will look soft; a larger cut-out helps")

    image, effects = render(
        fitted, rgba, shape, placement, seed=task.seed, disabled=shared.disabled,
        ground_known=ground["known"], out_format=shared.format,
    )

    subject_tags = parse_caption(read_caption_file(subj.caption)) if subj.caption is not None else []
    if subj.caption is None:
        warnings.append("the cut-out has no caption: the composite's caption has only framing and scene tags")
    tags, dropped = composite_tags(subject_tags, bg.tags, FRAMING_TAGS[framing], framing, trigger=shared.trigger)

    out = Path(shared.out_dir)
    image_name = task.key + FORMATS[shared.format]
    caption_name = task.key + ".txt"
    if shared.format == "png":
        # Level 1: a third faster to write than 3 for ~7% larger files (PNG writing is most of a composite's time).
        save_png_array_atomic(image, out / image_name, compress_level=1)
    else:
        write_bytes_atomic(out / image_name, encode(image, shared.format, shared.quality))
    write_text_atomic(out / caption_name, format_caption(tags, underscores=shared.underscores) + "\n")

    row = {
        "tags": tags,
        "subject": subj.key,
        "background": bg.key,
        "scene": bg.scene,
        "framing": framing,
        "size": [out_w, out_h],
        # The ground line in this composite (fraction of its height), who said where it is, and for
        # an estimate its confidence and the horizon / floor line it came from.
        "ground_source": ground["source"],
        "ground_y": None if ground_y is None else round(ground_y, 4),
        "ground_confidence": ground["confidence"],
        "horizon_y": None if horizon_y is None else round(horizon_y, 4),
        "background_fit": {"scale": round(bg_scale, 4), "crop": [crop_x, crop_y], "ground_y": None if ground_y is None else round(ground_y, 4)},
        "placement": placement.to_row(),
        "effects": effects,
        "dropped_tags": dropped,
    }
    preview = preview_jpeg(image) if task.payload.get("preview") else None
    return TaskResult(key=task.key, outputs=[image_name, caption_name], row=row, warnings=warnings, preview=preview)


def background_ground(bg: Background, bg_rgb: np.ndarray) -> dict:
    """Where the background's ground is (fraction of its height), who says so, and how sure we are.

    A manifest or --ground-y is taken as given; otherwise the horizon / floor line is estimated from
    the image (a pure function of its pixels, so every worker gets the same answer). No convincing
    line: unknown, and placement keeps feet in the lower part of the frame.
    """
    if bg.ground_source != "none":
        return {"source": bg.ground_source, "ground_y": bg.ground_y, "known": bg.ground_known, "confidence": None, "horizon_y": None}
    est = estimate_horizon(bg_rgb)
    if est is None:
        return {"source": "none", "ground_y": None, "known": False, "confidence": None, "horizon_y": None}
    row = est.to_row()
    return {"source": "estimated", "ground_y": row["ground_y"], "known": True, "confidence": row["confidence"], "horizon_y": row["horizon_y"]}


def fitted_ground(ground_y: float | None, bg_height: int, scale: float, crop_y: int, out_h: int) -> float | None:
    """The ground line as a fraction of the output frame, after cover-resizing and cropping."""
    if ground_y is None:
        return None
    y = (ground_y * bg_height * scale - crop_y) / out_h
    return float(min(1.0, max(0.05, y)))


def encode(img: np.ndarray, fmt: str, quality: int) -> bytes:
    """An RGB array as JPEG or WebP bytes."""
    import cv2

    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if fmt == "jpg":
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        ok, buf = cv2.imencode(".webp", bgr, [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV fails only on invalid arrays
        raise StageError(f"could not encode {fmt}")
    return buf.tobytes()


def preview_jpeg(image: np.ndarray, size: int = CELL) -> bytes:
    """The composite's contact-sheet cell: a small JPEG (longer side `size`), kept in memory, never in OUT."""
    import cv2

    h, w = image.shape[:2]
    scale = size / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return encode(small, "jpg", PREVIEW_QUALITY)


def preview_from_file(path: Path) -> bytes | None:
    """The cell of a composite made by an earlier run, from its file (None when it does not decode)."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return preview_jpeg(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


_MALLOC_TUNED = False


def keep_big_buffers() -> None:
    """Ask glibc to reuse freed large buffers instead of returning them to the OS.

    Every composite allocates and frees a few dozen frame-sized float arrays; by default glibc maps
    each afresh, and zero-filling those pages costs ~10% of a composite (more when two workers fault
    pages at once). Once per process; a no-op off glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 256 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)
    except (OSError, AttributeError):
        pass
