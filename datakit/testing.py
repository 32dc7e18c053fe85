"""Tiny random Stable Diffusion models, tokenizers and datasets for tests and benchmarks (never real use).

One builder for every stage: the components have the real classes and layouts (CLIP text encoders
with a CLIP byte-level BPE tokenizer, a UNet with Transformer2DModel blocks, an AutoencoderKL), so
code run on them is the code run on a real model; only the sizes differ, and nothing is downloaded.
`trained_text=True` gives the CLIP(s) a final layer norm that matters, as a trained CLIP's does.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

FAMILIES = ("sd1", "sd2", "sdxl")


def write_tiny_clip_tokenizer(folder: str | os.PathLike, *, pad_token: str = "<|endoftext|>") -> Path:
    """A byte-level CLIP BPE tokenizer (vocab.json + merges.txt) with a tiny vocabulary.

    pad_token: "<|endoftext|>" as SD1's tokenizer (and SDXL's first), "!" as SD2's and SDXL's second.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest to code points 256+.
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = [chr(b) if b in printable else chr(next(extra)) for b in range(256)]
    tokens = chars + [c + "</w>" for c in chars]
    merges = ["t h", "th e</w>", "s k", "sk y</w>", "o n</w>", "a n", "an d</w>"]
    for merge in merges:
        tokens.append(merge.replace(" ", ""))
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # Without model_max_length the tokenizer would not truncate/pad prompts to CLIP's 77 positions.
    config = {"model_max_length": 77, "pad_token": pad_token}
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def trained_text_norm(text_encoder, *, seed: int) -> None:
    """Make a fresh CLIP's output look trained: unit-scale token embeddings and a reshaping final layer norm.

    A fresh CLIP has 0.02-scale embeddings and an identity final norm (weight 1, bias 0), so its
    pre-norm and normed hidden states differ mostly in scale. This gives the final norm weights of
    both signs and a small bias, and the embeddings unit scale, so the two states have the same
    scale and different content: a trainer conditioning on the wrong one is told apart.
    """
    import torch

    inner = getattr(text_encoder, "text_model", text_encoder)  # transformers 5 drops `text_model.`
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        emb = inner.embeddings.token_embedding.weight
        emb.copy_(torch.randn(emb.shape, generator=gen))
        norm = inner.final_layer_norm
        signs = torch.where(torch.rand(norm.weight.shape, generator=gen) < 0.5, -1.0, 1.0)
        norm.weight.copy_(signs * (0.5 + torch.rand(norm.weight.shape, generator=gen)))
        norm.bias.copy_(torch.randn(norm.bias.shape, generator=gen) * 0.1)


def build_tiny_pipeline(family: str = "sd1", *, seed: int = 0, sample_size: int = 32, prediction_type: str = "epsilon",
                        trained_text: bool = False):
    """A random-initialised pipeline of the family with tiny components (a few MB; CPU-fast).

    trained_text: give the text encoder(s) a final layer norm that matters (see trained_text_norm).
    """
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, not {family!r}")
    torch.manual_seed(seed)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(Path(tempfile.mkdtemp(prefix="datakit-tiny-")))))
    vocab = len(tokenizer)

    def text_config(hidden: int, proj: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=vocab, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, projection_dim=proj, hidden_act="gelu",
            bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
        )

    unet_kwargs: dict[str, Any] = dict(
        sample_size=sample_size // 4, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), layers_per_block=1,
        norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        sample_size=sample_size,
    )
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                                       prediction_type=prediction_type)
    if family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        # Two encoders of different widths, as in SDXL (768 + 1280): single-file loading tells them apart by width.
        te1 = CLIPTextModel(text_config(32, 32))
        te2 = CLIPTextModelWithProjection(text_config(48, 48))
        unet = UNet2DConditionModel(
            **unet_kwargs, cross_attention_dim=32 + 48, use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=48 + 6 * 8, transformer_layers_per_block=(1, 1),
        )
        if trained_text:
            trained_text_norm(te1, seed=seed + 101)
            trained_text_norm(te2, seed=seed + 102)
        return StableDiffusionXLPipeline(
            vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tokenizer, tokenizer_2=tokenizer,
            unet=unet, scheduler=scheduler,
        )
    from diffusers import StableDiffusionPipeline

    hidden = 32
    unet = UNet2DConditionModel(**unet_kwargs, cross_attention_dim=hidden, use_linear_projection=family == "sd2")
    te = CLIPTextModel(text_config(hidden, hidden))
    if trained_text:
        trained_text_norm(te, seed=seed + 101)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=te, tokenizer=tokenizer, unet=unet,
        scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )


def save_tiny_model(folder: Path, family: str = "sd1", **kwargs) -> Path:
    """Build a tiny pipeline and save_pretrained it into folder (a diffusers folder)."""
    pipe = build_tiny_pipeline(family, **kwargs)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def write_tiny_dataset(folder: Path, *, images: int = 2, size: int = 32, repeats: int = 2, name: str = "sks",
                       caption: str | None = None, alpha: bool = False, seed: int = 0, toml: bool = True) -> Path:
    """A kohya dataset: folder/img/<repeats>_<name>/ with coloured images + .txt captions (+ dataset.toml)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    sub = Path(folder) / "img" / f"{repeats}_{name}"
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
        (Path(folder) / "dataset.toml").write_text(
            f"[general]\ncaption_extension = \".txt\"\nkeep_tokens = 1\n\n[[datasets]]\nresolution = {size}\nbatch_size = 1\n"
            f"enable_bucket = false\n\n[[datasets.subsets]]\nimage_dir = \"img/{repeats}_{name}\"\nnum_repeats = {repeats}\n"
            f"class_tokens = \"{name}\"\n{alpha_line}")
    return Path(folder)
