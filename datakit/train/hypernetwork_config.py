"""The --method hypernetwork settings of a TrainConfig, parsed and checked (one-line UsageErrors)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datakit.errors import UsageError
from datakit.train.hypernetwork_format import HypernetworkStructure
from datakit.train.lr_schedule import CosineRestarts, StepSchedule, parse_schedule

LATENT_SAMPLING = ("once", "deterministic", "random")
SDXL_REFUSAL = ("hypernetworks for SDXL are not supported: A1111 and ComfyUI have no 2048-wide modules; "
                "train a LoRA (--method lora) for SDXL")


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
    """Parse and check the hypernetwork options of a TrainConfig (cfg.hypernetwork) against the shared ones."""
    from datakit.train.hypernetwork import (ACTIVATIONS, WEIGHT_INITS, default_dropout_structure,
                                            parse_dropout_structure, parse_layer_structure)

    ho = cfg.hypernetwork
    if cfg.family == "sdxl":
        raise UsageError(SDXL_REFUSAL)
    layers = parse_layer_structure(ho.layer_structure)
    activation = str(ho.activation).lower()
    if activation not in ACTIVATIONS:
        raise UsageError(f"--activation must be one of {', '.join(ACTIVATIONS)}, not {ho.activation!r}")
    weight_init = {w.lower(): w for w in WEIGHT_INITS}.get(str(ho.weight_init).lower())
    if weight_init is None:
        raise UsageError(f"--weight-init must be one of {', '.join(WEIGHT_INITS)}, not {ho.weight_init!r}")
    if not 0 <= ho.dropout < 1:
        raise UsageError("--dropout must be in [0, 1)")
    if ho.dropout_structure is not None:
        dropout = parse_dropout_structure(ho.dropout_structure, layers)
    else:
        dropout = default_dropout_structure(layers, bool(ho.dropout), rate=ho.dropout or 0.0)
    if ho.latent_sampling not in LATENT_SAMPLING:
        raise UsageError(f"--latent-sampling must be one of {', '.join(LATENT_SAMPLING)}, not {ho.latent_sampling!r}")
    if cfg.optimizer != "adamw":
        raise UsageError("--method hypernetwork trains with AdamW (as A1111); drop --optimizer")
    lr = parse_schedule(ho.lr_schedule if ho.lr_schedule is not None else cfg.lr, what="--lr")
    clip = None
    if ho.clip_schedule is not None:
        clip = parse_schedule(ho.clip_schedule, what="--max-grad-norm", allow_zero=True)
    elif cfg.max_grad_norm:
        clip = parse_schedule(cfg.max_grad_norm, what="--max-grad-norm")
    cosine = None
    if ho.cycle_steps is not None:
        cosine = CosineRestarts(int(ho.cycle_steps), float(ho.cycle_mult), int(ho.cycle_warmup), float(ho.min_lr),
                                float(ho.cycle_decay))
        cosine.validate()
    if ho.template is not None and not Path(ho.template).is_file():
        raise UsageError(f"--template: file not found: {ho.template}")
    return HypernetworkSettings(
        layer_structure=layers, activation=activation, layer_norm=bool(ho.layer_norm), dropout_structure=dropout,
        use_dropout=any(dropout), activate_output=bool(ho.activate_output), weight_init=weight_init,
        sizes=parse_sizes(ho.sizes) if ho.sizes else None, lr=lr, clip=clip, cosine=cosine)
