"""Typed stage results: what one run of a stage did, as datakit.json records it and `--json` prints it.

`StageResult` holds what every stage reports (counts, timings, the skipped and failed inputs, what
travels downstream); a stage adds its own fields in a subclass kept beside its config
(`CompositeResult` in compositing/config.py, ...). `to_json()` gives exactly the datakit.json object
(the same keys, in the same order, as the dicts it replaces) and `from_json()` reads one back:
`from_json(d).to_json() == d` for every stage's datakit.json. Keys a result does not know (a newer
datakit, a stage without its own subclass yet) are kept in `extra`; keys a datakit.json lacks (a
training run records no input folder) stay absent when it is written back, and the order stays.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="StageResult")


class Record:
    """Mixin for a flat dataclass that is one JSON object, its field names the keys (a stage's own parts)."""

    def to_json(self) -> dict:
        return {f.name: _encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, d: dict):
        hints = typing.get_type_hints(cls)
        return cls(**{f.name: _decode(hints[f.name], d[f.name]) for f in dataclasses.fields(cls) if f.name in d})  # type: ignore[arg-type]


@dataclass
class Counts:
    """How many inputs a run saw and what became of them."""

    in_: int = 0  # "in" in JSON
    out: int = 0
    reused: int | None = 0  # None: a result that does not count it (a training run)
    processed: int | None = 0
    skipped: int = 0
    failed: int | None = 0

    def to_json(self) -> dict:
        d = {"in": self.in_, "out": self.out, "reused": self.reused, "processed": self.processed,
             "skipped": self.skipped, "failed": self.failed}
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> Counts:
        return cls(in_=d.get("in", 0), out=d.get("out", 0), reused=d.get("reused"), processed=d.get("processed"),
                   skipped=d.get("skipped", 0), failed=d.get("failed"))


@dataclass
class Timings:
    """Wall time of the run and the mean time per item processed (seconds)."""

    total_s: float = 0.0
    per_item_s: float | None = None
    other: dict = field(default_factory=dict)  # a stage's own timings (a training run's train_s)

    def to_json(self) -> dict:
        d: dict = {"total_s": self.total_s}
        if self.per_item_s is not None:
            d["per_item_s"] = self.per_item_s
        return {**d, **self.other}

    @classmethod
    def from_json(cls, d: dict) -> Timings:
        other = {k: v for k, v in d.items() if k not in ("total_s", "per_item_s")}
        return cls(total_s=d.get("total_s", 0.0), per_item_s=d.get("per_item_s"), other=other)


@dataclass
class ItemProblem:
    """One input that was skipped (bad input) or failed (anything else), and why."""

    source: str
    reason: str = ""

    def to_json(self) -> dict:
        return {"source": self.source, "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict) -> ItemProblem:
        return cls(source=str(d.get("source", "")), reason=str(d.get("reason", "")))


@dataclass
class Carry:
    """What flows downstream through datakit.json: the trigger word and keep_tokens (tags rewrite -> emit -> train)."""

    trigger: str | None = None
    keep_tokens: int | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in (("trigger", self.trigger), ("keep_tokens", self.keep_tokens)) if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> Carry:
        return cls(trigger=d.get("trigger"), keep_tokens=d.get("keep_tokens"))


@dataclass(kw_only=True)
class StageResult:
    """What one run of a stage did. A stage's own fields go in a subclass; `StageRun.finish` fills these."""

    stage: str = ""
    stages: list[str] = field(default_factory=list)  # lineage, oldest first: cutout, composite, tag, ...
    datakit_version: str = ""
    finished: str = ""  # ISO time, UTC
    input: str | None = None  # IN (None: a stage that reads no folder, e.g. procedural backgrounds)
    output: str | None = None
    config: dict = field(default_factory=dict)
    config_hash: str = ""
    counts: Counts = field(default_factory=Counts)
    timings: Timings = field(default_factory=Timings)
    skipped: list[ItemProblem] = field(default_factory=list)
    failed: list[ItemProblem] = field(default_factory=list)
    removed_stale: list[str] = field(default_factory=list)  # files of items that no longer exist
    warnings: list[str] = field(default_factory=list)
    carry: Carry = field(default_factory=Carry)
    extra: dict = field(default_factory=dict)  # keys this class does not know, kept as they are
    nothing_to_do: bool = False  # everything was up to date; datakit.json was left as it was
    # The keys of the JSON object this was read from, in order: written back the same (no field it
    # lacked, the same order). Empty for a result a stage built: then every field is written.
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False)

    # Not written as keys: `extra` is spread into the object, `nothing_to_do` only when true.
    _SPECIAL: ClassVar[frozenset[str]] = frozenset({"extra", "nothing_to_do", "keys"})
    # A subclass's fields that only some runs have (the tagger's provider when a model ran): left
    # out of the JSON while None, so datakit.json has exactly the keys of the run.
    WRITTEN_WHEN_SET: ClassVar[frozenset[str]] = frozenset()

    @property
    def all_failed(self) -> bool:
        """True when items failed and none succeeded or was merely skipped: the work itself failed."""
        return bool(self.counts.failed) and not self.counts.out and not self.counts.skipped

    def to_json(self) -> dict:
        """The datakit.json object (also what `--json` prints)."""
        d: dict = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in self._SPECIAL or (self.keys and f.name not in self.keys):
                continue
            if value is None and f.name in self.WRITTEN_WHEN_SET:
                continue
            d[f.name] = _encode(value)
        d.update(self.extra)
        if self.nothing_to_do:
            d["nothing_to_do"] = True
        if self.keys:  # the order it was read in; anything added since comes after
            d = {**{k: d[k] for k in self.keys if k in d}, **d}
        return d

    @classmethod
    def from_json(cls: type[R], d: dict) -> R:
        """Read a datakit.json object back (the subclass's own fields too)."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)} - cls._SPECIAL
        values = {name: _decode(hints[name], d[name]) for name in known if name in d}
        extra = {k: v for k, v in d.items() if k not in known and k != "nothing_to_do"}
        return cls(**values, extra=extra, nothing_to_do=bool(d.get("nothing_to_do")), keys=tuple(d))


def _encode(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(hint: Any, value: Any) -> Any:
    """A JSON value as the field's type: records by their from_json, lists of records item by item."""
    if value is None:
        return None
    for tp in typing.get_args(hint) if _is_union(hint) else (hint,):
        if tp is type(None):
            continue
        if hasattr(tp, "from_json") and isinstance(value, dict):
            return tp.from_json(value)
        args = typing.get_args(tp)
        if typing.get_origin(tp) is list and args and hasattr(args[0], "from_json") and isinstance(value, list):
            return [args[0].from_json(v) if isinstance(v, dict) else v for v in value]
    return value


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)
