"""What a decision means for one item now: kept or rejected, its caption, and what changed upstream."""

from __future__ import annotations

from dataclasses import dataclass, field

from datakit.captions import canonical
from datakit.review.decisions import Decision, merge_caption
from datakit.review.items import ReviewItem


@dataclass
class Resolved:
    """One item's state: its decision (None: not decided, kept by default) and its caption."""

    action: str | None
    tags: list[str]
    edited: bool
    note: str = ""
    holes: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the page and the manifest say about the decision
    stale: bool = False  # there was a decision, but about an image that has changed since

    @property
    def kept(self) -> bool:
        return self.action != "reject"


def same_tags(a: list[str], b: list[str]) -> bool:
    """Equal as captions: the same tags in the same order, whatever the spelling (`_`/space, case)."""
    return [canonical(t) for t in a] == [canonical(t) for t in b]


def resolve(item: ReviewItem, decision: Decision | None) -> Resolved:
    """Apply a decision (if it is about this image) to the item as it is now."""
    if decision is None:
        return Resolved(action=None, tags=list(item.tags), edited=False)
    if decision.hash != item.hash:
        return Resolved(action=None, tags=list(item.tags), edited=False, stale=True,
                        notes=["the image changed upstream since it was reviewed: decide again"])
    notes = []
    tags, edited = list(item.tags), False
    if decision.tags is not None:
        tags = merge_caption(item.tags, decision.base_tags or [], decision.tags)
        edited = not same_tags(tags, item.tags)
        if not same_tags(item.tags, decision.base_tags or []):
            notes.append("the caption changed upstream since it was edited: the edit was applied to the new caption")
    return Resolved(action=decision.action, tags=tags, edited=edited, note=decision.note, holes=dict(decision.holes),
                    notes=notes)
