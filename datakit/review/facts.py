"""The upstream facts worth seeing while reviewing an item, gathered along its lineage.

A folder reviewed after `tag` and `tags rewrite` no longer carries the composite's framing or the
cut-out's enclosed regions in its own manifest rows: those stages keep only a few upstream fields.
So the facts are read from the item's row, the `upstream` fields nested in it, and then the rows of
the stages before, found through each folder's `datakit.json` (`input`) and matched by file name,
nearest stage first. A folder that moved or is gone just ends the walk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datakit.errors import UsageError
from datakit.manifest import MANIFEST, read_manifest, read_stage_info, stage_lineage

MAX_DEPTH = 8  # stages walked back; a real pipeline has four or five


@dataclass
class Hole:
    """One enclosed region of a cut-out, as the cutout stage numbered and decided it."""

    number: int | None
    action: str  # "cut" | "kept"
    flagged: bool = False  # kept without evidence: worth a look
    why: str = ""
    area: int = 0
    contour: list[list[float]] = field(default_factory=list)  # outline in the cut-out's own pixels

    def to_json(self) -> dict:
        return {"number": self.number, "action": self.action, "flagged": self.flagged, "why": self.why,
                "area": self.area, "contour": self.contour}


@dataclass
class Facts:
    """What the page shows and sorts by for one item."""

    kind: str = "image"  # "composite" | "cutout" | "image"
    fields: dict = field(default_factory=dict)  # name -> str | number (framing, height, confidence, ...)
    holes: list[Hole] = field(default_factory=list)
    cutout_stem: str | None = None  # the name holes.toml knows the cut-out by (its file's stem)
    size: list[int] | None = None  # the image's [width, height] as the manifest gives it (hole outlines use it)
    warnings: list[str] = field(default_factory=list)
    lineage: list[str] = field(default_factory=list)


class Lineage:
    """The manifests of IN and of the stages before it, each indexed by file name (read once)."""

    def __init__(self, folder: Path, info: dict | None):
        self.levels: list[tuple[str, dict[str, dict]]] = []  # (stage, {file: row}) nearest first, IN excluded
        self.infos: list[dict] = [info] if info else []  # datakit.json of IN and of each stage before, nearest first
        self.stages = stage_lineage(info)
        seen = {Path(folder).resolve()}
        current, current_info = Path(folder), info
        for _ in range(MAX_DEPTH):
            upstream = _upstream_folder(current, current_info)
            if upstream is None or upstream.resolve() in seen:
                break
            seen.add(upstream.resolve())
            try:
                up_info = read_stage_info(upstream)
                rows = read_manifest(upstream)
            except (UsageError, OSError):
                break
            if up_info is None:
                break
            index = {r["file"]: r for r in rows if isinstance(r, dict) and isinstance(r.get("file"), str)}
            self.levels.append((str(up_info.get("stage") or "?"), index))
            self.infos.append(up_info)
            current, current_info = upstream, up_info

    def rows_for(self, row: dict) -> list[tuple[str, dict]]:
        """(stage, row) for the item along the lineage, nearest first, starting with its own row."""
        own_stage = self.stages[-1] if self.stages else ""
        chain = [(own_stage, row)]
        nested = row.get("upstream")
        while isinstance(nested, dict) and len(chain) < MAX_DEPTH:
            chain.append(("", nested))
            nested = nested.get("upstream")
        key = row.get("key")
        for stage, index in self.levels:
            found = index.get(key) if isinstance(key, str) else None
            if found is None:
                break
            chain.append((stage, found))
            key = found.get("key")
        return chain


def _upstream_folder(folder: Path, info: dict | None) -> Path | None:
    """The folder a stage read, from its datakit.json; relative paths are tried as given, then beside `folder`."""
    raw = (info or {}).get("input")
    if not isinstance(raw, str) or not raw:
        return None
    given = Path(raw)
    for candidate in (given, folder.parent / given.name):
        try:
            if (candidate / MANIFEST).is_file():
                return candidate
        except OSError:
            continue
    return None


def _first(chain: list[tuple[str, dict]], *names: str):
    for _, row in chain:
        for name in names:
            value = row.get(name)
            if value is not None and not isinstance(value, (dict, list)):
                return value
    return None


def _placement(chain: list[tuple[str, dict]]) -> dict:
    for _, row in chain:
        if isinstance(row.get("placement"), dict):
            return row["placement"]
    return {}


def _holes(chain: list[tuple[str, dict]]) -> tuple[list[Hole], str | None]:
    """The nearest cut-out row's enclosed regions (outlines in the trimmed cut-out's pixels) and the
    stem of that cut-out's file."""
    for _, row in chain:
        raw = row.get("holes")
        if not isinstance(raw, list):
            continue
        box = row.get("crop_box") if isinstance(row.get("crop_box"), list) else [0, 0]
        x0, y0 = (box + [0, 0])[:2]
        holes = []
        for h in raw:
            if not isinstance(h, dict) or h.get("action") not in ("cut", "kept"):
                continue
            number = h.get("number") if isinstance(h.get("number"), int) and not isinstance(h.get("number"), bool) else None
            contour = []
            for pt in h.get("contour") or []:
                if isinstance(pt, list) and len(pt) == 2 and all(isinstance(v, (int, float)) for v in pt):
                    contour.append([float(pt[0]) - x0, float(pt[1]) - y0])
            holes.append(Hole(number=number, action=h["action"], flagged=bool(h.get("flagged")),
                              why=str(h.get("why") or ""), area=int(h.get("area") or 0), contour=contour))
        stem = Path(row["file"]).stem if isinstance(row.get("file"), str) else None
        return holes, stem
    return [], None


def gather(row: dict, lineage: Lineage) -> Facts:
    """The facts of one item from its row and its lineage."""
    chain = lineage.rows_for(row)
    stages = {s for s, _ in chain if s}
    facts = Facts(lineage=[s for s, _ in chain if s])
    placement = _placement(chain)
    is_composite = "composite" in stages or "composite" in lineage.stages or bool(placement)
    holes, stem = _holes(chain)
    is_cutout = not is_composite and ("cutout" in stages or bool(holes) or _first(chain, "crop_box") is not None)
    f = facts.fields
    if is_composite:
        facts.kind = "composite"
        for name in ("background", "scene", "subject"):
            value = _first(chain, name)
            if value is not None:
                f[name] = str(value)
        framing = _first(chain, "framing")
        if framing is None:
            framing = placement.get("framing")
        if framing is not None:
            f["framing"] = str(framing)
        height = placement.get("height_fraction")
        if isinstance(height, (int, float)):
            f["subject height"] = round(float(height), 3)
        visible = placement.get("visible_fraction")
        if isinstance(visible, (int, float)):
            f["visible"] = round(float(visible), 3)
        ground = _first(chain, "ground_source")
        if ground is not None:
            f["ground"] = str(ground)
    elif is_cutout:
        facts.kind = "cutout"
        facts.holes = holes
        facts.cutout_stem = stem
        for name in ("method", "confidence"):
            value = _first(chain, name)
            if value is not None:
                f[name] = str(value)
        coverage = _first(chain, "alpha_coverage")
        if isinstance(coverage, (int, float)):
            f["coverage"] = round(float(coverage), 3)
        if holes:
            f["holes cut"] = sum(1 for h in holes if h.action == "cut")
            f["holes kept"] = sum(1 for h in holes if h.action == "kept")
            flagged = sum(1 for h in holes if h.flagged)
            if flagged:
                f["holes to check"] = flagged
    rating = _first(chain, "rating")
    if rating is not None:
        f["rating"] = str(rating)
    size = next((r["size"] for _, r in chain if isinstance(r.get("size"), list) and len(r["size"]) == 2), None)
    if size and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size):
        f["size"] = f"{size[0]}x{size[1]}"
        facts.size = list(size)
    seen: set[str] = set()
    for _, r in chain:
        for w in r.get("warnings") or []:
            if isinstance(w, str) and w not in seen:
                seen.add(w)
                facts.warnings.append(w)
    return facts
