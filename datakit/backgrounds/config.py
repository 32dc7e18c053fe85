"""The backgrounds stage's config: every engine's options, their checks, and what gets fingerprinted."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datakit.errors import UsageError

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


def check_config(cfg: BackgroundsConfig) -> None:
    """Usage errors in the options, before any work (UsageError)."""
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


def config_dict(cfg: BackgroundsConfig) -> dict:
    """The config as recorded and fingerprinted (count is not in it: more images keep the earlier ones)."""
    d = asdict(cfg)
    for k in ("out_dir", "count", "force", "workers"):
        d.pop(k)
    d["device"] = str(getattr(cfg.device, "value", cfg.device))
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def env_model() -> str | None:
    """The model named by $DATAKIT_BG_MODEL, if set."""
    value = os.environ.get(MODEL_ENV, "").strip()
    return value or None
