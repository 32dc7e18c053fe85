"""`datakit emit`: lay captioned folders out as a kohya-ready, repeat-balanced dataset.

Each concept's items become `OUT/img/<repeats>_<name>/` (images hard-linked when kohya can read them
as they are, else re-encoded as PNG; same-stem `.txt` captions), regularisation images go to
`OUT/reg/<repeats>_<class>/`, and `dataset.toml`, `metadata.jsonl`, `plan.json`/`plan.csv` and
`report.html` describe the result. The repeat count is part of the folder name but depends on how
many images survive validation, so items are written where the plan predicts and moved (a rename)
when skipped images change the arithmetic (emit/layout.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from datakit.console import Reporter
from datakit.emit import kohya_toml, layout
from datakit.emit.concepts import Concept, discover_inputs, merge_carry, resolve_concepts
from datakit.emit.config import EmitConfig, EmitResult, check_options, parse_color
from datakit.emit.item import EmitShared, preview_from_file, process_item
from datakit.emit.report import caption_stats, write_report
from datakit.emit.side_files import (
    DATASET_TOML,
    METADATA,
    REPORT,
    print_plan,
    toml_config,
    write_dataset_toml,
    write_metadata,
    write_plan,
)
from datakit.emit.validation import bucket_resolutions, find_problems, long_captions
from datakit.errors import StageError
from datakit.inputs import sibling
from datakit.results import Carry
from datakit.stage import StageRun, Task, default_workers

__all__ = ["EmitConfig", "EmitResult", "parse_color", "run_emit"]


def run_emit(cfg: EmitConfig, reporter: Reporter) -> EmitResult:
    """Run the emit stage; returns what it made (the previous run's result when nothing changed)."""
    check_options(cfg)
    concepts = resolve_concepts(cfg)
    flatten = parse_color(cfg.flatten_color)
    discover_inputs(concepts)
    carry = merge_carry([c for c in concepts if not c.is_reg], reporter)
    keep_tokens = cfg.keep_tokens if cfg.keep_tokens is not None else (
        carry.keep_tokens if carry.keep_tokens is not None else 1 if carry.trigger else 0)
    config = _config_dict(cfg, concepts, keep_tokens, "#%02x%02x%02x" % flatten, carry.trigger)
    tasks, pre_skipped = _tasks(concepts)

    out = Path(cfg.out_dir)
    run = StageRun("emit", out, config, force=cfg.force, reporter=reporter, seed=cfg.seed, pre_skipped=pre_skipped)
    layout.remove_temporaries(out)
    todo = run.plan(tasks)
    upgraded = layout.drop_old_thumbnails(run)
    finished_files = all((out / f).is_file() for f in (DATASET_TOML, REPORT, METADATA))
    if not todo and run.nothing_to_do() and finished_files and not upgraded:
        reporter.info(f"emit: nothing to do, the dataset in {out} is up to date (--force rebuilds it)")
        return run.summary_from_previous(EmitResult)

    # Write the items, each into the folder its concept will most likely end in.
    layout.predict_subdirs(run, tasks, todo, concepts, cfg)
    if run.reused:
        reporter.info(f"emit: {run.reused} items unchanged, {len(todo)} to do")
    run.invalidate()
    shared = EmitShared(
        out=str(out), flatten=flatten, flatten_name=config["flatten_color"], copy=cfg.copy, min_size=cfg.min_size,
        no_upscale=cfg.bucket_no_upscale, buckets=bucket_resolutions(cfg.resolution, *_bucket_range(cfg)),
    )
    run.map(process_item, todo, workers=cfg.workers or default_workers(), shared=shared, description="emit")

    # Now that the real counts are known: the plan, and every item in its final folder.
    counts = layout.count_ok(run, tasks)
    empty = [c.name for c in concepts if not counts.get(c.name)]
    if empty:
        run.save_progress()  # the manifest names every skipped image and why (no datakit.json: not done)
        raise StageError(f"no usable images left in concept(s) {', '.join(empty)}: every image was skipped (see {out}/manifest.jsonl)")
    plan = layout.plan_for(counts, concepts, cfg)
    final = layout.final_folders(plan, concepts)
    old_dirs = layout.move_into_place(run, tasks, final, out)

    # The side files, the checks and the report.
    rows = [run.rows[t.key] for t in tasks if run.rows.get(t.key, {}).get("status") == "ok"]
    findings = find_problems(rows, dup_threshold=cfg.dup_threshold, resolution=cfg.resolution,
                             flatten_color=cfg.flatten_color, reporter=reporter)
    write_dataset_toml(toml_config(concepts, plan, final, cfg, keep_tokens, carry.trigger, out), out)
    write_metadata(rows, out)
    write_plan(plan, final, out)
    print_plan(plan, final, reporter)
    stats = caption_stats(out, final)
    findings.over_75_tokens = long_captions(stats, reporter)
    write_report(out / REPORT, plan=plan, folders=final, rows=rows, previews=_previews(run, rows), findings=findings,
                 trigger=carry.trigger, keep_tokens=keep_tokens, stats=stats)

    result = run.finish(
        EmitResult(plan=dict(plan.to_dict(), folders=final), dataset_toml=DATASET_TOML, metadata=METADATA,
                   report=REPORT, resolution=cfg.resolution, findings=findings),
        carry=Carry(trigger=carry.trigger, keep_tokens=keep_tokens),
    )
    layout.remove_empty_dirs(out, old_dirs)
    return result


def _config_dict(cfg: EmitConfig, concepts: list[Concept], keep_tokens: int, flatten: str, trigger: str | None) -> dict:
    """The config recorded in datakit.json and fingerprinted (concept names sanitised, keep_tokens resolved)."""
    return {
        "out_dir": str(cfg.out_dir),
        "concepts": [{"name": c.name, "dir": str(c.folder), "weight": c.weight, "alpha_mask": c.alpha, "is_reg": c.is_reg} for c in concepts],
        "keep_tokens": keep_tokens,
        "target_steps": cfg.target_steps,
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "resolution": cfg.resolution,
        "bucket_no_upscale": cfg.bucket_no_upscale,
        "shuffle_caption": cfg.shuffle_caption,
        "copy": cfg.copy,
        "flatten_color": flatten,
        "min_size": cfg.min_size,
        "dup_threshold": cfg.dup_threshold,
        "trigger": trigger,
        "seed": cfg.seed,
        "workers": cfg.workers,
        "force": cfg.force,
    }


def _tasks(concepts: list[Concept]) -> tuple[list[Task], list[dict]]:
    """One task per image of every concept (keyed `<concept>/<item>`), and the files discovery skipped."""
    tasks: list[Task] = []
    pre_skipped: list[dict] = []
    for c in concepts:
        for entry in c.inputs.skipped:
            pre_skipped.append({"source": f"{c.name}/{entry['source']}", "reason": entry["reason"]})
        for item in c.inputs.items:
            txt, cap = sibling(item.path, ".txt"), sibling(item.path, ".caption")
            tasks.append(Task(
                key=f"{c.name}/{item.key}",
                inputs=[item.path, *(p for p in (txt, cap) if p is not None)],
                params={"concept": c.name, "stem": item.stem, "alpha": c.alpha, "reg": c.is_reg},
                payload={"path": str(item.path), "txt": str(txt) if txt else None, "caption": str(cap) if cap else None},
                source=f"{c.name}/{item.key}",
            ))
    return tasks, pre_skipped


def _bucket_range(cfg: EmitConfig) -> tuple[int, int]:
    s = kohya_toml.bucket_settings(cfg.resolution)
    return s["min_bucket_reso"], s["max_bucket_reso"]


def _previews(run: StageRun, rows: list[dict]) -> dict[str, bytes | None]:
    """Each item's report picture: from the worker when made in this run, else from its emitted file."""
    previews = {r["key"]: run.results[r["key"]].preview if r["key"] in run.results else None for r in rows}
    missing = [r for r in rows if previews[r["key"]] is None]
    with ThreadPoolExecutor(max_workers=2) as pool:  # decoding releases the GIL
        previews.update(zip((r["key"] for r in missing), pool.map(lambda r: preview_from_file(run.out / r["file"]), missing)))
    return previews
