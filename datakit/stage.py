"""The stage contract: plan (reuse what is unchanged), run tasks in a pool, write manifest then datakit.json.

A stage builds a list of `Task`s (one per output item: a key, the input files it depends on and its
parameters), hands them to `StageRun.plan`, runs the returned to-do list with `StageRun.map` (a
process pool with a progress bar) or its own batching (GPU stages, then `StageRun.record`), and
calls `StageRun.finish`. Re-running with unchanged inputs and config finds nothing to do.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from datakit import __version__
from datakit.console import Reporter
from datakit.errors import EXIT_OK, EXIT_PARTIAL, EXIT_RUNTIME, StageError, UsageError
from datakit.imageio import max_pixels, remove_stale_temporaries
from datakit.lock import acquire as acquire_out_lock
from datakit.manifest import (
    MANIFEST,
    STAGE_INFO,
    carried_from,
    hash_file,
    hash_json,
    read_manifest,
    read_stage_info,
    stage_lineage,
    write_manifest,
    write_stage_info,
)
from datakit.paths import check_apart, is_inside
# The pool side lives in datakit.pool; stages import these names from here, as they always did.
from datakit.pool import (  # noqa: F401
    Task,
    TaskResult,
    default_workers,
    die_with_parent,
    parallel_map,
    stop_all_workers,
    stop_pool,
)
from datakit.seeding import item_seed

# Config keys that never change what a stage writes, so they do not invalidate earlier results.
VOLATILE_KEYS = frozenset({"workers", "quiet", "json", "force", "json_mode", "dry_run"})


class StageRun:
    """One run of a stage in OUT: decides what to redo, records results, writes the manifest last."""

    def __init__(
        self,
        stage: str,
        out_dir: str | os.PathLike,
        config: dict,
        *,
        inputs_dir: str | os.PathLike | None = None,
        upstream: dict | None = None,
        force: bool = False,
        reporter: Reporter | None = None,
        seed: int = 0,
        pre_skipped: Iterable[dict] = (),
        other_inputs: dict[str, str | os.PathLike | None] | None = None,
    ):
        self.stage = stage
        self.out = Path(out_dir)
        self.config = config
        self.inputs_dir = Path(inputs_dir) if inputs_dir else None
        self.upstream = upstream
        self.force = force
        self.reporter = reporter or Reporter(quiet=True)
        self.seed = int(seed)
        self.started = time.perf_counter()
        self._hash_cache: dict = {}
        self.results: dict[str, TaskResult] = {}
        self.rows: dict[str, dict] = {}
        self.pre_skipped = list(pre_skipped)
        self.reused = 0
        self.processed = 0
        self.tasks: list[Task] = []
        # Folders read besides IN (`--backgrounds`, other concepts): OUT must stay apart from them too.
        self.other_inputs = dict(other_inputs or {})
        self._lock = None
        self._check_out_dir()
        self.old_rows = self._own_rows(read_manifest(self.out))
        self.old_info = read_stage_info(self.out) if (self.out / STAGE_INFO).exists() else None
        self.config_hash = hash_json({k: v for k, v in config.items() if k not in VOLATILE_KEYS})

    # -- set-up -------------------------------------------------------------------------------
    def _check_out_dir(self) -> None:
        max_pixels()  # a bad DATAKIT_MAX_PIXELS is one usage error now, not a failure of every item
        if self.inputs_dir is not None:
            a, b = self.out.resolve(), self.inputs_dir.resolve()
            if a == b:
                raise UsageError(f"OUT must differ from IN (both are {self.out}): a stage never writes into its input")
            if b in a.parents:
                raise UsageError(
                    f"OUT {self.out} is inside IN {self.inputs_dir}: a stage never writes into its input "
                    "(put OUT beside IN instead)"
                )
        check_apart(self.out, {"IN": self.inputs_dir, **self.other_inputs})
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"OUT exists and is not a folder: {self.out}")
        if self.out.is_dir():
            self._refuse_foreign_folder()
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create OUT {self.out}: {exc.strerror}") from exc
        if not os.access(self.out, os.W_OK):
            raise UsageError(f"OUT is not writable: {self.out}")
        # One run per OUT: a second one would mix its files with ours. Taken before anything in OUT
        # is read or cleaned (the temporaries below may be the running one's). The kernel lets go
        # when this process dies; otherwise when this StageRun is dropped or close() is called.
        lock = acquire_out_lock(self.out, f"this {self.stage} run")
        self._lock = lock
        weakref.finalize(self, lock.release)
        remove_stale_temporaries(self.out)

    def close(self) -> None:
        """Release OUT's lock now (it is also released when the run object goes away or the process ends)."""
        if self._lock is not None:
            self._lock.release()

    def _own_rows(self, rows: list[dict]) -> dict[str, dict]:
        """This stage's earlier rows, minus any whose files lie outside OUT (a hand-edited manifest):
        those would be deleted, moved or trusted by path, so they are dropped and named instead."""
        kept: dict[str, dict] = {}
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                continue
            names = [row.get("file")] if row.get("file") is not None else []
            outputs = row.get("outputs", [])
            names += outputs if isinstance(outputs, list) else [None]
            bad = [n for n in names if not _names_inside(self.out, n)]
            if bad:
                self.reporter.warn(
                    f"{self.out / MANIFEST}: ignored the row of {row['key']!r}: its file {bad[0]!r} is not inside OUT"
                )
                continue
            kept[row["key"]] = row
        return kept

    def _refuse_foreign_folder(self) -> None:
        """Never write over files that this stage did not make.

        An OUT holding someone's images is nearly always IN and OUT swapped on the command line
        (`datakit cutout build/cutout samples/subjects`): the stage would overwrite the originals
        with same-named outputs. Another stage's OUT would lose that stage's results the same way.
        """
        has_manifest = (self.out / MANIFEST).exists()
        if (self.out / STAGE_INFO).exists():
            other = read_stage_info(self.out) or {}
            stage = other.get("stage")
            if stage and stage != self.stage:
                raise UsageError(
                    f"OUT {self.out} holds the output of the {stage} stage; writing {self.stage} there would "
                    "overwrite it: give this stage its own folder"
                )
            return
        if has_manifest:  # a run of a stage that was interrupted: its own files
            return
        foreign = sorted(p.name for p in self.out.iterdir() if not p.name.startswith(".") and p.is_file())
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise UsageError(
                f"OUT {self.out} already holds files datakit did not write ({shown}); a stage would overwrite "
                "same-named ones: give it a new or empty folder (are IN and OUT swapped?)"
            )

    # -- planning -----------------------------------------------------------------------------
    def fingerprint(self, task: Task) -> str:
        """Hash of everything the task's output depends on."""
        try:
            hashes = [hash_file(p, self._hash_cache) for p in task.inputs]
        except OSError:
            hashes = ["missing"]
        return hash_json([self.stage, self.config_hash, task.key, task.params, hashes])

    def plan(self, tasks: list[Task]) -> list[Task]:
        """Fill seeds and fingerprints; reuse unchanged results; return the tasks still to do."""
        keys = [t.key for t in tasks]
        if len(set(keys)) != len(keys):
            dupes = sorted({k for k in keys if keys.count(k) > 1})
            raise StageError(f"internal: duplicate task keys {dupes[:5]}")
        self.tasks = tasks
        todo: list[Task] = []
        for task in tasks:
            task.seed = item_seed(self.seed, task.key)
            task.fingerprint = self.fingerprint(task)
            old = self.old_rows.get(task.key)
            if (
                not self.force
                and old is not None
                and old.get("fingerprint") == task.fingerprint
                and old.get("status") in ("ok", "skipped")
                and all((self.out / f).is_file() for f in old.get("outputs", []))
            ):
                self.rows[task.key] = old
                self.reused += 1
            else:
                todo.append(task)
        return todo

    def begin(self, tasks: list[Task], noun: str = "items") -> list[Task] | None:
        """Plan and say so: None when everything is up to date (nothing to do), else the tasks to do."""
        todo = self.plan(tasks)
        if not todo and self.nothing_to_do():
            self.reporter.info(
                f"{self.stage}: nothing to do, all {len(tasks)} {noun} are up to date in {self.out} (--force redoes them)"
            )
            return None
        if self.reused:
            self.reporter.info(f"{self.stage}: {self.reused} {noun} unchanged, {len(todo)} to do")
        return todo

    def nothing_to_do(self) -> bool:
        """True when every task was reused and the last run finished with the same config and item set."""
        if self.old_info is None or self.force:
            return False
        old_keys = {k for k in self.old_rows if not k.startswith("skipped:")}
        same_items = set(self.rows) == old_keys and len(self.rows) == len(self.tasks)
        return same_items and self.old_info.get("config_hash") == self.config_hash

    def invalidate(self) -> None:
        """Remove datakit.json before doing work, so a run killed half-way is never trusted."""
        with contextlib.suppress(FileNotFoundError):
            (self.out / STAGE_INFO).unlink()
        if not (self.out / MANIFEST).exists():
            # Marks OUT as a datakit stage's work in progress: a first run killed outright (SIGKILL,
            # out of memory) leaves outputs without rows, and the re-run must not take them for a
            # user's files (see _refuse_foreign_folder). Downstream stages still refuse the folder.
            write_manifest(self.out, [])

    # -- running ------------------------------------------------------------------------------
    def record(self, task: Task, result: TaskResult) -> None:
        """Add a task's result to the manifest being built."""
        self.processed += 1
        self.results[task.key] = result
        row = {
            "file": result.outputs[0] if result.status == "ok" and result.outputs else None,
            "key": task.key,
            "source": task.source or task.key,
            "status": result.status,
            "seed": task.seed,
            "fingerprint": task.fingerprint,
            "outputs": list(result.outputs) if result.status == "ok" else [],
        }
        if task.params:
            row["params"] = task.params
        row.update(result.row)
        row["warnings"] = list(result.warnings) + list(row.get("warnings", []))
        if result.reason:
            row["reason"] = result.reason
        self.rows[task.key] = row

    def map(
        self,
        fn: Callable[[Task, Any], TaskResult],
        tasks: list[Task],
        *,
        workers: int,
        shared: Any = None,
        description: str | None = None,
    ) -> None:
        """Run tasks through a process pool (or in-process) with a progress bar, recording each result."""
        by_key = {t.key: t for t in tasks}
        try:
            with self.reporter.progress(len(tasks), description or self.stage) as bar:
                for result in parallel_map(fn, tasks, workers=workers, shared=shared):
                    self.record(by_key[result.key], result)
                    bar.advance(1)
        except KeyboardInterrupt:
            self.save_progress()
            raise

    def save_progress(self) -> None:
        """After an interruption: a manifest of what is done, so a re-run reuses it (no datakit.json:
        the run is not complete, and downstream stages refuse the folder until it is)."""
        rows = dict(self.old_rows)  # items not reached yet keep their old rows (and stale files stay owned)
        rows.update(self.rows)
        with contextlib.suppress(OSError):
            write_manifest(self.out, list(rows.values()))

    # -- finishing ----------------------------------------------------------------------------
    def _remove_stale_outputs(self) -> list[str]:
        """Delete files this stage wrote before that no current item owns."""
        keep = {f for row in self.rows.values() for f in row.get("outputs", [])}
        removed = []
        for row in self.old_rows.values():
            for f in row.get("outputs", []):
                if f not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        (self.out / f).unlink()
                        removed.append(f)
        return removed

    def finish(self, *, extra: dict | None = None, carry: dict | None = None, counts_in: int | None = None) -> dict:
        """Write manifest.jsonl, remove stale outputs, then datakit.json; return the summary."""
        ordered = [self.rows[t.key] for t in self.tasks if t.key in self.rows]
        for entry in self.pre_skipped:
            ordered.append(
                {"file": None, "key": f"skipped:{entry['source']}", "source": entry["source"], "status": "skipped",
                 "reason": entry["reason"], "outputs": [], "warnings": []}
            )
        write_manifest(self.out, ordered)
        removed = self._remove_stale_outputs()
        skipped = [{"source": r["source"], "reason": r.get("reason", "")} for r in ordered if r["status"] == "skipped"]
        failed = [{"source": r["source"], "reason": r.get("reason", "")} for r in ordered if r["status"] == "failed"]
        out_count = sum(1 for r in ordered if r["status"] == "ok")
        total = time.perf_counter() - self.started
        carried = carried_from(self.upstream)
        carried.update({k: v for k, v in (carry or {}).items() if v is not None})
        info = {
            "stage": self.stage,
            # Lineage: a later stage can tell composites from originals even with tag/tags in between.
            "stages": stage_lineage(self.upstream) + [self.stage],
            "datakit_version": __version__,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": str(self.inputs_dir) if self.inputs_dir else None,
            "output": str(self.out),
            "config": self.config,
            "config_hash": self.config_hash,
            "counts": {
                "in": counts_in if counts_in is not None else len(self.tasks) + len(self.pre_skipped),
                "out": out_count,
                "reused": self.reused,
                "processed": self.processed,
                "skipped": len(skipped),
                "failed": len(failed),
            },
            "timings": {
                "total_s": round(total, 3),
                "per_item_s": round(sum(r.seconds for r in self.results.values()) / max(1, len(self.results)), 4),
            },
            "skipped": skipped,
            "failed": failed,
            "removed_stale": removed,
            "warnings": list(self.reporter.warnings),
            "carry": carried,
        }
        if extra:
            info.update(extra)
        write_stage_info(self.out, info)
        return info

    def summary_from_previous(self) -> dict:
        """Summary for a run that found nothing to do (datakit.json left untouched)."""
        info = dict(self.old_info or {})
        info["nothing_to_do"] = True
        counts = dict(info.get("counts", {}))
        counts["reused"] = self.reused
        counts["processed"] = 0
        info["counts"] = counts
        info.setdefault("timings", {})
        info["timings"] = dict(info["timings"], total_s=round(time.perf_counter() - self.started, 3))
        return info


def _names_inside(out: Path, name) -> bool:
    """True when `name` (from a manifest) is a relative path that stays inside `out`."""
    if not isinstance(name, str) or not name or "\x00" in name or os.path.isabs(name):
        return False
    return is_inside(out / name, out)


def exit_code_for(info: dict) -> int:
    """0 when every input became an output, 3 when some were skipped or failed, 5 when all failed (documented)."""
    counts = info.get("counts", {})
    if counts.get("failed") and not counts.get("out") and not counts.get("skipped"):
        return EXIT_RUNTIME  # nothing worked, and not because of bad inputs: the work itself failed
    if counts.get("skipped") or counts.get("failed"):
        return EXIT_PARTIAL
    return EXIT_OK


def run_simple_stage(
    run: StageRun,
    tasks: list[Task],
    fn: Callable[[Task, Any], TaskResult],
    *,
    workers: int,
    shared: Any = None,
    extra: dict | None = None,
    carry: dict | None = None,
    description: str | None = None,
) -> dict:
    """Plan, skip when nothing changed, run the pool, finish: the whole contract for CPU stages."""
    todo = run.begin(tasks)
    if todo is None:
        return run.summary_from_previous()
    run.invalidate()
    run.map(fn, todo, workers=workers, shared=shared, description=description)
    return run.finish(extra=extra, carry=carry)
