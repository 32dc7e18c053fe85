"""Tiny random-initialised SD1 / SDXL pipelines and datasets, for tests and the CPU benchmark.

They have the real component classes and layouts (Transformer2DModel blocks, CLIP text encoders,
a CLIP BPE tokenizer built from a small vocabulary), so everything that runs on them runs the
same code as on a real model — only the sizes differ. Nothing here is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_tiny_tokenizer(folder: Path) -> Path:
    """A byte-level CLIP BPE tokenizer with a tiny vocabulary (the shared one from datakit.models.diffusion)."""
    from datakit.models.diffusion import write_tiny_clip_tokenizer

    return write_tiny_clip_tokenizer(folder)


def _text_encoder(tok, hidden: int, layers: int, *, projection: bool, seed: int):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(hidden_size=hidden, intermediate_size=hidden * 2, num_attention_heads=4, num_hidden_layers=layers,
                         vocab_size=len(tok), max_position_embeddings=77, projection_dim=hidden,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def build_tiny_pipeline(family: str = "sd1", *, seed: int = 0, prediction_type: str = "epsilon"):
    """A random-initialised StableDiffusionPipeline (sd1) or StableDiffusionXLPipeline (sdxl)."""
    import tempfile

    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTokenizer

    tmp = Path(tempfile.mkdtemp(prefix="datakit-tok-"))
    tok = CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(tmp)))
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 32), latent_channels=4,
                        norm_num_groups=16, sample_size=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       prediction_type=prediction_type, timestep_spacing="leading", steps_offset=1)
    if family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        te1 = _text_encoder(tok, 32, 2, projection=False, seed=seed + 1)
        te2 = _text_encoder(tok, 32, 2, projection=True, seed=seed + 2)
        torch.manual_seed(seed + 3)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=64, attention_head_dim=(2, 4), transformer_layers_per_block=(1, 2), use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 32,
            norm_num_groups=16)
        return StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                         unet=unet, scheduler=scheduler)
    from diffusers import StableDiffusionPipeline

    te = _text_encoder(tok, 32, 2, projection=False, seed=seed + 1)
    torch.manual_seed(seed + 3)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=16)
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_tiny_model(folder: Path, family: str = "sd1", **kwargs) -> Path:
    """Build a tiny pipeline and save_pretrained it into folder (a diffusers folder)."""
    pipe = build_tiny_pipeline(family, **kwargs)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def write_tiny_dataset(folder: Path, *, images: int = 2, size: int = 32, repeats: int = 2, name: str = "sks",
                       caption: str | None = None, alpha: bool = False, seed: int = 0, toml: bool = True) -> Path:
    """A kohya dataset: folder/img/<repeats>_<name>/ with coloured images + .txt captions (+ dataset.toml)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sub = folder / "img" / f"{repeats}_{name}"
    sub.mkdir(parents=True, exist_ok=True)
    for i in range(images):
        arr = np.zeros((size, size, 4 if alpha else 3), np.uint8)
        arr[..., :3] = rng.integers(0, 255, 3)
        yy, xx = np.mgrid[:size, :size]
        blob = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 3) ** 2
        arr[blob, :3] = rng.integers(0, 255, 3)
        if alpha:
            arr[..., 3] = np.where(blob, 255, 0)
        Image.fromarray(arr, "RGBA" if alpha else "RGB").save(sub / f"img{i}.png")
        (sub / f"img{i}.txt").write_text(caption or f"{name}, solo, white background, pose {i}")
    if toml:
        alpha_line = "alpha_mask = true\n" if alpha else ""
        (folder / "dataset.toml").write_text(
            f"[general]\ncaption_extension = \".txt\"\nkeep_tokens = 1\n\n[[datasets]]\nresolution = {size}\nbatch_size = 1\n"
            f"enable_bucket = false\n\n[[datasets.subsets]]\nimage_dir = \"img/{repeats}_{name}\"\nnum_repeats = {repeats}\n"
            f"class_tokens = \"{name}\"\n{alpha_line}")
    return folder
