"""Helpers for the tests/test_robust_*.py red-team tests: real `datakit` processes, their process
trees, small synthetic inputs, and a work counter for the "linear in the caption's length" checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

DATAKIT = [sys.executable, "-m", "datakit"]


def datakit(*args, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run `datakit ARGS` as a user would: a real process; returns the completed process (text mode)."""
    return subprocess.run([*DATAKIT, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kwargs)


def start(*args) -> subprocess.Popen:
    """Start `datakit ARGS` in its own session (so a signal to its group reaches only it and its children)."""
    return subprocess.Popen([*DATAKIT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (pool workers sit below the forkserver, below the main process)."""
    seen: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(condition, bound_s: float, step: float = 0.05) -> bool:
    """Poll `condition` until true or `bound_s` passed: a bound against hangs, not a measurement."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def kill_tree(proc: subprocess.Popen, extra: set[int] = frozenset()) -> None:
    """Clean up after a test: the process group and any listed stragglers."""
    for pid in [proc.pid, *extra]:
        try:
            os.kill(pid, 9)
        except OSError:
            pass
    try:
        os.killpg(proc.pid, 9)
    except OSError:
        pass
    proc.wait(timeout=30)


def make_cutouts(folder: Path, n: int, size: int = 96, names: list[str] | None = None) -> Path:
    """RGBA cut-outs: a coloured figure on transparency, each a little different."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    for i in range(n):
        arr = np.zeros((size, size * 3 // 4, 4), np.uint8)
        h, w = arr.shape[:2]
        arr[h // 6 : h - 4, w // 4 : w - w // 4, :3] = rng.integers(40, 220, 3)
        arr[h // 6 : h - 4, w // 4 : w - w // 4, 3] = 255
        name = names[i] if names else f"subj{i:03d}"
        Image.fromarray(arr, "RGBA").save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text("1girl, solo", encoding="utf-8")
    return folder


def make_backgrounds(folder: Path, n: int, size: int = 96, names: list[str] | None = None) -> Path:
    """Plain RGB backgrounds with a gradient, so composites differ."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        y = np.linspace(0, 255, size, dtype=np.float32)[:, None, None]
        arr = np.broadcast_to(np.concatenate([y, y * 0 + (i * 37) % 255, 255 - y], axis=2), (size, size, 3))
        name = names[i] if names else f"bg{i:03d}"
        Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8), "RGB").save(folder / f"{name}.png")
    return folder


def make_drawings(folder: Path, n: int, size: int = 96, names: list[str] | None = None) -> Path:
    """Subjects on a white background (what `datakit cutout` takes), with captions."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = Image.new("RGB", (size, size * 4 // 3), (255, 255, 255))
        img.paste(Image.new("RGB", (size // 2, size), ((40 * i) % 200 + 30, 60, 160)), (size // 4, size // 6))
        name = names[i] if names else f"pose{i:03d}"
        img.save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text("1girl, solo, white background", encoding="utf-8")
    return folder


class WorkBudgetExceeded(AssertionError):
    """More operations than the bound allows: the code is not linear in its input."""


class CountingKey(str):
    """A tag key that counts how often it is compared or hashed, failing once past a budget.

    Deduplicating n keys with a set or dict costs about n hashes and few comparisons; with a list
    (`if key not in keys`) it costs n^2/2 comparisons. Counting them is a bound on work that does
    not depend on the machine's speed.
    """

    counter = {"ops": 0, "budget": 10**9}

    def _tick(self) -> None:
        c = CountingKey.counter
        c["ops"] += 1
        if c["ops"] > c["budget"]:
            raise WorkBudgetExceeded(f"more than {c['budget']} key comparisons")

    def __eq__(self, other):
        self._tick()
        return str.__eq__(self, other)

    def __ne__(self, other):
        self._tick()
        return str.__ne__(self, other)

    def __hash__(self):
        self._tick()
        return str.__hash__(self)


def counting_line_events(fn, budget: int):
    """Run fn() with every Python line executed counted; raise WorkBudgetExceeded past `budget`."""
    count = {"n": 0}

    def tracer(frame, event, arg):
        if event == "line":
            count["n"] += 1
            if count["n"] > budget:
                raise WorkBudgetExceeded(f"more than {budget} Python lines executed")
        return tracer

    sys.settrace(tracer)
    try:
        result = fn()
    finally:
        sys.settrace(None)
    return result, count["n"]
