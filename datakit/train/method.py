"""What a training method plugs into the loop (datakit.train.loop): its network, latents, prompts, LR policy, files.

The loop owns everything methods share: the dataset, plan, base model, caches, the deterministic
micro-batches and the loss (datakit.train.step), gradient accumulation, clipping, divergence
checks, the loss log, samples and the summary. A method supplies, through `TrainingMethod`:

    network         built (or continued from a file) and hooked into the base model
    latent sampling how the cached latent distributions are sampled ("deterministic", "once", "random")
    prompts         what prompt a caption becomes (hypernetwork templates), which prompts to cache
    optimisation    the optimizer, the LR schedule and the clipping rule (an `Optimisation`)
    files           its checkpoints (list, resume, save) and its final file
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

CHECKPOINTS = "checkpoints"


@dataclass
class RunContext:
    """What a method's file writer and network builder may read about the run."""

    cfg: object  # datakit.train.config.TrainConfig
    out: Path
    output_name: str
    plan: object  # datakit.train.plan.Plan
    spec: object
    entries: list
    trigger: str | None
    started: float  # wall-clock start (kohya's ss_training_started_at)
    fingerprint: str
    device_type: str
    force: bool
    resume: str | None = None  # --resume, or "auto" when a plain re-run continues an interrupted run
    settings: dict = field(default_factory=dict)  # JSON values stored with checkpoints
    saved: dict = field(default_factory=dict)  # step -> checkpoint written by this process
    protected: set = field(default_factory=set)  # checkpoints --keep-last must not delete (the best one measured)


@dataclass
class Optimisation:
    """The optimizer, its LR schedule (step(), get_last_lr(), state_dict()), and the clipping rule.

    clip(params, step) clips the gradients and returns their norm when it computed it (else None);
    clips(step) says whether it clips at that step (fp16 gradients are unscaled first).
    """

    optimizer: object
    lr_scheduler: object
    clip: Callable[[list, int], float | None]
    clips: Callable[[int], bool]


@dataclass
class Resumed:
    """Where a run continues: the optimizer step, and the file or folder it came from (None: a fresh start)."""

    step: int = 0
    source: str | None = None


class TrainingMethod(Protocol):
    """A trainable adapter: LoRA (datakit.train.lora_method), hypernetwork (datakit.train.hypernetwork_method)."""

    name: str  # "lora", "hypernetwork": the default file name without a trigger word
    latent_sampling: str

    def announce(self) -> list[str]:
        """Lines for the run header and --dry-run (the effective scale, settings that differ from kohya/A1111)."""

    def max_steps(self, planned: int, reporter) -> int:
        """The steps to train: the plan's, or fewer where the method's own schedule ends first."""

    def check_base(self, base) -> None:
        """Refuse a base model the method cannot train (UsageError)."""

    def build_network(self, run: RunContext, base, reporter):
        """The network, hooked into base, its trainable weights fp32 (a new one, or continued from a file)."""

    def prompt(self, caption: str, rng: random.Random) -> str:
        """The prompt one use of an augmented caption becomes."""

    def fixed_prompts(self, run: RunContext) -> list[str]:
        """Every prompt the run can feed when captions never change (for the text-encoder cache)."""

    def optimisation(self, network, run: RunContext, max_steps: int) -> Optimisation:
        """Optimizer, LR schedule and clipping for this network."""

    def checkpoints(self, run: RunContext) -> list[Path]:
        """The method's checkpoints in OUT, oldest first."""

    def resume(self, run: RunContext, network, opt: Optimisation, scaler, reporter) -> Resumed:
        """Continue from run.resume (a checkpoint, or "auto": the newest in OUT); Resumed() when there is none yet."""

    def save_checkpoint(self, run: RunContext, step: int, network, opt: Optimisation, scaler, base) -> Path:
        """Write a checkpoint (atomically) and drop the ones --keep-last no longer keeps."""

    def save_final(self, run: RunContext, step: int, network, opt: Optimisation, base) -> Path:
        """Write the finished file; returns its path."""

    def summary(self, network) -> dict:
        """The method's own fields for datakit.json."""
