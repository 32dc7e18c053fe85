"""The --method hypernetwork settings of a TrainConfig, parsed and checked (one-line UsageErrors)."""

from __future__ import annotations

from dataclasses import dataclass

from datakit.errors import UsageError
from datakit.train.hypernetwork_format import HypernetworkStructure
from datakit.train.lr_schedule import CosineRestarts, StepSchedule, parse_schedule

LATENT_SAMPLING = ("once", "deterministic", "random")


@dataclass
class HypernetworkSettings(HypernetworkStructure):
    """What the hypernetwork trainer needs beyond the shared TrainConfig fields: the modules' structure, and:"""

    sizes: list[int] | None  # None: from the base model
    lr: StepSchedule
    clip: StepSchedule | None  # None: no clipping
    cosine: CosineRestarts | None


def parse_sizes(value) -> list[int]:
    """"768,320,640,1280" (or a list) -> [768, 320, 640, 1280]."""
    try:
        sizes = [int(x) for x in (value.split(",") if isinstance(value, str) else value) if str(x).strip()]
    except ValueError:
        raise UsageError(f"--sizes must be whole numbers like 768,320,640,1280, not {value!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise UsageError("--sizes needs at least one positive width")
    if len(set(sizes)) != len(sizes):
        raise UsageError(f"--sizes has a repeated width: {value!r}")
    return sizes


def hypernetwork_settings(cfg) -> HypernetworkSettings:
    """Parse and check every hypernetwork option of cfg."""
    from datakit.train.hypernetwork import (ACTIVATIONS, WEIGHT_INITS, default_dropout_structure,
                                            parse_dropout_structure, parse_layer_structure)

    if cfg.family == "sdxl":
        raise UsageError("hypernetworks for SDXL are not supported: A1111 and ComfyUI have no 2048-wide modules; "
                         "train a LoRA (--method lora) for SDXL")
    layers = parse_layer_structure(cfg.layer_structure)
    activation = str(cfg.activation).lower()
    if activation not in ACTIVATIONS:
        raise UsageError(f"--activation must be one of {', '.join(ACTIVATIONS)}, not {cfg.activation!r}")
    weight_init = {w.lower(): w for w in WEIGHT_INITS}.get(str(cfg.weight_init).lower())
    if weight_init is None:
        raise UsageError(f"--weight-init must be one of {', '.join(WEIGHT_INITS)}, not {cfg.weight_init!r}")
    if cfg.dropout_structure is not None:
        dropout = parse_dropout_structure(cfg.dropout_structure, layers)
    else:
        dropout = default_dropout_structure(layers, bool(cfg.dropout), rate=cfg.dropout or 0.0)
    if cfg.latent_sampling not in LATENT_SAMPLING:
        raise UsageError(f"--latent-sampling must be one of {', '.join(LATENT_SAMPLING)}, not {cfg.latent_sampling!r}")
    if cfg.optimizer != "adamw":
        raise UsageError("--method hypernetwork trains with AdamW (as A1111); drop --optimizer")
    if cfg.train_text_encoder:
        raise UsageError("--train-text-encoder does not apply to hypernetworks (they only touch the UNet's attention)")
    if cfg.network_weights:
        raise UsageError("--network-weights is for LoRA; continue a hypernetwork with --resume FILE.pt")
    if cfg.format != "kohya":
        raise UsageError("--format does not apply to hypernetworks: they are written as A1111 .pt files")
    lr = parse_schedule(cfg.lr, what="--lr")
    clip = None
    if cfg.max_grad_norm not in (0, 0.0, "0"):
        clip = parse_schedule(cfg.max_grad_norm, what="--max-grad-norm")
    cosine = None
    if cfg.cycle_steps is not None:
        cosine = CosineRestarts(int(cfg.cycle_steps), float(cfg.cycle_mult), int(cfg.cycle_warmup), float(cfg.min_lr),
                                float(cfg.cycle_decay))
        cosine.validate()
    if cfg.template is not None and not cfg.template.is_file():
        raise UsageError(f"--template: file not found: {cfg.template}")
    return HypernetworkSettings(
        layer_structure=layers, activation=activation, layer_norm=bool(cfg.layer_norm), dropout_structure=dropout,
        use_dropout=any(dropout), activate_output=bool(cfg.activate_output), weight_init=weight_init,
        sizes=parse_sizes(cfg.sizes) if cfg.sizes else None, lr=lr, clip=clip, cosine=cosine)


def validate_hypernetwork(cfg) -> None:
    """TrainConfig.validate's hypernetwork part."""
    hypernetwork_settings(cfg)
