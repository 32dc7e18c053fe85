"""Safe image opening (bad inputs of every kind), atomic writes and hard-link-or-copy."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit import imageio
from datakit.errors import ImageError, ImageTooLarge, NotAnImage, TruncatedImage, ZeroByteImage
from datakit.imageio import (
    atomic_path,
    is_image_name,
    is_sidecar_name,
    link_or_copy,
    open_image,
    open_rgba_array,
    remove_stale_temporaries,
    save_image_atomic,
    save_png_array_atomic,
    write_json_atomic,
    write_text_atomic,
)

# ---------------------------------------------------------------------------------------------
# Bad and unusual inputs
# ---------------------------------------------------------------------------------------------


def _png(path: Path, size=(48, 32), colour=(10, 200, 30)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def test_plain_rgb_png(tmp_path):
    loaded = open_image(_png(tmp_path / "a.png"))
    assert loaded.image.mode == "RGB" and loaded.image.size == (48, 32)
    assert loaded.source_format == "PNG" and loaded.notes == [] and not loaded.has_alpha


def test_zero_byte_file(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ZeroByteImage, match="zero-byte"):
        open_image(p)


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        open_image(tmp_path / "nope.png")


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp")])
def test_truncated_files(tmp_path, rng, fmt, ext):
    noisy = Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    whole = tmp_path / f"whole.{ext}"
    noisy.save(whole, format=fmt)
    data = whole.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ImageError) as info:
        open_image(cut)
    if fmt in ("PNG", "JPEG"):
        assert isinstance(info.value, TruncatedImage), info.value
    open_image(whole)  # the whole file is fine


def test_png_cut_inside_the_header(tmp_path):
    data = _png(tmp_path / "a.png").read_bytes()
    p = tmp_path / "cut.png"
    p.write_bytes(data[:20])
    with pytest.raises(ImageError):
        open_image(p)


@pytest.mark.parametrize("content", [b"hello, this is text\n", b"%PDF-1.4\n" + b"x" * 100, bytes(range(256)) * 4])
def test_non_image_with_an_image_extension(tmp_path, content):
    p = tmp_path / "fake.png"
    p.write_bytes(content)
    with pytest.raises(NotAnImage, match="not an image"):
        open_image(p)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    loaded = open_image(p)
    assert loaded.source_mode == "CMYK" and loaded.image.mode == "RGB"
    r, g, b = np.asarray(loaded.image)[16, 16].astype(int)
    assert r > 230 and g < 25 and b < 25
    assert any("CMYK" in n for n in loaded.notes)


def test_16bit_greyscale_is_scaled_not_clipped(tmp_path):
    import cv2

    grey = np.tile(np.array([0, 256, 32768, 65535], np.uint16), (8, 2))
    p = tmp_path / "g16.png"
    cv2.imwrite(str(p), grey)
    loaded = open_image(p)
    assert loaded.source_mode.startswith("I;16") and loaded.image.mode == "RGB"
    row = np.asarray(loaded.image)[0, :4, 0]
    assert row.tolist() == [0, 1, 128, 255]  # Pillow's own convert would clip 256+ to 255
    assert any("16-bit" in n for n in loaded.notes)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png(tmp_path, rng, channels):
    import cv2

    arr16 = rng.integers(0, 65536, (16, 16, channels), dtype=np.uint16)
    p = tmp_path / "c16.png"
    cv2.imwrite(str(p), arr16)  # BGR(A) order on disk
    loaded = open_image(p)
    assert loaded.image.mode == ("RGB" if channels == 3 else "RGBA")
    expected = (arr16[..., [2, 1, 0] + ([3] if channels == 4 else [])] >> 8).astype(int)
    got = np.asarray(loaded.image).astype(int)
    assert np.abs(got - expected).max() <= 1
    assert "16-bit source reduced to 8 bits" in loaded.notes


@pytest.mark.parametrize("ext", ["png", "gif"])
def test_palette_with_transparency_becomes_rgba(tmp_path, ext):
    pal = Image.new("P", (32, 32), 0)
    pal.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(1, (0, 0, 16, 32))
    p = tmp_path / f"pal.{ext}"
    pal.save(p, transparency=0)
    loaded = open_image(p)
    arr = np.asarray(loaded.image)
    assert loaded.image.mode == "RGBA"
    assert arr[5, 5].tolist() == [0, 255, 0, 255]  # opaque green
    assert arr[5, 25, 3] == 0  # the transparent index


def test_palette_without_transparency_is_rgb(tmp_path):
    p = tmp_path / "pal.png"
    Image.new("RGB", (16, 16), (0, 0, 255)).convert("P").save(p)
    loaded = open_image(p)
    assert loaded.image.mode == "RGB" and tuple(np.asarray(loaded.image)[0, 0]) == (0, 0, 255)


def test_rgb_colour_key_transparency_becomes_alpha(tmp_path):
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    img.putpixel((0, 0), (200, 100, 50))
    p = tmp_path / "key.png"
    img.save(p, transparency=(1, 2, 3))
    arr = np.asarray(open_image(p).image)
    assert arr.shape[2] == 4 and arr[4, 4, 3] == 0 and arr[0, 0].tolist() == [200, 100, 50, 255]


@pytest.mark.parametrize(
    "mode,value,expected",
    [("LA", (100, 50), [100, 100, 100, 50]), ("L", 77, [77, 77, 77]), ("1", 1, [255, 255, 255]),
     ("RGBA", (1, 2, 3, 4), [1, 2, 3, 4])],
)
def test_other_modes_normalised(tmp_path, mode, value, expected):
    p = tmp_path / "m.png"
    Image.new(mode, (8, 8), value).save(p)
    loaded = open_image(p)
    assert loaded.image.mode in ("RGB", "RGBA")
    assert np.asarray(loaded.image)[3, 3].tolist() == expected


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
@pytest.mark.parametrize("orientation,corner", [(3, "bottom_right"), (6, "top_right"), (8, "bottom_left")])
def test_exif_orientation_applied(tmp_path, ext, orientation, corner):
    img = Image.new("RGB", (60, 30), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 12, 12))  # a blue mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"rot.{ext}"
    img.save(p, exif=exif, quality=95) if ext != "png" else img.save(p, exif=exif)
    loaded = open_image(p)
    w, h = loaded.image.size
    assert (w, h) == ((30, 60) if orientation in (6, 8) else (60, 30))
    arr = np.asarray(loaded.image).astype(int)
    y = 3 if corner.startswith("top") else h - 4
    x = 3 if corner.endswith("left") else w - 4
    assert arr[y, x, 2] > 200 and arr[y, x, 0] < 60, f"blue mark not at {corner}"
    assert f"applied EXIF orientation {orientation}" in loaded.notes


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * 1024)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [20_000, 60_000])  # 400 Mpx (over our limit) and 3.6 Gpx (over Pillow's too)
def test_decompression_bomb_refused_before_decoding(tmp_path, side):
    p = _png_claiming(tmp_path / "bomb.png", side, side)
    assert p.stat().st_size < 200
    with pytest.raises(ImageTooLarge, match="DATAKIT_MAX_PIXELS"):
        open_image(p)


def test_pixel_limit_follows_the_environment(tmp_path, monkeypatch):
    p = _png(tmp_path / "a.png", size=(40, 40))
    monkeypatch.setenv("DATAKIT_MAX_PIXELS", "1000")
    with pytest.raises(ImageTooLarge, match="1,600 pixels exceeds the limit of 1,000"):
        open_image(p)
    monkeypatch.setenv("DATAKIT_MAX_PIXELS", "1600")
    assert open_image(p).image.size == (40, 40)
    assert open_image(p, limit=10_000).image.size == (40, 40)


def test_raising_the_limit_beats_pillows_own(tmp_path, monkeypatch):
    """A genuine image above Pillow's fixed bomb limit opens when the user raised ours."""
    p = _png(tmp_path / "a.png", size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # stands in for Pillow's 89 Mpx at 40x40
    assert open_image(p, limit=10_000).image.size == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == 500  # Pillow's setting is left as it was


@pytest.mark.parametrize("name", ["pösé 猫.png", "ü n i c ø d e.jpg", "emoji 😀.png"])
def test_unicode_file_names(tmp_path, name):
    p = tmp_path / name
    Image.new("RGB", (10, 10), (5, 6, 7)).save(p)
    assert open_image(p).image.size == (10, 10)


def test_open_rgba_array_adds_opaque_alpha(tmp_path):
    arr, loaded = open_rgba_array(_png(tmp_path / "a.png"))
    assert arr.shape == (32, 48, 4) and arr.dtype == np.uint8 and (arr[..., 3] == 255).all()
    assert loaded.image.mode == "RGB"


def test_name_helpers():
    assert is_image_name(Path("x.PNG")) and is_image_name(Path("x.jpeg")) and not is_image_name(Path("x.txt"))
    assert is_sidecar_name(Path("x.txt")) and is_sidecar_name(Path("manifest.jsonl"))
    assert is_sidecar_name(Path(".hidden.png")) and not is_sidecar_name(Path("x.png"))


# ---------------------------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------------------------


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if imageio.TMP_MARK in p.name)


def test_atomic_path_replaces_only_on_success(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half-writ")
            # Hidden, beside the destination, and of one short length whatever the destination's name.
            assert tmp.parent == dest.parent and tmp.name.startswith(imageio.TMP_MARK) and len(tmp.name) == 21
            raise RuntimeError("killed")
    assert dest.read_text() == "old" and _leftovers(tmp_path) == []
    with atomic_path(dest) as tmp:
        tmp.write_text("new")
        assert dest.read_text() == "old"  # nothing visible until the rename
    assert dest.read_text() == "new" and _leftovers(tmp_path) == []


def test_atomic_path_creates_parent_folders(tmp_path):
    write_text_atomic(tmp_path / "a" / "b" / "c.txt", "x")
    assert (tmp_path / "a" / "b" / "c.txt").read_text() == "x"


def test_text_and_json_writes(tmp_path):
    write_text_atomic(tmp_path / "t.txt", "héllo\nwörld")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\nwörld".encode("utf-8")  # no BOM, LF kept
    write_json_atomic(tmp_path / "j.json", {"name": "猫", "p": Path("/x")})
    text = (tmp_path / "j.json").read_text(encoding="utf-8")
    assert "猫" in text and text.endswith("\n") and '"/x"' in text


def test_failed_image_save_leaves_nothing(tmp_path):
    dest = tmp_path / "x.png"
    with pytest.raises(Exception):
        save_image_atomic(Image.new("RGB", (4, 4)), dest, format="NO-SUCH-FORMAT")
    assert not dest.exists() and _leftovers(tmp_path) == []
    with pytest.raises(ValueError, match="unknown image extension"):
        save_image_atomic(Image.new("RGB", (4, 4)), tmp_path / "x.unknownext")


def test_save_image_atomic_formats(tmp_path):
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 128))
    save_image_atomic(rgba, tmp_path / "a.png")
    save_image_atomic(rgba, tmp_path / "a.jpg", quality=95)  # JPEG has no alpha: converted
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == "RGBA" and im.getpixel((0, 0)) == (10, 20, 30, 128)
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB"


@pytest.mark.parametrize("channels", [3, 4])
def test_save_png_array_roundtrip(tmp_path, rng, channels):
    arr = rng.integers(0, 256, (20, 30, channels), dtype=np.uint8)
    save_png_array_atomic(arr, tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == ("RGB" if channels == 3 else "RGBA")
        assert np.array_equal(np.asarray(im), arr)  # RGB order kept, lossless


def test_save_png_array_is_deterministic(tmp_path, rng):
    arr = rng.integers(0, 256, (20, 30, 4), dtype=np.uint8)
    save_png_array_atomic(arr, tmp_path / "a.png")
    save_png_array_atomic(arr, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_remove_stale_temporaries_only_removes_ours(tmp_path):
    (tmp_path / f".x.png{imageio.TMP_MARK}abc123").write_bytes(b"half")
    (tmp_path / ".hidden").write_text("keep")
    (tmp_path / "x.png").write_bytes(b"keep")
    (tmp_path / "notes.tmp-not-ours").write_text("keep")  # not hidden: not one of ours
    assert remove_stale_temporaries(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "notes.tmp-not-ours", "x.png"]
    assert remove_stale_temporaries(tmp_path / "missing") == 0


# ---------------------------------------------------------------------------------------------
# Hard-link or copy
# ---------------------------------------------------------------------------------------------


def test_link_when_possible(tmp_path):
    src = _png(tmp_path / "src.png")
    before = src.read_bytes()
    assert link_or_copy(src, tmp_path / "out" / "dst.png") == "link"
    dst = tmp_path / "out" / "dst.png"
    assert os.path.samefile(src, dst) and src.stat().st_nlink == 2
    assert src.read_bytes() == before


def test_link_replaces_an_existing_destination(tmp_path):
    src = _png(tmp_path / "src.png")
    dst = tmp_path / "dst.png"
    dst.write_bytes(b"old")
    link_or_copy(src, dst)
    assert dst.read_bytes() == src.read_bytes() and _leftovers(tmp_path) == []


def test_copy_when_asked(tmp_path):
    src = _png(tmp_path / "src.png")
    dst = tmp_path / "dst.png"
    assert link_or_copy(src, dst, copy=True) == "copy"
    assert not os.path.samefile(src, dst) and dst.read_bytes() == src.read_bytes()


def test_copy_when_links_fail(tmp_path, monkeypatch):
    src = _png(tmp_path / "src.png")

    def no_links(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    dst = tmp_path / "dst.png"
    assert link_or_copy(src, dst) == "copy"
    assert dst.read_bytes() == src.read_bytes() and src.stat().st_nlink == 1 and _leftovers(tmp_path) == []


def test_link_to_missing_source_fails_cleanly(tmp_path):
    with pytest.raises(OSError):
        link_or_copy(tmp_path / "missing.png", tmp_path / "dst.png")
    assert not (tmp_path / "dst.png").exists() and _leftovers(tmp_path) == []
