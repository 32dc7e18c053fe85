"""`datakit train --eval-every N`: `datakit eval`'s measurement on each saved checkpoint, a leakage curve, the best one.

The adapter being trained is measured in place (its multiplier switched, nothing reloaded) on the
same scenes and seeds every time; the base model is drawn once per process and reused. Files in
OUT/eval: `step-NNNNNN.json` (the full `datakit eval` result of that checkpoint) and `.png` (its
grid), `base.png`, `curve.csv`, `curve.json` and `curve.png` (leakage against steps).

Leakage is the share of scene samples whose background is white or flat and empty (the two faces
of the same overfitting; the plain prompt, which asks for no background, is left out). The best
checkpoint is the one with the lowest leakage among those that still show the subject (subject
presence at least PRESENT_SHARE); later steps win ties, since they learnt the subject longer.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from datakit.errors import UsageError

EVAL_DIR = "eval"
PRESENT_SHARE = 0.5  # a checkpoint "shows the subject" when at least this share of its scene samples does
CURVE_FIELDS = ("step", "checkpoint", "samples", "leak_rate", "white_rate", "plain_rate", "scene_agreement",
                "subject_presence")


@dataclass
class CurvePoint:
    """One measured checkpoint (step 0: the base model alone) over the scene prompts."""

    step: int
    checkpoint: str | None  # the adapter file of that step (None: the base model)
    samples: int
    leak_rate: float
    white_rate: float | None
    plain_rate: float | None
    scene_agreement: float | None
    subject_presence: float | None  # CLIP's when a CLIP model is named, else the colour similarity's


@dataclass
class BestCheckpoint:
    """The checkpoint to use, and why."""

    step: int | None
    checkpoint: str | None
    reason: str


def leak_rate(result, label: str) -> tuple[int, float]:
    """(scene samples, share of them white or plain) of one model in an EvalResult."""
    scene_names = {s.name for s in result.scenes if not s.is_plain}
    mine = [s for s in result.samples if s.model == label and s.scene in scene_names]
    if not mine:
        return 0, 0.0
    return len(mine), round(float(np.mean([bool(s.white or s.plain) for s in mine])), 4)


def point_of(result, label: str, step: int, checkpoint: str | None) -> CurvePoint:
    """The curve point of one model of an EvalResult."""
    row = next(r for r in result.overall if r.model == label)
    samples, leak = leak_rate(result, label)
    presence = row.subject_presence if row.subject_presence is not None else row.subject_presence_colour
    return CurvePoint(step, checkpoint, samples, leak, row.white_rate, row.plain_rate, row.scene_agreement, presence)


def choose_best(points: list[CurvePoint]) -> BestCheckpoint:
    """Lowest leakage among the checkpoints that show the subject; later steps win ties."""
    trained = [p for p in points if p.step > 0 and p.checkpoint]
    if not trained:
        return BestCheckpoint(None, None, "no checkpoint was measured")
    measured = any(p.subject_presence is not None for p in trained)
    shown = [p for p in trained if p.subject_presence is not None and p.subject_presence >= PRESENT_SHARE]
    if measured and not shown:
        return BestCheckpoint(None, None, f"no checkpoint shows the subject in {PRESENT_SHARE:.0%} of its samples: "
                                          "train longer or check --eval-subject")
    pool = shown if measured else trained
    best = min(pool, key=lambda p: (p.leak_rate, -p.step))
    why = f"lowest leakage ({best.leak_rate:.0%} of scene samples white or plain)"
    why += (f" with the subject shown in {best.subject_presence:.0%}" if measured
            else "; subject presence not measured (give --eval-subject, the cut-outs, to rule out checkpoints "
                 "that lost the subject)")
    return BestCheckpoint(best.step, best.checkpoint, why)


def adapter_file(saved: Path) -> Path:
    """The adapter file of a saved checkpoint (a LoRA checkpoint is a folder holding one .safetensors)."""
    from datakit.train.checkpoint import STATE_TENSORS

    if saved.is_dir():
        files = sorted(p for p in saved.glob("*.safetensors") if p.name != STATE_TENSORS)
        if files:
            return files[0]
    return saved


class CheckpointEval:
    """Measures the trained network at each eval step and keeps the curve; set up before training so bad options fail early."""

    def __init__(self, cfg, out: Path, trigger: str | None, size: tuple[int, int], device, reporter):
        from datakit.evaluate.clip import clip_model_name, load_clip
        from datakit.evaluate.sampling import SamplingOptions
        from datakit.evaluate.scenes import BUILTIN_SCENES, read_scenes_file, with_plain
        from datakit.evaluate.subject_files import read_cutouts

        if not trigger:
            raise UsageError("--eval-every samples the trigger word on scene prompts, and this dataset names none: "
                             "give it one (emit --trigger, or a trigger in the dataset) or drop --eval-every")
        self.trigger, self.device, self.reporter = trigger, device, reporter
        self.folder = Path(out) / EVAL_DIR
        self.scenes = with_plain(read_scenes_file(cfg.eval_prompts) if cfg.eval_prompts else list(BUILTIN_SCENES))
        self.seeds = [cfg.seed + i for i in range(cfg.eval_seeds)]
        self.cutouts, self.cutout_names, self.skipped = read_cutouts(cfg.eval_subject, "--eval-subject")
        for row in self.skipped:
            reporter.warn(f"skipped {row['source']}: {row['reason']}")
        self.options = SamplingOptions(steps=cfg.eval_steps, guidance=cfg.sample_cfg, width=size[0], height=size[1],
                                       batch_size=cfg.eval_batch_size)
        self.options.check()
        name = clip_model_name(cfg.eval_clip_model)
        self.clip = load_clip(name, str(getattr(device, "type", device))) if name else None
        self.reference = None
        self.points: list[CurvePoint] = []

    def start(self, resumed_step: int) -> None:
        """A fresh run clears OUT/eval; a resumed one keeps the points measured before its step."""
        old = self._read_curve()
        self.points = [p for p in old if 0 < p.step <= resumed_step] if resumed_step else []
        if not resumed_step and self.folder.is_dir():
            for f in self.folder.iterdir():
                if f.is_file() and (f.name.startswith("step-") or f.name.startswith(("curve.", "base."))):
                    f.unlink()

    def measure(self, base, network, step: int, saved: Path | None, autocast) -> CurvePoint:
        """Draw and measure the network at this step (and the base model, the first time); write the files."""
        from datakit.evaluate.adapters import NetworkAdapter
        from datakit.evaluate.core import BASE, evaluate
        from datakit.imageio import write_text_atomic
        from datakit.train.samples import inference_ready

        label = f"step-{step:06d}"
        checkpoint = str(adapter_file(saved)) if saved is not None else None
        adapter = NetworkAdapter(network, label, self.trigger, restore=float(getattr(network, "multiplier", 1.0)))
        images: dict[str, np.ndarray] = {}

        def keep(model, scene, req, image, fresh):
            images[req.key] = image

        with inference_ready(base, self.device) as pipe, autocast():
            result = evaluate(pipe, [adapter], self.scenes, self.seeds, options=self.options, clip=self.clip,
                              cutouts=self.cutouts or None, reference=self.reference, on_sample=keep)
        self.folder.mkdir(parents=True, exist_ok=True)
        from datakit.evaluate.report import write_grid

        if self.reference is None:
            self.reference = result
            write_grid(result, BASE, images.get, self.folder / "base.png")
            if not any(p.step == 0 for p in self.points):
                self.points.insert(0, point_of(result, BASE, 0, None))
        write_grid(result, label, images.get, self.folder / f"{label}.png")
        write_text_atomic(self.folder / f"{label}.json",
                          json.dumps({"step": step, "checkpoint": checkpoint, **result.to_dict()}, indent=1) + "\n")
        point = point_of(result, label, step, checkpoint)
        self.points = [p for p in self.points if p.step != step] + [point]
        self.points.sort(key=lambda p: p.step)
        self._write_curve()
        shown = "n/a" if point.subject_presence is None else f"{point.subject_presence:.0%}"
        self.reporter.info(f"eval at step {step}: leakage {point.leak_rate:.0%} (white {point.white_rate:.0%}, "
                           f"plain {point.plain_rate:.0%}), subject shown {shown}")
        return point

    def best(self) -> BestCheckpoint:
        return choose_best(self.points)

    def summary(self) -> dict:
        """What datakit.json records: the curve, the best checkpoint and what was not measured."""
        best = self.best()
        not_measured = dict(self.reference.not_measured) if self.reference is not None else {}
        return {"folder": str(self.folder), "curve": [asdict(p) for p in self.points], "best": asdict(best),
                "scenes": [s.name for s in self.scenes], "seeds": self.seeds, "subject": self.cutout_names, "skipped": self.skipped,
                "clip_model": getattr(self.clip, "name", None), "not_measured": not_measured}

    # -- files -------------------------------------------------------------------------------------------
    def _read_curve(self) -> list[CurvePoint]:
        try:
            rows = json.loads((self.folder / "curve.json").read_text(encoding="utf-8"))["curve"]
            return [CurvePoint(**row) for row in rows]
        except (OSError, ValueError, KeyError, TypeError):
            return []  # no curve yet, or one this version cannot read: measured again

    def _write_curve(self) -> None:
        import pandas as pd

        from datakit.imageio import write_text_atomic

        rows, best = [asdict(p) for p in self.points], self.best()
        write_text_atomic(self.folder / "curve.csv", pd.DataFrame(rows, columns=list(CURVE_FIELDS)).to_csv(index=False))
        write_text_atomic(self.folder / "curve.json", json.dumps({"curve": rows, "best": asdict(best)}, indent=1) + "\n")
        write_curve_plot(self.points, best, self.folder / "curve.png")


def write_curve_plot(points: list[CurvePoint], best: BestCheckpoint, dest: Path) -> None:
    """Leakage, white and plain rates and subject presence against steps; the best checkpoint marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from datakit.imageio import save_figure_atomic

    steps = [p.step for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    for field, label, style in (("leak_rate", "leakage (white or plain)", "-o"), ("white_rate", "white", "--"),
                                ("plain_rate", "plain", ":"), ("subject_presence", "subject shown", "-s")):
        values = [getattr(p, field) for p in points]
        if any(v is not None for v in values):
            ax.plot(steps, [math.nan if v is None else v for v in values], style, label=label, markersize=4)
    if best.step is not None:
        ax.axvline(best.step, color="grey", linewidth=1)
        ax.annotate("best", (best.step, 1.02), ha="center", fontsize=8)
    ax.set_xlabel("step (0: the base model)")
    ax.set_ylabel("share of scene samples")
    ax.set_ylim(-0.02, 1.08)
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    save_figure_atomic(fig, dest)
