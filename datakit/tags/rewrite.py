"""The `tags rewrite` stage: images hard-linked into OUT, captions rewritten by RULES.toml.

Images are never re-encoded (hard links, copies across filesystems). Each manifest row records the
tags before and after, what was added and removed and which rules fired; datakit.json records the
per-rule hit totals and carries the trigger and keep_tokens downstream (emit -> train).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datakit.captions import canonical
from datakit.console import Reporter
from datakit.errors import UsageError, ZeroByteImage
from datakit.imageio import link_or_copy, open_image, write_text_atomic
from datakit.inputs import InputItem, discover, read_caption_file
from datakit.manifest import carried_from, hash_json, stage_lineage
from datakit.stage import StageRun, Task, TaskResult, default_workers
from datakit.tags.engine import Context, format_tags, rewrite, rule_labels, scope_label
from datakit.tags.parse import format_one, parse_tags
from datakit.tags.rules import Rules

STAGE = "tags"
NO_CAPTION = "no caption: wrote the trigger and `add` tags only"
# Upstream manifest fields worth keeping on our rows (what a later stage or a person may want).
_UPSTREAM_KEEP = ("source", "scene", "background", "subject", "prompt", "engine", "ground_y", "size")


@dataclass
class RewriteConfig:
    """Options of `datakit tags rewrite` (the rules already include --trigger and output overrides)."""

    input_dir: Path
    out_dir: Path
    rules: Rules = field(default_factory=Rules)
    rules_file: Path | None = None
    concept: str | None = None  # for `when_concept` (default: the input folder's name)
    dry_run: bool = False
    workers: int | None = None  # default: 1, or all cores when many images must be decoded to check them
    force: bool = False


def _p(out, text) -> None:
    """Print without rich wrapping long lines (output is copied and grepped)."""
    out.print(text, soft_wrap=True)


def _scores(row: dict) -> dict[str, float]:
    """Tagger confidences from an upstream row (`scores` / `confidence` / `tag_scores`: tag -> score)."""
    for name in ("scores", "confidence", "confidences", "tag_scores"):
        value = row.get(name)
        if isinstance(value, dict):
            return {canonical(k): float(v) for k, v in value.items() if isinstance(v, (int, float))}
    return {}


def _characters(row: dict) -> frozenset[str]:
    """Character tags named by the tagger in an upstream row (`character_tags` / `characters`)."""
    for name in ("character_tags", "characters"):
        value = row.get(name)
        if isinstance(value, dict):
            value = list(value)
        if isinstance(value, list):
            return frozenset(canonical(str(v)) for v in value)
    return frozenset()


# Stages that only (re)write captions and pass the images through unchanged.
CAPTION_STAGES = frozenset({"tag", "tags", "review"})


def image_stage(upstream: dict | None) -> str | None:
    """The latest stage before IN that made images (composite in composite -> tag -> tags rewrite)."""
    return next((s for s in reversed(stage_lineage(upstream)) if s not in CAPTION_STAGES), None)


def _context(item: InputItem, cfg: RewriteConfig, upstream: dict | None, frequency: dict) -> Context:
    folders = (cfg.input_dir.resolve().name, *Path(item.key).parent.parts)
    return Context(
        folders=tuple(f for f in folders if f not in ("", ".")),
        stage=(upstream or {}).get("stage"),
        image_stage=image_stage(upstream),
        concept=cfg.concept or cfg.input_dir.resolve().name,
        frequency=frequency,
        confidence=_scores(item.row),
        characters=_characters(item.row),
    )


def _frequency(texts: list[str]) -> dict[str, int]:
    """How many captions contain each tag (canonical key)."""
    counts: Counter = Counter()
    for text in texts:
        counts.update({t.key for t in parse_tags(text)})
    return dict(counts)


def rewrite_item(task: Task, rules: Rules) -> TaskResult:
    """Worker: check the image, link it into OUT, write the rewritten caption."""
    p = task.payload
    image = Path(p["image"])
    if p["check_image"]:
        open_image(image)  # a user's own folder: unreadable files are skipped and named
    elif image.stat().st_size == 0:
        raise ZeroByteImage(f"{image.name}: zero-byte file")
    out = Path(p["out"])
    name = p["stem"] + image.suffix
    caption_name = p["stem"] + ".txt"
    link_or_copy(image, out / name)
    warnings = []
    text = ""
    if p["caption"]:
        text = read_caption_file(Path(p["caption"]))
    else:
        warnings.append(NO_CAPTION)
    result = rewrite(text, rules, p["ctx"])
    write_text_atomic(out / caption_name, format_tags(result.after, rules.output))
    form = rules.output
    row = {
        "tags": [format_one(t, underscores=form.underscores) for t in result.after],  # as in the caption
        "tags_before": [t.text for t in result.before],
        "added": result.added,
        "removed": result.removed,
        "hits": {k: v for k, v in result.hits.items() if v},
        "caption_source": Path(p["caption"]).name if p["caption"] else None,
    }
    if p["upstream_row"]:
        row["upstream"] = p["upstream_row"]
    return TaskResult(key=task.key, outputs=[name, caption_name], row=row, warnings=warnings)


def _config_dict(cfg: RewriteConfig) -> dict:
    return {
        "input_dir": str(cfg.input_dir),
        "out_dir": str(cfg.out_dir),
        "rules": cfg.rules.to_config(),  # the content, not the file's path: moving the file redoes nothing
        "concept": cfg.concept,
        "workers": cfg.workers,
        "force": cfg.force,
    }


def _hit_report(totals: Counter, rules: Rules, reporter: Reporter) -> dict:
    """Warn about rules that matched nothing (probably misspelt); return all totals.

    A [[rule]] whose condition held for no caption is not a mistake (one rules file serves several
    folders, and conditions are meant to be selective): it gets an info line, not warnings.
    """
    labels = rule_labels(rules)
    quiet_labels: set[str] = set()
    for cond in rules.rules:
        label = f"rule {cond.name!r}"
        if not totals.get(label):
            scoped = cond.when_folder or cond.when_stage or cond.when_concept
            why = "its when_folder/when_stage/when_concept" if scoped and not totals.get(scope_label(cond)) else "its if_tag/unless_tag"
            reporter.info(f"{label} applied to no caption here ({why})")
            quiet_labels |= {lb for lb in labels if lb == label or lb.startswith(label + ":")}
            continue
        # A rule's entries are often a list of candidates ("white background", "simple background"):
        # when some matched, the others were simply absent from these captions, not misspelt.
        entries = [lb for lb in labels if lb.startswith(label + ":")]
        if any(totals.get(lb) for lb in entries):
            for lb in entries:
                if not totals.get(lb):
                    reporter.info(f"{lb} matched nothing here (the rule's other entries did)")
                    quiet_labels.add(lb)
    for label in labels:
        if totals.get(label, 0) == 0 and label not in quiet_labels:
            reporter.warn(f"{label} matched nothing (misspelt?{_compared_as(label)})")
    return {label: totals.get(label, 0) for label in labels} | {
        k: v for k, v in sorted(totals.items()) if k not in set(labels)
    }


def _compared_as(label: str) -> str:
    """How matching sees the first quoted name of a label, when that differs from its spelling."""
    import re

    m = re.search(r"'([^']*)'", label)
    if not m or canonical(m.group(1)) == m.group(1) or "*" in m.group(1) or m.group(1).startswith("re:"):
        return ""
    return f" it is compared as {canonical(m.group(1))!r}"


def run_tags_rewrite(cfg: RewriteConfig, reporter: Reporter) -> dict | None:
    """Run the stage (or, with dry_run, report what it would do and write nothing)."""
    inputs = discover(cfg.input_dir, stage=STAGE)
    if Path(cfg.out_dir).resolve() == Path(cfg.input_dir).resolve():
        raise UsageError(f"OUT must differ from IN (both are {cfg.out_dir}): a stage never writes into its input")
    if not inputs.items:
        raise UsageError(f"no images in {cfg.input_dir}")
    rules = cfg.rules
    upstream_trigger = carried_from(inputs.upstream).get("trigger")
    if rules.trigger is None and upstream_trigger:
        # Keep the carried keep_tokens true: the upstream trigger stays first whatever the order.
        rules.trigger = upstream_trigger
        reporter.info(f"tags: trigger {upstream_trigger!r} from the upstream stage's datakit.json")
    texts = {it.key: (it.caption_text() or "") for it in inputs.items}
    frequency = _frequency(list(texts.values())) if rules.order == "frequency" else {}
    if cfg.dry_run:
        return _dry_run(cfg, inputs, texts, frequency, reporter)

    tasks = []
    from_manifest = inputs.upstream is not None
    for it in inputs.items:
        ctx = _context(it, cfg, inputs.upstream, frequency)
        params = {"stem": it.stem, "ext": it.path.suffix}
        if frequency:  # the order depends on every caption: a change anywhere redoes all
            params["frequency"] = hash_json(frequency)
        if any(cond.when_stage for cond in rules.rules):  # which stages made IN decides these rules
            params["stages"] = [ctx.stage, ctx.image_stage]
        if ctx.confidence or ctx.characters:
            params["upstream_tags"] = hash_json([ctx.confidence, sorted(ctx.characters)])
        upstream_row = {k: it.row[k] for k in _UPSTREAM_KEEP if k in it.row}
        tasks.append(
            Task(
                key=it.key,
                inputs=[it.path] + ([it.caption] if it.caption else []),
                params=params,
                payload={
                    "image": str(it.path), "caption": str(it.caption) if it.caption else None, "stem": it.stem,
                    "out": str(cfg.out_dir), "ctx": ctx, "check_image": not from_manifest,
                    "upstream_row": upstream_row,
                },
                source=it.key,
            )
        )
    run = StageRun(
        STAGE, cfg.out_dir, _config_dict(cfg), inputs_dir=cfg.input_dir, upstream=inputs.upstream,
        force=cfg.force, reporter=reporter, pre_skipped=inputs.skipped,
    )
    todo = run.begin(tasks)
    if todo is None:
        return run.summary_from_previous()
    run.invalidate()
    workers = cfg.workers
    if workers is None:
        # Text work alone is faster in-process than a pool is to start; decoding many images to
        # check them (a user's own folder) is worth every core.
        workers = default_workers() if not from_manifest and len(todo) >= 64 else 1
    run.map(rewrite_item, todo, workers=workers, shared=rules, description="tags rewrite")
    rows = [r for r in run.rows.values() if r.get("status") == "ok"]
    missing = [r["source"] for r in rows if NO_CAPTION in r.get("warnings", [])]
    if missing:
        reporter.warn(f"{len(missing)} image(s) had no caption ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): "
                      "their caption is the trigger and `add` tags only")
    totals: Counter = Counter()
    for r in rows:
        totals.update(r.get("hits", {}))
    hits = _hit_report(totals, rules, reporter)
    carry = {"trigger": rules.trigger, "keep_tokens": 1} if rules.trigger else None
    extra = {"rules_file": str(cfg.rules_file) if cfg.rules_file else None, "rule_hits": hits}
    return run.finish(extra=extra, carry=carry)


def _dry_run(cfg: RewriteConfig, inputs, texts: dict, frequency: dict, reporter: Reporter) -> None:
    """Print each file's diff and the per-rule hits; write nothing."""
    from rich.markup import escape

    out = reporter.out
    show = not reporter.json_mode
    totals: Counter = Counter()
    files = []
    for it in inputs.items:
        res = rewrite(texts[it.key], cfg.rules, _context(it, cfg, inputs.upstream, frequency))
        totals.update(res.hits)
        after_text = format_tags(res.after, cfg.rules.output)
        changed = after_text != texts[it.key].strip()
        entry = {"file": it.stem + ".txt", "added": res.added, "removed": res.removed, "changed": changed,
                 "caption": after_text, "hits": dict(res.hits)}
        files.append(entry)
        if show and changed:
            _p(out, f"[bold]{escape(entry['file'])}[/bold]" + ("" if it.caption else "  (no caption)"))
            for t in res.removed:
                _p(out, f"  [red]- {escape(t)}[/red]")
            for t in res.added:
                _p(out, f"  [green]+ {escape(t)}[/green]")
            if not res.removed and not res.added:
                _p(out, "  (same tags, new order or spelling)")
    hits = _hit_report(totals, cfg.rules, reporter)
    if show:
        _p(out, "\n[bold]rule hits[/bold]")
        for label, n in hits.items():
            _p(out, f"  {n:6d}  {escape(label)}")
        changed_n = sum(1 for f in files if f["changed"])
        _p(out, f"\ndry run: {changed_n} of {len(files)} captions would change; nothing was written")
    info = {
        "stage": "tags rewrite (dry run)",
        "dry_run": True,
        "input": str(cfg.input_dir),
        "counts": {"in": len(files) + len(inputs.skipped), "changed": sum(f["changed"] for f in files),
                   "skipped": 0, "failed": 0},
        "rule_hits": hits,
        "files": files,
        "warnings": list(reporter.warnings),
    }
    if reporter.json_mode:
        import json
        import sys

        sys.stdout.write(json.dumps(info, ensure_ascii=False, default=str) + "\n")
    return None  # the report above is the whole output: no stage summary table

