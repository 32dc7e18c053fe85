"""The emit stage's options: the config, its checks, the flatten colour, and the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datakit.emit.validation import Findings
from datakit.errors import UsageError
from datakit.results import StageResult


@dataclass
class EmitConfig:
    """Everything `datakit emit` needs (the CLI builds it from its options)."""

    out_dir: Path
    concepts: list[tuple[str, Path]]  # (name as given, folder)
    weights: dict[str, float] = field(default_factory=dict)
    reg_dir: Path | None = None
    reg_class: str | None = None
    alpha_mask: list[str] = field(default_factory=list)
    keep_tokens: int | None = None
    target_steps: int | None = None
    epochs: int | None = None
    batch_size: int = 1
    resolution: int = 512
    bucket_no_upscale: bool = False
    shuffle_caption: bool = True
    copy: bool = False
    flatten_color: str = "#ffffff"
    min_size: int = 64
    dup_threshold: int = 3
    seed: int = 0
    workers: int | None = None
    force: bool = False


def check_options(cfg: EmitConfig) -> None:
    """Usage errors in the numeric options, before anything is read."""
    if cfg.target_steps is not None and cfg.epochs is not None:
        raise UsageError("--target-steps and --epochs exclude each other: give one")
    for value, option in ((cfg.batch_size, "--batch-size"), (cfg.target_steps, "--target-steps"), (cfg.epochs, "--epochs")):
        if value is not None and value < 1:
            raise UsageError(f"{option} must be at least 1")
    if cfg.keep_tokens is not None and cfg.keep_tokens < 0:
        raise UsageError("--keep-tokens must be 0 or more")
    if cfg.resolution < 64 or cfg.resolution % 64:
        raise UsageError(f"--resolution must be a multiple of 64 (got {cfg.resolution})")


def parse_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb', 'rrggbb' or 'white'/'black'/'grey' -> an RGB triple."""
    named = {"white": "ffffff", "black": "000000", "grey": "808080", "gray": "808080"}
    hexpart = named.get(text.strip().lower(), text.strip().lstrip("#"))
    if len(hexpart) != 6 or any(c not in "0123456789abcdefABCDEF" for c in hexpart):
        raise UsageError(f"--flatten-color expects #rrggbb or white/black/grey, got {text!r}")
    return tuple(int(hexpart[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


@dataclass(kw_only=True)
class EmitResult(StageResult):
    """What an emit run made: the common counts plus the balance plan, the side files and the checks."""

    plan: dict = field(default_factory=dict)  # the balance plan as plan.json has it (Plan.to_dict() + folders)
    dataset_toml: str = "dataset.toml"
    metadata: str = "metadata.jsonl"
    report: str = "report.html"
    resolution: int = 512
    findings: Findings = field(default_factory=Findings)
