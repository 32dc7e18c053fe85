"""Red team (issue 16): one run per OUT (an OS lock the kernel releases), pool workers that die with
their parent (also after `kill -9`), and Ctrl-C pressed twice ending the run at once with exit 130.
Real `datakit` processes with process pools; Linux (/proc) to see the process trees.

The waits below are bounds against hangs (a run that never ends fails the test instead of hanging
the suite), not measurements: nothing asserts how fast anything is.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from robust_util import (
    alive,
    datakit,
    descendants,
    kill_tree,
    make_backgrounds,
    make_cutouts,
    make_drawings,
    start,
    wait_until,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process trees from /proc")

HANG_BOUND_S = 90  # far above any normal exit; reached only by a hang


def _started_pool(proc, out: Path, pattern: str, workers: int = 2) -> set[int]:
    """Wait until the run has its pool (forkserver + workers) and a first output; return its descendants."""
    ok = wait_until(lambda: proc.poll() is None and len(descendants(proc.pid)) >= workers + 1 and any(out.glob(pattern)),
                    HANG_BOUND_S)
    assert ok, f"the run did not start its pool (exit {proc.poll()}): {proc.stderr.read().decode() if proc.poll() is not None else ''}"
    return descendants(proc.pid)


def test_a_second_run_on_the_same_out_exits_2_naming_the_running_one(tmp_path):
    out = tmp_path / "bg"
    first = start("backgrounds", out, "--count", "2000", "--size", "128", "--workers", "2", "--quiet")
    try:
        workers = _started_pool(first, out, "bg*.png")
        second = start("backgrounds", out, "--count", "2000", "--size", "128", "--workers", "2", "--seed", "1", "--quiet")
        try:
            _, err = second.communicate(timeout=HANG_BOUND_S)
        finally:
            if second.poll() is None:
                kill_tree(second, descendants(second.pid))
        err = err.decode()
        assert second.returncode == 2, err
        assert err.startswith("error: ") and f"PID {first.pid}" in err and "datakit backgrounds" in err
        assert "--seed" not in err or "--count 2000" in err  # the first run's own command line, not ours
        assert first.poll() is None  # the first run goes on, undisturbed
    finally:
        kill_tree(first, workers)
    # The kernel released the lock with the process: the next run takes the folder at once.
    done = datakit("backgrounds", out, "--count", "3", "--size", "64", "--workers", "1", "-q")
    assert done.returncode == 0, done.stderr


def test_pool_workers_die_with_their_parent_after_kill_9(tmp_path):
    out = tmp_path / "bg"
    proc = start("backgrounds", out, "--count", "2000", "--size", "128", "--workers", "2", "--quiet")
    tree = _started_pool(proc, out, "bg*.png")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert wait_until(lambda: not any(alive(p) for p in tree), HANG_BOUND_S), \
            f"workers outlived their parent: {[p for p in tree if alive(p)]}"
    finally:
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    rerun = datakit("backgrounds", out, "--count", "3", "--size", "64", "--workers", "1", "-q")
    assert rerun.returncode == 0, rerun.stderr


def _ctrl_c_twice(proc, tree: set[int]) -> str:
    """Press Ctrl-C twice within a moment (SIGINT to the whole process group, as a terminal does)."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=HANG_BOUND_S)
    finally:
        if proc.poll() is None:
            kill_tree(proc, tree)
    return err.decode()


def test_ctrl_c_twice_stops_composite_with_130_and_no_live_workers(tmp_path):
    cut = make_cutouts(tmp_path / "cut", 4)
    bg = make_backgrounds(tmp_path / "bg", 300, size=128)
    out = tmp_path / "comp"
    proc = start("composite", cut, out, "--backgrounds", bg, "--size", "128", "--workers", "2", "--quiet")
    tree = _started_pool(proc, out, "*__bg*.png")
    err = _ctrl_c_twice(proc, tree)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert wait_until(lambda: not any(alive(p) for p in tree), 10), [p for p in tree if alive(p)]
    assert not (out / "datakit.json").exists()
    rerun = datakit("composite", cut, out, "--backgrounds", bg, "--size", "128", "--workers", "2", "-q", "--bg-count", "300")
    assert rerun.returncode == 0, rerun.stderr


def test_ctrl_c_twice_stops_cutout_with_130_and_no_live_workers(tmp_path):
    src = make_drawings(tmp_path / "in", 120, size=160)
    out = tmp_path / "cut"
    proc = start("cutout", src, out, "--workers", "2", "--quiet")
    tree = _started_pool(proc, out, "pose*.png")
    err = _ctrl_c_twice(proc, tree)
    assert proc.returncode == 130, err
    assert wait_until(lambda: not any(alive(p) for p in tree), 10), [p for p in tree if alive(p)]
    assert not (out / "datakit.json").exists()


def test_the_lock_lives_as_long_as_the_run_in_this_process(tmp_path):
    """In-process runs (tests, notebooks) hold OUT while their StageRun lives, and let go after."""
    from datakit.stage import StageRun

    out = tmp_path / "out"
    src = make_drawings(tmp_path / "in", 1)
    run = StageRun("tag", out, {"x": 1}, inputs_dir=src)
    again = StageRun("tag", out, {"x": 1}, inputs_dir=src)  # the same process may open OUT again
    blocked = datakit("tag", src, out, "--model", "none")
    assert blocked.returncode == 2 and "in use by another datakit run" in blocked.stderr
    assert f"PID {os.getpid()}" in blocked.stderr
    del run, again  # both gone: the lock goes with them
    done = datakit("tag", src, out, "--model", "none", "-q")
    assert done.returncode == 0, done.stderr
    assert not (out / ".datakit.lock").exists()
