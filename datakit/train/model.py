"""The frozen base model: loading (through datakit.models.diffusion), family, text encoding.

Text encoding follows kohya/A1111: captions longer than 75 tokens (--max-token-length 150/225)
are encoded in 77-token chunks whose hidden states are concatenated; --clip-skip N takes the N-th
hidden state from the end (SD1/SD2 then apply the final layer norm, as A1111 does); SDXL takes the
penultimate state of both encoders and the pooled projection of the second.
"""

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


def detect_family(pipe) -> str:
    """sdxl (two text encoders, text_time embedding), sd2 (1024-wide context) or sd1."""
    try:
        from datakit.models.diffusion import detect_family as shared_detect

        return shared_detect(pipe)
    except (ImportError, AttributeError):
        pass
    unet = getattr(pipe, "unet", pipe)
    cfg = unet.config
    if getattr(cfg, "addition_embed_type", None) == "text_time" or getattr(pipe, "text_encoder_2", None) is not None:
        return "sdxl"
    cross = cfg.cross_attention_dim
    return "sd2" if cross == 1024 else "sd1"


def _load_pipeline(model: str, *, family, config_dir, prediction_type):
    """The shared loader when present; else diffusers' own from_pretrained (folder or cached id)."""
    try:
        from datakit.models.diffusion import load_diffusion_pipeline
    except ImportError:
        load_diffusion_pipeline = None
    if load_diffusion_pipeline is not None:
        return load_diffusion_pipeline(model, family=family, config_dir=config_dir, torch_dtype=torch.float32,
                                       device=None, prediction_type=prediction_type)
    from diffusers import DiffusionPipeline

    path = Path(model).expanduser()
    if path.is_file():
        raise ModelNotFoundError(f"loading single-file checkpoints needs datakit.models.diffusion (not installed): {path}")
    try:
        return DiffusionPipeline.from_pretrained(str(path) if path.exists() else model, torch_dtype=torch.float32,
                                                 local_files_only=True, safety_checker=None)
    except (OSError, EnvironmentError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot load base model {model!r}: {exc}") from exc


def load_base_model(model: str, *, family: str | None = None, config_dir: Path | None = None,
                    prediction_type: str | None = None, zero_terminal_snr: bool = False) -> BaseModel:
    """Load the base pipeline and pick out the parts training needs.

    zero_terminal_snr is accepted for callers' convenience; it applies to the noise schedule
    (make_noise_scheduler), not to the model.
    """
    pipe = _load_pipeline(model, family=family, config_dir=config_dir, prediction_type=prediction_type)
    return base_from_pipeline(pipe, name=Path(str(model)).name or str(model), family=family,
                              prediction_type=prediction_type)


def base_from_pipeline(pipe, *, name: str, family: str | None = None, prediction_type: str | None = None) -> BaseModel:
    """Pick the parts training needs out of a loaded diffusers pipeline."""
    model = name
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
        raise ModelNotFoundError(f"{model}: the pipeline has no text encoder or tokenizer")
    return BaseModel(family=fam, unet=pipe.unet, vae=pipe.vae, text_encoders=tes, tokenizers=toks,
                     scheduler_config=sched_cfg, prediction_type=prediction_type,
                     name=name, pipeline=pipe, notes=notes)


def make_noise_scheduler(base: BaseModel, *, zero_terminal_snr: bool):
    """DDPM training schedule with SD's betas (from the model when it says), optionally zero-terminal-SNR."""
    from diffusers import DDPMScheduler

    cfg = base.scheduler_config
    return DDPMScheduler(
        num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
        beta_start=float(cfg.get("beta_start", 0.00085)),
        beta_end=float(cfg.get("beta_end", 0.012)),
        beta_schedule=cfg.get("beta_schedule", "scaled_linear"),
        prediction_type=base.prediction_type,
        rescale_betas_zero_snr=bool(zero_terminal_snr),
        clip_sample=False,
    )


def _chunks(tokenizer, captions: list[str], max_token_length: int) -> torch.Tensor:
    """(batch, n_chunks, 77) ids: up to max_token_length tokens, each 75-token chunk wrapped in BOS/EOS."""
    n_chunks = max_token_length // 75
    model_max = tokenizer.model_max_length if tokenizer.model_max_length < 10_000 else 77
    inner = model_max - 2
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out = []
    for cap in captions:
        ids = tokenizer(cap, add_special_tokens=False, truncation=False)["input_ids"][: inner * n_chunks]
        rows = []
        for c in range(n_chunks):
            part = ids[c * inner:(c + 1) * inner]
            if c > 0 and not part:
                row = [bos, eos] + [pad] * (inner)
            else:
                row = [bos] + part + [eos] + [pad] * (inner - len(part))
            rows.append(row[:model_max])
        out.append(rows)
    return torch.tensor(out, dtype=torch.long)


def _run_encoder(encoder, ids: torch.Tensor, *, layer_from_end: int, final_norm: bool):
    out = encoder(ids, output_hidden_states=True, return_dict=True)
    hidden = out.hidden_states[-layer_from_end]
    if final_norm and layer_from_end > 1:
        text_model = getattr(encoder, "text_model", encoder)
        hidden = text_model.final_layer_norm(hidden)
    return hidden, out


def encode_prompts(base: BaseModel, captions: list[str], *, clip_skip: int = 1, max_token_length: int = 75,
                   device=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Text conditioning for the UNet: (hidden states, SDXL pooled embeds or None)."""
    device = device or base.text_encoders[0].device
    if base.family != "sdxl":
        enc, tok = base.text_encoders[0], base.tokenizers[0]
        ids = _chunks(tok, captions, max_token_length).to(device)
        b, n, L = ids.shape
        hidden, _ = _run_encoder(enc, ids.view(b * n, L), layer_from_end=clip_skip, final_norm=True)
        return hidden.view(b, n * L, -1), None
    states = []
    pooled = None
    for idx, (enc, tok) in enumerate(zip(base.text_encoders, base.tokenizers)):
        ids = _chunks(tok, captions, max_token_length).to(device)
        b, n, L = ids.shape
        # SDXL conditions on the penultimate layer of both encoders (clip skip 2 is the default there).
        hidden, out = _run_encoder(enc, ids.view(b * n, L), layer_from_end=max(2, clip_skip), final_norm=False)
        states.append(hidden.view(b, n * L, -1))
        if idx == 1:
            embeds = getattr(out, "text_embeds", None)
            if embeds is None:
                raise UsageError("SDXL's second text encoder must be a CLIPTextModelWithProjection")
            pooled = embeds.view(b, n, -1)[:, 0]
    return torch.cat(states, dim=-1), pooled


def sdxl_time_ids(size: tuple[int, int], batch: int, device, dtype) -> torch.Tensor:
    """SDXL's micro-conditioning: original size, crop top-left (0, 0), target size — as (h, w) pairs."""
    w, h = size
    return torch.tensor([[h, w, 0, 0, h, w]], device=device, dtype=dtype).repeat(batch, 1)
