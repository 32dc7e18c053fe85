"""manifest.jsonl rows and datakit.json: what a stage wrote, and proof that it finished."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from datakit.captions import check_trigger
from datakit.errors import UsageError
from datakit.imageio import write_json_atomic, write_text_atomic

MANIFEST = "manifest.jsonl"
STAGE_INFO = "datakit.json"
# Keys carried from stage to stage through datakit.json (tags rewrite -> emit -> train).
CARRIED_KEYS = ("trigger", "keep_tokens")
# Fields of a manifest row that are the writing stage's bookkeeping, not facts about the item.
BOOKKEEPING_FIELDS = frozenset({"file", "key", "status", "fingerprint", "outputs", "seed", "warnings", "reason", "source"})


def read_manifest(folder: str | os.PathLike) -> list[dict]:
    """Rows of folder/manifest.jsonl ([] when absent); a corrupt line is a usage error."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: line {lineno} is not valid JSON ({exc.msg})") from exc
    return rows


def write_manifest(folder: str | os.PathLike, rows: Iterable[dict]) -> None:
    """Write folder/manifest.jsonl atomically, one JSON object per line."""
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=False, default=str) + "\n" for r in rows)
    write_text_atomic(Path(folder) / MANIFEST, text)


def read_stage_info(folder: str | os.PathLike) -> dict | None:
    """folder/datakit.json as a dict, or None when the folder is not a finished stage output."""
    path = Path(folder) / STAGE_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is corrupt ({exc}); re-run the stage that wrote it with --force") from exc
    if not isinstance(info, dict):
        raise UsageError(f"{path} is corrupt (not a JSON object); re-run the stage that wrote it with --force")
    _check_carry(info, path)
    return info


def _check_carry(info: dict, path: Path) -> None:
    """The values passed downstream are checked where they enter: a trigger word becomes a caption's
    first tag and a file name, so a hand-edited `carry` is refused like a bad --trigger."""
    carry = info.get("carry")
    if carry is None:
        return
    if not isinstance(carry, dict):
        raise UsageError(f"{path}: `carry` must be a JSON object")
    if carry.get("trigger") is not None:
        if not isinstance(carry["trigger"], str):
            raise UsageError(f"{path}: carried trigger must be a string, got {carry['trigger']!r}")
        check_trigger(carry["trigger"], source=f"`carry` in {path}")
    keep = carry.get("keep_tokens")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 0):
        raise UsageError(f"{path}: carried keep_tokens must be a whole number >= 0, got {keep!r}")


def write_stage_info(folder: str | os.PathLike, info: dict) -> None:
    """Write folder/datakit.json atomically (always the last file a stage writes)."""
    write_json_atomic(Path(folder) / STAGE_INFO, info)


def carried_from(info: dict | None) -> dict:
    """The values a stage passes on downstream (trigger word, keep_tokens)."""
    if not info:
        return {}
    carry = dict(info.get("carry", {}))
    return {k: carry[k] for k in CARRIED_KEYS if carry.get(k) is not None}


def stage_lineage(info: dict | None) -> list[str]:
    """The stages that made a folder, oldest first (e.g. cutout, composite, tag), from its datakit.json."""
    if not info:
        return []
    stages = info.get("stages")
    if isinstance(stages, list) and all(isinstance(s, str) for s in stages):
        return list(stages)
    return [info["stage"]] if isinstance(info.get("stage"), str) else []  # written before lineage was kept


def hash_file(path: str | os.PathLike, _cache: dict | None = None) -> str:
    """BLAKE2b hex digest of a file's bytes (memoised per run by absolute path + mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if _cache is not None and key in _cache:
        return _cache[key]
    h = hashlib.blake2b(digest_size=16)
    with p.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if _cache is not None:
        _cache[key] = digest
    return digest


def hash_json(obj) -> str:
    """Stable hash of a JSON-serialisable object."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.blake2b(data, digest_size=16).hexdigest()
