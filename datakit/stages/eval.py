"""The eval stage: sample the trigger word on scene prompts with the base model and each adapter, measure leakage.

OUT (--output DIR) holds the samples (samples/<model>/<scene>_s<seed>.png, one manifest row each),
a grid per model (grids/<model>.png), eval.csv and eval.json (one row per model x prompt), eval.png
(the plot), and datakit.json last. A sample is redrawn only when what it depends on changed: the
base model (its files' paths, sizes and modification times), the adapter file's bytes, the prompt,
the seed, the sampling options. The report is rebuilt when the measurement changes (another CLIP
model, other cut-outs) without drawing anything again.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from datakit.console import Reporter
from datakit.errors import ImageError, UsageError
from datakit.evaluate.core import EvalModel, EvalResult, evaluate, plan_models, requests_for
from datakit.evaluate.sampling import SamplingOptions
from datakit.evaluate.subject_files import read_cutouts
from datakit.evaluate.scenes import BUILTIN_SCENES, EvalScene, read_scenes_file, with_plain
from datakit.imageio import open_image, remove_stale_temporaries, save_png_array_atomic
from datakit.manifest import hash_file, hash_json
from datakit.paths import safe_name
from datakit.results import StageResult
from datakit.stage import StageRun, Task, TaskResult

SAMPLES_DIR = "samples"
GRIDS_DIR = "grids"
REPORT_FILES = ("eval.csv", "eval.json", "eval.png")
# Bump when a metric's definition changes: reports made by the old definition are rebuilt.
METRICS_VERSION = 1
MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".json", ".txt", ".model")


@dataclass
class EvalConfig:
    """Everything the eval stage needs; the CLI builds it from its options."""

    out_dir: Path
    base_model: str
    adapters: list[Path]
    subject_dir: Path | None = None
    prompts_file: Path | None = None
    seeds: int = 4
    seed: int = 0
    trigger: str | None = None
    clip_model: str | None = None  # else $DATAKIT_CLIP_MODEL; None: CLIP metrics not measured
    steps: int = 25
    guidance: float = 7.0
    width: int | None = None
    height: int | None = None
    batch_size: int = 4
    negative_prompt: str = ""
    lora_strength: float = 1.0
    hypernetwork_strength: float = 1.0
    family: str | None = None
    config_dir: Path | None = None
    scheduler: str | None = None
    dtype: str = "auto"
    device: str = "auto"
    force: bool = False

    def sampling(self) -> SamplingOptions:
        return SamplingOptions(steps=self.steps, guidance=self.guidance, width=self.width, height=self.height,
                               batch_size=self.batch_size, negative_prompt=self.negative_prompt)


@dataclass(kw_only=True)
class EvalStageResult(StageResult):
    """What an eval run did: the common counts plus the report's files and headline rows.

    (Named apart from evaluate.core.EvalResult, the measurement itself.)"""

    report_hash: str = ""  # what the report depends on besides the samples: a change rebuilds it
    report_files: list[str] = field(default_factory=list)
    family: str | None = None
    device: str = "cpu"
    batch_size: int = 4
    clip_model: str | None = None
    subject: list[str] = field(default_factory=list)  # the cut-outs subject presence was measured against
    overall: list[dict] = field(default_factory=list)  # one MetricRow per model, over every scene
    not_measured: dict[str, str] = field(default_factory=dict)  # metric -> why it was not measured
    lora_strength: float = 1.0
    hypernetwork_strength: float = 1.0


def _check(cfg: EvalConfig) -> None:
    if not cfg.adapters:
        raise UsageError("give at least one --adapter FILE (a LoRA .safetensors or a hypernetwork .pt)")
    if cfg.seeds < 1:
        raise UsageError(f"--seeds must be at least 1, got {cfg.seeds}")
    for name, value in (("--lora-strength", cfg.lora_strength), ("--hn-strength", cfg.hypernetwork_strength)):
        if not -10 <= value <= 10:
            raise UsageError(f"{name} {value} is out of range (-10..10; 1 is the adapter as trained)")
    cfg.sampling().check()
    if cfg.subject_dir is not None and not Path(cfg.subject_dir).is_dir():
        raise UsageError(f"--subject {cfg.subject_dir} is not a folder (give the cut-outs of the subject)")
    resolved = {Path(a).resolve() for a in cfg.adapters}
    if len(resolved) != len(cfg.adapters):
        raise UsageError("the same --adapter file is given twice")
    out = Path(cfg.out_dir).resolve()
    for a in cfg.adapters:
        if Path(a).resolve() == out or out in Path(a).resolve().parents:
            raise UsageError(f"--adapter {a} lies inside --output {cfg.out_dir}: give eval its own folder")


def model_identity(name: str, marker: str = "model_index.json") -> list:
    """What identifies a model without reading gigabytes: path, size and mtime of its files, or the
    Hugging Face cache snapshot it resolves to (found by its `marker` file)."""
    path = Path(name).expanduser()
    if path.is_file():
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_FILE_SUFFIXES)
        return [str(path.resolve())] + [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        hit = try_to_load_from_cache(name, marker)
    except HFValidationError:  # not a repo id either: the loader says what is wrong with it
        hit = None
    return [name, Path(hit).parent.name if isinstance(hit, str) else None]


def adapter_labels(paths: list[Path]) -> list[str]:
    """A short unique label per adapter file: its stem, made file-name safe, numbered when two clash."""
    from datakit.evaluate.adapters import DIFFUSERS_LORA_FILES

    labels: list[str] = []
    for p in paths:
        p = Path(p)
        # diffusers' fixed file names say nothing: such a file is named after its folder.
        name = p.parent.name if p.name in DIFFUSERS_LORA_FILES else (p.stem if p.is_file() else p.name)
        stem = safe_name(name, fallback="adapter")
        label, n = stem, 2
        # "base" and "base [trigger]" are the base model's rows.
        while label.casefold() in {x.casefold() for x in labels} or label.casefold() == "base" or label.casefold().startswith("base ["):
            label = f"{stem}-{n}"
            n += 1
        labels.append(label)
    return labels


def _sample_file(model: str, scene: str, seed: int) -> str:
    return f"{SAMPLES_DIR}/{safe_name(model, fallback='model')}/{safe_name(scene, fallback='scene')}_s{seed}.png"


def _tasks(models: list[EvalModel], adapters: dict, scenes: list[EvalScene], seeds: list[int], cfg: EvalConfig) -> list[Task]:
    tasks = []
    for model in models:
        adapter = adapters.get(model.label)
        inputs = []
        strength = None
        if adapter is not None:
            path = Path(adapter.path)
            inputs = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            strength = cfg.lora_strength if adapter.kind == "lora" else cfg.hypernetwork_strength
        for scene, req in requests_for(model, scenes, seeds):
            params = {"model": model.label, "kind": model.kind, "scene": scene.name, "prompt": req.prompt,
                      "seed": req.seed, "strength": strength, "file": _sample_file(model.label, scene.name, req.seed)}
            tasks.append(Task(key=req.key, inputs=inputs, params=params, source=req.key))
    return tasks


def _generation_config(cfg: EvalConfig, device: str) -> dict:
    """The config recorded in datakit.json and fingerprinted per sample (what changes an image)."""
    return {
        "base_model": cfg.base_model, "base_model_id": model_identity(cfg.base_model), "family": cfg.family,
        "config_dir": str(cfg.config_dir) if cfg.config_dir else None, "scheduler": cfg.scheduler, "dtype": cfg.dtype,
        "device": device, "steps": cfg.steps, "guidance": cfg.guidance, "width": cfg.width, "height": cfg.height,
        "negative_prompt": cfg.negative_prompt,
    }


def _report_hash(cfg: EvalConfig, clip_name: str | None, cutout_files: list[Path], scenes, seeds, models) -> str:
    return hash_json({
        "metrics_version": METRICS_VERSION, "clip": model_identity(clip_name, "config.json") if clip_name else None,
        "subject": [hash_file(p) for p in cutout_files], "scenes": [asdict(s) for s in scenes], "seeds": seeds,
        "models": [asdict(m) for m in models],
    })


def run_eval(cfg: EvalConfig, reporter: Reporter | None = None) -> EvalStageResult:
    """Draw, measure and report in cfg.out_dir; returns what the run did."""
    from datakit.backgrounds.diffusion_engine import DTYPES, SCHEDULERS, resolve_device
    from datakit.captions import check_trigger
    from datakit.evaluate.adapters import open_adapter
    from datakit.evaluate.clip import clip_model_name

    reporter = reporter or Reporter(quiet=True)
    _check(cfg)
    if cfg.scheduler is not None and cfg.scheduler not in SCHEDULERS:
        raise UsageError(f"unknown --scheduler {cfg.scheduler!r} (choose {', '.join(SCHEDULERS)})")
    if cfg.dtype not in DTYPES:
        raise UsageError(f"unknown --dtype {cfg.dtype!r} (choose {', '.join(DTYPES)})")
    trigger = check_trigger(cfg.trigger, source="--trigger") if cfg.trigger is not None else None
    scenes = with_plain(read_scenes_file(cfg.prompts_file) if cfg.prompts_file else list(BUILTIN_SCENES))
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    labels = adapter_labels(cfg.adapters)
    adapters = [open_adapter(Path(p), label, trigger=trigger, lora_strength=cfg.lora_strength,
                             hypernetwork_strength=cfg.hypernetwork_strength) for p, label in zip(cfg.adapters, labels)]
    for a in adapters:
        if not a.trigger:
            raise UsageError(f"--adapter {a.path.name} names no trigger word in its metadata: give --trigger WORD "
                             "(the word its training captions start with)")
    models = plan_models(adapters)
    cutouts, cutout_names, pre_skipped = read_cutouts(cfg.subject_dir)
    clip_name = clip_model_name(cfg.clip_model)
    device = resolve_device(cfg.device, reporter)

    out = Path(cfg.out_dir)
    run = StageRun("eval", out, _generation_config(cfg, device), force=cfg.force, reporter=reporter, seed=cfg.seed,
                   pre_skipped=pre_skipped)
    for sub in (out / SAMPLES_DIR, out / GRIDS_DIR):
        if sub.is_dir():
            for folder in [sub, *(p for p in sub.iterdir() if p.is_dir())]:
                remove_stale_temporaries(folder)
    tasks = _tasks(models, {a.label: a for a in adapters}, scenes, seeds, cfg)
    todo = run.plan(tasks)
    for t in tasks:  # the manifest shows the sample's own seed (the same for every model and prompt)
        t.seed = t.params["seed"]
    cutout_files = [Path(cfg.subject_dir) / n for n in cutout_names] if cfg.subject_dir else []
    report_hash = _report_hash(cfg, clip_name, cutout_files, scenes, seeds, models)
    report_ready = (run.old_info or {}).get("report_hash") == report_hash and all((out / f).is_file() for f in REPORT_FILES)
    if not todo and run.nothing_to_do() and report_ready:
        reporter.info(f"eval: nothing to do, all {len(tasks)} samples and the report are up to date in {out} "
                      "(--force redoes them)")
        return run.summary_from_previous(EvalStageResult)
    todo_keys = {t.key for t in todo}
    todo_keys |= {t.key for t in tasks if t.key not in todo_keys and not _readable(out, t)}  # damaged: redraw
    todo = [t for t in tasks if t.key in todo_keys]

    pipe, family = None, (run.old_info or {}).get("family")
    if todo:
        pipe, family = _load_pipeline(cfg, device, adapters, reporter)
    clip = _load_clip(clip_name, device, reporter)
    run.invalidate()  # only now: a model that fails to load leaves the previous result intact
    by_key = {t.key: t for t in tasks}

    def existing(key: str):
        if key in todo_keys:
            return None
        return np.asarray(open_image(out / by_key[key].params["file"]).image.convert("RGB"))

    def on_sample(model, scene, req, image, fresh):
        if not fresh:
            return
        task = by_key[req.key]
        save_png_array_atomic(image, out / task.params["file"])
        run.record(task, TaskResult(key=task.key, outputs=[task.params["file"]],
                                    row={"trigger": model.trigger}))

    try:
        with reporter.progress(len(todo), "eval") as bar:
            result = evaluate(pipe, adapters, scenes, seeds, options=cfg.sampling(), clip=clip, cutouts=cutouts or None,
                              existing=existing, on_sample=on_sample, on_batch=bar.advance)
    except KeyboardInterrupt:
        run.save_progress()
        raise
    for score in result.samples:  # eval.json names each sample's image, relative to OUT
        score.file = by_key[score.key].params["file"]
    files = _write_report(result, out, run, reporter, clip_name=clip_name, subject=cutout_names)
    return run.finish(EvalStageResult(
        report_hash=report_hash, report_files=files, family=family, device=device, batch_size=cfg.batch_size,
        clip_model=clip_name, subject=cutout_names, overall=[asdict(r) for r in result.overall],
        not_measured=result.not_measured, lora_strength=cfg.lora_strength, hypernetwork_strength=cfg.hypernetwork_strength,
    ))


def _readable(out: Path, task: Task) -> bool:
    """A kept sample that still decodes (a damaged file is redrawn, not trusted)."""
    try:
        open_image(out / task.params["file"])
        return True
    except ImageError:
        return False


def _load_pipeline(cfg: EvalConfig, device: str, adapters: list, reporter: Reporter):
    """The base pipeline on the device, and a check that every adapter fits it (before anything is drawn)."""
    from datakit.backgrounds.diffusion_engine import make_scheduler, resolve_dtype
    from datakit.models.diffusion import detect_family, load_diffusion_pipeline

    t0 = time.perf_counter()
    dtype = resolve_dtype(cfg.dtype, device)
    pipe = load_diffusion_pipeline(cfg.base_model, family=cfg.family, config_dir=cfg.config_dir, torch_dtype=dtype)
    pipe.scheduler = make_scheduler(pipe, cfg.scheduler, False)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    family = detect_family(pipe)
    for a in adapters:
        if a.kind == "hypernetwork" and family == "sdxl":
            raise UsageError(f"--adapter {a.path.name}: hypernetworks are for SD1/SD2 models; the base model is SDXL")
        with a.applied(pipe):  # raises a UsageError naming the file when it does not fit this base model
            pass
    reporter.info(f"eval: {family} model {cfg.base_model} on {device} ({str(dtype).replace('torch.', '')}), "
                  f"loaded in {time.perf_counter() - t0:.1f} s")
    return pipe, family


def _load_clip(name: str | None, device: str, reporter: Reporter):
    if not name:
        reporter.info("eval: no CLIP model named (--clip-model or DATAKIT_CLIP_MODEL): scene agreement is not measured, "
                      "subject presence uses colour similarity")
        return None
    from datakit.evaluate.clip import load_clip

    clip = load_clip(name, device)
    reporter.info(f"eval: CLIP model {name}")
    return clip


def _write_report(result: EvalResult, out: Path, run: StageRun, reporter: Reporter, **extra) -> list[str]:
    """Grids, eval.csv, eval.json, eval.png and the terminal table; old grids of models no longer compared go."""
    from datakit.evaluate import report

    rows = run.rows

    def load(key: str):
        row = rows.get(key)
        if not row or not row.get("file"):
            return None
        with contextlib.suppress(ImageError):
            return np.asarray(open_image(out / row["file"]).image.convert("RGB"))
        return None

    files = []
    for model in result.models:
        name = f"{GRIDS_DIR}/{safe_name(model.label, fallback='model')}.png"
        (out / GRIDS_DIR).mkdir(exist_ok=True)
        report.write_grid(result, model.label, load, out / name)
        files.append(name)
    for old in (run.old_info or {}).get("report_files", []):
        if old not in files and old.startswith(f"{GRIDS_DIR}/"):
            with contextlib.suppress(FileNotFoundError):
                (out / old).unlink()
    report.write_csv(result, out / "eval.csv")
    report.write_json(result, out / "eval.json", extra)
    report.write_plot(result, out / "eval.png")
    if not (reporter.quiet or reporter.json_mode):
        reporter.err.print(report.terminal_table(result))
    return files + list(REPORT_FILES)
