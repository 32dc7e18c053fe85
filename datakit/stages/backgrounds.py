"""The backgrounds stage: N varied places for a subject to stand, each with the tags of its scene.

Three engines write the same outputs (OUT/bg000.png + bg000.txt, manifest rows with tags, scene,
prompt, negative_prompt, engine, model, size, ground_y):
- procedural (default): scenes drawn in code, no weights, a process pool on the CPU;
- sdxl: a diffusion model (SDXL or SD1.x/2.x) loaded with datakit.models.diffusion, batched on a GPU;
- folder: the user's own photos, scaled and cropped to the size.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datakit.captions import format_caption, parse_caption
from datakit.console import Reporter
from datakit.errors import ImageError, UsageError
from datakit.imageio import is_image_name, open_image, save_image_atomic, save_png_array_atomic, write_text_atomic
from datakit.stage import StageRun, Task, TaskResult, default_workers, run_simple_stage

ENGINES = ("procedural", "sdxl", "folder")
FORMATS = ("png", "jpg")
MODEL_ENV = "DATAKIT_BG_MODEL"
DEFAULT_NEGATIVE = (
    "person, character, people, human, text, watermark, signature, logo, "
    "lowres, worst quality, low quality, blurry, jpeg artifacts, deformed"
)


@dataclass
class BackgroundsConfig:
    """Everything the backgrounds stage needs; the CLI builds it from its options."""

    out_dir: Path
    count: int | None  # None only for the folder engine: one background per photo
    engine: str = "procedural"  # procedural | sdxl | folder
    width: int = 1024
    height: int = 1024
    seed: int = 0
    prompts_file: Path | None = None
    model: str | None = None  # sdxl engine: folder, .safetensors or Hugging Face id (else $DATAKIT_BG_MODEL)
    from_dir: Path | None = None  # folder engine
    tags: list[str] | None = None  # folder engine: tags for photos without a same-stem .txt
    workers: int | None = None
    force: bool = False
    format: str = "png"  # png | jpg
    # Diffusion engine options.
    family: str | None = None  # sd1 | sd2 | sdxl; detected when None
    config_dir: Path | None = None
    vae: str | None = None  # e.g. madebyollin/sdxl-vae-fp16-fix (a folder or a Hugging Face id)
    steps: int | None = None  # default 30, or 4 with turbo
    guidance: float | None = None  # default 6.0, or 0 with turbo
    negative_prompt: str | None = None  # default DEFAULT_NEGATIVE
    scheduler: str | None = None  # euler | euler_a | dpmpp_2m | dpmpp_2m_karras | ddim | unipc
    turbo: bool = False  # few-step checkpoints (SDXL-Turbo/Lightning): trailing timesteps, guidance 0
    batch_size: int = 4
    device: Any = "auto"
    dtype: str = "auto"  # auto | fp16 | bf16 | fp32
    prediction_type: str | None = None
    # Folder engine options.
    crop: str = "center"  # center | random
    ground_y: float | None = -1.0  # folder engine: where the ground is; -1: the default (0.82); None: no ground
    extra: dict = field(default_factory=dict)  # free-form, recorded in datakit.json


def bg_name(index: int, count: int) -> str:
    """bg000, bg001, ... padded to the largest index's width, at least 3 digits."""
    return f"bg{index:0{max(3, len(str(max(count - 1, 0))))}d}"


def _check(cfg: BackgroundsConfig) -> None:
    if cfg.engine not in ENGINES:
        raise UsageError(f"unknown engine {cfg.engine!r} (choose {', '.join(ENGINES)})")
    if cfg.count is not None and cfg.count < 1:
        raise UsageError(f"--count must be at least 1, got {cfg.count}")
    if cfg.count is None and cfg.engine != "folder":
        raise UsageError("--count is required (how many backgrounds to make)")
    if cfg.width < 16 or cfg.height < 16 or cfg.width > 8192 or cfg.height > 8192:
        raise UsageError(f"size {cfg.width}x{cfg.height} is out of range (16..8192 pixels per side)")
    if cfg.format not in FORMATS:
        raise UsageError(f"unknown format {cfg.format!r} (png or jpg)")
    if cfg.engine == "folder" and cfg.from_dir is None:
        raise UsageError("--engine folder needs --from DIR (your photos)")
    if cfg.engine != "folder" and cfg.from_dir is not None:
        raise UsageError(f"--from is for --engine folder (the engine is {cfg.engine})")
    if cfg.crop not in ("center", "random"):
        raise UsageError(f"unknown crop {cfg.crop!r} (center or random)")
    if cfg.ground_y is not None and cfg.ground_y != -1.0 and not 0 <= cfg.ground_y <= 1:
        raise UsageError(f"--ground {cfg.ground_y} is outside 0..1 (a fraction of the height from the top)")
    if cfg.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    if cfg.steps is not None and cfg.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {cfg.steps}")


def _config_dict(cfg: BackgroundsConfig) -> dict:
    """The config as recorded and fingerprinted (count is not in it: more images keep the earlier ones)."""
    d = asdict(cfg)
    for k in ("out_dir", "count", "force", "workers"):
        d.pop(k)
    d["device"] = str(getattr(cfg.device, "value", cfg.device))
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def run_backgrounds(cfg: BackgroundsConfig, reporter: Reporter | None = None) -> dict:
    """Make the backgrounds in cfg.out_dir; returns the datakit.json info."""
    reporter = reporter or Reporter(quiet=True)
    _check(cfg)
    if cfg.engine == "folder":
        return _run_folder(cfg, reporter)
    if cfg.engine == "sdxl":
        from datakit.backgrounds.diffusion_engine import run_diffusion

        return run_diffusion(cfg, reporter)
    return _run_procedural(cfg, reporter)


def _write_outputs(out: Path, name: str, fmt: str, image, tags: list[str]) -> list[str]:
    """Write the image (uint8 array or PIL image) and its caption atomically; returns the file names."""
    file = f"{name}.{fmt}"
    if isinstance(image, np.ndarray) and fmt == "png":
        save_png_array_atomic(image, out / file)
    else:
        from PIL import Image

        pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        params = {"quality": 95, "subsampling": 0} if fmt == "jpg" else {"compress_level": 3}
        save_image_atomic(pil.convert("RGB"), out / file, **params)
    write_text_atomic(out / f"{name}.txt", format_caption(tags) + "\n")
    return [file, f"{name}.txt"]


def base_row(*, scene: str, prompt: str, negative: str | None, tags, engine: str, model: str | None,
             size: tuple[int, int], ground_y: float | None) -> dict:
    """The manifest fields every engine writes."""
    return {
        "tags": list(tags), "scene": scene, "prompt": prompt, "negative_prompt": negative, "engine": engine,
        "model": model, "size": [int(size[0]), int(size[1])], "ground_y": ground_y,
    }


# ---------------------------------------------------------------------------------------------
# Procedural
# ---------------------------------------------------------------------------------------------


def procedural_plan(cfg: BackgroundsConfig, reporter: Reporter) -> list[tuple[Any, str]]:
    """(procedural scene, prompt) for each image; with a prompt file, only the lines it can draw."""
    from datakit.backgrounds.procedural import PROCEDURAL_SCENES
    from datakit.backgrounds.scenes import assign_scenes, parse_prompts_file

    if cfg.prompts_file is None:
        choices = [(s, s.prompt) for s in PROCEDURAL_SCENES]
    else:
        choices, unknown = [], []
        for line in parse_prompts_file(cfg.prompts_file):
            match = match_procedural(line.tags)
            if match is None:
                unknown.append(line)
            else:
                choices.append((match, line.prompt))
        for line in unknown:
            known = {t for s in PROCEDURAL_SCENES for t in s.tags}
            missing = [t for t in line.tags if t not in known] or list(line.tags)
            reporter.warn(
                f"procedural engine cannot draw {line.origin} '{line.prompt[:40]}' "
                f"(no procedural scene shows all of: {', '.join(missing)}); skipping that line"
            )
        if not choices:
            raise UsageError(
                f"the procedural engine can draw none of the scenes in {cfg.prompts_file}; "
                "use --engine sdxl with a model, or tags from `datakit backgrounds --list-scenes`"
            )
    return assign_scenes(choices, cfg.count, cfg.seed)


def match_procedural(tags) -> Any:
    """The procedural scene showing every one of these tags (the one with fewest extra tags), or None."""
    from datakit.backgrounds.procedural import PROCEDURAL_SCENES
    from datakit.captions import canonical

    want = {canonical(t) for t in tags}
    best = None
    for s in PROCEDURAL_SCENES:
        have = {canonical(t) for t in s.tags}
        if want <= have and (best is None or len(have) < len({canonical(t) for t in best.tags})):
            best = s
    return best


def _draw_one(task: Task, shared: dict) -> TaskResult:
    """Pool worker: draw one procedural scene and write it with its caption."""
    from datakit.backgrounds.procedural import render, scene_by_name

    p = task.params
    scene = scene_by_name(p["scene"])
    img, ground_y, tags = render(scene, task.seed, p["size"][0], p["size"][1])
    outputs = _write_outputs(Path(shared["out"]), task.payload["name"], shared["format"], img, tags)
    row = base_row(scene=scene.name, prompt=p["prompt"], negative=None, tags=tags, engine="procedural", model=None,
                   size=p["size"], ground_y=ground_y)
    return TaskResult(key=task.key, outputs=outputs, row=row)


def _run_procedural(cfg: BackgroundsConfig, reporter: Reporter) -> dict:
    plan = procedural_plan(cfg, reporter)
    tasks = []
    for i, (scene, prompt) in enumerate(plan):
        name = bg_name(i, cfg.count)
        tasks.append(Task(key=name, params={"scene": scene.name, "prompt": prompt, "size": [cfg.width, cfg.height]},
                          payload={"name": name}))
    run = StageRun("backgrounds", cfg.out_dir, _config_dict(cfg), force=cfg.force, reporter=reporter, seed=cfg.seed)
    workers = cfg.workers or default_workers()
    shared = {"out": str(cfg.out_dir), "format": cfg.format}
    scenes = sorted({s.name for s, _ in plan})
    return run_simple_stage(run, tasks, _draw_one, workers=workers, shared=shared, description="backgrounds",
                            extra={"engine": "procedural", "scenes": scenes})


# ---------------------------------------------------------------------------------------------
# Folder
# ---------------------------------------------------------------------------------------------


def _crop_one(task: Task, shared: dict) -> TaskResult:
    """Pool worker: scale and crop one photo to the target size."""
    from datakit.backgrounds.folder import cover_crop

    p = task.params
    loaded = open_image(task.payload["photo"])  # ImageError -> skipped and named
    rng = np.random.default_rng(task.seed)
    img, box = cover_crop(loaded.image, p["size"][0], p["size"][1], p["crop"], rng)
    outputs = _write_outputs(Path(shared["out"]), task.payload["name"], shared["format"], img, p["tags"])
    row = base_row(scene=p["scene"], prompt="", negative=None, tags=p["tags"], engine="folder", model=None,
                   size=p["size"], ground_y=p["ground_y"])
    row["crop"] = {"mode": p["crop"], "box": box}
    row["photo"] = p["photo"]
    return TaskResult(key=task.key, outputs=outputs, row=row, warnings=loaded.notes)


def _run_folder(cfg: BackgroundsConfig, reporter: Reporter) -> dict:
    from datakit.backgrounds.scenes import DEFAULT_GROUND_Y, normalise_tags
    from datakit.inputs import discover

    src = Path(cfg.from_dir)
    inputs = discover(src, stage="backgrounds")
    pre_skipped = list(inputs.skipped)
    photos = []
    # Unusable photos are named and left out before the backgrounds are shared out, so --count N
    # still gives N backgrounds from the photos that work.
    for item in inputs.items:
        if not is_image_name(item.path):
            pre_skipped.append({"source": item.key, "reason": "not an image file"})
            continue
        try:
            open_image(item.path)
        except ImageError as exc:
            pre_skipped.append({"source": item.key, "reason": str(exc)})
            continue
        photos.append(item)
    if not photos:
        raise UsageError(f"--from {src}: no usable images found")
    count = cfg.count or len(photos)
    if count > len(photos) and cfg.crop == "center":
        reporter.warn(f"{count} backgrounds from {len(photos)} photos: photos repeat (--crop random varies them)")
    fallback = normalise_tags(cfg.tags or [])
    ground = DEFAULT_GROUND_Y if cfg.ground_y == -1.0 else cfg.ground_y
    untagged = set()
    tasks = []
    for i in range(count):
        item = photos[i % len(photos)]
        name = bg_name(i, count)
        text = item.caption_text()
        tags = list(normalise_tags(parse_caption(text))) if text else list(fallback)
        if not tags:
            untagged.add(item.key)
        inputs_ = [item.path] + ([item.caption] if item.caption else [])
        params = {"photo": item.key, "scene": item.stem, "tags": tags, "size": [cfg.width, cfg.height],
                  "crop": cfg.crop, "ground_y": ground}
        tasks.append(Task(key=name, inputs=inputs_, params=params, payload={"name": name, "photo": str(item.path)},
                          source=item.key))
    if untagged:
        reporter.warn(f"{len(untagged)} photos have no same-stem .txt and no --tags were given: their captions are empty")
    run = StageRun("backgrounds", cfg.out_dir, _config_dict(cfg), inputs_dir=src, upstream=inputs.upstream,
                   force=cfg.force, reporter=reporter, seed=cfg.seed, pre_skipped=pre_skipped)
    workers = cfg.workers or default_workers()
    shared = {"out": str(cfg.out_dir), "format": cfg.format}
    return run_simple_stage(run, tasks, _crop_one, workers=workers, shared=shared, description="backgrounds",
                            extra={"engine": "folder"})


def env_model() -> str | None:
    """The model named by $DATAKIT_BG_MODEL, if set."""
    value = os.environ.get(MODEL_ENV, "").strip()
    return value or None
