"""`datakit tags rewrite|stats|diff`: caption rules, statistics and comparisons."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.common import ForceOpt, InDir, JsonOpt, OutDir, QuietOpt, execute

tags_app = typer.Typer(
    help="Rewrite captions with a rules file (trigger word, remove, replace...), show tag statistics, compare folders.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


class Order(str, enum.Enum):
    """Tag order after the trigger."""

    keep = "keep"
    frequency = "frequency"
    confidence = "confidence"
    alphabetical = "alphabetical"


class Weights(str, enum.Enum):
    """What to do with A1111 weights like (tag:1.2)."""

    strip = "strip"
    keep = "keep"


def register(app: typer.Typer) -> None:
    """Add the `tags` command group."""
    app.add_typer(tags_app, name="tags")


@tags_app.command("rewrite")
def rewrite_cmd(
    input_dir: InDir,
    out_dir: OutDir,
    rules: Annotated[
        Optional[Path],
        typer.Option("--rules", "-r", help="RULES.toml (see docs/tags.md); without it captions are only normalised.",
                     show_default=False),
    ] = None,
    trigger: Annotated[
        Optional[str], typer.Option("--trigger", help="Trigger word put first (overrides the rules file).", show_default=False)
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print per-file diffs and rule hits; write nothing.")] = False,
    underscores: Annotated[
        Optional[bool],
        typer.Option("--underscores/--spaces", help="Write tags with `_` or with spaces (default: spaces, or the rules file).",
                     show_default=False),
    ] = None,
    escape: Annotated[
        Optional[bool],
        typer.Option("--escape/--no-escape", help="Escape ( ) as \\( \\) for A1111 prompts (default: no, or the rules file).",
                     show_default=False),
    ] = None,
    weights: Annotated[
        Optional[Weights],
        typer.Option("--weights", help="Strip A1111 weights/emphasis or keep them (default: strip, or the rules file).",
                     show_default=False),
    ] = None,
    order: Annotated[
        Optional[Order],
        typer.Option("--order", help="Tag order after the trigger (default: keep, or the rules file).", show_default=False),
    ] = None,
    max_tags: Annotated[
        Optional[int],
        typer.Option("--max-tags", min=0, help="Keep at most N tags, trigger included (0: no limit).", show_default=False),
    ] = None,
    concept: Annotated[
        Optional[str],
        typer.Option("--concept", help="Concept name for `when_concept` rules (default: the input folder's name).",
                     show_default=False),
    ] = None,
    workers: Annotated[
        Optional[int],
        typer.Option("--workers", "-j", min=1, show_default=False,
                     help="Worker processes (default: 1; all cores when 64+ images of a plain folder need checking)."),
    ] = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json: JsonOpt = False,
) -> None:
    """Rewrite captions by a rules file; images are hard-linked, never re-encoded."""

    def work(reporter):
        from datakit.captions import check_trigger
        from datakit.tags.rewrite import RewriteConfig, run_tags_rewrite
        from datakit.tags.rules import Rules, load_rules

        r = load_rules(rules) if rules is not None else Rules()
        if trigger is not None:
            r.trigger = check_trigger(trigger, source="--trigger")
        if underscores is not None:
            r.output.underscores = underscores
        if escape is not None:
            r.output.escape = escape
        if weights is not None:
            r.output.weights = weights.value
        if order is not None:
            r.order = order.value
        if max_tags is not None:
            r.max_tags = max_tags
        cfg = RewriteConfig(
            input_dir=input_dir, out_dir=out_dir, rules=r, rules_file=rules, concept=concept,
            dry_run=dry_run, workers=workers, force=force,
        )
        return run_tags_rewrite(cfg, reporter)

    execute(work, quiet=quiet, json_mode=json)


@tags_app.command("stats")
def stats_cmd(
    input_dir: InDir,
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Write tag_frequency.csv, captions.csv, stats.json and top_tags.png here "
                     "(never inside IN; default: print only).", show_default=False),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the most frequent tags to print and chart.")] = 30,
    tokenizer: Annotated[
        str,
        typer.Option("--tokenizer", help="CLIP tokenizer for exact token counts: a folder with vocab.json + merges.txt or tokenizer.json, a "
                     "cached Hugging Face id, 'auto' (DATAKIT_CLIP_TOKENIZER, else openai/clip-vit-large-patch14 if "
                     "cached, else an estimate) or 'none' (estimate)."),
    ] = "auto",
    quiet: QuietOpt = False,
    json: JsonOpt = False,
) -> None:
    """Tag frequencies, tags per image, tags in every image and CLIP token counts (reads only)."""

    def work(reporter):
        from datakit.tags.report import print_stats
        from datakit.tags.stats import collect_stats, write_stats

        result = collect_stats(input_dir, tokenizer=tokenizer, top=top)
        if out is not None:
            result.summary["written"] = [str(out / f) for f in write_stats(result, out, input_dir, top=top)]
        print_stats(result.summary, result.frequency, reporter, top=top)
        return None

    execute(work, quiet=quiet, json_mode=json)


@tags_app.command("diff")
def diff_cmd(
    a: Annotated[Path, typer.Argument(help="The first captioned folder (before).", show_default=False)],
    b: Annotated[Path, typer.Argument(help="The second captioned folder (after).", show_default=False)],
    limit: Annotated[int, typer.Option("--limit", min=0, help="Print at most N changed files (0: all).")] = 0,
    quiet: QuietOpt = False,
    json: JsonOpt = False,
) -> None:
    """Per-file added/removed tags between two captioned folders, and summary counts."""

    def work(reporter):
        from datakit.tags.diff import diff_folders
        from datakit.tags.report import print_diff

        print_diff(diff_folders(a, b), reporter, limit=limit)
        return None

    execute(work, quiet=quiet, json_mode=json)
