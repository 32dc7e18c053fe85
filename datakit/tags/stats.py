"""`tags stats`: tag frequencies, tags per image, tags in every image, CLIP token counts.

Reads IN and never writes there; with an output folder it writes tag_frequency.csv,
captions.csv, stats.json and top_tags.png (matplotlib, Agg backend, imported only then).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from datakit.captions import format_tag
from datakit.errors import UsageError
from datakit.imageio import write_json_atomic, write_text_atomic
from datakit.inputs import discover
from datakit.paths import is_inside
from datakit.tags.parse import parse_tags
from datakit.tags.tokens import WINDOW, token_counter


@dataclass
class StatsResult:
    """The tables behind the printed report (pandas DataFrames) and its summary dict."""

    frequency: "object"  # DataFrame: tag, images, share
    captions: "object"  # DataFrame: file, tags, clip_tokens, over_window
    summary: dict


def short_list(names: list[str], limit: int = 30) -> str:
    """`a, b, c` for a few names; the first `limit` and how many more for a long list (one huge
    caption makes every one of its tags "in every image")."""
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... and {len(names) - limit} more"


def collect_stats(input_dir: Path, *, tokenizer: str | None = "auto", top: int = 30) -> StatsResult:
    """Read every caption of IN's items and compute the statistics."""
    import pandas as pd

    inputs = discover(input_dir)
    if not inputs.items:
        raise UsageError(f"no images in {input_dir}")
    counter = token_counter(tokenizer)
    counts: Counter = Counter()
    spelling: dict[str, str] = {}
    rows = []
    for it in inputs.items:
        text = it.caption_text()
        tags = parse_tags(text or "")
        for t in tags:
            if t.key not in spelling:
                spelling[t.key] = format_tag(t.text)
        keys = dict.fromkeys((t.key for t in tags), 1)  # each tag once per image; linear (a 600k-tag caption)
        counts.update(keys)
        n_tokens = counter.count(text or "")
        rows.append({
            "file": it.key, "caption": it.caption.name if it.caption else None, "tags": len(keys),
            "clip_tokens": n_tokens, "over_window": n_tokens > WINDOW,
        })
    n = len(inputs.items)
    freq = pd.DataFrame(
        [{"tag": spelling[k], "images": c, "share": round(c / n, 4)} for k, c in counts.items()],
        columns=["tag", "images", "share"],
    )
    if len(freq):
        freq = freq.sort_values(["images", "tag"], ascending=[False, True], kind="stable").reset_index(drop=True)
    caps = pd.DataFrame(rows, columns=["file", "caption", "tags", "clip_tokens", "over_window"])
    per_image = caps["tags"]
    summary = {
        "input": str(input_dir),
        "images": n,
        "captioned": int(caps["caption"].notna().sum()),
        "distinct_tags": len(counts),
        "tags_per_image": {
            "min": int(per_image.min()), "mean": round(float(per_image.mean()), 2),
            "median": float(per_image.median()), "max": int(per_image.max()),
        },
        "in_every_image": [spelling[k] for k, c in counts.items() if c == n] if n else [],
        "clip_tokens": {
            "method": counter.description,
            "exact": counter.exact,
            "window": WINDOW,
            "max": int(caps["clip_tokens"].max()),
            "mean": round(float(caps["clip_tokens"].mean()), 2),
            "over_window": int(caps["over_window"].sum()),
            "over_window_files": caps.loc[caps["over_window"], "file"].tolist(),
        },
        "top": freq.head(top).to_dict("records"),
        "skipped": inputs.skipped,
    }
    return StatsResult(frequency=freq, captions=caps, summary=summary)


def write_stats(result: StatsResult, out_dir: Path, input_dir: Path, *, top: int = 30) -> list[str]:
    """Write the CSVs, stats.json and the bar chart; refuse any folder inside IN."""
    if is_inside(out_dir, input_dir):
        raise UsageError(f"--out {out_dir} is inside the input folder {input_dir}: `tags stats` never writes into IN")
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out exists and is not a folder: {out_dir}")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create --out {out_dir}: {exc.strerror}") from exc
    write_text_atomic(out_dir / "tag_frequency.csv", result.frequency.to_csv(index=False))
    write_text_atomic(out_dir / "captions.csv", result.captions.to_csv(index=False))
    write_json_atomic(out_dir / "stats.json", result.summary)
    _bar_chart(result.frequency.head(top), out_dir / "top_tags.png", result.summary["images"])
    return ["tag_frequency.csv", "captions.csv", "stats.json", "top_tags.png"]


def _bar_chart(freq, dest: Path, images: int) -> None:
    """Horizontal bar chart of the top tags (most frequent at the top)."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and no GUI toolkit is imported
    import matplotlib.pyplot as plt

    from datakit.imageio import save_figure_atomic

    import warnings

    height = max(2.0, 0.28 * len(freq) + 1.0)
    fig, ax = plt.subplots(figsize=(8, height), dpi=100)
    try:
        ax.barh(list(freq["tag"])[::-1], list(freq["images"])[::-1], color="#4878cf")
        ax.set_xlabel(f"images (of {images})")
        ax.set_title(f"top {len(freq)} tags")
        ax.set_xlim(0, max(1, images))
        with warnings.catch_warnings():  # tags in scripts the font lacks (Japanese) draw as boxes
            warnings.simplefilter("ignore")
            fig.tight_layout()
            save_figure_atomic(fig, dest)
    except BaseException:
        plt.close(fig)
        raise
