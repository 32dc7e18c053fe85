"""One emitted item (runs in a pool worker): check the image, write it as kohya reads it, and its caption."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datakit.emit.validation import fit_bucket, phash
from datakit.errors import ImageError
from datakit.imageio import link_or_copy, open_image, save_png_array_atomic, write_text_atomic
from datakit.inputs import read_caption_file
from datakit.pool import Task, TaskResult

# Extensions kohya's loader reads with Pillow as they are; anything else is re-encoded as PNG.
KOHYA_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
PREVIEW_SIZE = 192
PREVIEW_QUALITY = 82
# Masked (RGBA) items are shown over this grey in previews and hashed that way.
PREVIEW_GREY = 224


@dataclass(frozen=True)
class EmitShared:
    """What every item of a run shares (sent to each pool worker once)."""

    out: str
    flatten: tuple[int, int, int]  # colour transparent images are flattened onto
    flatten_name: str  # the same as #rrggbb, for messages
    copy: bool  # copy instead of hard-linking unchanged images
    min_size: int
    no_upscale: bool
    buckets: list[tuple[int, int]]


def process_item(task: Task, shared: EmitShared) -> TaskResult:
    """Validate one image, write it (link or RGB/RGBA PNG) and its .txt caption; its report preview comes back in memory."""
    p = task.payload
    src = Path(p["path"])
    out = Path(shared.out)
    loaded = open_image(src)
    img = loaded.image
    w, h = img.size
    if min(w, h) < shared.min_size:
        raise ImageError(f"too small ({w}x{h}): the shorter side must be at least {shared.min_size} px (--min-size)")
    notes = list(loaded.notes)
    arr = np.asarray(img)
    keep_alpha = task.params["alpha"]
    mode = "RGB"
    if img.mode == "RGBA" and int(arr[..., 3].min()) == 255:
        arr = arr[..., :3]
        notes.append("opaque alpha channel dropped")
        can_link = False
    elif img.mode == "RGBA" and keep_alpha:
        mode = "RGBA"
        can_link = loaded.source_format == "PNG" and loaded.source_mode == "RGBA" and not loaded.notes
    elif img.mode == "RGBA":
        # kohya loads with convert("RGB"), exposing whatever colour hides under transparent pixels.
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        bg = np.array(shared.flatten, dtype=np.float32)
        arr = np.clip(arr[..., :3] * alpha + bg * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
        notes.append("transparent image flattened onto " + shared.flatten_name)
        can_link = False
    else:
        can_link = loaded.source_mode == "RGB" and src.suffix.lower() in KOHYA_EXTENSIONS and not loaded.notes

    stem = task.params["stem"]
    subdir = p["subdir"]
    if can_link:
        name = f"{subdir}/{stem}{src.suffix.lower()}"
        written = link_or_copy(src, out / name, copy=shared.copy)
    else:
        name = f"{subdir}/{stem}.png"
        save_png_array_atomic(np.ascontiguousarray(arr), out / name)
        written = "encoded"
    outputs = [name]

    text, source, cap_notes = caption_for(p)
    notes.extend(cap_notes)
    if text is not None:
        write_text_atomic(out / f"{subdir}/{stem}.txt", text + "\n")
        outputs.append(f"{subdir}/{stem}.txt")

    rgb = as_seen(arr)
    fit = fit_bucket(w, h, shared.buckets) if not shared.no_upscale else None
    row = {
        "concept": task.params["concept"],
        "is_reg": task.params["reg"],
        "size": [w, h],
        "mode": mode,
        "written": written,
        "caption": text,
        "caption_source": source,
        "phash": f"{phash(rgb):016x}",
        "bucket": list(fit.bucket) if fit else None,
        "upscale": round(fit.scale, 3) if fit else None,
    }
    return TaskResult(key=task.key, outputs=outputs, row=row, warnings=notes, preview=preview_jpeg(rgb))


def caption_for(payload: dict) -> tuple[str | None, str | None, list[str]]:
    """The caption text, where it came from, and notes (empty captions, .txt/.caption clash)."""
    notes: list[str] = []
    txt = Path(payload["txt"]) if payload.get("txt") else None
    cap = Path(payload["caption"]) if payload.get("caption") else None
    text_txt = read_caption_file(txt) if txt else None
    text_cap = read_caption_file(cap) if cap else None
    if txt and cap and text_txt != text_cap:
        notes.append("caption extension clash: .txt and .caption differ; the .txt one is used")
    text, source = (text_txt, ".txt") if txt else (text_cap, ".caption") if cap else (None, None)
    if source == ".caption":
        notes.append("caption read from .caption and written as .txt")
    # kohya reads a caption file's first line only: join lines so nothing is silently dropped.
    if text is not None:
        text = ", ".join(line.strip() for line in text.splitlines() if line.strip())
    if text is not None and not text:
        notes.append("empty caption file: kohya will use the class tokens")
        text = None
    if text is None and source is None:
        notes.append("no caption: kohya will use the class tokens")
    return text, source, notes


def as_seen(arr: np.ndarray) -> np.ndarray:
    """What the model will see, as RGB: a masked (RGBA) item over a light grey. Hashed and previewed."""
    if arr.shape[2] == 3:
        return arr
    alpha = arr[..., 3:4] / 255.0
    return (arr[..., :3] * alpha + PREVIEW_GREY * (1 - alpha)).astype(np.uint8)


def preview_jpeg(rgb: np.ndarray) -> bytes:
    """The item's picture in report.html: a small JPEG kept in memory (never a file in OUT)."""
    from PIL import Image

    thumb = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    thumb.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=PREVIEW_QUALITY)
    return buf.getvalue()


def preview_from_file(path: Path) -> bytes | None:
    """The preview of an item written by an earlier run, from its emitted file (None when it no longer decodes)."""
    try:
        return preview_jpeg(as_seen(np.asarray(open_image(path).image)))
    except ImageError:
        return None
