"""The composite stage's options: the config, its checks and parsed forms, what is fingerprinted, and the result."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from datakit.compositing.placement import parse_framing, parse_range
from datakit.compositing.render import EFFECTS
from datakit.errors import UsageError
from datakit.results import Record, StageResult

FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp"}
DEFAULT_BG_COUNT = 100
DEFAULT_GENERATED_SIZE = 1024
MIN_OUTPUT_SIDE = 64
MAX_ROTATION = 45.0


@dataclass
class CompositeConfig:
    """Everything `datakit composite` needs (the CLI fills it; tests build it directly)."""

    input_dir: Path
    out_dir: Path
    bg_count: int | None = None  # default: every image of --backgrounds, or 100 generated
    backgrounds: Path | None = None
    reuse_backgrounds: bool = False
    bg_engine: str = "procedural"
    bg_model: str | None = None
    bg_prompts: Path | None = None
    bg_from: Path | None = None
    bg_tags: list[str] | None = None
    bg_options: dict = field(default_factory=dict)  # more BackgroundsConfig fields, passed through
    per_background: int = 1
    # Ground line for backgrounds that do not say (a plain image folder): "auto" (estimated from the
    # image's horizon / floor line; feet in the lower part of the frame when none is found), "none" (no ground: anywhere, no shadows) or a fraction of the height from the top.
    ground_y: str = "auto"
    framing: str = "full=0.6,upper=0.3,close=0.1"
    height_range: str = "0.35-0.9"  # full-body subject height / frame height
    rotate: float = 0.0  # max tilt in degrees (0: none)
    flip: bool = False  # mirror half the composites (off: asymmetric characters suffer)
    disable: list[str] = field(default_factory=list)  # effects to switch off
    format: str = "png"
    quality: int = 95
    width: int | None = None  # default: each background's own size
    height: int | None = None
    underscores: bool = False
    contact_sheet: bool = True
    seed: int = 0
    workers: int | None = None
    device: str = "auto"
    force: bool = False


@dataclass(frozen=True)
class ParsedOptions:
    """The options that need parsing, parsed once (before any work)."""

    ground: tuple[bool, float | None] | None  # --ground-y: None for auto, else (known, fraction or None: no ground)
    format: str  # png | jpg | webp
    framing: dict[str, float]  # framing -> weight
    full_range: tuple[float, float]  # full-body subject height / frame height


def parse_options(cfg: CompositeConfig) -> ParsedOptions:
    """Check every option (UsageError naming the flag); return the parsed ones the workers need."""
    fmt = cfg.format.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"--format must be png, jpg or webp, got '{cfg.format}'")
    fmt = "jpg" if fmt == "jpeg" else fmt
    if cfg.per_background < 1:
        raise UsageError(f"--per-background must be at least 1, got {cfg.per_background}")
    if cfg.bg_count is not None and cfg.bg_count < 1:
        raise UsageError(f"--bg-count must be at least 1, got {cfg.bg_count}")
    if not 1 <= cfg.quality <= 100:
        raise UsageError(f"--quality must be 1-100, got {cfg.quality}")
    if not 0 <= cfg.rotate <= MAX_ROTATION:
        raise UsageError(f"--rotate must be 0-{MAX_ROTATION:g} degrees, got {cfg.rotate}")
    for side, name in ((cfg.width, "--width"), (cfg.height, "--height")):
        if side is not None and side < MIN_OUTPUT_SIDE:
            raise UsageError(f"{name} must be at least {MIN_OUTPUT_SIDE}, got {side}")
    if (cfg.width is None) != (cfg.height is None):
        raise UsageError("give both --width and --height (or --size), or neither to keep each background's size")
    unknown = sorted(set(cfg.disable) - set(EFFECTS))
    if unknown:
        raise UsageError(f"--disable: unknown effect(s) {', '.join(unknown)} (known: {', '.join(EFFECTS)})")
    if cfg.backgrounds is not None and not Path(cfg.backgrounds).is_dir():
        raise UsageError(f"--backgrounds folder does not exist: {cfg.backgrounds}")
    return ParsedOptions(
        ground=parse_ground(cfg.ground_y),
        format=fmt,
        framing=parse_framing(cfg.framing),
        full_range=parse_range(cfg.height_range, name="--height-range", lo=0.0, hi=1.0),
    )


def parse_ground(value) -> tuple[bool, float | None] | None:
    """--ground-y: None for auto, else (known, fraction or None for no ground)."""
    text = str(value).strip().lower()
    if text in ("auto", ""):
        return None
    if text in ("none", "no"):
        return True, None
    try:
        y = float(text)
    except ValueError:
        raise UsageError(f"--ground-y must be auto, none or a fraction of the height (0-1], got '{value}'") from None
    if not 0.0 < y <= 1.0:
        raise UsageError(f"--ground-y must be a fraction of the height in (0, 1], got {value}")
    return True, y


def config_dict(cfg: CompositeConfig) -> dict:
    """The config recorded in datakit.json and hashed. Left out: what changes no composite (contact sheet,
    device) and folder paths (recorded beside it; files are fingerprinted by content, so moving them
    redoes nothing)."""
    d = dataclasses.asdict(cfg)
    for k in ("contact_sheet", "device", "input_dir", "out_dir", "backgrounds"):
        d.pop(k)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass
class BackgroundSource(Record):
    """Where a run's backgrounds came from and how many it used."""

    folder: str = ""
    generated: bool = False  # made by the backgrounds stage into OUT/backgrounds/
    used: int = 0
    available: int = 0  # usable backgrounds in the folder


@dataclass(kw_only=True)
class CompositeResult(StageResult):
    """What a composite run did: the common counts plus its backgrounds, subjects and contact sheet."""

    backgrounds: BackgroundSource = field(default_factory=BackgroundSource)
    subjects: int = 0  # usable cut-outs
    contact_sheet: str | None = None  # its name in OUT, or None when none was drawn
