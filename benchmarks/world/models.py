"""The world's networks, in the layouts the real tools load: an SD1-layout diffusers pipeline, a CLIPModel, a CNN.

- VAE: AutoencoderKL in the SD layout, 3 levels (64 px -> 16x16x4 latents, SD's 4 channels; 4x
  down instead of SD's 8x so the 64 px world keeps its detail).
- UNet: UNet2DConditionModel as SD1 (Transformer2DModel cross-attention at 16x16 and 8x8, a
  cross-attention mid block at 4x4; head width 16), so kohya's LoRA targets exist in it. Sized
  for CPU: 0.8 GFLOP per sample for a training step, about 3.2M parameters.
- Text encoder: a small CLIPTextModel; the UNet is conditioned on its `last_hidden_state` (after
  the final layer norm), what diffusers' pipeline and every SD client feed at inference.
- Scheduler: SD1.5's scaled-linear betas, epsilon prediction.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

LATENT_SIZE = 16
TEXT_WIDTH = 128


def build_vae():
    """A small SD-layout AutoencoderKL: 64 px RGB <-> 16x16x4 latents."""
    from diffusers import AutoencoderKL

    # No mid-block attention: the VAE is then fully convolutional, so it trains on 32 px crops
    # (4x cheaper) and works unchanged on whole 64 px pictures.
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        norm_num_groups=8, sample_size=64, mid_block_add_attention=False,
    )


def build_text_encoder(tokenizer):
    """A small CLIP text encoder over the world's tokenizer."""
    from transformers import CLIPTextModel

    return CLIPTextModel(text_config(tokenizer))


def text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=TEXT_WIDTH, intermediate_size=TEXT_WIDTH * 2, num_hidden_layers=3,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=TEXT_WIDTH, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )


def build_unet():
    """An SD1-layout UNet at 16x16 latents with cross-attention at 16x16 and 8x8 (and the 4x4 mid block)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=LATENT_SIZE, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64, 128),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=(2, 4, 8), norm_num_groups=8,
    )


def build_scheduler():
    """SD1.5's sampling schedule (scaled-linear betas, epsilon), as its model folders ship it."""
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  num_train_timesteps=1000, prediction_type="epsilon",
                                  timestep_spacing="leading", steps_offset=1)


def training_alphas_cumprod() -> torch.Tensor:
    """alpha-bar_t of the training schedule (the DDPM betas of SD1.5), float64."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def save_pipeline(folder: Path, *, vae, text_encoder, tokenizer, unet) -> Path:
    """Save the world model as a diffusers StableDiffusionPipeline folder (safetensors weights)."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=build_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


class SceneClassifier(nn.Module):
    """A small CNN: 64 px RGB in [0, 1] -> one logit per scene."""

    def __init__(self, n_classes: int):
        super().__init__()
        def block(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), *block(64, 64))
        self.head = nn.Linear(64 * 2, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # Mean and max pooling: the mean sees the overall colour, the max a few telling details (stars, windows).
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1))


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
