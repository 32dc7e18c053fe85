"""The denoising objective: noise schedule, noise (with offset), targets and per-sample loss weights.

Formulas follow kohya sd-scripts (library/custom_train_functions.py) and diffusers:
- schedule: DDPM with the model's betas (SD: scaled_linear 0.00085..0.012, 1000 steps); with
  --zero-terminal-snr the betas are rescaled so the last step has SNR 0 (Lin et al. 2023, the same
  rescale as kohya's fix_noise_scheduler_betas_for_zero_terminal_snr and diffusers' rescale_betas_zero_snr).
- noise offset: noise + offset * N(0, 1) per sample and channel (kohya's apply_noise_offset).
- target: the noise (epsilon models) or the velocity sqrt(a) * noise - sqrt(1 - a) * x0 (v models).
- min-SNR-gamma: weight min(SNR, gamma) / SNR (epsilon) or min(SNR, gamma) / (SNR + 1) (v);
  at SNR = 0 (zero terminal SNR, t = 999) the formulas' limits are used, 1 and 0, where kohya's
  apply_snr_weight divides 0 by 0 and the loss becomes NaN.
"""

from __future__ import annotations

import torch


def make_noise_scheduler(scheduler_config: dict, prediction_type: str, *, zero_terminal_snr: bool):
    """DDPM training schedule with the model's betas (SD's when it says nothing), optionally zero-terminal-SNR."""
    from diffusers import DDPMScheduler

    cfg = scheduler_config
    return DDPMScheduler(
        num_train_timesteps=int(cfg.get("num_train_timesteps", 1000)),
        beta_start=float(cfg.get("beta_start", 0.00085)),
        beta_end=float(cfg.get("beta_end", 0.012)),
        beta_schedule=cfg.get("beta_schedule", "scaled_linear"),
        prediction_type=prediction_type,
        rescale_betas_zero_snr=bool(zero_terminal_snr),
        clip_sample=False,
    )


def snr(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio a / (1 - a) at each timestep (0 at a zero-terminal-SNR last step)."""
    a = alphas_cumprod[timesteps].float()
    return a / (1 - a)


def min_snr_weight(snr_values: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """min(SNR, gamma) / SNR (epsilon) or / (SNR + 1) (v), with the SNR -> 0 limit (1 and 0) instead of NaN."""
    capped = torch.clamp(snr_values, max=gamma)
    if prediction_type == "v_prediction":
        return capped / (snr_values + 1)
    # min(s, g) / s = 1 for s < g (so also in the limit s -> 0), g / s above: never 0 / 0.
    return torch.where(snr_values < gamma, torch.ones_like(snr_values), gamma / snr_values.clamp(min=gamma))


def draw_noise(shape, noise_offset: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian noise, plus noise_offset x one Gaussian per sample and channel (kohya's apply_noise_offset)."""
    noise = torch.randn(shape, generator=gen)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=gen)
    return noise


def target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, prediction_type: str):
    """What the UNet learns to predict: the noise, or the velocity for v-prediction models."""
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise
