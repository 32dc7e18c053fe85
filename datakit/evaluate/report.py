"""The eval report: eval.csv, eval.json, a sample grid per model, a bar plot and the terminal table.

Every cell that was not measured says so ("not measured"), a base model's subject presence says
"reference" (it is what adapters are compared with), and the plain prompt has no scene agreement
("n/a"): never a made-up number.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable

import numpy as np

from datakit.evaluate.core import BASE, METRICS, NOT_MEASURED, EvalResult, MetricRow
from datakit.imageio import save_figure_atomic, save_image_atomic, write_json_atomic, write_text_atomic

COLUMNS = ("model", "kind", "scene", "samples", *METRICS)
GRID_CELL_MAX = 256  # grid cells are shrunk to this size, so a 1024 px model's grid stays a viewable file
GRID_CELL_MIN = 96
PLOT_METRICS = ("white_rate", "plain_rate", "scene_agreement", "subject_presence", "subject_presence_colour")
LABELS = {"white_rate": "white", "plain_rate": "plain", "scene_agreement": "scene agreement",
          "subject_presence": "subject (CLIP)", "subject_similarity": "CLIP-I", "subject_presence_colour": "subject (colour)"}


def cell(result: EvalResult, row: MetricRow, metric: str) -> str:
    """A metric's value as text, or why it has none."""
    value = getattr(row, metric)
    if value is not None:
        return f"{value:.4f}" if metric == "subject_similarity" else f"{value:.3f}"
    if metric in result.not_measured:
        return NOT_MEASURED
    if metric == "subject_presence" and row.kind == BASE:
        return "reference"
    return "n/a"


def write_csv(result: EvalResult, dest: Path) -> None:
    """One row per model x prompt, metric columns by name."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in result.rows:
        writer.writerow([row.model, row.kind, row.scene, row.samples, *(cell(result, row, m) for m in METRICS)])
    write_text_atomic(dest, buf.getvalue())


def write_json(result: EvalResult, dest: Path, extra: dict | None = None) -> None:
    """Everything: models, scenes, seeds, overall and per-prompt rows, every sample's scores, what was not measured."""
    data = result.to_dict()
    data.update(extra or {})
    write_json_atomic(dest, data)


def terminal_table(result: EvalResult):
    """A short rich table: each model over the scene prompts, and its white rate on the plain prompt.

    Unmeasured metrics get no column; the caption names them and says why.
    """
    from rich.table import Table

    shown = [m for m in ("white_rate", "plain_rate", "scene_agreement", "subject_presence", "subject_presence_colour")
             if m not in result.not_measured]
    why_missing: dict[str, list[str]] = {}
    for metric, why in result.not_measured.items():
        if metric in PLOT_METRICS:
            why_missing.setdefault(why, []).append(LABELS[metric])
    caption = "; ".join(f"not measured: {', '.join(names)} ({why})" for why, names in why_missing.items())
    table = Table(title="datakit eval: share of samples, over the scene prompts", caption=caption or None,
                  box=None, header_style="bold", caption_justify="left")
    for name in ("model", "samples", *(LABELS[m] for m in shown), "white on plain prompt"):
        table.add_column(name, justify="left" if name == "model" else "right")
    plain_rows = {r.model: r for r in result.rows if r.scene == "plain"}
    for row in result.overall:
        plain = plain_rows.get(row.model)
        table.add_row(row.model, str(row.samples), *(cell(result, row, m) for m in shown),
                      cell(result, plain, "white_rate") if plain else "n/a")
    return table


def write_grid(result: EvalResult, model: str, load: Callable[[str], np.ndarray | None], dest: Path) -> None:
    """The model's samples as one image: a row per prompt (labelled), a column per seed."""
    from PIL import Image, ImageDraw, ImageFont

    samples = {(s.scene, s.seed): s for s in result.samples if s.model == model}
    images = {k: load(s.key) for k, s in samples.items()}
    found = [im for im in images.values() if im is not None]
    if not found:
        return
    h, w = found[0].shape[:2]
    # Big samples shrink to GRID_CELL_MAX; tiny ones (32 px test worlds) grow by whole pixels to be seen.
    scale = min(1.0, GRID_CELL_MAX / max(h, w)) if max(h, w) >= GRID_CELL_MIN else float(-(-GRID_CELL_MIN // max(h, w)))
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
    font = ImageFont.load_default()
    label_w, head_h, pad = 100, 14, 2
    grid = Image.new("RGB", (label_w + len(result.seeds) * (cw + pad), head_h + len(result.scenes) * (ch + pad)), "white")
    draw = ImageDraw.Draw(grid)
    for j, seed in enumerate(result.seeds):
        draw.text((label_w + j * (cw + pad), 1), f"seed {seed}", fill="black", font=font)
    for i, scene in enumerate(result.scenes):
        y = head_h + i * (ch + pad)
        draw.text((2, y + max(0, ch // 2 - 6)), scene.name[:16], fill="black", font=font)
        for j, seed in enumerate(result.seeds):
            im = images.get((scene.name, seed))
            if im is not None:
                grid.paste(Image.fromarray(im).resize((cw, ch), resample), (label_w + j * (cw + pad), y))
    save_image_atomic(grid, dest, format="PNG")


def write_plot(result: EvalResult, dest: Path) -> None:
    """Grouped bars: each metric over the scene prompts, one bar per model; unmeasured metrics are named, not drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [m for m in PLOT_METRICS if m not in result.not_measured]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(metrics) + 2), 3.8), dpi=100)
    n = max(1, len(result.overall))
    width = 0.8 / n
    for i, row in enumerate(result.overall):
        values = [getattr(row, m) for m in metrics]
        xs = np.arange(len(metrics)) + (i - (n - 1) / 2) * width
        bars = ax.bar(xs, [v if v is not None else 0.0 for v in values], width, label=row.model)
        ax.bar_label(bars, labels=["n/a" if v is None else f"{v:.2f}" for v in values], fontsize=7, padding=1)
    ax.set_xticks(np.arange(len(metrics)), [LABELS[m] for m in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of samples (scene prompts)")
    skipped = [LABELS[m] for m in PLOT_METRICS if m in result.not_measured]
    if skipped:
        ax.set_title("not measured: " + ", ".join(skipped), fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    save_figure_atomic(fig, dest)
