"""A1111's learning-rate schedule strings, and cosine annealing with warm restarts.

Schedule string (A1111 "learning rate" and "gradient clip value" fields):

    "5e-5"                    one rate for the whole run
    "5e-5:100, 5e-6:1500"     5e-5 while fewer than 100 steps are done, then 5e-6 until step 1500
    "1e-4:200, 1e-5:-1"       ":-1" runs the last rate to the end

As in A1111, a schedule whose last piece ends before the last step ends the training there.

Cosine annealing with warm restarts (the Hypernetwork MonkeyPatch extension's scheduler): cycles of
`cycle_steps` steps (each `cycle_mult` times the one before), each starting with `warmup_steps`
of linear warmup from `min_lr` to the cycle's peak, then a half cosine back down to `min_lr`;
the peak is the scheduled rate times `decay` per finished cycle.

Everything here is a pure function of the step number, so a resumed run needs no stored state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from datakit.errors import UsageError


@dataclass(frozen=True)
class StepSchedule:
    """Pieces of (value, end_step): the value holds while the number of finished steps is below end_step.

    The last piece's end_step is None when it runs to the end of training (a bare value or ":-1").
    """

    pieces: tuple[tuple[float, int | None], ...]
    text: str

    def value(self, step: int) -> float:
        """The value in force when `step` optimizer steps are done."""
        for value, end in self.pieces:
            if end is None or step < end:
                return value
        return self.pieces[-1][0]

    @property
    def end(self) -> int | None:
        """The step where the schedule runs out (None: never)."""
        return self.pieces[-1][1]

    @property
    def is_constant(self) -> bool:
        return len(self.pieces) == 1 and self.end is None

    def boundaries(self) -> list[int]:
        """Steps where the value changes (for messages)."""
        return [end for _, end in self.pieces[:-1] if end is not None]


def is_number(value) -> bool:
    """True for 1e-4, "1e-4", " 0.5 " (a plain rate); False for schedule strings."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return True
    try:
        float(str(value).strip())
        return True
    except ValueError:
        return False


def parse_schedule(text, *, what: str = "--lr", allow_zero: bool = False) -> StepSchedule:
    """Parse an A1111 schedule string (or a bare number); one-line UsageErrors name what is wrong."""
    raw = str(text).strip()
    if not raw:
        raise UsageError(f"{what}: empty value; give a number like 1e-4 or a schedule like '5e-5:100, 5e-6:1500'")
    pieces: list[tuple[float, int | None]] = []
    parts = [p.strip() for p in raw.split(",")]
    last_end = 0
    for i, part in enumerate(parts):
        if not part:
            raise UsageError(f"{what}: empty piece in {raw!r} (a stray comma?)")
        if pieces and pieces[-1][1] is None:
            raise UsageError(f"{what}: {part!r} follows a piece that already runs to the end in {raw!r}")
        fields = [f.strip() for f in part.split(":")]
        if len(fields) > 2:
            raise UsageError(f"{what}: {part!r} has more than one ':'; write RATE:STEP")
        try:
            value = float(fields[0])
        except ValueError:
            raise UsageError(f"{what}: {fields[0]!r} is not a number (in {part!r})") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise UsageError(f"{what}: {fields[0]!r} must be a positive number")
        if len(fields) == 1:
            pieces.append((value, None))
            continue
        try:
            end = int(fields[1])
        except ValueError:
            raise UsageError(f"{what}: step {fields[1]!r} is not a whole number (in {part!r})") from None
        if end == -1:
            pieces.append((value, None))
            continue
        if end < 1:
            raise UsageError(f"{what}: step {end} must be at least 1 (or -1 for 'to the end')")
        if end <= last_end:
            raise UsageError(f"{what}: steps must increase; {end} comes after {last_end} in {raw!r}")
        pieces.append((value, end))
        last_end = end
    return StepSchedule(tuple(pieces), raw)


@dataclass(frozen=True)
class CosineRestarts:
    """Cosine annealing with warm restarts: maps a peak rate and a step to the rate at that step."""

    cycle_steps: int
    cycle_mult: float = 1.0
    warmup_steps: int = 0
    min_lr: float = 0.0
    decay: float = 1.0

    def validate(self) -> None:
        if self.cycle_steps < 1:
            raise UsageError("--cycle-steps must be at least 1")
        if self.cycle_mult < 1:
            raise UsageError("--cycle-mult must be at least 1")
        if not 0 <= self.warmup_steps < self.cycle_steps:
            raise UsageError("--cycle-warmup must be at least 0 and less than --cycle-steps")
        if self.min_lr < 0:
            raise UsageError("--min-lr must not be negative")
        if not 0 < self.decay <= 1:
            raise UsageError("--cycle-decay must be in (0, 1]")

    def cycle_length(self, cycle: int) -> int:
        """Steps in cycle number `cycle` (0-based): cycle_steps x cycle_mult^cycle, rounded."""
        return max(self.warmup_steps + 1, round(self.cycle_steps * self.cycle_mult ** cycle))

    def position(self, step: int) -> tuple[int, int, int]:
        """(cycle, step within it, its length) for a global step."""
        if self.cycle_mult == 1:  # equal cycles: no need to walk them
            length = self.cycle_length(0)
            return step // length, step % length, length
        cycle, start, length = 0, 0, self.cycle_length(0)
        while step >= start + length:
            start += length
            cycle += 1
            length = self.cycle_length(cycle)
        return cycle, step - start, length

    def rate(self, step: int, peak: float) -> float:
        """The learning rate at `step` for a schedule whose (undecayed) peak is `peak`."""
        cycle, pos, length = self.position(step)
        top = peak * self.decay ** cycle
        low = min(self.min_lr, top)
        if pos < self.warmup_steps:
            return low + (top - low) * pos / self.warmup_steps
        span = length - self.warmup_steps
        return low + (top - low) * 0.5 * (1 + math.cos(math.pi * (pos - self.warmup_steps) / span))


class FunctionScheduler:
    """Sets every parameter group's LR to f(step) before each optimizer step (stateless, resumable).

    Quacks like a torch LR scheduler for the loop: step(), get_last_lr(), state_dict(), load_state_dict().
    """

    def __init__(self, optimizer, rate_at, start_step: int = 0):
        self.optimizer = optimizer
        self.rate_at = rate_at
        self.step_count = start_step
        self._apply()

    def _apply(self) -> None:
        lr = self.rate_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self._last = [lr for _ in self.optimizer.param_groups]

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def get_last_lr(self) -> list[float]:
        return list(self._last)

    def state_dict(self) -> dict:
        return {"step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        self._apply()


def rate_function(schedule: StepSchedule, cosine: CosineRestarts | None = None):
    """step -> LR: the schedule's rate, shaped by cosine restarts when given."""
    if cosine is None:
        return schedule.value
    return lambda step: cosine.rate(step, schedule.value(step))
