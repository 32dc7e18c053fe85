"""Repeat arithmetic: whole-number repeats so each concept gets its share of steps per epoch.

kohya's epoch is the sum over subsets of `num_repeats x images`. With weights w_i and image counts
n_i, concept i should contribute w_i / sum(w) of an epoch. The smallest epoch in which every concept
has at least one repeat gives each unit of weight `u = max(n_i / w_i)` steps, so concept i targets
`w_i * u >= n_i` steps and gets `round(w_i * u / n_i)` repeats (never below 1). The rounding moves
each concept's steps by at most n_i / 2; when that leaves a share more than 1% off, a 2x, 3x ...
longer epoch may round better. The plan reports the share error that is left.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class ConceptPlan:
    """One row of the plan table."""

    name: str
    images: int
    weight: float
    repeats: int
    steps: int  # images x repeats: steps per epoch at batch size 1
    target_share: float
    share: float
    is_reg: bool = False

    @property
    def share_error(self) -> float:
        """Actual minus wanted share of the epoch (0 for regularisation rows)."""
        return 0.0 if self.is_reg else self.share - self.target_share


@dataclass
class Plan:
    """Repeats for every concept, plus the epoch/step arithmetic that follows."""

    concepts: list[ConceptPlan]
    reg: ConceptPlan | None = None
    batch_size: int = 1
    epochs: int | None = None
    target_steps: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_epoch(self) -> int:
        """Training images seen per epoch (regularisation images come on top, one for one)."""
        return sum(c.steps for c in self.concepts)

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch; kohya pairs every training image with a regularisation image."""
        seen = self.images_per_epoch * (2 if self.reg else 1)
        return math.ceil(seen / self.batch_size)

    @property
    def total_steps(self) -> int | None:
        return None if self.epochs is None else self.epochs * self.steps_per_epoch

    @property
    def max_share_error(self) -> float:
        return max((abs(c.share_error) for c in self.concepts), default=0.0)

    def to_dict(self) -> dict:
        """JSON form saved in plan.json and datakit.json."""
        rows = [dict(asdict(c), share_error=round(c.share_error, 6)) for c in self.concepts]
        return {
            "concepts": rows,
            "reg": asdict(self.reg) if self.reg else None,
            "batch_size": self.batch_size,
            "images_per_epoch": self.images_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "target_steps": self.target_steps,
            "total_steps": self.total_steps,
            "max_share_error": round(self.max_share_error, 6),
            "notes": list(self.notes),
        }


def _shares_error(repeats: dict[str, int], counts: dict[str, int], w: dict[str, float]) -> float:
    total = sum(repeats[n] * counts[n] for n in counts)
    total_w = sum(w.values())
    return max(abs(repeats[n] * counts[n] / total - w[n] / total_w) for n in counts)


def balance_repeats(
    counts: dict[str, int], weights: dict[str, float] | None = None, *, tolerance: float = 0.01, max_scale: int = 8
) -> dict[str, int]:
    """Whole repeats (>= 1) giving each concept steps in proportion to its weight (default: equal).

    The smallest balanced epoch is tried first; when rounding leaves a share off by more than
    `tolerance`, epochs 2x, 3x ... `max_scale`x as long are tried (2 vs 5 images: 3+1 repeats is
    55/45, 5+2 repeats is exactly 50/50) and the first within tolerance, else the closest, is kept.
    """
    if not counts:
        return {}
    weights = weights or {}
    for name, n in counts.items():
        if n < 1:
            raise ValueError(f"concept {name!r} has no images")
    w = {name: float(weights.get(name, 1.0)) for name in counts}
    if any(v <= 0 or not math.isfinite(v) for v in w.values()):
        raise ValueError("weights must be positive numbers")
    unit = max(counts[name] / w[name] for name in counts)
    best: tuple[float, dict[str, int]] | None = None
    for scale in range(1, max_scale + 1):
        # Round half up (not Python's banker's rounding) so equal inputs never get different repeats.
        repeats = {name: max(1, math.floor(scale * w[name] * unit / counts[name] + 0.5)) for name in counts}
        err = _shares_error(repeats, counts, w)
        if best is None or err < best[0] - 1e-12:
            best = (err, repeats)
        if err <= tolerance:
            break
    return best[1]


def reg_repeats(train_images_per_epoch: int, reg_images: int) -> int:
    """Repeats that make regularisation images cover every training image of an epoch."""
    return max(1, math.ceil(train_images_per_epoch / reg_images))


def epochs_for(target_steps: int, steps_per_epoch: int) -> int:
    """Fewest whole epochs reaching at least `target_steps` optimizer steps."""
    return max(1, math.ceil(target_steps / steps_per_epoch))


def make_plan(
    counts: dict[str, int],
    weights: dict[str, float] | None = None,
    *,
    reg: tuple[str, int] | None = None,
    batch_size: int = 1,
    epochs: int | None = None,
    target_steps: int | None = None,
    tolerance: float = 0.01,
    max_scale: int = 8,
) -> Plan:
    """The full plan: repeats, shares, regularisation repeats and the epoch count."""
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    weights = weights or {}
    repeats = balance_repeats(counts, weights, tolerance=tolerance, max_scale=max_scale)
    total_w = sum(float(weights.get(n, 1.0)) for n in counts)
    total_steps = sum(repeats[n] * counts[n] for n in counts)
    rows = [
        ConceptPlan(
            name=n,
            images=counts[n],
            weight=float(weights.get(n, 1.0)),
            repeats=repeats[n],
            steps=repeats[n] * counts[n],
            target_share=float(weights.get(n, 1.0)) / total_w,
            share=repeats[n] * counts[n] / total_steps,
        )
        for n in counts
    ]
    reg_row = None
    if reg is not None:
        reg_name, reg_count = reg
        r = reg_repeats(total_steps, reg_count)
        reg_row = ConceptPlan(reg_name, reg_count, 0.0, r, r * reg_count, 0.0, 0.0, is_reg=True)
    plan = Plan(rows, reg_row, batch_size=batch_size, epochs=epochs, target_steps=target_steps)
    if target_steps is not None:
        plan.epochs = epochs_for(target_steps, plan.steps_per_epoch)
        plan.notes.append(
            f"{plan.epochs} epochs x {plan.steps_per_epoch} steps = {plan.total_steps} steps (target {target_steps})"
        )
    if plan.max_share_error > 0.005:
        worst = max(plan.concepts, key=lambda c: abs(c.share_error))
        plan.notes.append(
            f"rounding: {worst.name} gets {worst.share:.1%} of each epoch instead of {worst.target_share:.1%} "
            "(repeats are whole numbers; adding or removing a few images evens it out)"
        )
    return plan
