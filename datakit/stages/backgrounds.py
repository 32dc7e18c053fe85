"""The backgrounds stage: N varied places for a subject to stand, each with the tags of its scene.

Three engines write the same outputs (OUT/bg000.png + bg000.txt, manifest rows with tags, scene,
prompt, negative_prompt, engine, model, size, ground_y):
- procedural (default): scenes drawn in code, no weights, a process pool on the CPU;
- sdxl: a diffusion model (SDXL or SD1.x/2.x) loaded with datakit.models.diffusion, batched on a GPU;
- folder: the user's own photos, scaled and cropped to the size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from datakit.backgrounds.config import DEFAULT_NEGATIVE, BackgroundsConfig, check_config, config_dict
from datakit.backgrounds.outputs import base_row, bg_name, write_outputs
from datakit.captions import parse_caption
from datakit.console import Reporter
from datakit.errors import ImageError, UsageError
from datakit.imageio import is_image_name, open_image
from datakit.stage import StageRun, Task, TaskResult, default_workers, run_simple_stage

# The stage's public face: callers (the CLI, composite) take the config and names from here.
__all__ = ["DEFAULT_NEGATIVE", "BackgroundsConfig", "bg_name", "match_procedural", "procedural_plan", "run_backgrounds"]


def run_backgrounds(cfg: BackgroundsConfig, reporter: Reporter | None = None) -> dict:
    """Make the backgrounds in cfg.out_dir; returns the datakit.json info."""
    reporter = reporter or Reporter(quiet=True)
    check_config(cfg)
    if cfg.engine == "folder":
        return _run_folder(cfg, reporter)
    if cfg.engine == "sdxl":
        from datakit.backgrounds.diffusion_engine import run_diffusion

        return run_diffusion(cfg, reporter)
    return _run_procedural(cfg, reporter)


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
    outputs = write_outputs(Path(shared["out"]), task.payload["name"], shared["format"], img, tags)
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
    run = StageRun("backgrounds", cfg.out_dir, config_dict(cfg), force=cfg.force, reporter=reporter, seed=cfg.seed)
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
    outputs = write_outputs(Path(shared["out"]), task.payload["name"], shared["format"], img, p["tags"])
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
    run = StageRun("backgrounds", cfg.out_dir, config_dict(cfg), inputs_dir=src, upstream=inputs.upstream,
                   force=cfg.force, reporter=reporter, seed=cfg.seed, pre_skipped=pre_skipped)
    workers = cfg.workers or default_workers()
    shared = {"out": str(cfg.out_dir), "format": cfg.format}
    return run_simple_stage(run, tasks, _crop_one, workers=workers, shared=shared, description="backgrounds",
                            extra={"engine": "folder"})

