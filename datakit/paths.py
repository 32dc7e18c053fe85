"""Checks for every user-given name that becomes a path: one place, used at every boundary.

Names come from users and from files users share (a trigger word in a rules file, a concept name, an
output name, a `file` entry in an upstream manifest). Each is checked where it enters datakit:
either refused with a `UsageError` naming what it was, or reduced to a safe file name on purpose.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path

from datakit.errors import UsageError

# Most file systems (ext4, APFS, NTFS) allow 255 bytes per name; we keep 40 bytes spare for the
# suffixes stages add (`.safetensors`, `-000200`, `_k2`, `.txt`) so a name never fails half-way.
MAX_NAME_BYTES = 215

# Windows device names: a LoRA called `con.safetensors` cannot be copied to a Windows machine.
_WINDOWS_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')


def _problem(name: str) -> str | None:
    """Why `name` is not a safe single path component, or None when it is."""
    if not name or not name.strip():
        return "it is empty"
    if "\x00" in name:
        return "it contains a NUL byte"
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        return "it contains a control character (newline, tab, ...)"
    if "/" in name or "\\" in name:
        return "it contains a path separator"
    if name in (".", ".."):
        return f"'{name}' names a folder, not a file"
    if _UNSAFE_CHARS.search(name):
        return 'it contains a character that is not allowed in file names (: * ? " < > |)'
    if name != name.strip() or name.endswith("."):
        return "it starts or ends with a space, or ends with a dot"
    if name.startswith("-"):
        return "it starts with '-' (it would read as an option)"
    if name.split(".")[0].lower() in _WINDOWS_RESERVED:
        return "it is a reserved device name on Windows"
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        return f"it is longer than {MAX_NAME_BYTES} bytes"
    return None


def check_name(value: str, what: str, *, source: str | None = None) -> str:
    """Return `value` unchanged if it is a safe single file name, else raise UsageError naming `what`."""
    problem = _problem(value)
    if problem:
        where = f" (from {source})" if source else ""
        raise UsageError(f"{what} {value!r}{where} cannot be used as a file name: {problem}")
    return value


def short_hash(text: str, length: int = 8) -> str:
    """A short stable hash of `text` for names that had to be shortened or cleaned."""
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()[:length]


def safe_name(value: str, *, fallback: str = "item", max_bytes: int = MAX_NAME_BYTES) -> str:
    """Reduce any text to a safe file name: unsafe characters become `_` plus a short hash; too long is cut."""
    cleaned = _UNSAFE_CHARS.sub("_", "".join("_" if unicodedata.category(c) == "Cc" else c for c in value))
    cleaned = cleaned.strip().strip(".").lstrip("-").strip()
    cleaned = re.sub(r"_+", "_", cleaned).strip("_") or fallback
    if cleaned.split(".")[0].lower() in _WINDOWS_RESERVED:
        cleaned = f"{cleaned}_"
    if cleaned != value:
        # A cleaned name carries a hash of the original, so `a/b` and `a:b` never share a file.
        tail = "~" + short_hash(value)
        return truncate_name(cleaned, max_bytes=max_bytes - len(tail), key=value) + tail
    return truncate_name(cleaned, max_bytes=max_bytes, key=value)


def truncate_name(stem: str, *, max_bytes: int = MAX_NAME_BYTES, key: str | None = None) -> str:
    """`stem` if it fits in `max_bytes`, else its head plus `~` and a short hash of `key` (or `stem`)."""
    raw = stem.encode("utf-8", "surrogateescape")
    if len(raw) <= max_bytes:
        return stem
    tail = "~" + short_hash(key if key is not None else stem)
    head = raw[: max_bytes - len(tail)].decode("utf-8", "ignore").rstrip(" .")
    return head + tail


def resolve_inside(base: str | os.PathLike, relative: str, what: str, *, source: str | None = None) -> Path:
    """Resolve `relative` against `base` and refuse it (UsageError) when it leads outside `base`.

    Used for paths read from files (manifest `file` entries, dataset TOML `image_dir` of a moved
    dataset): an absolute path or `..` that escapes the folder is refused, symlinks are followed.
    """
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise UsageError(f"{what} {relative!r}{_from(source)} is not a usable relative path")
    base_real = Path(base).resolve()
    target = (base_real / relative).resolve()
    if target != base_real and base_real not in target.parents:
        raise UsageError(f"{what} {relative!r}{_from(source)} points outside {base_real}; refusing to follow it")
    return target


def is_inside(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when `path` is `folder` or lies below it (both resolved, symlinks followed)."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def check_apart(out: str | os.PathLike, inputs: dict[str, str | os.PathLike | None], *, out_label: str = "OUT") -> None:
    """Refuse (UsageError) an output folder that is, holds, or lies inside one of the run's input folders.

    `inputs` maps how the user named each input (`IN`, `--backgrounds`, `concept 'x'`) to its folder.
    A stage writing into a folder it reads from renames, links over or deletes the user's files.
    """
    out_p = Path(out)
    for label, folder in inputs.items():
        if folder is None or not Path(folder).exists():
            continue
        if Path(folder).resolve() == out_p.resolve():
            raise UsageError(
                f"{out_label} must differ from {label} (both are {out_p}): a stage never writes into a folder it reads"
            )
        if is_inside(out_p, folder):
            raise UsageError(
                f"{out_label} {out_p} is inside {label} ({folder}): a stage never writes into a folder it reads; "
                f"put {out_label} beside it"
            )
        if out_p.exists() and is_inside(folder, out_p):
            raise UsageError(
                f"{label} ({folder}) is inside {out_label} {out_p}: the run would write over the folder it reads; "
                f"move it out of {out_label} or give {out_label} another folder"
            )


def printable(name: str) -> str:
    """A file name as one line of text for people: control characters (newline, tab, ESC) shown as
    escapes such as `\\n`, so a name with a newline neither breaks a label nor fakes a second line."""
    if not any(unicodedata.category(ch) == "Cc" for ch in name):
        return name
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch for ch in name)


def _from(source: str | None) -> str:
    return f" (in {source})" if source else ""
