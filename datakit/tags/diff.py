"""`tags diff A B`: per-caption added and removed tags between two folders, and totals.

Captions pair by file stem (`pose1.txt` in A with `pose1.txt` in B); tags compare by canonical key,
so a change of spelling alone (`long_hair` -> `long hair`) is not a change of tags (it is reported
as `respelled` together with pure order changes).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datakit.errors import UsageError
from datakit.inputs import read_caption_file
from datakit.tags.parse import parse_tags

CAPTION_EXTENSIONS = (".txt", ".caption")


@dataclass
class FileDiff:
    """One caption's change."""

    name: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    reordered: bool = False  # same tags, different order or spelling

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _captions(folder: Path) -> dict[str, Path]:
    if not folder.exists():
        raise UsageError(f"folder does not exist: {folder}")
    if not folder.is_dir():
        raise UsageError(f"not a folder: {folder}")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in CAPTION_EXTENSIONS and not p.name.startswith("."):
            found.setdefault(p.stem, p)  # .txt before .caption (sorted order)
    return found


def diff_tags(before: str, after: str, name: str = "") -> FileDiff:
    """Added/removed tags (canonical comparison) between two caption texts."""
    a = parse_tags(before)
    b = parse_tags(after)
    a_keys = {t.key for t in a}
    b_keys = {t.key for t in b}
    d = FileDiff(name=name)
    d.added = list(dict.fromkeys(t.text for t in b if t.key not in a_keys))
    d.removed = list(dict.fromkeys(t.text for t in a if t.key not in b_keys))
    if not d.changed:
        d.reordered = [t.text for t in a] != [t.text for t in b]
    return d


def diff_folders(a: Path, b: Path) -> dict:
    """Compare every caption in A with the same-stem caption in B."""
    ca, cb = _captions(a), _captions(b)
    if not ca and not cb:
        raise UsageError(f"no captions (.txt/.caption) in {a} or {b}")
    files = []
    added: Counter = Counter()
    removed: Counter = Counter()
    for stem in sorted(set(ca) & set(cb)):
        d = diff_tags(read_caption_file(ca[stem]), read_caption_file(cb[stem]), cb[stem].name)
        files.append(d)
        added.update(d.added)
        removed.update(d.removed)
    return {
        "a": str(a),
        "b": str(b),
        "compared": len(files),
        "changed": sum(d.changed for d in files),
        "reordered_only": sum(d.reordered for d in files),
        "unchanged": sum(not d.changed and not d.reordered for d in files),
        "only_in_a": sorted(ca[s].name for s in set(ca) - set(cb)),
        "only_in_b": sorted(cb[s].name for s in set(cb) - set(ca)),
        "tags_added": sum(added.values()),
        "tags_removed": sum(removed.values()),
        "most_added": added.most_common(10),
        "most_removed": removed.most_common(10),
        "files": [
            {"file": d.name, "added": d.added, "removed": d.removed, "reordered": d.reordered}
            for d in files
            if d.changed or d.reordered
        ],
    }
