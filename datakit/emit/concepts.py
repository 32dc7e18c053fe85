"""The concepts of an emit run: sanitised unique names, weights, alpha masks, the regularisation set."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datakit.console import Reporter
from datakit.emit.config import EmitConfig
from datakit.emit.names import sanitize_name
from datakit.errors import UsageError
from datakit.inputs import Inputs, discover
from datakit.manifest import carried_from
from datakit.paths import check_apart
from datakit.results import Carry


@dataclass
class Concept:
    """One concept: its folder name, its input folder and how it is trained."""

    name: str  # sanitised: the folder name after `<repeats>_`
    folder: Path
    is_reg: bool = False
    alpha: bool = False
    weight: float = 1.0
    inputs: Inputs | None = None  # what discover() found in `folder`


def resolve_concepts(cfg: EmitConfig) -> list[Concept]:
    """Sanitised, unique concept names with their weights and alpha-mask flags (usage errors early)."""
    if not cfg.concepts:
        raise UsageError("give at least one --concept NAME=DIR")
    concepts: list[Concept] = []
    by_raw: dict[str, Concept] = {}
    seen: dict[str, str] = {}
    for raw, folder in cfg.concepts:
        name = sanitize_name(raw)
        if name.casefold() in seen:
            raise UsageError(f"two concepts share the name {name!r} ({seen[name.casefold()]!r} and {raw!r}); names must differ")
        seen[name.casefold()] = raw
        c = Concept(name=name, folder=Path(folder))
        concepts.append(c)
        by_raw[raw] = by_raw[name] = c

    def lookup(raw: str, option: str) -> Concept:
        c = by_raw.get(raw) or next((c for c in concepts if c.name.casefold() == sanitize_name(raw).casefold()), None)
        if c is None:
            raise UsageError(f"{option} names {raw!r}, which is not a --concept (have: {', '.join(c.name for c in concepts)})")
        return c

    for raw, weight in cfg.weights.items():
        if not (weight > 0 and weight < float("inf")):
            raise UsageError(f"--weight {raw}={weight}: a weight must be a positive number")
        lookup(raw, "--weight").weight = float(weight)
    for raw in cfg.alpha_mask:
        lookup(raw, "--alpha-mask").alpha = True
    if (cfg.reg_dir is None) != (cfg.reg_class is None):
        raise UsageError("--reg DIR and --reg-class CLASS go together")
    if cfg.reg_dir is not None:
        reg_name = sanitize_name(cfg.reg_class or "")
        if reg_name.casefold() in seen:
            raise UsageError(f"--reg-class {cfg.reg_class!r} gives the same name as concept {seen[reg_name.casefold()]!r}; rename the concept")
        concepts.append(Concept(name=reg_name, folder=Path(cfg.reg_dir), is_reg=True))
    # Emit renames and removes repeat folders inside OUT: a concept folder there (say a previous
    # OUT/img/1_x) would be renamed under the user, and OUT inside a concept folder is written into.
    check_apart(cfg.out_dir, {
        (f"the --reg folder ({c.name!r})" if c.is_reg else f"the input folder of concept {c.name!r}"): c.folder
        for c in concepts
    })
    return concepts


def discover_inputs(concepts: list[Concept]) -> None:
    """Find each concept's images (a concept without any is a usage error)."""
    for c in concepts:
        c.inputs = discover(c.folder, stage="emit")
        if not c.inputs.items:
            raise UsageError(f"concept {c.name!r} has no images in {c.folder}")


def merge_carry(concepts: list[Concept], reporter: Reporter) -> Carry:
    """Trigger and keep_tokens from the upstream stages; the first concept wins a disagreement."""
    carry: dict = {}
    for c in concepts:
        for key, value in carried_from(c.inputs.upstream if c.inputs else None).items():
            if key in carry and carry[key] != value:
                reporter.warn(f"concept {c.name!r} carries {key}={value!r} but an earlier concept has {carry[key]!r}; using {carry[key]!r}")
            carry.setdefault(key, value)
    return Carry.from_json(carry)
