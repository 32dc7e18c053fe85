"""Safe image opening (EXIF, modes, bombs, truncation), atomic writes and hard links."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from datakit.errors import ImageError, ImageTooLarge, NotAnImage, TruncatedImage, UsageError, ZeroByteImage

# Default pixel limit: 16k x 16k. Larger files are almost always mistakes or bombs, and a single
# RGBA float copy of one would need > 4 GiB. Users can raise it with DATAKIT_MAX_PIXELS.
DEFAULT_MAX_PIXELS = 256 * 1024 * 1024

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jxl", ".avif"}
# Files that accompany images and are never items themselves.
SIDECAR_EXTENSIONS = {".txt", ".caption", ".json", ".jsonl", ".toml", ".csv", ".parquet", ".npz", ".md", ".html"}

# Pillow must never silently accept a truncated file: we detect truncation ourselves.
ImageFile.LOAD_TRUNCATED_IMAGES = False


def max_pixels() -> int:
    """Pixel limit in force (environment variable DATAKIT_MAX_PIXELS overrides the default)."""
    value = os.environ.get("DATAKIT_MAX_PIXELS", "").strip()
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value.replace("_", "")))  # 512_000_000 and 5e8 read as people write them
    except (ValueError, OverflowError):
        limit = 0
    if limit < 1:
        raise UsageError(f"DATAKIT_MAX_PIXELS must be a positive number of pixels, not {value!r}")
    return limit


@dataclass
class LoadedImage:
    """A decoded image normalised to RGB or RGBA 8-bit, plus what was done to get there."""

    image: Image.Image
    source_mode: str
    source_format: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def has_alpha(self) -> bool:
        return self.image.mode == "RGBA"


def _to_srgb(img: Image.Image, notes: list[str]) -> Image.Image:
    """Convert an image with an embedded non-sRGB ICC profile (e.g. CMYK JPEGs) to sRGB."""
    icc = img.info.get("icc_profile")
    if not icc:
        return img
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        desc = ImageCms.getProfileDescription(src) or ""
        if "srgb" in desc.lower() and img.mode in ("RGB", "RGBA"):
            return img
        out_mode = "RGBA" if img.mode in ("RGBA", "LA", "PA") else "RGB"
        if img.mode not in ("RGB", "RGBA", "CMYK", "L"):
            return img
        converted = ImageCms.profileToProfile(img, src, ImageCms.createProfile("sRGB"), outputMode=out_mode)
        notes.append(f"converted ICC profile '{desc.strip()}' to sRGB")
        return converted
    except Exception:  # a broken profile must not make the image unusable
        notes.append("ignored an unreadable ICC profile")
        return img


def _normalise_mode(img: Image.Image, notes: list[str]) -> Image.Image:
    """Return an 8-bit RGB or RGBA image whatever the source mode."""
    mode = img.mode
    if mode == "RGB" and "transparency" in img.info:
        # A PNG tRNS colour key: pixels of that colour are transparent.
        return img.convert("RGBA")
    if mode in ("RGB", "RGBA"):
        return img
    if mode == "P" or mode == "PA":
        has_alpha = "transparency" in img.info or mode == "PA"
        return img.convert("RGBA" if has_alpha else "RGB")
    if mode in ("LA", "La", "RGBa"):
        return img.convert("RGBA")
    if mode == "CMYK":
        notes.append("converted CMYK to RGB")
        return img.convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit or float greyscale: scale to 8 bits instead of clipping (Pillow's convert clips).
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or (mode == "I" and arr.max() > 255) else (1.0 if mode == "F" and arr.max() <= 1.0 else 255.0)
        arr8 = np.clip(np.round(arr / peak * 255.0), 0, 255).astype(np.uint8)
        notes.append(f"scaled {mode} to 8 bits")
        return Image.fromarray(arr8, "L").convert("RGB")
    if mode in ("L", "1"):
        if "transparency" in img.info:
            return img.convert("RGBA")
        return img.convert("RGB")
    if mode == "YCbCr" or mode == "LAB" or mode == "HSV":
        return img.convert("RGB")
    notes.append(f"converted mode {mode} to RGB")
    return img.convert("RGB")


@contextlib.contextmanager
def _open_unlimited(path: Path) -> Iterator[Image.Image]:
    """Image.open without Pillow's fixed bomb limit (89 Mpx warning, 179 Mpx error).

    open_image checks its own limit right after the header is read, so DATAKIT_MAX_PIXELS really
    moves it both ways; Pillow's global setting is restored at once for everyone else.
    """
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(path)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with img:
        yield img


def open_image(path: str | os.PathLike, *, limit: int | None = None) -> LoadedImage:
    """Open an image safely: EXIF-upright, 8-bit RGB/RGBA, bomb- and truncation-checked."""
    path = Path(path)
    limit = max_pixels() if limit is None else limit
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read ({exc.strerror})") from exc
    if size == 0:
        raise ZeroByteImage("zero-byte file")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with _open_unlimited(path) as img:
                fmt = img.format
                w, h = img.size
                if w * h > limit:
                    raise ImageTooLarge(
                        f"{w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,} "
                        "(possible decompression bomb; raise DATAKIT_MAX_PIXELS if the file is genuine)"
                    )
                source_mode = img.mode
                # 16-bit RGB PNGs decode as 8-bit RGB in Pillow; record it so the manifest says so.
                # (The mode says RGB; only the decoder's raw mode, gone after load(), says ";16".)
                raw_modes = [str(t[3]) for t in (img.tile or []) if len(t) > 3]
                img.load()
                if "16" in source_mode or any(";16" in m for m in raw_modes):
                    notes.append("16-bit source reduced to 8 bits")
                oriented = ImageOps.exif_transpose(img)
                if oriented is not img:
                    orientation = img.getexif().get(0x0112)
                    if orientation and orientation != 1:
                        notes.append(f"applied EXIF orientation {orientation}")
                img2 = _to_srgb(oriented, notes)
                img2 = _normalise_mode(img2, notes)
                img2.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"{exc} (raise DATAKIT_MAX_PIXELS if the file is genuine)") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImage("not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc)
        if "truncated" in msg or "broken data stream" in msg or isinstance(exc, EOFError) or "end of file" in msg.lower():
            raise TruncatedImage(f"truncated or corrupt image data ({msg})") from exc
        raise ImageError(f"cannot decode ({msg})") from exc
    return LoadedImage(image=img2, source_mode=source_mode, source_format=fmt, notes=notes)


def open_rgba_array(path: str | os.PathLike, *, limit: int | None = None) -> tuple[np.ndarray, LoadedImage]:
    """Open an image as an HxWx4 uint8 array (alpha 255 when the source had none)."""
    loaded = open_image(path, limit=limit)
    arr = np.asarray(loaded.image.convert("RGBA"))
    return arr, loaded


def is_image_name(path: Path) -> bool:
    """True when the extension is a known image extension."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_sidecar_name(path: Path) -> bool:
    """True for files that travel beside images (captions, manifests) and are never items."""
    return path.suffix.lower() in SIDECAR_EXTENSIONS or path.name.startswith(".")


# ---------------------------------------------------------------------------------------------
# Atomic writes: every file is written to a temporary name in the target folder, then renamed.
# A run killed half-way leaves only temporary files, which no stage trusts (and which the next
# run of the stage removes).
# ---------------------------------------------------------------------------------------------

TMP_MARK = ".tmp-"
# Temporary names are short and of fixed length (`.tmp-` + 16 hex digits), whatever the final name:
# a temporary named after a 250-byte output would pass the file system's 255-byte limit.


def _file_mode() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `dest`; rename it onto `dest` when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _new_temporary(dest.parent)
    # mkstemp creates 0600 files; give the result the permissions a normal file write would have.
    os.chmod(tmp_path, _FILE_MODE)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
        # rename() between two links to the same file does nothing and keeps both names (link_or_copy
        # re-linking an unchanged source): drop the temporary name so no stray link is left behind.
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def _new_temporary(folder: Path) -> Path:
    """Create an empty, fresh temporary file in `folder` (O_EXCL: never someone else's) and return its path."""
    for _ in range(100):
        candidate = folder / f"{TMP_MARK}{secrets.token_hex(8)}"
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:  # pragma: no cover - 64 random bits
            continue
        os.close(fd)
        return candidate
    raise FileExistsError(f"no free temporary name in {folder}")  # pragma: no cover


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> None:
    """Write bytes atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(dest: str | os.PathLike, text: str) -> None:
    """Write UTF-8 text atomically (no BOM, LF line ends)."""
    write_bytes_atomic(dest, text.encode("utf-8"))


def write_json_atomic(dest: str | os.PathLike, obj) -> None:
    """Write JSON atomically, pretty-printed and UTF-8."""
    write_text_atomic(dest, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def save_figure_atomic(fig, dest: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG atomically, then close it (a failed save closes it too)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(dest) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)


def save_image_atomic(img: Image.Image, dest: str | os.PathLike, *, format: str | None = None, **params) -> None:
    """Save a Pillow image atomically; the format comes from `format` or the extension."""
    dest = Path(dest)
    fmt = format or Image.registered_extensions().get(dest.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image extension: {dest.suffix}")
    if fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    with atomic_path(dest) as tmp:
        img.save(tmp, format=fmt, **params)


def save_png_array_atomic(arr: np.ndarray, dest: str | os.PathLike, *, compress_level: int = 3) -> None:
    """Save an RGB/RGBA uint8 array as PNG atomically (OpenCV encoder: fast and lossless)."""
    import cv2

    if arr.ndim == 3 and arr.shape[2] == 4:
        bgr = cv2.cvtColor(arr, cv2.COLOR_RGBA2BGRA)
    elif arr.ndim == 3:
        bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    else:
        bgr = arr
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, compress_level])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise ValueError(f"PNG encoding failed for {dest}")
    write_bytes_atomic(dest, buf.tobytes())


def link_or_copy(src: str | os.PathLike, dest: str | os.PathLike, *, copy: bool = False) -> str:
    """Hard-link `src` to `dest` (copy where a link is impossible); returns 'link' or 'copy'."""
    src, dest = Path(src), Path(dest)
    with atomic_path(dest) as tmp:
        tmp.unlink()
        if not copy:
            try:
                # The file itself, not a symlink to it: Linux link() does not follow symlinks, and a
                # user's relative symlink copied into OUT would point nowhere.
                os.link(os.path.realpath(src), tmp)
                return "link"
            except OSError:
                pass  # another filesystem, or links not allowed: fall back to a copy
        shutil.copy2(src, tmp)
    return "copy"


def remove_stale_temporaries(folder: Path) -> int:
    """Delete temporary files left by an interrupted run in `folder` (not recursive)."""
    removed = 0
    if not folder.is_dir():
        return 0
    for p in folder.iterdir():
        if p.name.startswith(".") and TMP_MARK in p.name and p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                removed += 1
    return removed
