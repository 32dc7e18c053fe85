"""`review.json`: what the user decided about each item, keyed by the item and its image's content hash.

    {"format": "datakit-review", "version": 1,
     "items": {"pose1__bg003.png": {"hash": "9f2c...", "action": "reject", "note": "cut off",
                                    "tags": ["sail kun", "beach"], "base_tags": ["sail kun", "beach", "sky"],
                                    "holes": {"2": "cut"}, "decided": "2025-01-01T10:00:00+00:00"}}}

- `action` is "keep", "reject" or absent (not decided: the entry only carries an edited caption or
  hole decisions). Items without an entry are not decided either.
- `tags` is the edited caption and `base_tags` the caption it was edited from; both absent when the
  caption is unchanged. When the upstream caption changes later, the edit is re-applied to the new
  caption as the tags it added and removed (a three-way merge), so an unchanged item keeps its edit.
- `hash` is the image's BLAKE2b (as in the manifests): a decision about an image that has since
  changed upstream no longer applies, and the item is shown as not decided.

The next run reads the file back (from OUT, or `--decisions FILE`), so a changed upstream keeps the
decisions of every unchanged item. Entries of items that are gone from IN are kept in the file, so an
item that comes back gets its decision back.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from datakit.captions import canonical, dedupe
from datakit.errors import UsageError
from datakit.imageio import write_text_atomic

FORMAT = "datakit-review"
VERSION = 1
DECISIONS_FILE = "review.json"
REJECT_REASON = "rejected in review"
ACTIONS = ("keep", "reject")
HOLE_ACTIONS = ("cut", "keep")
MAX_TAG_CHARS = 200
MAX_TAGS = 500
MAX_NOTE_CHARS = 500


@dataclass
class Decision:
    """The user's word on one item (any part may be absent)."""

    hash: str
    action: str | None = None  # "keep" | "reject" | None: not decided
    tags: list[str] | None = None  # the edited caption; None: unchanged
    base_tags: list[str] | None = None  # the caption the edit started from
    note: str = ""
    holes: dict[int, str] = field(default_factory=dict)  # enclosed region number -> "cut" | "keep"
    decided: str | None = None  # ISO time of the last change

    def is_empty(self) -> bool:
        """True when the entry says nothing (no action, no edit, no note, no hole)."""
        return self.action is None and self.tags is None and not self.note and not self.holes

    def to_json(self) -> dict:
        """The entry as written in review.json (absent parts left out)."""
        out: dict = {"hash": self.hash}
        if self.action is not None:
            out["action"] = self.action
        if self.note:
            out["note"] = self.note
        if self.tags is not None:
            out["tags"] = list(self.tags)
            out["base_tags"] = list(self.base_tags or [])
        if self.holes:
            out["holes"] = {str(n): a for n, a in sorted(self.holes.items())}
        if self.decided:
            out["decided"] = self.decided
        return out


def check_tag(tag: object, where: str) -> str:
    """A caption tag as typed (stripped); UsageError when it is not one tag (a comma, a newline, too long)."""
    if not isinstance(tag, str):
        raise UsageError(f"{where}: a tag must be text, not {tag!r}")
    text = tag.strip()
    if not text:
        raise UsageError(f"{where}: empty tag")
    if "," in text:
        raise UsageError(f"{where}: tag {text!r} contains a comma (a caption separates tags with commas)")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text):
        raise UsageError(f"{where}: tag {text!r} contains a newline or another control character")
    if len(text) > MAX_TAG_CHARS:
        raise UsageError(f"{where}: tag of {len(text)} characters (at most {MAX_TAG_CHARS})")
    return text


def check_tags(tags: object, where: str) -> list[str]:
    """A list of tags checked one by one, duplicates (any spelling) dropped."""
    if not isinstance(tags, list):
        raise UsageError(f"{where}: tags must be a list of strings")
    if len(tags) > MAX_TAGS:
        raise UsageError(f"{where}: {len(tags)} tags (at most {MAX_TAGS})")
    return dedupe([check_tag(t, where) for t in tags])


def check_note(note: object, where: str) -> str:
    """A free-text note on one line."""
    if note is None:
        return ""
    if not isinstance(note, str):
        raise UsageError(f"{where}: note must be text")
    text = " ".join(note.split())
    if len(text) > MAX_NOTE_CHARS:
        raise UsageError(f"{where}: note of {len(text)} characters (at most {MAX_NOTE_CHARS})")
    return text


def _entry(key: str, raw: object, source: str) -> Decision:
    where = f"{source}: item {key!r}"
    if not isinstance(raw, dict):
        raise UsageError(f"{where} must be an object")
    unknown = sorted(set(raw) - {"hash", "action", "note", "tags", "base_tags", "holes", "decided"})
    if unknown:
        raise UsageError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    digest = raw.get("hash")
    if not isinstance(digest, str) or not digest or len(digest) > 128 or not all(c in "0123456789abcdef" for c in digest):
        raise UsageError(f"{where}: hash must be the image's hex digest")
    action = raw.get("action")
    if action is not None and action not in ACTIONS:
        raise UsageError(f"{where}: action must be one of {', '.join(ACTIONS)}, not {action!r}")
    tags = base = None
    if "tags" in raw:
        tags = check_tags(raw["tags"], where)
        base = check_tags(raw.get("base_tags", []), where)
    holes: dict[int, str] = {}
    raw_holes = raw.get("holes", {})
    if not isinstance(raw_holes, dict):
        raise UsageError(f"{where}: holes must map region numbers to cut or keep")
    for number, hole_action in raw_holes.items():
        if not (isinstance(number, str) and number.isdigit() and int(number) >= 1) or hole_action not in HOLE_ACTIONS:
            raise UsageError(f"{where}: holes entry {number!r}: {hole_action!r} (want \"N\": \"cut\" or \"keep\")")
        holes[int(number)] = hole_action
    decided = raw.get("decided")
    if decided is not None and not isinstance(decided, str):
        raise UsageError(f"{where}: decided must be a time as text")
    return Decision(hash=digest, action=action, tags=tags, base_tags=base, note=check_note(raw.get("note"), where),
                    holes=holes, decided=decided)


def parse_decisions(text: str, source: str = DECISIONS_FILE) -> dict[str, Decision]:
    """Parse review.json text into {item key: Decision}; a malformed file is a UsageError naming the place."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UsageError(f"{source}: not a datakit review decisions file (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise UsageError(f"{source}: version {data.get('version')!r} is not one this datakit reads ({VERSION})")
    items = data.get("items", {})
    if not isinstance(items, dict):
        raise UsageError(f"{source}: items must be an object keyed by item")
    return {key: _entry(key, raw, source) for key, raw in items.items()}


def read_decisions(path: str | os.PathLike) -> dict[str, Decision]:
    """Read a review.json (UsageError when it is missing, unreadable or malformed)."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except FileNotFoundError as exc:
        raise UsageError(f"decisions file not found: {p}") from exc
    except IsADirectoryError as exc:
        raise UsageError(f"decisions file is a folder, not a file: {p}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{p}: not UTF-8 text") from exc
    except OSError as exc:
        raise UsageError(f"cannot read the decisions file {p}: {exc.strerror}") from exc
    return parse_decisions(text, str(p))


def format_decisions(decisions: dict[str, Decision]) -> str:
    """review.json text: items in key order, empty entries left out."""
    items = {k: decisions[k].to_json() for k in sorted(decisions) if not decisions[k].is_empty()}
    return json.dumps({"format": FORMAT, "version": VERSION, "items": items}, indent=2, ensure_ascii=False) + "\n"


def write_decisions(path: str | os.PathLike, decisions: dict[str, Decision]) -> bool:
    """Write review.json atomically when its content changes; True when it was written."""
    p = Path(path)
    text = format_decisions(decisions)
    try:
        if p.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    write_text_atomic(p, text)
    return True


def merge_caption(current: list[str], base: list[str], edited: list[str]) -> list[str]:
    """Re-apply an edit made on `base` to the caption as it is now (`current`): a three-way merge.

    Tags the edit removed stay removed, tags it added are added (at the end, in the edit's order);
    everything else follows `current`. With `current == base` this is `edited` itself.
    """
    if [canonical(t) for t in current] == [canonical(t) for t in base]:
        return list(edited)
    base_keys = {canonical(t) for t in base}
    edit_keys = {canonical(t) for t in edited}
    removed = base_keys - edit_keys
    added = [t for t in edited if canonical(t) not in base_keys]
    merged = [t for t in current if canonical(t) not in removed]
    return dedupe(merged + added)
