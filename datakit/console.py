"""Terminal output: progress bars (rich), warnings, the end-of-stage summary, JSON mode."""

from __future__ import annotations

import contextlib
import json
import sys
from typing import Iterator

from rich.console import Console
from rich.markup import escape  # messages name user files: `char [v2].png` is not markup
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from datakit.paths import printable


class _NullTask:
    def advance(self, n: int = 1) -> None:
        pass


class _Task:
    def __init__(self, progress: Progress, task_id):
        self._progress = progress
        self._id = task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)


class Reporter:
    """Where a stage reports: progress and messages on stderr, the summary on stdout."""

    def __init__(self, *, quiet: bool = False, json_mode: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.json_mode = json_mode
        self.err = console or Console(stderr=True, highlight=False)
        self.out = Console(highlight=False)
        self.warnings: list[str] = []

    def info(self, message: str) -> None:
        """A normal message (hidden by --quiet and --json)."""
        if not (self.quiet or self.json_mode):
            # soft_wrap: the terminal wraps; rich would fold a long path mid-name, breaking copy-paste.
            self.err.print(escape(message), soft_wrap=True)

    def warn(self, message: str) -> None:
        """A warning: always recorded, printed unless --json."""
        self.warnings.append(message)
        if not self.json_mode:
            self.err.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, total: int, description: str) -> Iterator[_Task | _NullTask]:
        """A progress bar with count, rate and ETA; silent in quiet/JSON mode or off a terminal."""
        if self.quiet or self.json_mode or total == 0:
            yield _NullTask()
            return
        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[cyan]{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        ]
        progress = Progress(*columns, console=self.err, transient=False)
        task_id = progress.add_task(description, total=total, rate="")
        with progress:
            handle = _RateTask(progress, task_id)
            yield handle

    def summary(self, info: dict) -> None:
        """Print the stage summary: a table for people, one JSON object with --json."""
        if self.json_mode:
            sys.stdout.write(json.dumps(info, ensure_ascii=False, default=str) + "\n")
            sys.stdout.flush()
            return
        if not self.quiet:
            self._summary_table(info)
        # Skipped and failed inputs are printed even with --quiet: bad input never vanishes silently.
        for entry in info.get("skipped", []):
            self.err.print(f"[yellow]skipped[/yellow] {_shown(entry['source'])}: {_shown(entry['reason'])}", soft_wrap=True)
        for entry in info.get("failed", []):
            self.err.print(f"[red]failed[/red] {_shown(entry['source'])}: {_shown(entry['reason'])}", soft_wrap=True)

    def _summary_table(self, info: dict) -> None:
        counts = info.get("counts", {})
        table = Table(title=f"datakit {escape(str(info.get('stage', '')))}", show_header=False, box=None)
        for k in ("in", "out", "reused", "processed", "skipped", "failed"):
            if k in counts:
                table.add_row(k, str(counts[k]))
        if "timings" in info and "total_s" in info["timings"]:
            table.add_row("time", f"{info['timings']['total_s']:.1f} s")
        if info.get("output"):
            table.add_row("output", _shown(info["output"]))
        self.err.print(table)


def _shown(text) -> str:
    """A user's file name or a reason naming one, safe to print: no markup, one line per entry."""
    return escape(printable(str(text)))


class _RateTask(_Task):
    """Progress handle that shows items per second (or seconds per item when slow)."""

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)
        task = self._progress.tasks[self._id]
        speed = task.speed
        if speed:
            rate = f"{speed:.2f} it/s" if speed >= 1 else f"{1 / speed:.1f} s/it"
            self._progress.update(self._id, rate=rate)
