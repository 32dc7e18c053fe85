"""Tiny models for the eval tests, saved to disk and loaded back through datakit's real loaders.

A tiny SD1/SDXL pipeline (datakit.testing.build_tiny_pipeline), LoRA files written by
datakit's own LoRA code (datakit.train.lora), an A1111 hypernetwork .pt written by datakit's own
writer (datakit.train.hypernetwork_format), and a tiny random CLIPModel with its tokenizer and
image-processor files.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from datakit.testing import build_tiny_pipeline, write_tiny_clip_tokenizer


def save_pipeline(folder: Path, family: str, seed: int = 0) -> Path:
    build_tiny_pipeline(family, seed=seed, sample_size=32).save_pretrained(str(folder))
    return folder


def text_encoders(pipe) -> list:
    return [t for t in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if t is not None]


def lora_network(pipe, family: str, *, seed: int = 0, scale: float = 0.4, text_encoder: bool = True):
    """A LoRANetwork applied to `pipe` with random (non-zero) up weights, so it changes the output."""
    from datakit.train.lora import LoRANetwork

    net = LoRANetwork(rank=4, alpha=2, train_text_encoder=text_encoder)
    net.apply_to(SimpleNamespace(unet=pipe.unet, text_encoders=text_encoders(pipe), family=family))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules_list():
            m.lora_up.weight.copy_(torch.randn(m.lora_up.weight.shape, generator=g) * scale)
    return net


def write_lora(path: Path, model_folder: Path, family: str, *, metadata: dict | None = None, seed: int = 0) -> Path:
    """A kohya-format LoRA file for the model in `model_folder`, written by datakit's LoRANetwork.save."""
    from datakit.models.diffusion import load_diffusion_pipeline

    pipe = load_diffusion_pipeline(str(model_folder))
    net = lora_network(pipe, family, seed=seed)
    net.save(path, metadata if metadata is not None else {"modelspec.trigger_phrase": "sks"}, torch.float32)
    return path


def write_hypernetwork(path: Path, model_folder: Path, *, trigger: str | None = "sks", seed: int = 0) -> Path:
    """An A1111 hypernetwork .pt for an SD1/SD2 model, with weights large enough to change the samples."""
    from datakit.models.diffusion import load_diffusion_pipeline
    from datakit.train.hypernetwork import Hypernetwork, sizes_for
    from datakit.train.hypernetwork_format import save_hypernetwork

    pipe = load_diffusion_pipeline(str(model_folder))
    torch.manual_seed(seed)
    net = Hypernetwork(sizes_for(pipe, "sd1"), [1, 2, 1], "relu", weight_init="XavierNormal")
    info = f"trained for a test; trigger: {trigger}" if trigger else "trained for a test"
    save_hypernetwork(net, path, name=path.stem, optional_info=info)
    return path


def save_tiny_clip(folder: Path, *, seed: int = 0, image_size: int = 32) -> Path:
    """A random-initialised CLIPModel + tokenizer + PIL image processor config, as save_pretrained writes them."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from datakit.evaluate.clip import image_processor_class

    write_tiny_clip_tokenizer(folder)
    tok = CLIPTokenizer.from_pretrained(str(folder))
    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(str(folder))
    processor_cls = image_processor_class()
    processor_cls(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}).save_pretrained(str(folder))
    return folder
