"""The pictures the page shows: small thumbnails for the grid, the image itself for the large view.

Only items' own files are read, through paths checked again at every request (a symlink swapped in
after the start is refused), opened with the same safe loader every stage uses.
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from pathlib import Path

from datakit.imageio import open_image
from datakit.paths import resolve_inside

THUMB = 256
LARGE = 2048
# Formats every browser shows as they are; anything else (TIFF, JXL, ...) is re-encoded as PNG.
AS_IS = {".png": ("PNG", "image/png"), ".jpg": ("JPEG", "image/jpeg"), ".jpeg": ("JPEG", "image/jpeg"),
         ".webp": ("WEBP", "image/webp"), ".gif": ("GIF", "image/gif")}


def checked_path(folder: Path, path: Path) -> Path:
    """The item's file resolved now, or UsageError when it leads out of IN (checked at each request)."""
    return resolve_inside(folder, os.path.relpath(path, folder), "item")


def read_inside(folder: Path, path: Path) -> bytes:
    """The file's bytes, opened without following a symlink at the last step after the check."""
    real = checked_path(folder, path)
    fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as fh:
        return fh.read()


def has_alpha(path: Path) -> bool:
    """True when the file's header says it has transparency (reads the header only; False when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    except Exception:  # a broken file shows as "cannot show" later; here it just has no alpha
        return False


def encode(img, limit: int) -> tuple[bytes, str]:
    """A copy no larger than `limit` px: PNG when it has transparency, else JPEG."""
    img = img.copy()
    img.thumbnail((limit, limit))
    buf = io.BytesIO()
    if img.mode == "RGBA":
        img.save(buf, format="PNG", compress_level=1)
        return buf.getvalue(), "image/png"
    img.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue(), "image/jpeg"


class Pictures:
    """Thumbnails (kept in memory, least recently used dropped) and large views of the items."""

    def __init__(self, folder: Path, capacity: int = 4000):
        self.folder = Path(folder)
        self.capacity = capacity
        self._cache: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def thumbnail(self, path: Path, digest: str) -> tuple[bytes, str]:
        """(bytes, media type) of a THUMB-px copy; ImageError when the file is no usable image."""
        key = (str(path), digest)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        loaded = open_image(checked_path(self.folder, path))
        result = encode(loaded.image, THUMB)
        with self._lock:
            self._cache[key] = result
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return result

    def large(self, path: Path) -> tuple[bytes, str]:
        """(bytes, media type) of the image for the large view: the file itself when a browser shows it
        as it is, else a PNG/JPEG copy of at most LARGE px."""
        fmt, media = AS_IS.get(path.suffix.lower(), (None, None))
        loaded = open_image(checked_path(self.folder, path))  # refuses bombs, truncation, non-images
        # As it is only when the bytes are what the name says (served with nosniff) and need no turning.
        if fmt and loaded.source_format == fmt and max(loaded.image.size) <= LARGE and not loaded.notes:
            return read_inside(self.folder, path), media
        return encode(loaded.image, LARGE)
