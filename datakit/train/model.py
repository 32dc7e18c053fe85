"""The frozen base model: loading (through datakit.models.diffusion), family, prediction type."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from datakit.errors import ModelNotFoundError, UsageError


@dataclass
class BaseModel:
    """Everything the trainer needs from the base model."""

    family: str  # sd1 | sd2 | sdxl
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoders: list
    tokenizers: list
    scheduler_config: dict
    prediction_type: str
    name: str
    pipeline: object = None
    notes: list[str] = field(default_factory=list)

    @property
    def vae_scale(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    @property
    def vae_downscale(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def load_base_model(model: str, *, family: str | None = None, config_dir: Path | None = None,
                    prediction_type: str | None = None) -> BaseModel:
    """Load the base pipeline (a diffusers folder, a single checkpoint or a cached Hub id) and pick out its parts."""
    from datakit.models.diffusion import load_diffusion_pipeline

    pipe = load_diffusion_pipeline(model, family=family, config_dir=config_dir, torch_dtype=torch.float32,
                                   device=None, prediction_type=prediction_type)
    return base_from_pipeline(pipe, name=Path(str(model)).name or str(model), family=family,
                              prediction_type=prediction_type)


def base_from_pipeline(pipe, *, name: str, family: str | None = None, prediction_type: str | None = None) -> BaseModel:
    """Pick the parts training needs out of a loaded diffusers pipeline."""
    from datakit.models.diffusion import detect_family

    fam = family or detect_family(pipe)
    notes = []
    sched_cfg = dict(pipe.scheduler.config) if getattr(pipe, "scheduler", None) is not None else {}
    if prediction_type is None:
        # SD2-768-v and v-prediction SDXL fine-tunes look the same as epsilon models in their weights:
        # only the scheduler config / checkpoint metadata says which they are.
        prediction_type = sched_cfg.get("prediction_type") or "epsilon"
        if "prediction_type" not in sched_cfg:
            notes.append("prediction type not stated by the model; using epsilon (set --prediction-type v_prediction for v models)")
    if prediction_type not in ("epsilon", "v_prediction"):
        raise UsageError(f"unsupported prediction type {prediction_type!r} (epsilon or v_prediction)")
    tes = [te for te in (getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)) if te is not None]
    toks = [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t is not None]
    if not tes or not toks:
        raise ModelNotFoundError(f"{name}: the pipeline has no text encoder or tokenizer")
    return BaseModel(family=fam, unet=pipe.unet, vae=pipe.vae, text_encoders=tes, tokenizers=toks,
                     scheduler_config=sched_cfg, prediction_type=prediction_type,
                     name=name, pipeline=pipe, notes=notes)


def family_guess(model: str, family: str | None) -> str:
    """Family without loading weights (dry-run): the flag, else the UNet config in a diffusers folder."""
    import json

    if family:
        return family
    unet_cfg = Path(model) / "unet" / "config.json"
    if unet_cfg.is_file():
        from datakit.models.diffusion import detect_family

        return detect_family(json.loads(unet_cfg.read_text()))
    return "sdxl" if "xl" in str(model).lower() else "sd1"
