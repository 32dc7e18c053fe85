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

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from datakit.paths import printable

CELL = 160  # side of each panel, px
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
    """A copy whose longer side is at most `cell` px, and its scale.

    Averages whole k x k blocks (OpenCV's fast exact path; the last partial block is dropped), on
    the RGBA values: the cut-out's hidden RGB is bled from its edge colours
    (datakit.cutout.colour.bleed), so averaging across the edge brings in no dark fringe.
    """
    h, w = rgba.shape[:2]
    k = -(-max(h, w) // cell)
    if k <= 1:
        return rgba, 1.0
    size = (max(1, w // k), max(1, h // k))
    return cv2.resize(rgba[: size[1] * k, : size[0] * k], size, interpolation=cv2.INTER_AREA), 1.0 / k


def save_copy(rgba: np.ndarray, dest: str | Path, cell: int = CELL) -> None:
    """Keep a reduced copy of a cut-out for the sheet (raw .npy: written and read back far faster than
    a PNG, and it is only ever read by datakit, never unpickled)."""
    import io

    from datakit.imageio import write_bytes_atomic

    small, _ = reduce(rgba, cell)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(small), allow_pickle=False)
    write_bytes_atomic(dest, buf.getvalue())


def load_copy(path: str | Path) -> np.ndarray | None:
    """A reduced copy saved by save_copy, or None when it is missing or not one."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 4:
        return None
    return arr


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


@functools.lru_cache(maxsize=2)
def _backdrops(cell: int) -> tuple[np.ndarray, np.ndarray]:
    """The checkerboard and the dark panel of a cell (uint8, cached: every tile uses them)."""
    yy, xx = np.mgrid[0:cell, 0:cell]
    light = ((yy // 12 + xx // 12) % 2 == 0)[..., None]
    checker = np.where(light, np.array(CHECKER[0], np.uint8), np.array(CHECKER[1], np.uint8)).astype(np.uint8)
    return checker, np.broadcast_to(np.array(DARK, np.uint8), (cell, cell, 3)).copy()


def _panel(rgba: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """The cut-out over a backdrop (8-bit arithmetic: one multiply-add per layer)."""
    a = cv2.merge([rgba[:, :, 3]] * 3)
    front = cv2.multiply(rgba[:, :, :3], a, scale=1 / 255.0)
    back = cv2.multiply(backdrop, cv2.bitwise_not(a), scale=1 / 255.0)
    return cv2.add(front, back)


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
    text = printable(text)  # one line: Pillow cannot measure a name with a newline in it
    if draw.textlength(text, font=font) <= width:
        return text
    while len(text) > 4 and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _tile(entry: ReviewEntry, cell: int, sheet: np.ndarray, x0: int, y0: int) -> list[tuple[int, int, str, tuple]]:
    """Draw one entry's two panels and outlines into `sheet` at (x0, y0); return its text lines to write."""
    rgba, scale = reduce(entry.rgba, cell)
    h, w = rgba.shape[:2]
    ox, oy = (cell - w) // 2, (cell - h) // 2
    for i, back in enumerate(_backdrops(cell)):
        px = x0 + i * (cell + PAD)
        panel = sheet[y0 : y0 + cell, px : px + cell]
        panel[:] = back
        panel[oy : oy + h, ox : ox + w] = _panel(rgba, back[oy : oy + h, ox : ox + w])
        for mark in entry.holes:
            pts = np.array([(ox + x * scale, oy + y * scale) for x, y in mark.contour], np.float32)
            if len(pts) >= 2:
                cv2.polylines(panel, [np.rint(pts * 4).astype(np.int32)], True, mark.colour, 2, cv2.LINE_AA, shift=2)
            if len(pts):
                # The number just above the region's highest point, on a dark chip so it reads anywhere.
                top = pts[np.lexsort((pts[:, 0], pts[:, 1]))[0]]
                label = str(mark.number)
                (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.38, 1)
                lx = int(min(max(1, top[0] - tw / 2 - 2), cell - tw - 5))
                ly = int(min(max(1, top[1] - th - 8), cell - th - 5))
                cv2.rectangle(panel, (lx, ly), (lx + tw + 4, ly + th + 4), (0, 0, 0), -1)
                cv2.rectangle(panel, (lx, ly), (lx + tw + 4, ly + th + 4), mark.colour, 1)
                cv2.putText(panel, label, (lx + 2, ly + th + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.38, mark.colour, 1, cv2.LINE_AA)
    return [(x0 + 2, y0 + cell + 2, entry.name, (235, 235, 235)), (x0 + 2, y0 + cell + 15, _summary(entry), (170, 170, 170))]


def render_review(entries: list[ReviewEntry], dest: str | Path, *, cell: int = CELL, columns: int | None = None) -> int:
    """Write the review sheet (PNG, atomically) for `entries` in order; returns how many are shown.

    Beyond MAX_ENTRIES, entries with enclosed regions or a note come first and the rest are counted.
    """
    from datakit.imageio import save_png_array_atomic

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
    sheet = np.empty((rows * (th + PAD) + PAD + footer, cols * (tw + PAD) + PAD, 3), np.uint8)
    sheet[:] = SHEET
    texts = []
    for i, entry in enumerate(entries):
        r, c = divmod(i, cols)
        texts += _tile(entry, cell, sheet, PAD + c * (tw + PAD), PAD + r * (th + PAD))
    # Text last, with Pillow: file names may be in any script.
    image = Image.fromarray(sheet)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for x, y, text, colour in texts:
        draw.text((x, y), _fit(text, draw, font, 2 * cell), fill=colour, font=font)
    legend = [("cut", CUT), ("kept", KEPT), ("kept, to check", FLAGGED)]
    x = PAD
    for text, colour in legend:
        draw.rectangle([x, image.height - footer + 5, x + 10, image.height - footer + 15], fill=colour)
        draw.text((x + 14, image.height - footer + 4), text, fill=(220, 220, 220), font=font)
        x += 24 + int(draw.textlength(text, font=font))
    if hidden:
        draw.text((x + 10, image.height - footer + 4), f"+{hidden} more (no regions) not shown", fill=(220, 220, 220), font=font)
    save_png_array_atomic(np.asarray(image), dest, compress_level=1)
    return len(entries)
