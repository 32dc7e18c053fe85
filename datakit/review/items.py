"""The items under review: each one's image (checked to lie inside IN), caption, content hash and facts."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datakit.captions import canonical, split_caption
from datakit.errors import UsageError
from datakit.inputs import Inputs
from datakit.manifest import hash_file
from datakit.paths import resolve_inside
from datakit.review.facts import Facts, Lineage, gather
from datakit.review.images import has_alpha


@dataclass
class ReviewItem:
    """One item as the review sees it; `path` and `caption` were checked to lie inside IN."""

    index: int
    key: str
    path: Path
    stem: str
    caption: Path | None
    tags: list[str]  # the upstream caption's tags, as written (escapes kept)
    hash: str
    facts: Facts = field(default_factory=Facts)
    row: dict = field(default_factory=dict)  # IN's manifest row ({} for a plain folder)
    alpha: bool = False  # the image has transparency (shown on a checkerboard and on dark)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ReviewSet:
    """Every item of IN, the ones left out (named, with why), and the dataset's own tags."""

    folder: Path
    items: list[ReviewItem]
    skipped: list[dict]
    upstream: dict | None
    vocabulary: list[tuple[str, int]]  # (tag as most often written, number of items), most common first
    lineage: Lineage | None = None

    def by_key(self) -> dict[str, ReviewItem]:
        return {item.key: item for item in self.items}


def inside(folder: Path, path: Path, what: str) -> Path:
    """`path` (a file of IN) resolved, or UsageError when it or a symlink on the way leads out of IN."""
    return resolve_inside(folder, os.path.relpath(path, folder), what)


def vocabulary(tag_lists: list[list[str]]) -> list[tuple[str, int]]:
    """The dataset's tags with the number of items each is in; spellings merged, the commonest shown."""
    items_with: Counter = Counter()
    spellings: dict[str, Counter] = {}
    for tags in tag_lists:
        for key in {canonical(t) for t in tags}:
            items_with[key] += 1
        for t in tags:
            spellings.setdefault(canonical(t), Counter())[t] += 1
    return [(spellings[k].most_common(1)[0][0], n) for k, n in sorted(items_with.items(), key=lambda kv: (-kv[1], kv[0]))]


def collect(inputs: Inputs) -> ReviewSet:
    """The review's items from discovered inputs: paths checked, captions read, images hashed, facts gathered."""
    folder = inputs.folder
    lineage = Lineage(folder, inputs.upstream)
    items: list[ReviewItem] = []
    skipped = list(inputs.skipped)
    for item in inputs.items:
        try:
            inside(folder, item.path, "item")
            caption = item.caption
            if caption is not None:
                inside(folder, caption, "caption")
            digest = hash_file(item.path)
            text = item.caption_text()
        except UsageError as exc:
            skipped.append({"source": item.key, "reason": f"not followed: {exc}"})
            continue
        except OSError as exc:
            skipped.append({"source": item.key, "reason": f"cannot read ({exc.strerror or exc})"})
            continue
        row = dict(item.row)
        row.setdefault("key", item.key)
        items.append(ReviewItem(index=len(items), key=item.key, path=item.path, stem=item.stem, caption=caption,
                                tags=split_caption(text) if text else [], hash=digest, facts=gather(row, lineage),
                                row=dict(item.row), alpha=has_alpha(item.path)))
    return ReviewSet(folder=folder, items=items, skipped=skipped, upstream=inputs.upstream,
                     vocabulary=vocabulary([i.tags for i in items]), lineage=lineage)
