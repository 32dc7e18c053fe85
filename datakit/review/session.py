"""One review session's state: the items, the decisions being made, the draft, and saving.

The page sends every change at once; the session checks it, applies it to its decisions and writes
them to OUT/.review-draft.json, so a closed tab or a Ctrl-C loses nothing: the next session starts
from the draft. "Save" hands the decisions to the stage (a callback), which writes OUT. Requests
arrive on several threads, so every change and every write happens under one lock.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from datakit.captions import canonical, dedupe
from datakit.errors import UsageError
from datakit.review.decisions import (
    ACTIONS,
    HOLE_ACTIONS,
    Decision,
    check_note,
    check_tag,
    check_tags,
    write_decisions,
)
from datakit.review.items import ReviewItem, ReviewSet
from datakit.review.resolve import resolve, same_tags

DRAFT_FILE = ".review-draft.json"
MAX_CHANGES = 10_000


@dataclass
class SessionHooks:
    """What the stage lends the session: writing OUT, and writing holes.toml (None: no cut-outs)."""

    save: Callable[[dict[str, Decision]], dict]
    write_holes: Callable[[dict[str, Decision], list[ReviewItem]], str | None] | None = None
    context: dict = field(default_factory=dict)  # shown on the page: IN, OUT, trigger, keep_tokens, lineage


def now() -> str:
    """The time a decision is made, as stored in review.json."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class ReviewSession:
    """The items and the decisions about them while the page is open."""

    def __init__(self, review: ReviewSet, decisions: dict[str, Decision], out_dir: Path, hooks: SessionHooks):
        self.review = review
        self.items = review.items
        self.by_key = review.by_key()
        self.decisions = dict(decisions)
        self.out = Path(out_dir)
        self.hooks = hooks
        self.lock = threading.RLock()
        self.changes = 0  # changes since the last save
        self.saves = 0
        self.last_info: dict | None = None
        self.finished = threading.Event()
        self.holes_file: str | None = None

    # -- what the page shows ---------------------------------------------------------------------
    def item_json(self, item: ReviewItem) -> dict:
        """One item as the page needs it."""
        r = resolve(item, self.decisions.get(item.key))
        return {
            "index": item.index,
            "key": item.key,
            "name": item.name,
            "kind": item.facts.kind,
            "tags": r.tags,
            "upstream_tags": item.tags,
            "action": r.action,
            "edited": r.edited,
            "note": r.note,
            "notes": r.notes,
            "stale": r.stale,
            "facts": item.facts.fields,
            "warnings": item.facts.warnings,
            "holes": [dict(h.to_json(), decision=r.holes.get(h.number)) for h in item.facts.holes],
            "caption": item.caption.name if item.caption else None,
            "size": item.facts.size,
            "alpha": item.alpha,
        }

    def state(self) -> dict:
        """Everything the page loads at start."""
        with self.lock:
            return {
                "items": [self.item_json(i) for i in self.items],
                "vocabulary": [{"tag": t, "count": n} for t, n in self.review.vocabulary],
                "skipped": self.review.skipped,
                "context": self.hooks.context,
                "unsaved": self.changes,
                "saves": self.saves,
                "holes_file": self.holes_file,
            }

    # -- changes ---------------------------------------------------------------------------------
    def _item(self, key: object) -> ReviewItem:
        if not isinstance(key, str) or key not in self.by_key:
            raise UsageError(f"no item {key!r} in this review")
        return self.by_key[key]

    def _decision(self, item: ReviewItem) -> Decision:
        """The item's decision to change (a fresh one when there is none, or it is about an older image)."""
        d = self.decisions.get(item.key)
        if d is None or d.hash != item.hash:
            d = Decision(hash=item.hash)
            self.decisions[item.key] = d
        return d

    def apply(self, changes: object) -> list[dict]:
        """Apply a list of changes from the page; returns the changed items. UsageError on a bad change
        (then nothing of the list is applied)."""
        if not isinstance(changes, list) or not changes or len(changes) > MAX_CHANGES:
            raise UsageError(f"changes must be a list of 1 to {MAX_CHANGES} objects")
        with self.lock:
            planned = [self._plan(c, n) for n, c in enumerate(changes, 1)]
            touched: dict[str, ReviewItem] = {}
            for item, update in planned:
                d = self._decision(item)
                update(d)
                d.decided = now()
                touched[item.key] = item
            self._changed()
            return [self.item_json(i) for i in touched.values()]

    def _plan(self, change: object, n: int):
        """Check one change and return (item, a function applying it to the item's decision)."""
        where = f"change {n}"
        if not isinstance(change, dict):
            raise UsageError(f"{where} must be an object")
        unknown = sorted(set(change) - {"key", "action", "tags", "add", "remove", "note"})
        if unknown:
            raise UsageError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        item = self._item(change.get("key"))
        where = f"{where} ({item.key})"
        steps = []
        if "action" in change:
            action = change["action"]
            if action is not None and action not in ACTIONS:
                raise UsageError(f"{where}: action must be keep, reject or null")
            steps.append(lambda d: setattr(d, "action", action))
        if "note" in change:
            note = check_note(change["note"], where)
            steps.append(lambda d: setattr(d, "note", note))
        if "tags" in change:
            tags = check_tags(change["tags"], where)
            steps.append(lambda d: self._set_tags(item, d, lambda _current: tags))
        if "add" in change or "remove" in change:
            add = check_tags(change.get("add", []), where)
            remove = {canonical(check_tag(t, where)) for t in change.get("remove", []) or []}
            steps.append(lambda d: self._set_tags(item, d, lambda cur: dedupe([t for t in cur if canonical(t) not in remove] + add)))
        if not steps:
            raise UsageError(f"{where}: nothing to change")

        def update(d: Decision) -> None:
            for step in steps:
                step(d)

        return item, update

    def _set_tags(self, item: ReviewItem, d: Decision, change: Callable[[list[str]], list[str]]) -> None:
        current = resolve(item, d).tags
        new = change(current)
        if same_tags(new, item.tags):
            d.tags = d.base_tags = None  # back to the upstream caption: no edit
        else:
            d.tags, d.base_tags = list(new), list(item.tags)

    def decide_hole(self, key: object, number: object, action: object) -> dict:
        """Set one enclosed region of a cut-out to cut, keep, or undecided (None); writes holes.toml."""
        item = self._item(key)
        numbers = {h.number for h in item.facts.holes if h.number is not None}
        if not isinstance(number, int) or isinstance(number, bool) or number not in numbers:
            raise UsageError(f"{item.key} has no enclosed region {number!r} (it has {sorted(numbers) or 'none'})")
        if action is not None and action not in HOLE_ACTIONS:
            raise UsageError("a region's action must be cut, keep or null")
        if self.hooks.write_holes is None:
            raise UsageError("this datakit cannot write holes.toml")
        with self.lock:
            d = self._decision(item)
            if action is None:
                d.holes.pop(number, None)
            else:
                d.holes[number] = action
            d.decided = now()
            self.holes_file = self.hooks.write_holes(self.decisions, self.items)
            self._changed()
            return self.item_json(item)

    def _changed(self) -> None:
        self.changes += 1
        write_decisions(self.out / DRAFT_FILE, self.decisions)

    # -- saving ----------------------------------------------------------------------------------
    def save(self) -> dict:
        """Write OUT through the stage; the draft goes once it is saved."""
        with self.lock:
            info = self.hooks.save(self.decisions)
            self.last_info = info
            self.saves += 1
            self.changes = 0
            with contextlib.suppress(FileNotFoundError):
                (self.out / DRAFT_FILE).unlink()
            return info
