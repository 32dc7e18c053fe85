"""OUT/holes.toml from the review's hole decisions, in the format `datakit cutout --holes-file` reads.

The file starts from the holes file the cut-outs were made with (named in the cutout stage's
datakit.json), so choices made earlier for other images or regions are kept; the review's decisions
replace the choices for the regions they name. Images are named by their cut-out's stem, regions by
the numbers of the cutout manifest (the numbers the page shows).
"""

from __future__ import annotations

from pathlib import Path

from datakit.review.decisions import Decision
from datakit.review.items import ReviewItem, ReviewSet

HOLES_FILE = "holes.toml"
HEADER = ("Enclosed regions to cut or keep, per cut-out, written by `datakit review`.\n"
          "Re-run the cut-out with it: datakit cutout SUBJECTS CUTOUTS --holes-file THIS_FILE")


class HolesWriter:
    """Writes OUT/holes.toml (called with all decisions after each hole decision, and at Save)."""

    def __init__(self, out: Path, base: Path | None):
        self.out = Path(out)
        self.base = base

    @classmethod
    def for_review(cls, review: ReviewSet, out: Path) -> "HolesWriter | None":
        """A writer when some item is a cut-out with numbered regions, else None."""
        if not any(h.number is not None for i in review.items for h in i.facts.holes):
            return None
        base = None
        for info in (review.lineage.infos if review.lineage else []):
            if info.get("stage") == "cutout":
                if isinstance(info.get("holes_file"), str) and info["holes_file"]:
                    base = Path(info["holes_file"])
                break
        return cls(out, base)

    def __call__(self, decisions: dict[str, Decision], items: list[ReviewItem]) -> str | None:
        """Write the file when any region is decided (or it exists already); its name, or None."""
        from datakit.cutout.holes_file import HoleChoice, read_holes, write_holes

        dest = self.out / HOLES_FILE
        choices = read_holes(self.base) if self.base is not None and self.base.is_file() else {}
        decided = False
        for item in items:
            d = decisions.get(item.key)
            if d is None or d.hash != item.hash or not d.holes or not item.facts.holes:
                continue
            decided = True
            stem = item.facts.cutout_stem or item.path.stem
            old = choices.get(stem, HoleChoice())
            named = set(d.holes)
            cut = (set(old.cut) - named) | {n for n, a in d.holes.items() if a == "cut"}
            keep = (set(old.keep) - named) | {n for n, a in d.holes.items() if a == "keep"}
            choices[stem] = HoleChoice(cut=tuple(sorted(cut)), keep=tuple(sorted(keep)))
        if not decided and not dest.exists():
            return None
        write_holes(dest, choices, header=HEADER)
        return HOLES_FILE
