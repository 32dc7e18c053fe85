"""A grid of thumbnails with file names, so a person can judge a whole set at a glance."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from datakit.imageio import save_image_atomic
from datakit.paths import printable

MAX_IMAGES = 400  # beyond this the thumbnails get too small to judge anything
CELL = 192  # thumbnail size in pixels


def _thumb(path: Path, cell: int) -> Image.Image | None:
    try:
        with Image.open(path) as img:
            img.draft("RGB", (cell, cell))  # JPEG: decode at reduced size, much faster
            img = img.convert("RGB")
            img.thumbnail((cell, cell), Image.Resampling.BILINEAR, reducing_gap=2.0)
            return img
    except Exception:  # a sheet is a convenience: a bad file becomes an empty cell
        return None


def _label(name: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    """The file name on one line (control characters escaped), shortened in the middle until it fits."""
    name = printable(name)  # Pillow cannot measure multi-line text: a name with a newline crashed here
    if draw.textlength(name, font=font) <= width:
        return name
    keep = len(name)
    while keep > 4:
        keep -= 1
        text = name[: keep // 2] + "…" + name[-(keep - keep // 2) :]
        if draw.textlength(text, font=font) <= width:
            return text
    return name[:4]


def make_contact_sheet(
    files: list[Path], dest: Path, *, thumbnails: dict[Path, Path] | None = None, cell: int = CELL,
    columns: int | None = None, workers: int = 2,
) -> int:
    """Write `dest` (PNG) with up to MAX_IMAGES thumbnails and their names; returns how many are shown.

    `thumbnails` maps a file to a ready small copy of it (used when it exists, else the file is decoded).
    """
    files = list(files)[:MAX_IMAGES]
    if not files:
        return 0
    cols = columns or max(1, min(len(files), math.ceil(math.sqrt(len(files)))))
    rows = math.ceil(len(files) / cols)
    label_h = 16
    pad = 4
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, rows * (cell + label_h + pad) + pad), (32, 32, 32))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # decoding releases the GIL
        def load(path: Path) -> Image.Image | None:
            small = (thumbnails or {}).get(path)
            return _thumb(small if small is not None and small.is_file() else path, cell)

        thumbs = list(pool.map(load, files))
    for i, (path, thumb) in enumerate(zip(files, thumbs)):
        r, c = divmod(i, cols)
        x = pad + c * (cell + pad)
        y = pad + r * (cell + label_h + pad)
        if thumb is not None:
            sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
        draw.text((x + 2, y + cell + 2), _label(path.name, draw, font, cell - 4), fill=(230, 230, 230), font=font)
    save_image_atomic(sheet, dest, format="PNG", compress_level=3)
    return len(files)
