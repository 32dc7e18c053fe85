"""Terminal output of `tags stats` and `tags diff`: rich tables for people, one JSON object for scripts."""

from __future__ import annotations

import json
import sys

from rich.markup import escape
from rich.table import Table

from datakit.console import Reporter
from datakit.tags.stats import short_list


def _p(out, text) -> None:
    """Print without rich wrapping long lines (output is copied and grepped)."""
    out.print(text, soft_wrap=True)


def _json(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def print_stats(summary: dict, frequency, reporter: Reporter, *, top: int) -> None:
    """The stats report (the top-N table is left out with --quiet)."""
    if reporter.json_mode:
        _json(summary)
        return
    out = reporter.out
    n = summary["images"]
    if not reporter.quiet:
        table = Table(title=f"top {min(top, len(frequency))} of {summary['distinct_tags']} tags", box=None)
        table.add_column("tag")
        table.add_column("images", justify="right")
        table.add_column("share", justify="right")
        for row in frequency.head(top).itertuples(index=False):
            table.add_row(escape(row.tag), str(row.images), f"{row.share:.0%}")
        _p(out, table)
    per = summary["tags_per_image"]
    tok = summary["clip_tokens"]
    _p(out, f"images: {n} ({summary['captioned']} with a caption), distinct tags: {summary['distinct_tags']}")
    _p(out, f"tags per image: min {per['min']}, mean {per['mean']}, median {per['median']:g}, max {per['max']}")
    every = summary["in_every_image"]
    _p(out, 
        "in every image (candidates for the trigger to absorb): " + (escape(short_list(every)) if every else "none")
    )
    approx = "" if tok["exact"] else "~"
    _p(out, 
        f"CLIP tokens per caption, {tok['method']}: max {approx}{tok['max']}, mean {approx}{tok['mean']}; "
        f"{tok['over_window']} caption(s) over the {tok['window']}-token window"
    )
    for f in tok["over_window_files"][:10]:
        _p(out, f"  over the window: {escape(f)}")
    for s in summary.get("skipped", []):
        reporter.warn(f"skipped {s['source']}: {s['reason']}")
    for path in summary.get("written", []):
        reporter.info(f"wrote {path}")


def print_diff(result: dict, reporter: Reporter, *, limit: int = 0) -> None:
    """The diff report: per-file changes (unless --quiet), then the totals."""
    if reporter.json_mode:
        _json(result)
        return
    out = reporter.out
    if not reporter.quiet:
        shown = result["files"][:limit] if limit else result["files"]
        for f in shown:
            _p(out, f"[bold]{escape(f['file'])}[/bold]")
            for t in f["removed"]:
                _p(out, f"  [red]- {escape(t)}[/red]")
            for t in f["added"]:
                _p(out, f"  [green]+ {escape(t)}[/green]")
            if f["reordered"]:
                _p(out, "  (same tags, new order or spelling)")
        if limit and len(result["files"]) > limit:
            _p(out, f"... and {len(result['files']) - limit} more changed file(s)")
        for name in result["only_in_a"]:
            _p(out, f"only in A: {escape(name)}")
        for name in result["only_in_b"]:
            _p(out, f"only in B: {escape(name)}")
    _p(out, 
        f"{result['compared']} caption(s) compared: {result['changed']} changed, {result['reordered_only']} reordered "
        f"or respelled only, {result['unchanged']} unchanged; {result['tags_added']} tag(s) added, "
        f"{result['tags_removed']} removed; {len(result['only_in_a'])} only in A, {len(result['only_in_b'])} only in B"
    )
    if not reporter.quiet:
        if result["most_added"]:
            _p(out, "most added: " + escape(", ".join(f"{t} ({n})" for t, n in result["most_added"])))
        if result["most_removed"]:
            _p(out, "most removed: " + escape(", ".join(f"{t} ({n})" for t, n in result["most_removed"])))
