"""The files beside the items: dataset.toml (kohya), metadata.jsonl (Hugging Face), plan.json/plan.csv, and the plan table."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from datakit.console import Reporter
from datakit.emit import kohya_toml
from datakit.emit.balance import Plan
from datakit.emit.concepts import Concept
from datakit.emit.config import EmitConfig
from datakit.emit.layout import repeats
from datakit.errors import StageError
from datakit.imageio import write_json_atomic, write_text_atomic

DATASET_TOML = "dataset.toml"
METADATA = "metadata.jsonl"
REPORT = "report.html"


def toml_config(concepts: list[Concept], plan: Plan, final: dict[str, str], cfg: EmitConfig, keep_tokens: int,
                trigger: str | None, out: Path) -> dict:
    """The dataset config as kohya reads it: one subset per concept with its real repeat count."""
    general = {
        "caption_extension": ".txt",  # kohya's default is ".caption": the classic silent failure
        "shuffle_caption": cfg.shuffle_caption,
        "keep_tokens": keep_tokens,
        **kohya_toml.bucket_settings(cfg.resolution, no_upscale=cfg.bucket_no_upscale),
    }
    reps = repeats(plan)
    subsets = []
    for c in concepts:
        sub = {
            "image_dir": str((out / final[c.name]).resolve()),
            "num_repeats": reps[c.name],
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


def write_dataset_toml(config: dict, out: Path) -> None:
    """OUT/dataset.toml with a header saying how to use it; refused if kohya would not load it."""
    problems = kohya_toml.validate(config)
    if problems:  # pragma: no cover - guards our own writer
        raise StageError("internal: dataset.toml would not load in kohya: " + "; ".join(problems))
    header = (
        f"kohya sd-scripts dataset config written by datakit emit.\n"
        f"Use it with: train_network.py --dataset_config {out.resolve() / DATASET_TOML}\n"
        f"Folder-name repeats are ignored when a config is used; num_repeats below are the real ones."
    )
    write_text_atomic(out / DATASET_TOML, kohya_toml.dumps(config, header))


def write_metadata(rows: list[dict], out: Path) -> None:
    """metadata.jsonl for the Hugging Face `imagefolder` loader (file_name relative to OUT, text)."""
    lines = [json.dumps({"file_name": row["file"], "text": row.get("caption") or "", "concept": row.get("concept"),
                         "is_reg": bool(row.get("is_reg"))}, ensure_ascii=False) for row in rows]
    write_text_atomic(out / METADATA, "\n".join(lines) + "\n")


def plan_rows(plan: Plan, final: dict[str, str]) -> list[dict]:
    """One row per concept (the regularisation set last): folder, images, repeats, steps and shares."""
    rows = []
    for c in plan.concepts + ([plan.reg] if plan.reg else []):
        rows.append({
            "concept": c.name, "folder": final[c.name], "images": c.images, "repeats": c.repeats,
            "steps_per_epoch": c.steps, "share": round(c.share, 4), "target_share": round(c.target_share, 4),
            "weight": c.weight, "is_reg": c.is_reg,
        })
    return rows


def write_plan(plan: Plan, final: dict[str, str], out: Path) -> None:
    """OUT/plan.json and OUT/plan.csv."""
    write_json_atomic(out / "plan.json", dict(plan.to_dict(), folders=final))
    buf = io.StringIO()
    rows = plan_rows(plan, final)
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(out / "plan.csv", buf.getvalue())


def print_plan(plan: Plan, final: dict[str, str], reporter: Reporter) -> None:
    """The balance plan as a table on the terminal (not with --quiet or --json)."""
    if reporter.quiet or reporter.json_mode:
        return
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="balance plan")
    for col in ("folder", "images", "repeats", "steps", "share", "wanted"):
        table.add_column(col, justify="left" if col == "folder" else "right", no_wrap=col == "folder")
    for r in plan_rows(plan, final):
        share, want = ("reg", "") if r["is_reg"] else (f"{r['share']:.1%}", f"{r['target_share']:.1%}")
        table.add_row(escape(r["folder"]), str(r["images"]), str(r["repeats"]), str(r["steps_per_epoch"]), share, want)
    reporter.err.print(table)
    line = f"{plan.images_per_epoch} images per epoch, batch size {plan.batch_size}: {plan.steps_per_epoch} steps per epoch"
    if plan.epochs:
        line += f"; {plan.epochs} epochs = {plan.total_steps} steps"
    reporter.err.print(line)
    for note in plan.notes:
        reporter.err.print(f"note: {escape(note)}")
