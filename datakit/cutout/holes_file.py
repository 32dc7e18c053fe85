"""`holes.toml`: which enclosed regions of each cut-out to cut or keep, as the manifest numbers them.

One table per image, named by the cut-out's stem (its file name without `.png`), with the numbers
of the enclosed backdrop-coloured regions to make transparent (`cut`) and to keep (`keep`):

    [hand_on_hip]
    cut = [1]

    ["pose 2"]
    cut = [2, 3]
    keep = [1]

`datakit cutout --holes-file holes.toml` reads it; `write_holes` is the writer for a review tool.
Regions not listed follow `--holes`. The numbers are those of the manifest's `holes` rows and of `review.png`.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from datakit.errors import UsageError

ACTIONS = ("cut", "keep")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class HoleChoice:
    """The user's decisions for one image: region numbers to cut and to keep."""

    cut: tuple[int, ...] = ()
    keep: tuple[int, ...] = ()

    def decision(self, number: int) -> str | None:
        """"cut", "keep", or None when the region is not listed."""
        if number in self.cut:
            return "cut"
        if number in self.keep:
            return "keep"
        return None

    def numbers(self) -> set[int]:
        """Every region number listed."""
        return set(self.cut) | set(self.keep)

    def as_params(self) -> dict:
        """Plain lists, for a task's fingerprinted parameters and the manifest."""
        return {"cut": list(self.cut), "keep": list(self.keep)}


def parse_holes(text: str, source: str = "holes.toml") -> dict[str, HoleChoice]:
    """Parse holes.toml text; a malformed file is a UsageError naming the place."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML ({exc})") from exc
    choices: dict[str, HoleChoice] = {}
    for stem, table in data.items():
        where = f"{source}: [{_key(stem)}]"
        if not isinstance(table, dict):
            raise UsageError(f"{source}: '{stem}' must be a table of an image ([{_key(stem)}] with cut = [...] / keep = [...])")
        unknown = sorted(set(table) - set(ACTIONS))
        if unknown:
            raise UsageError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} (use cut and keep)")
        lists = {}
        for action in ACTIONS:
            value = table.get(action, [])
            if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value):
                raise UsageError(f"{where}: {action} must be a list of region numbers (1, 2, ...), not {value!r}")
            lists[action] = tuple(sorted(set(value)))
        both = sorted(set(lists["cut"]) & set(lists["keep"]))
        if both:
            raise UsageError(f"{where}: region{'s' if len(both) > 1 else ''} {', '.join(map(str, both))} listed under both cut and keep")
        choices[stem] = HoleChoice(cut=lists["cut"], keep=lists["keep"])
    return choices


def read_holes(path: str | os.PathLike) -> dict[str, HoleChoice]:
    """Read a holes.toml file (UsageError when it is missing or malformed)."""
    from datakit.inputs import read_user_text

    return parse_holes(read_user_text(path, "holes file"), str(Path(path)))


def _key(stem: str) -> str:
    """A TOML table key: bare when it can be, else a quoted string (JSON escapes are TOML's)."""
    import json

    return stem if _BARE_KEY.match(stem) else json.dumps(stem, ensure_ascii=False)


def format_holes(choices: dict[str, HoleChoice], header: str = "") -> str:
    """holes.toml text for the choices (images in name order; empty choices left out)."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for stem in sorted(choices):
        choice = choices[stem]
        if not choice.cut and not choice.keep:
            continue
        if lines:
            lines.append("")
        lines.append(f"[{_key(stem)}]")
        if choice.cut:
            lines.append(f"cut = [{', '.join(map(str, sorted(choice.cut)))}]")
        if choice.keep:
            lines.append(f"keep = [{', '.join(map(str, sorted(choice.keep)))}]")
    return "\n".join(lines) + "\n"


def write_holes(path: str | os.PathLike, choices: dict[str, HoleChoice], header: str = "") -> None:
    """Write holes.toml atomically."""
    from datakit.imageio import write_text_atomic

    write_text_atomic(path, format_holes(choices, header))


def with_decision(choices: dict[str, HoleChoice], stem: str, number: int, action: str | None) -> dict[str, HoleChoice]:
    """A copy of the choices with one region set to "cut" or "keep" (None: no longer listed)."""
    if action not in (*ACTIONS, None):
        raise ValueError(f"action must be one of {ACTIONS} or None")
    if number < 1:
        raise ValueError("region numbers start at 1")
    old = choices.get(stem, HoleChoice())
    cut = set(old.cut) - {number}
    keep = set(old.keep) - {number}
    if action == "cut":
        cut.add(number)
    elif action == "keep":
        keep.add(number)
    out = dict(choices)
    out[stem] = HoleChoice(cut=tuple(sorted(cut)), keep=tuple(sorted(keep)))
    return out
