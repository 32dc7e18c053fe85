"""Units of work and the process pool that runs them: workers that die with their parent, and stop at once.

`parallel_map` runs `Task`s in a process pool (forkserver) with bounded submission; an interrupt kills
the workers instead of waiting for them (outputs are atomic, so nothing half-written survives), and
each worker dies with its parent, also after `kill -9`. `datakit.stage` builds the stage contract on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
import weakref
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from datakit.errors import ImageError


@dataclass
class Task:
    """One unit of work producing one output item."""

    key: str  # stable, unique: drives the item's seed and reuse (e.g. the source's relative path)
    inputs: list[Path] = field(default_factory=list)  # files whose bytes the output depends on
    params: dict = field(default_factory=dict)  # per-item parameters, recorded and fingerprinted
    payload: Any = None  # anything else the worker needs (picklable, not fingerprinted)
    source: str | None = None  # what to name in messages (defaults to key)
    seed: int = 0  # filled by StageRun.plan from (config seed, key)
    fingerprint: str = ""  # filled by StageRun.plan


@dataclass
class TaskResult:
    """What a worker did with one task."""

    key: str
    status: str = "ok"  # ok | skipped | failed
    outputs: list[str] = field(default_factory=list)  # files written in OUT, relative; first = the item
    row: dict = field(default_factory=dict)  # extra manifest fields (tags, params, warnings, ...)
    warnings: list[str] = field(default_factory=list)
    reason: str | None = None
    seconds: float = 0.0


def _run_one(fn: Callable[[Task, Any], TaskResult], task: Task, shared: Any) -> TaskResult:
    """Run a task, turning exceptions into skipped (bad input) or failed (anything else) results."""
    t0 = time.perf_counter()
    try:
        result = fn(task, shared)
    except ImageError as exc:
        result = TaskResult(key=task.key, status="skipped", reason=str(exc))
    except Exception as exc:  # a failure of one item must not stop the others
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
        result = TaskResult(key=task.key, status="failed", reason=f"{type(exc).__name__}: {exc}{where}")
    result.seconds = time.perf_counter() - t0
    return result


_WORKER_STATE: dict = {}
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int) -> None:
    """Make this (child) process die when `parent_pid` dies, even by `kill -9`.

    Linux: the kernel sends SIGKILL when our parent exits (prctl PR_SET_PDEATHSIG; a pool worker's
    parent is the forkserver, which itself exits when the main process goes). Everywhere: a daemon
    thread also watches the parent and the main process, for systems without prctl and for a parent
    that died before the prctl call.
    """
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    first_parent = os.getppid()

    def gone() -> bool:
        if os.getppid() != first_parent:
            return True
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            pass  # exists but not ours to signal (cannot happen for our own parent; harmless)
        return False

    if gone():
        os._exit(1)

    def watch() -> None:
        while not gone():
            time.sleep(0.5)
        os._exit(1)  # no clean-up: the parent is gone and nobody reads our results

    threading.Thread(target=watch, name="datakit-parent-watch", daemon=True).start()


def _worker_init(fn, shared, threads: int, environ: dict | None = None, parent_pid: int | None = None) -> None:
    # Ctrl-C reaches the whole process group: only the parent handles it. A worker interrupted
    # inside the pool's queue machinery can die holding a lock, and shutdown then waits forever.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_pid is not None:
        # A worker outliving its parent (kill -9, OOM) would keep writing into OUT after the OUT
        # lock is gone, and hold hundreds of MB for minutes.
        die_with_parent(parent_pid)
    _WORKER_STATE["fn"] = fn
    _WORKER_STATE["shared"] = shared
    if environ is not None:
        # Forkserver workers inherit the environment of the moment the server started, not of
        # now: take the parent's current one (DATAKIT_MAX_PIXELS, U2NET_HOME, HF_HOME, ...).
        for key in [k for k in os.environ if k not in environ]:
            del os.environ[key]
        os.environ.update(environ)
    # One pool process per core: keep each process's libraries single-threaded to avoid oversubscription.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    with contextlib.suppress(Exception):
        import cv2

        cv2.setNumThreads(threads)


def _worker_call(task: Task) -> TaskResult:
    return _run_one(_WORKER_STATE["fn"], task, _WORKER_STATE["shared"])


# Pools running now, so an interrupt can stop their workers from anywhere (see stop_all_workers).
_ACTIVE_POOLS: "weakref.WeakSet[ProcessPoolExecutor]" = weakref.WeakSet()


def _pool_processes(pool: ProcessPoolExecutor) -> list:
    # The executor keeps no public handle on its processes before Python 3.14 (terminate_workers).
    return list((getattr(pool, "_processes", None) or {}).values())


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Kill a pool's workers now and drop its queue: every output is written atomically, so an
    item cut off half-way leaves only a temporary file that the next run removes."""
    processes = _pool_processes(pool)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.kill()
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)
    with contextlib.suppress(Exception):
        pool.shutdown(wait=True)
    _ACTIVE_POOLS.discard(pool)


def stop_all_workers() -> None:
    """Kill the workers of every running pool (a second Ctrl-C, or a stage giving up)."""
    for pool in list(_ACTIVE_POOLS):
        stop_pool(pool)


def default_workers() -> int:
    """All cores available to this process."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS/Windows
        return max(1, os.cpu_count() or 1)


def parallel_map(
    fn: Callable[[Task, Any], TaskResult], tasks: list[Task], *, workers: int, shared: Any = None
) -> Iterator[TaskResult]:
    """Yield one result per task (completion order); in-process when workers <= 1."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _run_one(fn, task, shared)
        return
    import multiprocessing as mp

    # forkserver: safe with the progress bar's thread and fast to start on Linux.
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    workers = min(workers, len(tasks))
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=ctx, initializer=_worker_init,
        initargs=(fn, shared, 1, dict(os.environ), os.getpid()),
    )
    _ACTIVE_POOLS.add(pool)
    try:
        # Bounded submission keeps memory flat for big runs.
        pending = set()
        it = iter(tasks)
        for task in it:
            pending.add(pool.submit(_worker_call, task))
            if len(pending) >= workers * 4:
                break
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
            for task in it:
                pending.add(pool.submit(_worker_call, task))
                if len(pending) >= workers * 4:
                    break
    except BaseException:
        # Interrupted (Ctrl-C) or the consumer stopped: stop at once. Waiting for the items in
        # flight made Ctrl-C slow, and a second Ctrl-C inside that wait left the pool hung for good.
        stop_pool(pool)
        raise
    _ACTIVE_POOLS.discard(pool)
    pool.shutdown(wait=True)
