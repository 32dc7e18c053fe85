"""Merge the latest benchmark results into the README's Performance table (generated, never typed).

    .venv/bin/python benchmarks/readme_table.py [--check] [--readme README.md]

Reads benchmarks/results/<name>.json (one file per benchmark, the latest run of each; --quick runs
go to results/quick/ and are never read here) and rewrites the lines between

    <!-- benchmarks:begin -->
    <!-- benchmarks:end -->

in the README. --check exits 1 when the README is not what the results give (for CI or a review).

The results JSON, shared by every benchmark (harness.write_results writes it; a benchmark owned by
someone else may write it with its own code, as long as it has this shape):

    {
      "schema": 1,
      "benchmark": "tag",                      # the script's stem: benchmarks/tag.py -> results/tag.json
      "title": "datakit tag vs kohya's WD14 tagger loop",
      "date": "2025-01-31T12:00:00Z",          # UTC, when the run ended
      "command": "tag.py --images 128",        # how it was run
      "seconds": 140.2,                        # the whole run, optional
      "quick": false,                          # a smoke run (written to results/quick/ instead)
      "machine": {"cores": 2, "cpu": "...", "memory_gb": 23.4, "gpu": null, "os": "...", "python": "3.11.7",
                  "packages": {"torch": "2.13.0", ...}, "load_average": [1.2, 1.1, 0.9]},
      "settings": {...},                       # the conditions (sizes, counts, precision), free-form
      "rows": [                                # one README table line each
        {"case": "ConvNeXt WD14-shaped graph, 448 px, 128 images",   # what was measured
         "datakit": "24.4 img/s, 0.077 CPU-s/img",                  # datakit's figure
         "baseline": "kohya's loop, batch 1: 21.4 img/s",            # the baseline's, same run
         "goal": "never slower",                                     # or "—"
         "result": "1.14x",                                          # the verdict against the goal
         "met": true}                                                # true / false / null (no goal)
      ],
      "measurements": {...},                   # raw numbers, free-form
      "notes": ["..."]                         # caveats, printed under the table
    }

Markdown in the strings is kept as is; `|` is escaped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"
# The README's order; benchmarks not listed here follow in name order.
NOT_BENCHMARKS = {"harness", "readme_table"}  # the plumbing beside the benchmarks
ORDER = ["cutout", "backgrounds", "composite", "tag", "train", "train_hypernetwork", "kohya", "cure"]


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _machine(m: dict) -> str:
    gpu = m.get("gpu") or "no GPU"
    load = m.get("load_average_at_start") or m.get("load_average")
    text = f"{m.get('cores', '?')} cores, {gpu}"
    return text + (f", load {load[0]:.1f}" if load else "")


def load_results(folder: Path = RESULTS) -> list[dict]:
    """Every results/<name>.json, in the README's order; a file that is not valid is named and skipped."""
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if data.get("schema") != 1 or not isinstance(data.get("rows"), list):
                raise ValueError("not a schema-1 results file")
        except (OSError, ValueError) as exc:
            print(f"readme_table: skipped {path.name}: {exc}", file=sys.stderr)
            continue
        data.setdefault("benchmark", path.stem)
        found.append(data)
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(found, key=lambda d: (rank.get(d["benchmark"], len(ORDER)), d["benchmark"]))


def render(results: list[dict], scripts: list[str] | None = None) -> str:
    """The Markdown between the markers: one table, then when and where each benchmark ran.

    scripts: benchmark names that exist; those without results get a "not measured yet" row.
    """
    lines = [
        "| benchmark | datakit | baseline (same run) | goal: result |",
        "|---|---|---|---|",
    ]
    have = {d["benchmark"] for d in results}
    for name in sorted(set(scripts or []) - have, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)):
        lines.append(f"| `{name}.py` | not measured yet: run `make bench` (or the script, then `benchmarks/readme_table.py`) | | |")
    for data in results:
        for row in data["rows"]:
            verdict = _cell(row.get("result", "—"))
            if row.get("met") is True:
                verdict = f"**{verdict}** (met)"
            elif row.get("met") is False:
                verdict = f"**{verdict}** (not met)"
            goal = _cell(row.get("goal", "—"))
            lines.append(f"| `{data['benchmark']}.py`: {_cell(row['case'])} | {_cell(row['datakit'])} | "
                         f"{_cell(row['baseline'])} | {goal}: {verdict} |")
    lines.append("")
    lines.append("Measured (UTC date, machine, 1-minute load average when the run started; command):")
    lines.append("")
    for data in results:
        date = str(data.get("date", "?"))[:10]
        lines.append(f"- `{data['benchmark']}.py`: {date}, {_machine(data.get('machine', {}))}; "
                     f"`{_cell(data.get('command', ''))}`")
        for note in data.get("notes", []):
            lines.append(f"  - {_cell(note)}")
    return "\n".join(lines)


def merge(readme: str, table: str) -> str:
    """The README with the text between the markers replaced."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"readme_table: the README has no {BEGIN} ... {END} markers")
    return readme[: start + len(BEGIN)] + "\n" + table + "\n" + readme[end:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--check", action="store_true", help="only say whether the README is up to date (exit 1 if not)")
    args = ap.parse_args()
    text = args.readme.read_text()
    scripts = [p.stem for p in Path(__file__).resolve().parent.glob("*.py") if p.stem not in NOT_BENCHMARKS]
    new = merge(text, render(load_results(args.results), scripts if args.results == RESULTS else None))
    if args.check:
        if new != text:
            print("readme_table: the README's Performance table is not what benchmarks/results/ gives; "
                  "run benchmarks/readme_table.py", file=sys.stderr)
            raise SystemExit(1)
        return
    if new != text:
        tmp = args.readme.with_name(f".{args.readme.name}.tmp")
        tmp.write_text(new)
        tmp.replace(args.readme)
        print(f"readme_table: updated {args.readme}")
    else:
        print("readme_table: the README is up to date")


if __name__ == "__main__":
    main()
