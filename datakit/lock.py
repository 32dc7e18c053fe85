"""One run per OUT at a time: an OS lock (`flock`) on the OUT folder itself, released by the kernel when the holder dies.

Two runs writing into one folder mix their files (the manifest of one, the images of the other), and
the next run trusts the mix. `flock` is tied to the open folder, so a run killed with `kill -9` (or
out of memory) releases it at once: nothing left on disk ever blocks anyone. While a run holds the
lock, OUT/.datakit.lock says who it is (PID and command), for the message a second run prints; the
holder removes it when done. Within one process the lock is re-entrant (a stage may open OUT
twice, and tests run stages in one process).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from pathlib import Path

from datakit.errors import UsageError

LOCK_FILE = ".datakit.lock"

_held: dict[str, list] = {}  # resolved OUT -> [folder fd, count, info file]
_guard = threading.Lock()


class OutLock:
    """A held lock on one OUT folder; `release()` (or the end of the process) lets it go."""

    def __init__(self, key: str):
        self.key = key
        self._released = False

    def release(self) -> None:
        """Give the lock back once (later calls do nothing)."""
        if self._released:
            return
        self._released = True
        _release(self.key)


def _holder(folder: Path) -> str:
    """What the running holder wrote into OUT/.datakit.lock: its PID and command line."""
    with contextlib.suppress(OSError):
        data = (folder / LOCK_FILE).read_bytes()[:4096].decode("utf-8", "replace").strip()
        if data:
            pid, _, command = data.partition("\n")
            return f"PID {pid}: {command}" if command else f"PID {pid}"
    return "PID unknown"


def _command_line() -> str:
    """This process's command as a person typed it (`datakit composite in out ...`), on one line."""
    argv = list(sys.argv) or ["python"]
    if argv and argv[0].endswith(("__main__.py", "/datakit")):
        argv[0] = "datakit"
    text = " ".join(argv)
    return " ".join(text.split())[:400]


def acquire(out: str | os.PathLike, what: str = "a datakit run") -> OutLock:
    """Lock OUT for this process; UsageError naming the running process when another one holds it."""
    import fcntl

    folder = Path(out)
    key = str(folder.resolve())
    with _guard:
        entry = _held.get(key)
        if entry is not None:
            entry[1] += 1
            return OutLock(key)
        try:
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise UsageError(f"cannot open {folder} to lock it: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UsageError(
                f"{folder} is in use by another datakit run ({_holder(folder)}); wait for it to finish or stop "
                f"it, or give {what} another output folder"
            ) from None
        except OSError:
            # A file system without locks (some network mounts): run unlocked rather than not at all.
            os.close(fd)
            return OutLock("")
        with contextlib.suppress(OSError):
            (folder / LOCK_FILE).write_bytes(f"{os.getpid()}\n{_command_line()}\n".encode("utf-8", "replace"))
        _held[key] = [fd, 1, folder / LOCK_FILE]
        return OutLock(key)


def _release(key: str) -> None:
    import fcntl

    if not key:
        return
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        with contextlib.suppress(OSError):
            entry[2].unlink()  # before unlocking: a file seen later is always the holder's
        with contextlib.suppress(OSError):
            fcntl.flock(entry[0], fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(entry[0])


def held(out: str | os.PathLike) -> bool:
    """True when this process holds the lock on OUT."""
    return str(Path(out).resolve()) in _held
