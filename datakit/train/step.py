"""One micro-batch of any training method: latents, captions, noise, the UNet's prediction, the weighted loss.

The order of random draws (from the micro-batch's generator) is fixed: flips, latent samples,
caption augmentation, noise, noise offset, timesteps; so a resumed run repeats the draws exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from datakit.train import objective
from datakit.train.caption_aug import process_caption
from datakit.train.conditioning import sdxl_time_ids
from datakit.train.runtime import python_rng


@dataclass
class StepContext:
    """Everything a micro-batch reads; built once per run by the loop."""

    base: object  # datakit.train.model.BaseModel
    spec: object  # datakit.train.data.DatasetSpec
    entries: list
    store: object  # latents: get(index, flip, generator) -> (latent, mask or None)
    text_cache: object | None  # datakit.train.cache.TextCache, or None to encode every step
    encode: Callable  # list of prompts -> (hidden states, pooled or None)
    prompt: Callable  # (augmented caption, random.Random) -> the prompt encoded (a method's templates)
    scheduler: object  # the DDPM training scheduler
    alphas_cumprod: torch.Tensor
    is_reg: torch.Tensor
    device: object
    autocast: Callable
    trains_text_encoder: bool
    noise_offset: float
    min_snr_gamma: float | None
    prior_loss_weight: float
    max_steps: int


def micro_batch_loss(ctx: StepContext, idx: list[int], gen: torch.Generator, *, epoch: int, step: int) -> torch.Tensor:
    """The mean weighted denoising loss of one micro-batch (epoch counts from 0, step is the optimizer step)."""
    base, spec, entries, device = ctx.base, ctx.spec, ctx.entries, ctx.device
    subsets = [spec.subsets[entries[i].subset] for i in idx]
    flips = [bool(sub.flip_aug and torch.rand((), generator=gen) < 0.5) for sub in subsets]
    pairs = [ctx.store.get(i, f, gen) for i, f in zip(idx, flips)]
    latents = torch.stack([p[0] for p in pairs]).to(device)
    masks = None
    if any(p[1] is not None for p in pairs):
        ones = torch.ones(latents.shape[-2:])
        masks = torch.stack([p[1] if p[1] is not None else ones for p in pairs]).to(device)
    rng = python_rng(gen)
    prompts = [ctx.prompt(process_caption(entries[i].caption, sub.captions, rng, epoch=epoch + 1, step=step,
                                          max_steps=ctx.max_steps), rng)
               for i, sub in zip(idx, subsets)]
    b = latents.shape[0]
    noise = objective.draw_noise(latents.shape, ctx.noise_offset, gen).to(device)
    timesteps = torch.randint(0, ctx.scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
    noisy = ctx.scheduler.add_noise(latents, noise, timesteps)
    with ctx.autocast():
        if ctx.text_cache is not None:
            hidden, pooled = ctx.text_cache.get(prompts)
        else:
            with torch.set_grad_enabled(ctx.trains_text_encoder):
                hidden, pooled = ctx.encode(prompts)
        kwargs = {}
        if base.family == "sdxl":
            ids = [sdxl_time_ids(entries[i].size, entries[i].bucket, f) for i, f in zip(idx, flips)]
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled.to(device),
                                           "time_ids": torch.tensor(ids, device=device, dtype=hidden.dtype)}
        pred = base.unet(noisy, timesteps, hidden.to(device), **kwargs).sample
    target = objective.target(ctx.scheduler, latents, noise, timesteps, base.prediction_type)
    loss = torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
    if masks is not None:
        loss = loss * masks.unsqueeze(1)  # masked loss: transparent pixels teach nothing (kohya: alpha_mask)
    loss = loss.mean(dim=[1, 2, 3])
    reg = ctx.is_reg[idx].to(device)
    if ctx.prior_loss_weight != 1.0 and bool(reg.any()):
        loss = torch.where(reg, loss * ctx.prior_loss_weight, loss)
    if ctx.min_snr_gamma:
        snr = objective.snr(ctx.alphas_cumprod, timesteps)
        loss = loss * objective.min_snr_weight(snr, ctx.min_snr_gamma, base.prediction_type)
    return loss.mean()
