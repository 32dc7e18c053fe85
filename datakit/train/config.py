"""TrainConfig: every training setting, from defaults < `--config train.toml` < command-line flags.

Dataset-level settings (batch size, resolution, buckets, keep_tokens, caption shuffle/dropout,
flip, alpha_mask) default to None here, meaning "whatever the dataset says"; a value set here
overrides the dataset and the trainer prints the override.
"""

from __future__ import annotations

import dataclasses
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the `tomli` package
    import tomli as tomllib
from dataclasses import dataclass, field
from pathlib import Path

from datakit.errors import UsageError

OPTIMIZERS = ("adamw", "adamw8bit", "prodigy", "lion", "adafactor", "sgd")
SCHEDULERS = ("constant", "constant_with_warmup", "cosine", "cosine_with_restarts", "linear", "polynomial")
MIXED = ("auto", "no", "fp16", "bf16")
METHODS = ("lora", "hypernetwork")


@dataclass
class TrainConfig:
    """All options of `datakit train` (see docs/train.md)."""

    dataset: Path | None = None
    base_model: str | None = None
    output: Path | None = None
    method: str = "lora"
    output_name: str | None = None  # default: the trigger word, else "lora"
    format: str = "kohya"  # kohya | diffusers
    # base model
    family: str | None = None  # sd1 | sd2 | sdxl (auto-detected)
    config_dir: Path | None = None
    prediction_type: str | None = None  # epsilon | v_prediction
    zero_terminal_snr: bool = False
    # network
    rank: int = 16
    alpha: float | None = None  # default: rank (scale 1)
    conv_rank: int | None = None
    conv_alpha: float | None = None
    dropout: float = 0.0
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    train_text_encoder: bool = False
    network_weights: Path | None = None
    # optimisation
    lr: float | str = 1e-4  # a number; --method hypernetwork also takes an A1111 schedule string
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    lr_cycles: int = 1
    lr_power: float = 1.0
    grad_accum: int = 1
    max_grad_norm: float | str = 1.0  # 0 disables; --method hypernetwork also takes a schedule string
    clip_mode: str = "norm"  # norm | value (| disabled, the same as --max-grad-norm 0)
    max_steps: int | None = None
    epochs: int | None = None
    # diffusion numerics
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    clip_skip: int = 1
    max_token_length: int = 75
    prior_loss_weight: float = 1.0
    # dataset overrides (None: use the dataset's value)
    resolution: tuple[int, int] | None = None
    batch_size: int | None = None
    enable_bucket: bool | None = None
    keep_tokens: int | None = None
    shuffle_caption: bool | None = None
    caption_dropout_rate: float | None = None
    caption_tag_dropout_rate: float | None = None
    flip_aug: bool | None = None
    alpha_mask: bool | None = None
    # speed and memory
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    latent_cache: str = "disk"  # disk | ram | none
    cache_dir: Path | None = None  # default: OUTPUT/cache
    # checkpoints and feedback
    save_precision: str = "fp16"
    save_every: int | None = None
    keep_last: int | None = None
    resume: str | None = None  # a checkpoint folder, or "auto" for the newest in OUTPUT/checkpoints
    sample_every: int | None = None
    sample_prompts: Path | None = None
    sample_steps: int = 20
    sample_cfg: float = 7.0
    nan_loss_limit: float = 1e3  # a loss above this counts as diverged
    seed: int = 0
    device: str = "auto"
    dry_run: bool = False
    extra: dict = field(default_factory=dict)
    # --method hypernetwork (A1111 format; checked in datakit.train.hypernetwork_config, see docs/hypernetwork.md)
    layer_structure: str = "1,2,1"
    activation: str = "linear"
    layer_norm: bool = False
    dropout_structure: str | None = None  # default: none, or A1111's rule at --dropout's rate
    activate_output: bool = False
    weight_init: str = "Normal"
    sizes: str | None = None  # default: the base model's attention widths
    strength: float = 1.0  # hypernetwork strength in samples
    latent_sampling: str = "once"  # once | deterministic | random
    template: Path | None = None  # prompt template file with [filewords] / [name]; default: the caption
    cycle_steps: int | None = None  # cosine annealing with warm restarts when set
    cycle_mult: float = 1.0
    cycle_warmup: int = 0
    min_lr: float = 0.0
    cycle_decay: float = 1.0

    def validate(self) -> None:
        """Clear one-line errors for impossible settings."""
        if self.method not in METHODS:
            raise UsageError(f"--method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.dataset is None:
            raise UsageError("give the DATASET (an emit output, a kohya dataset TOML, or a kohya folder-mode parent)")
        if self.base_model is None:
            raise UsageError("give --base-model (a diffusers folder, a .safetensors checkpoint or a Hugging Face id) or set DATAKIT_BASE_MODEL")
        if self.output is None and not self.dry_run:
            raise UsageError("give --output DIR")
        checks = [
            (self.format in ("kohya", "diffusers"), f"--format must be kohya or diffusers, not {self.format!r}"),
            (self.rank >= 1, "--rank must be at least 1"),
            (self.conv_rank is None or self.conv_rank >= 1, "--conv-rank must be at least 1"),
            (self.optimizer.lower() in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.lr_scheduler in SCHEDULERS, f"--lr-scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.mixed_precision in MIXED, "--mixed-precision must be auto, no, fp16 or bf16"),
            (self.save_precision in ("fp32", "fp16", "bf16"), "--save-precision must be fp32, fp16 or bf16"),
            (self.max_token_length in (75, 150, 225), "--max-token-length must be 75, 150 or 225"),
            (self.clip_skip >= 1, "--clip-skip must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.clip_mode in ("norm", "value"), "--clip-mode must be norm, value or disabled"),
            (self.latent_cache in ("disk", "ram", "none"), "--latent-cache must be disk, ram or none"),
            (self.prediction_type in (None, "epsilon", "v_prediction"), "--prediction-type must be epsilon or v_prediction"),
            (self.family in (None, "sd1", "sd2", "sdxl"), "--family must be sd1, sd2 or sdxl"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.epochs is None or self.epochs >= 1, "--epochs must be at least 1"),
            (self.batch_size is None or self.batch_size >= 1, "--batch-size must be at least 1"),
            (isinstance(self.lr, str) or self.lr > 0, "--lr must be positive"),
            (0 <= self.dropout < 1 and 0 <= self.rank_dropout < 1 and 0 <= self.module_dropout < 1, "dropouts must be in [0, 1)"),
            (self.resolution is None or min(self.resolution) >= 8, "--resolution must be at least 8 px"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.method == "hypernetwork":
            from datakit.train.hypernetwork_config import validate_hypernetwork

            validate_hypernetwork(self)
        elif isinstance(self.lr, str) or isinstance(self.max_grad_norm, str):
            raise UsageError("schedule strings for --lr / --max-grad-norm work with --method hypernetwork; give numbers for LoRA")


FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def parse_resolution(value) -> tuple[int, int]:
    """512, "512", "512,768", [512, 768] -> (width, height)."""
    if isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [p for p in str(value).replace("x", ",").split(",") if p.strip()]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"resolution must be N or W,H, not {value!r}") from None
    if len(nums) == 1:
        return nums[0], nums[0]
    if len(nums) == 2:
        return nums[0], nums[1]
    raise UsageError(f"resolution must be N or W,H, not {value!r}")


def read_config_file(path: Path) -> dict:
    """`--config train.toml`: any option, named as the flag (dashes or underscores)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from None
    data = data.get("train", data)  # a [train] table or top-level keys
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise UsageError(f"{path}: unknown option {key!r}")
        out[name] = value
    return out


def build_config(cli: dict, config_file: Path | None = None) -> TrainConfig:
    """Defaults < config file < flags given on the command line (None means not given)."""
    values = read_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in cli.items() if v is not None})
    for key in ("dataset", "output", "config_dir", "network_weights", "cache_dir", "sample_prompts", "template"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
    if values.get("resolution") is not None:
        values["resolution"] = parse_resolution(values["resolution"])
    if values.get("betas") is not None:
        b = values["betas"]
        b = [float(x) for x in (b.split(",") if isinstance(b, str) else b)]
        if len(b) != 2:
            raise UsageError("--betas takes two numbers, e.g. 0.9,0.999")
        values["betas"] = (b[0], b[1])
    if values.get("base_model") is not None:
        values["base_model"] = str(values["base_model"])
    if values.get("optimizer"):
        values["optimizer"] = values["optimizer"].lower()
    for key in ("lr", "max_grad_norm"):  # a number, or (hypernetwork) an A1111 schedule string kept as text
        if isinstance(values.get(key), str):
            try:
                values[key] = float(values[key])
            except ValueError:
                values[key] = values[key].strip()
    if values.get("clip_mode") == "disabled":  # A1111's clip mode "disabled"
        values["clip_mode"], values["max_grad_norm"] = "norm", 0.0
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg
