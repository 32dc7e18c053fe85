"""Training settings, typed: options every method shares, LoRA options, hypernetwork options, dataset overrides.

Values come from defaults < `--config train.toml` < command-line flags. Dataset-level settings
(batch size, resolution, buckets, keep_tokens, caption shuffle/dropout, flip, alpha_mask) default
to None, meaning "whatever the dataset says"; a value given overrides the dataset and is printed.

Defaults follow kohya's train_network.py where a kohya user would carry settings over: alpha 1 and
conv alpha 1 (the update is alpha/rank times the LoRA's product, printed as the effective scale),
fp32 files, AdamW with weight decay 0.01, gradient clipping at norm 1. Two differ on purpose: rank
16 (kohya's 4 is a placeholder nobody trains with) and learning rate 1e-4 (kohya's 2e-6 is a
fine-tuning rate, far too low for a LoRA).
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
class DatasetOverrides:
    """Dataset settings given as options (None: use the dataset's own)."""

    resolution: tuple[int, int] | None = None
    batch_size: int | None = None
    enable_bucket: bool | None = None
    keep_tokens: int | None = None
    shuffle_caption: bool | None = None
    caption_dropout_rate: float | None = None
    caption_tag_dropout_rate: float | None = None
    flip_aug: bool | None = None
    alpha_mask: bool | None = None


@dataclass
class LoRAOptions:
    """`--method lora` (kohya's networks.lora)."""

    rank: int = 16
    alpha: float = 1.0
    conv_rank: int | None = None
    conv_alpha: float = 1.0
    dropout: float = 0.0
    rank_dropout: float = 0.0
    module_dropout: float = 0.0
    train_text_encoder: bool = False
    network_weights: Path | None = None
    format: str = "kohya"  # kohya | diffusers
    save_precision: str = "fp32"

    @property
    def scale(self) -> float:
        """The effective multiplier of the LoRA update: alpha / rank."""
        return self.alpha / self.rank


@dataclass
class HypernetworkOptions:
    """`--method hypernetwork` (A1111's format; parsed and checked in datakit.train.hypernetwork_config)."""

    layer_structure: str = "1,2,1"
    activation: str = "linear"
    layer_norm: bool = False
    dropout: float = 0.0  # A1111's dropout rule at this rate (0: none)
    dropout_structure: str | None = None
    activate_output: bool = False
    weight_init: str = "Normal"
    sizes: str | None = None  # default: the base model's attention widths
    strength: float = 1.0  # hypernetwork strength in samples
    latent_sampling: str = "once"  # once | deterministic | random
    template: Path | None = None  # prompt template file with [filewords] / [name]; default: the caption
    lr_schedule: str | None = None  # an A1111 schedule given as --lr ("5e-5:100, 5e-6"); None: the plain --lr
    clip_schedule: str | None = None  # an A1111 schedule given as --max-grad-norm
    cycle_steps: int | None = None  # cosine annealing with warm restarts when set
    cycle_mult: float = 1.0
    cycle_warmup: int = 0
    min_lr: float = 0.0
    cycle_decay: float = 1.0


@dataclass
class TrainConfig:
    """All options of `datakit train` (see docs/train.md): the shared ones, and the chosen method's."""

    dataset: Path | None = None
    base_model: str | None = None
    output: Path | None = None
    method: str = "lora"
    output_name: str | None = None  # default: the trigger word (made safe), else the method's name
    # base model
    family: str | None = None  # sd1 | sd2 | sdxl (auto-detected)
    config_dir: Path | None = None
    prediction_type: str | None = None  # epsilon | v_prediction
    zero_terminal_snr: bool = False
    # optimisation
    lr: float = 1e-4
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
    max_grad_norm: float = 1.0  # 0 disables
    clip_mode: str = "norm"  # norm | value
    max_steps: int | None = None
    epochs: int | None = None
    # diffusion numerics
    noise_offset: float = 0.0
    min_snr_gamma: float | None = None
    clip_skip: int = 1
    max_token_length: int = 75
    prior_loss_weight: float = 1.0
    # speed and memory
    mixed_precision: str = "auto"
    gradient_checkpointing: bool = False
    latent_cache: str = "disk"  # disk | ram | none
    cache_dir: Path | None = None  # default: OUTPUT/cache
    # checkpoints and feedback
    save_every: int | None = None
    keep_last: int | None = None
    resume: str | None = None  # a checkpoint (folder or .pt), or "auto" for the newest in OUTPUT/checkpoints
    sample_every: int | None = None
    sample_prompts: Path | None = None
    sample_steps: int = 20
    sample_cfg: float = 7.0
    eval_every: int | None = None  # `datakit eval`'s leakage measurement every N steps (and at the end)
    eval_subject: Path | None = None  # the subject's cut-outs, for subject presence
    eval_clip_model: str | None = None  # default: $DATAKIT_CLIP_MODEL; none: scene agreement not measured
    eval_prompts: Path | None = None  # scene prompts file (default: datakit eval's built-in scenes)
    eval_seeds: int = 2
    eval_steps: int = 20
    eval_batch_size: int = 4
    nan_loss_limit: float = 1e3  # a loss above this counts as diverged
    seed: int = 0
    device: str = "auto"
    dry_run: bool = False
    dataset_overrides: DatasetOverrides = field(default_factory=DatasetOverrides)
    lora: LoRAOptions | None = None  # set for --method lora
    hypernetwork: HypernetworkOptions | None = None  # set for --method hypernetwork

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
        ov = self.dataset_overrides
        checks = [
            (self.optimizer in OPTIMIZERS, f"--optimizer must be one of {', '.join(OPTIMIZERS)}"),
            (self.lr_scheduler in SCHEDULERS, f"--lr-scheduler must be one of {', '.join(SCHEDULERS)}"),
            (self.mixed_precision in MIXED, "--mixed-precision must be auto, no, fp16 or bf16"),
            (self.max_token_length in (75, 150, 225), "--max-token-length must be 75, 150 or 225"),
            (self.clip_skip >= 1, "--clip-skip must be at least 1"),
            (self.grad_accum >= 1, "--grad-accum must be at least 1"),
            (self.clip_mode in ("norm", "value"), "--clip-mode must be norm, value or disabled"),
            (self.latent_cache in ("disk", "ram", "none"), "--latent-cache must be disk, ram or none"),
            (self.prediction_type in (None, "epsilon", "v_prediction"), "--prediction-type must be epsilon or v_prediction"),
            (self.family in (None, "sd1", "sd2", "sdxl"), "--family must be sd1, sd2 or sdxl"),
            (self.max_steps is None or self.max_steps >= 1, "--max-steps must be at least 1"),
            (self.epochs is None or self.epochs >= 1, "--epochs must be at least 1"),
            (self.lr > 0, "--lr must be positive"),
            (self.max_grad_norm >= 0, "--max-grad-norm must not be negative"),
            (self.min_snr_gamma is None or self.min_snr_gamma > 0, "--min-snr-gamma must be positive"),
            (self.eval_every is None or self.eval_every >= 1, "--eval-every must be at least 1"),
            (self.eval_seeds >= 1 and self.eval_steps >= 1 and self.eval_batch_size >= 1,
             "--eval-seeds, --eval-steps and --eval-batch-size must be at least 1"),
            (ov.batch_size is None or ov.batch_size >= 1, "--batch-size must be at least 1"),
            (ov.resolution is None or min(ov.resolution) >= 8, "--resolution must be at least 8 px"),
        ]
        lora = self.lora
        if lora is not None:
            checks += [
                (lora.format in ("kohya", "diffusers"), f"--format must be kohya or diffusers, not {lora.format!r}"),
                (lora.rank >= 1, "--rank must be at least 1"),
                (lora.alpha > 0 and lora.conv_alpha > 0, "--alpha and --conv-alpha must be positive"),
                (lora.conv_rank is None or lora.conv_rank >= 1, "--conv-rank must be at least 1"),
                (lora.save_precision in ("fp32", "fp16", "bf16"), "--save-precision must be fp32, fp16 or bf16"),
                (0 <= lora.dropout < 1 and 0 <= lora.rank_dropout < 1 and 0 <= lora.module_dropout < 1,
                 "dropouts must be in [0, 1)"),
            ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        if self.hypernetwork is not None:
            from datakit.train.hypernetwork_config import hypernetwork_settings

            hypernetwork_settings(self)


# Which option belongs where: flag names (dashes as underscores) -> the dataclass that holds it.
COMMON_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)} - {"dataset_overrides", "lora", "hypernetwork"}
OVERRIDE_FIELDS = {f.name for f in dataclasses.fields(DatasetOverrides)}
LORA_FIELDS = {f.name for f in dataclasses.fields(LoRAOptions)}
HYPERNETWORK_FIELDS = {f.name for f in dataclasses.fields(HypernetworkOptions)} - {"lr_schedule", "clip_schedule"}
SHARED_METHOD_FIELDS = LORA_FIELDS & HYPERNETWORK_FIELDS  # --dropout
FIELDS = COMMON_FIELDS | OVERRIDE_FIELDS | LORA_FIELDS | HYPERNETWORK_FIELDS
PATH_FIELDS = ("dataset", "output", "config_dir", "network_weights", "cache_dir", "sample_prompts", "template",
               "eval_subject", "eval_prompts")


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


def _number_or_schedule(values: dict, key: str, method: str) -> str | None:
    """--lr / --max-grad-norm: a number, or (hypernetwork) an A1111 schedule string, returned separately."""
    from datakit.train.lr_schedule import is_number, parse_schedule

    raw = values.get(key)
    if raw is None or is_number(raw):
        if raw is not None:
            values[key] = float(raw)
        return None
    if method != "hypernetwork":
        raise UsageError(f"--{key.replace('_', '-')} must be a number for --method {method} "
                         "(schedule strings like '5e-5:100, 5e-6' are for --method hypernetwork)")
    text = str(raw).strip()
    values[key] = parse_schedule(text, what=f"--{key.replace('_', '-')}", allow_zero=key == "max_grad_norm").pieces[0][0]
    return text


def build_config(cli: dict, config_file: Path | None = None) -> TrainConfig:
    """Defaults < config file < flags given on the command line (None means not given)."""
    values = read_config_file(config_file) if config_file else {}
    values.update({k: v for k, v in cli.items() if v is not None})
    unknown = sorted(set(values) - FIELDS)
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}")
    for key in PATH_FIELDS:
        if values.get(key) is not None:
            values[key] = Path(values[key])
    if values.get("resolution") is not None:
        values["resolution"] = parse_resolution(values["resolution"])
    if values.get("betas") is not None:
        b = values["betas"]
        try:
            b = [float(x) for x in (b.split(",") if isinstance(b, str) else b)]
        except ValueError:
            b = []
        if len(b) != 2:
            raise UsageError("--betas takes two numbers, e.g. 0.9,0.999")
        values["betas"] = (b[0], b[1])
    if values.get("base_model") is not None:
        values["base_model"] = str(values["base_model"])
    if values.get("optimizer"):
        values["optimizer"] = str(values["optimizer"]).lower()
    method = values.get("method", "lora")
    if values.get("clip_mode") == "disabled":  # A1111's clip mode "disabled"
        values["clip_mode"], values["max_grad_norm"] = "norm", 0.0
    lr_schedule = _number_or_schedule(values, "lr", method)
    clip_schedule = _number_or_schedule(values, "max_grad_norm", method)

    own = LORA_FIELDS if method == "lora" else HYPERNETWORK_FIELDS if method == "hypernetwork" else set()
    foreign = sorted(k for k in values if k in (LORA_FIELDS | HYPERNETWORK_FIELDS) - own)
    if foreign and method in METHODS:
        other = "hypernetwork" if method == "lora" else "lora"
        raise UsageError(f"--{foreign[0].replace('_', '-')} is an option of --method {other}, not of --method {method}")
    common = {k: v for k, v in values.items() if k in COMMON_FIELDS}
    overrides = DatasetOverrides(**{k: v for k, v in values.items() if k in OVERRIDE_FIELDS})
    cfg = TrainConfig(**common, dataset_overrides=overrides)
    if method == "lora":
        cfg.lora = LoRAOptions(**{k: v for k, v in values.items() if k in LORA_FIELDS})
    elif method == "hypernetwork":
        cfg.hypernetwork = HypernetworkOptions(**{k: v for k, v in values.items() if k in HYPERNETWORK_FIELDS},
                                               lr_schedule=lr_schedule, clip_schedule=clip_schedule)
    cfg.validate()
    return cfg


def config_record(cfg: TrainConfig) -> dict:
    """The config as JSON-ready values (paths as text), for datakit.json and the run fingerprint."""
    def plain(value):
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(dataclasses.asdict(cfg))
