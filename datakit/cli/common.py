"""Options shared by every command, and the wrapper that maps named errors to exit codes."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer

from datakit.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, DatakitError


class Device(str, enum.Enum):
    """Where model work runs."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


InDir = Annotated[Path, typer.Argument(help="Input folder (a stage's output, or your own images).", show_default=False)]
OutDir = Annotated[Path, typer.Argument(help="Output folder (created; never the input folder).", show_default=False)]
# Non-negative: numpy's and torch's generators refuse negative seeds (an internal error otherwise).
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, help="Base seed; each item's seed derives from it and the item's name.")
]
WorkersOpt = Annotated[
    Optional[int], typer.Option("--workers", "-j", min=1, help="Worker processes (default: all cores).", show_default=False)
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Device for model work; a GPU that falls back to CPU is a warning.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo every item, even unchanged ones.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, messages or summary; warnings and errors still print.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout (for scripts).")]


INTERRUPTED = "interrupted; finished items are kept and a re-run continues from them"


def execute(work: Callable[["Reporter"], Optional[dict]], *, quiet: bool = False, json_mode: bool = False) -> None:  # noqa: F821
    """Run a stage function with a Reporter; print its summary; exit with the documented code."""
    from datakit.console import Reporter
    from datakit.stage import exit_code_for

    reporter = Reporter(quiet=quiet, json_mode=json_mode)
    with _interrupts(json_mode):
        try:
            info = work(reporter)
        except DatakitError as exc:
            _fail(str(exc), exc.exit_code, json_mode)
        except KeyboardInterrupt:
            _fail(INTERRUPTED, EXIT_INTERRUPTED, json_mode)
        except Exception as exc:  # a bug: show where, ask for a report
            traceback.print_exc()
            _fail(f"internal error: {type(exc).__name__}: {exc} (this is a datakit bug; please report it)", EXIT_INTERNAL, json_mode)
    if isinstance(info, dict):
        reporter.summary(info)
        raise typer.Exit(exit_code_for(info))
    raise typer.Exit(EXIT_OK)


@contextlib.contextmanager
def _interrupts(json_mode: bool):
    """Ctrl-C once: KeyboardInterrupt, the stage saves what is done and the run exits 130. Ctrl-C
    again while it does so (or while anything hangs): pool workers are killed and the process exits
    130 at once. Everything is written atomically, so nothing half-written is ever trusted."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers (and only it gets SIGINT)
        return
    count = 0

    def on_sigint(signum, frame):
        nonlocal count
        count += 1
        if count == 1:
            raise KeyboardInterrupt
        _exit_now(json_mode)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        # After a real Ctrl-C the stage has stopped its workers, saved its progress and said so; the
        # process now just exits (130). Python's exit would put back the default SIGINT action, and
        # another Ctrl-C then would kill the process by signal half-way through its exit handlers.
        signal.signal(signal.SIGINT, previous if count == 0 else signal.SIG_IGN)


def _exit_now(json_mode: bool) -> None:
    """A second Ctrl-C: kill the pool workers and exit 130 at once, whatever the run was doing."""
    from datakit.stage import stop_all_workers

    with contextlib.suppress(Exception):
        stop_all_workers()
    with contextlib.suppress(Exception):
        if json_mode:
            sys.stdout.write(json.dumps({"error": INTERRUPTED, "exit_code": EXIT_INTERRUPTED}) + "\n")
            sys.stdout.flush()
        sys.stderr.write(f"error: {INTERRUPTED}\n")
        sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _fail(message: str, code: int, json_mode: bool):
    if json_mode:
        sys.stdout.write(json.dumps({"error": message, "exit_code": code}) + "\n")
    sys.stderr.write(f"error: {message}\n")
    raise typer.Exit(code)


def resolve_workers(workers: Optional[int]) -> int:
    """--workers, or every available core."""
    from datakit.stage import default_workers

    return workers or default_workers()
