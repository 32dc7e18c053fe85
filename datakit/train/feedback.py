"""What a run shows and keeps while it trains: loss.csv and its plot, TensorBoard, the progress bar, speed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch


def speed(steps: int, seconds: float, ends: list[float], device_type: str) -> dict:
    """Overall steps/s, and steps/s after the first 3 steps (warm-up: allocator, kernels, caches)."""
    out = {"steps_per_s": round(steps / seconds, 4) if seconds > 0 else None}
    if len(ends) > 4:
        out["steady_steps_per_s"] = round((len(ends) - 3) / (ends[-1] - ends[2]), 4)
    if device_type == "cuda":
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


class LossLog:
    """loss.csv (step, epoch, loss, lr) and a loss plot; a resumed run keeps the rows up to its step."""

    def __init__(self, path: Path, *, keep_until: int, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.rows: list[tuple] = []
        if enabled and keep_until and path.is_file():
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    if int(row["step"]) <= keep_until:
                        self.rows.append((int(row["step"]), int(row["epoch"]), float(row["loss"]), float(row["lr"])))
        self.tb = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(path.parent / "tensorboard"))
            except Exception:  # noqa: BLE001 - TensorBoard is optional
                self.tb = None

    def add(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if not self.enabled:
            return
        self.rows.append((step, epoch, loss, lr))
        if self.tb is not None:
            self.tb.add_scalar("loss", loss, step)
            self.tb.add_scalar("lr", lr, step)

    def flush(self) -> None:
        if not self.enabled:
            return
        from datakit.imageio import write_text_atomic

        lines = ["step,epoch,loss,lr"] + [f"{s},{e},{loss:.6f},{lr:.8g}" for s, e, loss, lr in self.rows]
        write_text_atomic(self.path, "\n".join(lines) + "\n")

    def plot(self, dest: Path) -> Path | None:
        if not self.enabled or not self.rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = np.array([r[0] for r in self.rows])
        losses = np.array([r[2] for r in self.rows])
        fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
        ax.plot(steps, losses, lw=0.6, alpha=0.4, label="loss")
        if len(losses) >= 10:
            k = max(5, len(losses) // 20)
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            ax.plot(steps[k - 1:], smooth, lw=1.5, label=f"mean of {k}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
        fig.tight_layout()
        from datakit.imageio import save_figure_atomic

        save_figure_atomic(fig, dest)
        return dest


class TrainProgress:
    """A rich progress bar with loss, LR, it/s, ETA and GPU memory (silent with --quiet/--json)."""

    def __init__(self, reporter, total: int, start: int, device_type: str):
        self.reporter, self.total, self.start, self.device_type = reporter, total, start, device_type
        self.progress = None

    def __enter__(self):
        if self.reporter.quiet or self.reporter.json_mode:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("eta"),
                                 TimeRemainingColumn(), console=self.reporter.err)
        self.progress.__enter__()
        self.task = self.progress.add_task("train", total=self.total, completed=self.start, stats="")
        return self

    def update(self, step: int, loss: float, lr: float) -> None:
        if self.progress is None:
            return
        task = self.progress.tasks[self.task]
        speed = task.speed
        stats = f"loss {loss:.4f} lr {lr:.2e}"
        if speed:
            stats += f" {speed:.2f} it/s" if speed >= 1 else f" {1 / speed:.1f} s/it"
        if self.device_type == "cuda":
            stats += f" {torch.cuda.max_memory_allocated() / 2**30:.1f} GB"
        self.progress.update(self.task, completed=step, stats=stats)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False
