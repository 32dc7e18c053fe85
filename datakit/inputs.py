"""Find a stage's input items: the upstream manifest when there is one, else the images in IN."""

from __future__ import annotations

import errno
import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from datakit.errors import UsageError
from datakit.imageio import is_sidecar_name
from datakit.manifest import MANIFEST, STAGE_INFO, read_manifest, read_stage_info
from datakit.paths import MAX_NAME_BYTES, resolve_inside, truncate_name


@dataclass
class InputItem:
    """One input: its key (relative path in IN), file, unique output stem and caption file."""

    key: str
    path: Path
    stem: str
    caption: Path | None = None
    row: dict = field(default_factory=dict)

    def caption_text(self) -> str | None:
        """The same-stem caption's text (BOM and CR stripped), or None."""
        if self.caption is None:
            return None
        return read_caption_file(self.caption)


@dataclass
class Inputs:
    """What a stage reads: items, files skipped before any decoding, and upstream datakit.json."""

    folder: Path
    items: list[InputItem]
    skipped: list[dict]
    upstream: dict | None


def read_caption_file(path: Path) -> str:
    """Read a caption file as text, tolerating a UTF-8 BOM, CRLF and Latin-1 bytes."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def sibling(image: Path, ext: str) -> Path | None:
    """The file beside `image` with the same stem and extension `ext`, if it exists.

    `a…a.b` (255 bytes) has no `.caption` sibling: that name would pass the file system's limit, and
    asking for it raises "File name too long" instead of answering no.
    """
    cand = image.with_suffix(ext)
    try:
        return cand if cand.is_file() else None
    except OSError:
        return None


def find_caption(image: Path, extensions: tuple[str, ...] = (".txt", ".caption")) -> Path | None:
    """The caption beside an image with the same stem, if any (.txt first)."""
    for ext in extensions:
        cand = sibling(image, ext)
        if cand is not None:
            return cand
    return None


def unique_stems(paths: list[Path]) -> dict[Path, str]:
    """Output stems for input paths; clashes (a.png + a.jpg, A.png + a.png) get names that say so.

    A stem too long for the suffixes stages add (a 250-byte file name) is cut to
    `paths.MAX_NAME_BYTES` with a short hash of the whole name; the item's key keeps the full name.
    """
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        groups[p.stem.casefold()].append(p)
    taken: set[str] = set()
    result: dict[Path, str] = {}
    # Non-clashing stems first so they keep their plain name.
    for key in sorted(groups, key=lambda k: (len(groups[k]) > 1, k)):
        members = groups[key]
        for p in sorted(members):
            stem = p.stem if len(members) == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower() or 'noext'}"
            stem = truncate_name(stem, max_bytes=MAX_NAME_BYTES - 8, key=p.name)  # 8: room for `_<n>`
            candidate, n = stem, 2
            while candidate.casefold() in taken:
                candidate = f"{stem}_{n}"
                n += 1
            taken.add(candidate.casefold())
            result[p] = candidate
    return result


def _unusable_entry(p: Path) -> str | None:
    """Why a directory entry that is not a plain file should still be named (a broken or looping
    symlink the user meant as an item), or None for entries that are simply not items (folders)."""
    if p.is_symlink():
        try:
            p.resolve(strict=True)
        except RuntimeError:  # Python < 3.13 reports a loop this way
            return "symbolic link loop"
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symbolic link loop"
            return f"broken symbolic link ({exc.strerror})"
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        return f"cannot read ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return None
    # Reading a FIFO would wait forever for a writer; a device or socket is no image either.
    return "not a regular file (a FIFO, socket or device)"


def _manifest_path(folder: Path, row: dict, skipped: list[dict]) -> Path | None:
    """The file a manifest row names, or None (recorded in `skipped`) when it is unusable.

    A manifest can be hand-edited or come with a downloaded folder: a `file` of `/etc/hostname` or
    `../x` must never be read, linked or copied into OUT.
    """
    name = row.get("file")
    try:
        resolve_inside(folder, name, "manifest file", source=str(folder / MANIFEST))
    except UsageError as exc:
        skipped.append({"source": str(name), "reason": f"not followed: {exc}"})
        return None
    p = folder / name
    if not p.is_file():
        skipped.append({"source": name, "reason": "listed in the upstream manifest but missing"})
        return None
    return p


def discover(folder: str | os.PathLike, *, stage: str = "stage") -> Inputs:
    """List the items of IN: rows of its manifest.jsonl when present, else the files directly in it."""
    folder = Path(folder)
    if not folder.exists():
        raise UsageError(f"input folder does not exist: {folder}")
    if not folder.is_dir():
        raise UsageError(f"input is not a folder: {folder}")
    skipped: list[dict] = []
    manifest = folder / MANIFEST
    if manifest.is_file():
        upstream = read_stage_info(folder)
        if upstream is None:
            raise UsageError(
                f"{folder} has a {MANIFEST} but no {STAGE_INFO}: the stage that wrote it did not finish; re-run it"
            )
        paths: list[Path] = []
        rows: dict[Path, dict] = {}
        for row in read_manifest(folder):
            if not isinstance(row, dict) or row.get("status", "ok") != "ok" or not row.get("file"):
                continue
            p = _manifest_path(folder, row, skipped)
            if p is None or p in rows:
                continue
            paths.append(p)
            rows[p] = row
        stems = unique_stems(paths)
        items = [
            InputItem(key=rows[p]["file"], path=p, stem=stems[p], caption=find_caption(p), row=rows[p]) for p in paths
        ]
        return Inputs(folder=folder, items=items, skipped=skipped, upstream=upstream)

    paths = []
    for p in sorted(folder.iterdir()):
        if is_sidecar_name(p):
            continue
        if not p.is_file():
            reason = _unusable_entry(p)
            if reason:
                skipped.append({"source": p.name, "reason": reason})
            continue
        paths.append(p)
    stems = unique_stems(paths)
    items = [InputItem(key=p.name, path=p, stem=stems[p], caption=find_caption(p)) for p in paths]
    return Inputs(folder=folder, items=items, skipped=skipped, upstream=None)
