"""`datakit emit`: lay captioned folders out as a kohya-ready, repeat-balanced dataset.

Each concept's items become `OUT/img/<repeats>_<name>/` (images hard-linked when kohya can read them
as they are, else re-encoded as PNG; same-stem `.txt` captions), regularisation images go to
`OUT/reg/<repeats>_<class>/`, and `dataset.toml`, `metadata.jsonl`, `plan.json`/`plan.csv` and
`report.html` describe the result. The repeat count is part of the folder name but depends on how
many images survive validation, so items are written where the plan predicts and moved (a rename)
when skipped images change the arithmetic.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datakit.console import Reporter
from datakit.emit import kohya_toml
from datakit.emit.balance import Plan, make_plan
from datakit.emit.names import sanitize_name
from datakit.emit.validation import bucket_resolutions, fit_bucket, near_duplicates, phash
from datakit.errors import ImageError, StageError, UsageError
from datakit.imageio import (
    link_or_copy,
    remove_stale_temporaries,
    open_image,
    save_image_atomic,
    save_png_array_atomic,
    write_json_atomic,
    write_text_atomic,
)
from datakit.inputs import discover, read_caption_file, sibling
from datakit.manifest import carried_from
from datakit.paths import check_apart
from datakit.stage import StageRun, Task, TaskResult

# Extensions kohya's loader reads with Pillow as they are; anything else is re-encoded as PNG.
KOHYA_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
THUMB_SIZE = 192
THUMB_DIR = ".thumbs"


@dataclass
class EmitConfig:
    """Everything `datakit emit` needs (the CLI builds it from its options)."""

    out_dir: Path
    concepts: list[tuple[str, Path]]  # (name as given, folder)
    weights: dict[str, float] = field(default_factory=dict)
    reg_dir: Path | None = None
    reg_class: str | None = None
    alpha_mask: list[str] = field(default_factory=list)
    keep_tokens: int | None = None
    target_steps: int | None = None
    epochs: int | None = None
    batch_size: int = 1
    resolution: int = 512
    bucket_no_upscale: bool = False
    shuffle_caption: bool = True
    copy: bool = False
    flatten_color: str = "#ffffff"
    min_size: int = 64
    dup_threshold: int = 3
    seed: int = 0
    workers: int | None = None
    force: bool = False


@dataclass
class _Concept:
    name: str  # sanitised: the folder name after `<repeats>_`
    folder: Path
    is_reg: bool = False
    alpha: bool = False
    weight: float = 1.0
    inputs: object = None


def parse_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb', 'rrggbb' or 'white'/'black'/'grey' -> an RGB triple."""
    named = {"white": "ffffff", "black": "000000", "grey": "808080", "gray": "808080"}
    hexpart = named.get(text.strip().lower(), text.strip().lstrip("#"))
    if len(hexpart) != 6 or any(c not in "0123456789abcdefABCDEF" for c in hexpart):
        raise UsageError(f"--flatten-color expects #rrggbb or white/black/grey, got {text!r}")
    return tuple(int(hexpart[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


# -- per item (runs in pool workers) -------------------------------------------------------------


def _caption_for(payload: dict) -> tuple[str | None, str | None, list[str]]:
    """The caption text, where it came from, and notes (empty captions, .txt/.caption clash)."""
    notes: list[str] = []
    txt = Path(payload["txt"]) if payload.get("txt") else None
    cap = Path(payload["caption"]) if payload.get("caption") else None
    text_txt = read_caption_file(txt) if txt else None
    text_cap = read_caption_file(cap) if cap else None
    if txt and cap and text_txt != text_cap:
        notes.append("caption extension clash: .txt and .caption differ; the .txt one is used")
    text, source = (text_txt, ".txt") if txt else (text_cap, ".caption") if cap else (None, None)
    if source == ".caption":
        notes.append("caption read from .caption and written as .txt")
    # kohya reads a caption file's first line only: join lines so nothing is silently dropped.
    if text is not None:
        text = ", ".join(line.strip() for line in text.splitlines() if line.strip())
    if text is not None and not text:
        notes.append("empty caption file: kohya will use the class tokens")
        text = None
    if text is None and source is None:
        notes.append("no caption: kohya will use the class tokens")
    return text, source, notes


def process_item(task: Task, shared: dict) -> TaskResult:
    """Validate one image, write it (link or RGB/RGBA PNG), its .txt caption and a thumbnail."""
    p = task.payload
    src = Path(p["path"])
    out = Path(shared["out"])
    loaded = open_image(src)
    img = loaded.image
    w, h = img.size
    if min(w, h) < shared["min_size"]:
        raise ImageError(f"too small ({w}x{h}): the shorter side must be at least {shared['min_size']} px (--min-size)")
    notes = list(loaded.notes)
    arr = np.asarray(img)
    keep_alpha = task.params["alpha"]
    mode = "RGB"
    if img.mode == "RGBA" and int(arr[..., 3].min()) == 255:
        arr = arr[..., :3]
        notes.append("opaque alpha channel dropped")
        can_link = False
    elif img.mode == "RGBA" and keep_alpha:
        mode = "RGBA"
        can_link = loaded.source_format == "PNG" and loaded.source_mode == "RGBA" and not loaded.notes
    elif img.mode == "RGBA":
        # kohya loads with convert("RGB"), exposing whatever colour hides under transparent pixels.
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        bg = np.array(shared["flatten"], dtype=np.float32)
        arr = np.clip(arr[..., :3] * alpha + bg * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
        notes.append("transparent image flattened onto " + shared["flatten_name"])
        can_link = False
    else:
        can_link = loaded.source_mode == "RGB" and src.suffix.lower() in KOHYA_EXTENSIONS and not loaded.notes

    stem = task.params["stem"]
    subdir = p["subdir"]
    if can_link:
        name = f"{subdir}/{stem}{src.suffix.lower()}"
        written = link_or_copy(src, out / name, copy=shared["copy"])
    else:
        name = f"{subdir}/{stem}.png"
        save_png_array_atomic(np.ascontiguousarray(arr), out / name)
        written = "encoded"
    outputs = [name]

    text, source, cap_notes = _caption_for(p)
    notes.extend(cap_notes)
    if text is not None:
        write_text_atomic(out / f"{subdir}/{stem}.txt", text + "\n")
        outputs.append(f"{subdir}/{stem}.txt")

    # What the model will see (alpha over a light grey for masked concepts), for the hash and the report.
    rgb = arr if arr.shape[2] == 3 else (arr[..., :3] * (arr[..., 3:4] / 255.0) + 224 * (1 - arr[..., 3:4] / 255.0)).astype(np.uint8)
    from PIL import Image

    thumb = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    thumb_name = f"{THUMB_DIR}/{task.params['concept']}/{stem}.jpg"
    save_image_atomic(thumb, out / thumb_name, quality=82)
    outputs.append(thumb_name)

    fit = fit_bucket(w, h, shared["buckets"]) if not shared["no_upscale"] else None
    row = {
        "concept": task.params["concept"],
        "is_reg": task.params["reg"],
        "size": [w, h],
        "mode": mode,
        "written": written,
        "caption": text,
        "caption_source": source,
        "phash": f"{phash(rgb):016x}",
        "bucket": list(fit.bucket) if fit else None,
        "upscale": round(fit.scale, 3) if fit else None,
        "thumb": thumb_name,
    }
    return TaskResult(key=task.key, outputs=outputs, row=row, warnings=notes)


# -- the stage -----------------------------------------------------------------------------------


def _resolve_concepts(cfg: EmitConfig) -> list[_Concept]:
    """Sanitised, unique concept names with their weights and alpha-mask flags (usage errors early)."""
    if not cfg.concepts:
        raise UsageError("give at least one --concept NAME=DIR")
    concepts: list[_Concept] = []
    by_raw: dict[str, _Concept] = {}
    seen: dict[str, str] = {}
    for raw, folder in cfg.concepts:
        name = sanitize_name(raw)
        if name.casefold() in seen:
            raise UsageError(f"two concepts share the name {name!r} ({seen[name.casefold()]!r} and {raw!r}); names must differ")
        seen[name.casefold()] = raw
        c = _Concept(name=name, folder=Path(folder))
        concepts.append(c)
        by_raw[raw] = by_raw[name] = c

    def lookup(raw: str, option: str) -> _Concept:
        c = by_raw.get(raw) or next((c for c in concepts if c.name.casefold() == sanitize_name(raw).casefold()), None)
        if c is None:
            raise UsageError(f"{option} names {raw!r}, which is not a --concept (have: {', '.join(c.name for c in concepts)})")
        return c

    for raw, weight in cfg.weights.items():
        if not (weight > 0 and weight < float("inf")):
            raise UsageError(f"--weight {raw}={weight}: a weight must be a positive number")
        lookup(raw, "--weight").weight = float(weight)
    for raw in cfg.alpha_mask:
        lookup(raw, "--alpha-mask").alpha = True
    if (cfg.reg_dir is None) != (cfg.reg_class is None):
        raise UsageError("--reg DIR and --reg-class CLASS go together")
    if cfg.reg_dir is not None:
        reg_name = sanitize_name(cfg.reg_class or "")
        if reg_name.casefold() in seen:
            raise UsageError(f"--reg-class {cfg.reg_class!r} gives the same name as concept {seen[reg_name.casefold()]!r}; rename the concept")
        concepts.append(_Concept(name=reg_name, folder=Path(cfg.reg_dir), is_reg=True))
    # Emit renames and removes repeat folders inside OUT: a concept folder there (say a previous
    # OUT/img/1_x) would be renamed under the user, and OUT inside a concept folder is written into.
    check_apart(cfg.out_dir, {
        (f"the --reg folder ({c.name!r})" if c.is_reg else f"the input folder of concept {c.name!r}"): c.folder
        for c in concepts
    })
    return concepts


def _check_options(cfg: EmitConfig) -> None:
    if cfg.target_steps is not None and cfg.epochs is not None:
        raise UsageError("--target-steps and --epochs exclude each other: give one")
    for value, option in ((cfg.batch_size, "--batch-size"), (cfg.target_steps, "--target-steps"), (cfg.epochs, "--epochs")):
        if value is not None and value < 1:
            raise UsageError(f"{option} must be at least 1")
    if cfg.keep_tokens is not None and cfg.keep_tokens < 0:
        raise UsageError("--keep-tokens must be 0 or more")
    if cfg.resolution < 64 or cfg.resolution % 64:
        raise UsageError(f"--resolution must be a multiple of 64 (got {cfg.resolution})")


def _merge_carry(concepts: list[_Concept], reporter: Reporter) -> dict:
    """Trigger and keep_tokens from the upstream stages; the first concept wins a disagreement."""
    carry: dict = {}
    for c in concepts:
        for key, value in carried_from(c.inputs.upstream).items():
            if key in carry and carry[key] != value:
                reporter.warn(f"concept {c.name!r} carries {key}={value!r} but an earlier concept has {carry[key]!r}; using {carry[key]!r}")
            carry.setdefault(key, value)
    return carry


def _subdir(c: _Concept, repeats: int) -> str:
    return f"{'reg' if c.is_reg else 'img'}/{repeats}_{c.name}"


def _plan_for(counts: dict[str, int], concepts: list[_Concept], cfg: EmitConfig) -> Plan:
    train = [c for c in concepts if not c.is_reg]
    reg = next((c for c in concepts if c.is_reg), None)
    return make_plan(
        {c.name: max(1, counts.get(c.name, 0)) for c in train},
        {c.name: c.weight for c in train},
        reg=(reg.name, max(1, counts.get(reg.name, 0))) if reg else None,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        target_steps=cfg.target_steps,
    )


def _repeats(plan: Plan) -> dict[str, int]:
    r = {c.name: c.repeats for c in plan.concepts}
    if plan.reg:
        r[plan.reg.name] = plan.reg.repeats
    return r


def run_emit(cfg: EmitConfig, reporter: Reporter) -> dict:
    """Run the emit stage; returns the datakit.json info."""
    from datakit.stage import default_workers

    _check_options(cfg)
    concepts = _resolve_concepts(cfg)
    flatten = parse_color(cfg.flatten_color)
    for c in concepts:
        c.inputs = discover(c.folder, stage="emit")
        if not c.inputs.items:
            raise UsageError(f"concept {c.name!r} has no images in {c.folder}")
    carry = _merge_carry([c for c in concepts if not c.is_reg], reporter)
    keep_tokens = cfg.keep_tokens if cfg.keep_tokens is not None else carry.get("keep_tokens", 1 if carry.get("trigger") else 0)

    config = {
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
        "flatten_color": "#%02x%02x%02x" % flatten,
        "min_size": cfg.min_size,
        "dup_threshold": cfg.dup_threshold,
        "trigger": carry.get("trigger"),
        "seed": cfg.seed,
        "workers": cfg.workers,
        "force": cfg.force,
    }
    tasks: list[Task] = []
    pre_skipped: list[dict] = []
    for c in concepts:
        for entry in c.inputs.skipped:
            pre_skipped.append({"source": f"{c.name}/{entry['source']}", "reason": entry["reason"]})
        for item in c.inputs.items:
            txt, cap = sibling(item.path, ".txt"), sibling(item.path, ".caption")
            captions = [p for p in (txt, cap) if p is not None]
            tasks.append(
                Task(
                    key=f"{c.name}/{item.key}",
                    inputs=[item.path, *captions],
                    params={"concept": c.name, "stem": item.stem, "alpha": c.alpha, "reg": c.is_reg},
                    payload={"path": str(item.path), "txt": str(txt) if txt else None,
                             "caption": str(cap) if cap else None},
                    source=f"{c.name}/{item.key}",
                )
            )

    out = Path(cfg.out_dir)
    run = StageRun("emit", out, config, force=cfg.force, reporter=reporter, seed=cfg.seed, pre_skipped=pre_skipped)
    # StageRun cleans OUT itself; a run killed half-way can also leave temporaries in the subfolders.
    for top in ("img", "reg", THUMB_DIR):
        if (out / top).is_dir():
            for sub in (out / top).iterdir():
                remove_stale_temporaries(sub)
    todo = run.plan(tasks)
    finished_files = all((out / f).is_file() for f in ("dataset.toml", "report.html", "metadata.jsonl"))
    if not todo and run.nothing_to_do() and finished_files:
        reporter.info(f"emit: nothing to do, the dataset in {out} is up to date (--force rebuilds it)")
        return run.summary_from_previous()

    # Predict the repeats (every pending item assumed valid) so most items land in their final folder.
    predicted: dict[str, int] = {}
    for t in tasks:
        row = run.rows.get(t.key)
        if row is None or row.get("status") == "ok":
            predicted[t.params["concept"]] = predicted.get(t.params["concept"], 0) + 1
    guess = _repeats(_plan_for(predicted, concepts, cfg))
    by_name = {c.name: c for c in concepts}
    for t in todo:
        c = by_name[t.params["concept"]]
        t.payload["subdir"] = _subdir(c, guess[c.name])

    if run.reused:
        reporter.info(f"emit: {run.reused} items unchanged, {len(todo)} to do")
    run.invalidate()
    shared = {
        "out": str(out),
        "flatten": flatten,
        "flatten_name": config["flatten_color"],
        "copy": cfg.copy,
        "min_size": cfg.min_size,
        "no_upscale": cfg.bucket_no_upscale,
        "buckets": bucket_resolutions(cfg.resolution, *_bucket_range(cfg)),
    }
    run.map(process_item, todo, workers=cfg.workers or default_workers(), shared=shared, description="emit")

    counts: dict[str, int] = {}
    for t in tasks:
        if run.rows.get(t.key, {}).get("status") == "ok":
            counts[t.params["concept"]] = counts.get(t.params["concept"], 0) + 1
    empty = [c.name for c in concepts if not counts.get(c.name)]
    if empty:
        run.save_progress()  # the manifest names every skipped image and why (no datakit.json: not done)
        raise StageError(f"no usable images left in concept(s) {', '.join(empty)}: every image was skipped (see {out}/manifest.jsonl)")
    plan = _plan_for(counts, concepts, cfg)
    final = {c.name: _subdir(c, r) for c, r in ((by_name[n], r) for n, r in _repeats(plan).items())}
    old_dirs = _move_into_place(run, tasks, final, out)

    findings = _findings(run, tasks, cfg, reporter)
    trigger = carry.get("trigger")
    toml_config = _toml_config(concepts, plan, final, cfg, keep_tokens, trigger, out)
    problems = kohya_toml.validate(toml_config)
    if problems:  # pragma: no cover - guards our own writer
        raise StageError("internal: dataset.toml would not load in kohya: " + "; ".join(problems))
    header = (
        f"kohya sd-scripts dataset config written by datakit emit.\n"
        f"Use it with: train_network.py --dataset_config {out.resolve() / 'dataset.toml'}\n"
        f"Folder-name repeats are ignored when a config is used; num_repeats below are the real ones."
    )
    write_text_atomic(out / "dataset.toml", kohya_toml.dumps(toml_config, header))
    _write_metadata(run, tasks, out)
    _write_plan(plan, final, out)
    _print_plan(plan, final, reporter)

    from datakit.emit.report import caption_stats, write_report

    ordered_rows = [run.rows[t.key] for t in tasks if run.rows.get(t.key, {}).get("status") == "ok"]
    stats = caption_stats(out, final)
    long_captions = {name: s["clip_tokens"]["over_window_files"] for name, s in stats.items()
                     if s.get("clip_tokens", {}).get("over_window")}
    if long_captions:
        n = sum(len(v) for v in long_captions.values())
        exact = all(s["clip_tokens"].get("exact") for name, s in stats.items() if name in long_captions)
        reporter.warn(f"{n} caption(s) exceed 75 CLIP tokens{'' if exact else ' (estimated)'} ({', '.join(f'{k}: {len(v)}' for k, v in long_captions.items())}); "
                      "kohya truncates them unless trained with --max_token_length 150 or 225")
    findings["over_75_tokens"] = long_captions
    write_report(out, plan=plan, folders=final, rows=ordered_rows, findings=findings, trigger=trigger, keep_tokens=keep_tokens,
                 stats=stats)

    info = run.finish(
        extra={
            "plan": dict(plan.to_dict(), folders=final),
            "dataset_toml": "dataset.toml",
            "metadata": "metadata.jsonl",
            "report": "report.html",
            "resolution": cfg.resolution,
            "findings": findings,
        },
        carry={"trigger": trigger, "keep_tokens": keep_tokens},
    )
    _remove_empty_dirs(out, old_dirs)
    return info


def _bucket_range(cfg: EmitConfig) -> tuple[int, int]:
    s = kohya_toml.bucket_settings(cfg.resolution)
    return s["min_bucket_reso"], s["max_bucket_reso"]


def _move_into_place(run: StageRun, tasks: list[Task], final: dict[str, str], out: Path) -> set[str]:
    """Rename outputs written (or reused) under another repeat count into the final folders."""
    touched: set[str] = set()
    for row in run.old_rows.values():
        for f in row.get("outputs", []):
            touched.add(str(Path(f).parent))
    for t in tasks:
        row = run.rows.get(t.key)
        if not row or row.get("status") != "ok":
            continue
        target = final[t.params["concept"]]
        moved = []
        for f in row["outputs"]:
            parent = str(Path(f).parent)
            if parent.startswith(THUMB_DIR) or parent == target:
                moved.append(f)
                continue
            touched.add(parent)
            new = f"{target}/{Path(f).name}"
            (out / target).mkdir(parents=True, exist_ok=True)
            os.replace(out / f, out / new)
            moved.append(new)
        if moved != row["outputs"]:
            row = dict(row, outputs=moved, file=moved[0])
            run.rows[t.key] = row
    return touched


def _remove_empty_dirs(out: Path, dirs: set[str]) -> None:
    """Drop repeat folders left empty by a changed repeat count (never a folder with files)."""
    # An empty repeat folder holds no data, and kohya's folder mode would count it as a concept.
    swept = {str(p.relative_to(out)) for top in ("img", "reg", THUMB_DIR) if (out / top).is_dir() for p in (out / top).iterdir()}
    for d in sorted(dirs | swept, key=len, reverse=True):
        for p in (out / d, (out / d).parent):
            if p != out and p.is_dir():
                with contextlib.suppress(OSError):
                    p.rmdir()  # fails, harmlessly, unless empty


def _toml_config(concepts, plan: Plan, final, cfg: EmitConfig, keep_tokens: int, trigger: str | None, out: Path) -> dict:
    general = {
        "caption_extension": ".txt",  # kohya's default is ".caption": the classic silent failure
        "shuffle_caption": cfg.shuffle_caption,
        "keep_tokens": keep_tokens,
        **kohya_toml.bucket_settings(cfg.resolution, no_upscale=cfg.bucket_no_upscale),
    }
    repeats = _repeats(plan)
    subsets = []
    for c in concepts:
        sub = {
            "image_dir": str((out / final[c.name]).resolve()),
            "num_repeats": repeats[c.name],
            "class_tokens": c.name.replace("_", " ") if c.is_reg or not trigger else trigger,
            "is_reg": c.is_reg,
            "caption_extension": ".txt",
            "keep_tokens": 0 if c.is_reg else keep_tokens,
            "shuffle_caption": cfg.shuffle_caption,
        }
        if c.alpha:
            sub["alpha_mask"] = True  # masked loss: the model learns the subject, not the transparent area
        subsets.append(sub)
    return {"general": general, "datasets": [{"batch_size": cfg.batch_size, "subsets": subsets}]}


def _write_metadata(run: StageRun, tasks: list[Task], out: Path) -> None:
    """metadata.jsonl for the Hugging Face `imagefolder` loader (file_name relative to OUT, text)."""
    lines = []
    for t in tasks:
        row = run.rows.get(t.key)
        if row and row.get("status") == "ok":
            lines.append(json.dumps({"file_name": row["file"], "text": row.get("caption") or "",
                                     "concept": row.get("concept"), "is_reg": bool(row.get("is_reg"))}, ensure_ascii=False))
    write_text_atomic(out / "metadata.jsonl", "\n".join(lines) + "\n")


def _plan_rows(plan: Plan, final: dict[str, str]) -> list[dict]:
    rows = []
    for c in plan.concepts + ([plan.reg] if plan.reg else []):
        rows.append({
            "concept": c.name, "folder": final[c.name], "images": c.images, "repeats": c.repeats,
            "steps_per_epoch": c.steps, "share": round(c.share, 4), "target_share": round(c.target_share, 4),
            "weight": c.weight, "is_reg": c.is_reg,
        })
    return rows


def _write_plan(plan: Plan, final: dict[str, str], out: Path) -> None:
    write_json_atomic(out / "plan.json", dict(plan.to_dict(), folders=final))
    buf = io.StringIO()
    rows = _plan_rows(plan, final)
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "plan.csv", buf.getvalue())


def _print_plan(plan: Plan, final: dict[str, str], reporter: Reporter) -> None:
    if reporter.quiet or reporter.json_mode:
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="balance plan")
    for col in ("folder", "images", "repeats", "steps", "share", "wanted"):
        table.add_column(col, justify="left" if col == "folder" else "right", no_wrap=col == "folder")
    for r in _plan_rows(plan, final):
        share, want = ("reg", "") if r["is_reg"] else (f"{r['share']:.1%}", f"{r['target_share']:.1%}")
        table.add_row(escape(r["folder"]), str(r["images"]), str(r["repeats"]), str(r["steps_per_epoch"]), share, want)
    reporter.err.print(table)
    line = f"{plan.images_per_epoch} images per epoch, batch size {plan.batch_size}: {plan.steps_per_epoch} steps per epoch"
    if plan.epochs:
        line += f"; {plan.epochs} epochs = {plan.total_steps} steps"
    reporter.err.print(line)
    for note in plan.notes:
        reporter.err.print(f"note: {escape(note)}")


def _findings(run: StageRun, tasks: list[Task], cfg: EmitConfig, reporter: Reporter) -> dict:
    """Validation results over the whole dataset: duplicates, upscales, captions, flattening."""
    ok = [run.rows[t.key] for t in tasks if run.rows.get(t.key, {}).get("status") == "ok"]
    hashes = {r["key"]: int(r["phash"], 16) for r in ok if r.get("phash")}
    dupes = [{"a": a, "b": b, "distance": d} for a, b, d in near_duplicates(hashes, cfg.dup_threshold)]
    upscaled = [{"item": r["key"], "size": r["size"], "bucket": r["bucket"], "scale": r["upscale"]}
                for r in ok if r.get("upscale") and r["upscale"] > 1.0 + 1e-6]
    no_caption = [r["key"] for r in ok if not r.get("caption") and not r.get("is_reg")]
    clash = [r["key"] for r in ok if any("clash" in w for w in r.get("warnings", []))]
    from_caption_ext = [r["key"] for r in ok if r.get("caption_source") == ".caption"]
    flattened = [r["key"] for r in ok if any("flattened" in w for w in r.get("warnings", []))]
    if dupes:
        sample = ", ".join(f"{d['a']} ~ {d['b']}" for d in dupes[:3])
        reporter.warn(f"{len(dupes)} near-duplicate pair(s) (perceptual hash within {cfg.dup_threshold} bits): {sample}")
    if upscaled:
        reporter.warn(f"{len(upscaled)} image(s) will be upscaled into their {cfg.resolution}px bucket (blurry training data): "
                      + ", ".join(u["item"] for u in upscaled[:3]) + (" ..." if len(upscaled) > 3 else ""))
    if no_caption:
        reporter.warn(f"{len(no_caption)} image(s) have no caption; kohya trains them on the class tokens alone: "
                      + ", ".join(no_caption[:3]) + (" ..." if len(no_caption) > 3 else ""))
    if clash:
        reporter.warn(f"{len(clash)} image(s) have both .txt and .caption captions that differ; the .txt ones are used")
    if from_caption_ext:
        reporter.warn(f"{len(from_caption_ext)} caption(s) came from .caption files and were written as .txt")
    if flattened:
        reporter.warn(f"{len(flattened)} transparent image(s) flattened onto {cfg.flatten_color} "
                      "(use --alpha-mask NAME to keep them RGBA and train with a masked loss)")
    return {"near_duplicates": dupes, "upscaled": upscaled, "no_caption": no_caption, "caption_clash": clash,
            "caption_from_dot_caption": from_caption_ext, "flattened": flattened}
