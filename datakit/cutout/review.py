"""review.png: every cut-out on a checkerboard and on a dark colour, each enclosed region outlined and numbered.

A user sees in seconds what the cut-out decided: a halo shows on the dark panel, a hole through a
white garment on the checkerboard, and every enclosed region of backdrop colour carries the number
that the manifest and holes.toml use, drawn in the colour of its decision:

- magenta: cut (made transparent);
- green: kept on the user's word (holes file, --holes keep) or a segmenter's;
- orange: kept by default, without evidence either way: look at it, and list it under `cut` in
  holes.toml when it is a see-through gap.

`render_review` takes ready entries (reduced copies of the cut-outs); `entry_from_row` builds one
from a cutout manifest row, so a later stage can draw the same sheet from a finished cutout folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

CELL = 192  # side of each panel, px
LABEL_H = 30
PAD = 6
MAX_ENTRIES = 300  # beyond this a sheet is too big to look at; the rest is counted in a line at the bottom
CHECKER = ((236, 236, 236), (196, 196, 196))
DARK = (34, 36, 44)
SHEET = (22, 22, 26)
CUT = (236, 48, 214)
KEPT = (60, 210, 100)
FLAGGED = (255, 150, 20)


@dataclass
class HoleMark:
    """One enclosed region as drawn: its number, decision and outline (in the entry image's pixels)."""

    number: int
    action: str  # "cut" | "kept"
    flagged: bool
    contour: list[tuple[float, float]]

    @property
    def colour(self) -> tuple[int, int, int]:
        if self.action == "cut":
            return CUT
        return FLAGGED if self.flagged else KEPT


@dataclass
class ReviewEntry:
    """One cut-out on the sheet: its name, an RGBA copy (straight alpha, any size) and its regions."""

    name: str
    rgba: np.ndarray
    holes: list[HoleMark] = field(default_factory=list)
    note: str = ""  # shown after the counts (e.g. "low confidence")


def reduce(rgba: np.ndarray, cell: int = CELL) -> tuple[np.ndarray, float]:
    """A copy whose longer side is at most `cell` px (premultiplied while resampling), and its scale."""
    h, w = rgba.shape[:2]
    scale = min(1.0, cell / max(h, w, 1))
    if scale >= 1.0:
        return rgba, 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    a = rgba[:, :, 3:4].astype(np.float32) / 255.0
    prem = np.concatenate([rgba[:, :, :3].astype(np.float32) * a, a * 255.0], axis=2)
    small = cv2.resize(prem, size, interpolation=cv2.INTER_AREA)
    alpha = small[:, :, 3:4]
    rgb = np.where(alpha > 0, small[:, :, :3] * 255.0 / np.maximum(alpha, 1e-6), 0.0)
    out = np.concatenate([rgb, alpha], axis=2)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), size[0] / w


def entry_from_row(row: dict, rgba: np.ndarray, scale: float = 1.0) -> ReviewEntry:
    """An entry from a cutout manifest row and its cut-out (or a copy reduced by `scale`).

    The row's hole outlines are in source pixels; the cut-out starts at the row's crop box.
    """
    x0, y0 = (row.get("crop_box") or [0, 0])[:2]
    marks = []
    for hole in row.get("holes") or []:
        pts = [((px - x0) * scale, (py - y0) * scale) for px, py in hole.get("contour", [])]
        marks.append(HoleMark(int(hole["number"]), hole["action"], bool(hole.get("flagged")), pts))
    note = "low confidence" if row.get("confidence") == "low" else ""
    return ReviewEntry(Path(row.get("file") or row.get("source") or "?").name, rgba, marks, note)


def _checker(h: int, w: int, square: int = 8) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy // square + xx // square) % 2 == 0)[..., None]
    return np.where(light, np.array(CHECKER[0], np.float32), np.array(CHECKER[1], np.float32))


def _panel(rgba: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    a = rgba[:, :, 3:4].astype(np.float32) / 255.0
    return np.clip(rgba[:, :, :3].astype(np.float32) * a + backdrop * (1.0 - a), 0, 255).astype(np.uint8)


def _summary(entry: ReviewEntry) -> str:
    cut = sum(1 for m in entry.holes if m.action == "cut")
    flagged = sum(1 for m in entry.holes if m.action != "cut" and m.flagged)
    kept = len(entry.holes) - cut - flagged
    parts = []
    if entry.holes:
        parts.append(f"{cut} cut, {kept} kept" + (f", {flagged} to check" if flagged else ""))
    if entry.note:
        parts.append(entry.note)
    return "; ".join(parts) if parts else "no enclosed regions"


def _fit(text: str, draw: ImageDraw.ImageDraw, font, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 4 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _tile(entry: ReviewEntry, cell: int, font) -> Image.Image:
    """Checkerboard panel, dark panel, and two lines of text under them."""
    rgba, scale = reduce(entry.rgba, cell)
    h, w = rgba.shape[:2]
    tile = Image.new("RGB", (2 * cell + PAD, cell + LABEL_H), SHEET)
    ox, oy = (cell - w) // 2, (cell - h) // 2
    checker = _checker(cell, cell)
    dark = np.broadcast_to(np.array(DARK, np.float32), (cell, cell, 3))
    draw = ImageDraw.Draw(tile)
    for i, back in enumerate((checker, dark)):
        panel = back.astype(np.uint8).copy()
        panel[oy : oy + h, ox : ox + w] = _panel(rgba, back[oy : oy + h, ox : ox + w])
        px = i * (cell + PAD)
        tile.paste(Image.fromarray(panel), (px, 0))
        for mark in entry.holes:
            pts = [(px + ox + x * scale, oy + y * scale) for x, y in mark.contour]
            if len(pts) >= 2:
                draw.line(pts + [pts[0]], fill=mark.colour, width=2)
            if pts:
                # The number just above the region's highest point, on a dark chip so it reads anywhere.
                top = min(pts, key=lambda p: (p[1], p[0]))
                label = str(mark.number)
                tw = draw.textlength(label, font=font)
                lx = min(max(px + 1, top[0] - tw / 2 - 2), px + cell - tw - 5)
                ly = min(max(1, top[1] - 14), cell - 14)
                draw.rectangle([lx, ly, lx + tw + 4, ly + 12], fill=(0, 0, 0), outline=mark.colour)
                draw.text((lx + 2, ly + 1), label, fill=mark.colour, font=font)
    draw.text((2, cell + 2), _fit(entry.name, draw, font, 2 * cell), fill=(235, 235, 235), font=font)
    draw.text((2, cell + 15), _fit(_summary(entry), draw, font, 2 * cell), fill=(170, 170, 170), font=font)
    return tile


def render_review(entries: list[ReviewEntry], dest: str | Path, *, cell: int = CELL, columns: int | None = None) -> int:
    """Write the review sheet (PNG, atomically) for `entries` in order; returns how many are shown.

    Beyond MAX_ENTRIES, entries with enclosed regions or a note come first and the rest are counted.
    """
    from datakit.imageio import save_image_atomic

    entries = list(entries)
    if not entries:
        return 0
    hidden = 0
    if len(entries) > MAX_ENTRIES:
        ranked = sorted(range(len(entries)), key=lambda i: (not (entries[i].holes or entries[i].note), i))
        keep = sorted(ranked[:MAX_ENTRIES])
        hidden = len(entries) - len(keep)
        entries = [entries[i] for i in keep]
    cols = columns or max(1, min(len(entries), 6, math.ceil(math.sqrt(len(entries)))))
    rows = math.ceil(len(entries) / cols)
    tw, th = 2 * cell + PAD, cell + LABEL_H
    footer = 20
    sheet = Image.new("RGB", (cols * (tw + PAD) + PAD, rows * (th + PAD) + PAD + footer), SHEET)
    font = ImageFont.load_default()
    for i, entry in enumerate(entries):
        r, c = divmod(i, cols)
        sheet.paste(_tile(entry, cell, font), (PAD + c * (tw + PAD), PAD + r * (th + PAD)))
    draw = ImageDraw.Draw(sheet)
    legend = [("cut", CUT), ("kept", KEPT), ("kept, to check", FLAGGED)]
    x = PAD
    for text, colour in legend:
        draw.rectangle([x, sheet.height - footer + 5, x + 10, sheet.height - footer + 15], fill=colour)
        draw.text((x + 14, sheet.height - footer + 4), text, fill=(220, 220, 220), font=font)
        x += 24 + int(draw.textlength(text, font=font))
    if hidden:
        draw.text((x + 10, sheet.height - footer + 4), f"+{hidden} more (no regions) not shown",
                  fill=(220, 220, 220), font=font)
    save_image_atomic(sheet, dest, format="PNG", compress_level=3)
    return len(entries)
