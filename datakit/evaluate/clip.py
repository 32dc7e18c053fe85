"""The CLIP model the user names (--clip-model or $DATAKIT_CLIP_MODEL): loading, and image/text embeddings.

A folder saved with `CLIPModel.save_pretrained` (plus its tokenizer files and, optionally, its
`preprocessor_config.json`) or a Hugging Face id (the local cache first; a download only when the
machine is online and HF_HUB_OFFLINE is not set). Nothing is used unless the user names it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from datakit.errors import ModelNotFoundError
from datakit.evaluate.messages import first_line

CLIP_ENV = "DATAKIT_CLIP_MODEL"
# OpenAI CLIP's normalisation, used when a folder carries no preprocessor_config.json.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
BATCH = 32


def clip_model_name(flag: str | None) -> str | None:
    """The CLIP model named by --clip-model, else by $DATAKIT_CLIP_MODEL, else None (not measured)."""
    value = (flag or os.environ.get(CLIP_ENV, "")).strip()
    return value or None


@dataclass
class Clip:
    """A loaded CLIP model on a device, with the processor and tokenizer that belong to it."""

    name: str
    model: Any
    tokenizer: Any
    processor: Any
    device: str

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def embed_images(self, images: list) -> np.ndarray:
        """L2-normalised image embeddings (n, d) of RGB images (PIL or uint8 arrays)."""
        import torch
        from PIL import Image

        out = []
        for start in range(0, len(images), BATCH):
            chunk = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images[start:start + BATCH]]
            pixels = self.processor(images=[im.convert("RGB") for im in chunk], return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                emb = self.model.get_image_features(pixel_values=pixels.to(self.device, self.model.dtype))
            out.append(_normalised(_tensor(emb)))
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings (n, d)."""
        import torch

        out = []
        for start in range(0, len(texts), BATCH):
            tokens = self.tokenizer(texts[start:start + BATCH], padding="max_length", truncation=True,
                                    max_length=self.model.config.text_config.max_position_embeddings, return_tensors="pt")
            with torch.no_grad():
                emb = self.model.get_text_features(input_ids=tokens["input_ids"].to(self.device),
                                                   attention_mask=tokens["attention_mask"].to(self.device))
            out.append(_normalised(_tensor(emb)))
        return np.concatenate(out) if out else np.zeros((0, self.model.config.projection_dim), np.float32)


def _tensor(emb):
    # transformers 5 returns a model output for get_*_features on some models; 4.x returns the tensor.
    return getattr(emb, "pooler_output", emb) if not hasattr(emb, "detach") else emb


def _normalised(emb) -> np.ndarray:
    arr = emb.detach().float().cpu().numpy()
    return arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)


def load_clip(name: str, device: str = "cpu") -> Clip:
    """Load a CLIP model from a folder or a Hugging Face id; ModelNotFoundError says what is missing."""
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"--clip-model {path} is not a CLIP model folder (no config.json; save one with CLIPModel.save_pretrained, "
                "or give a Hugging Face id such as openai/clip-vit-base-patch32 that is in the local cache)"
            )
        parts = _load_parts(str(path), local_only=True)
    else:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
        parts, last = None, None
        for local_only in (True,) if offline else (True, False):
            try:
                parts = _load_parts(name, local_only=local_only)
                break
            except ModelNotFoundError as exc:
                last = exc
        if parts is None:
            raise ModelNotFoundError(f"CLIP model {name!r} is not a folder and not in the Hugging Face cache ({last}); "
                                     f"fetch it with `hf download {name}` or give a local folder") from last
    model, tokenizer, processor = parts
    model.to(device).eval()
    return Clip(name=name, model=model, tokenizer=tokenizer, processor=processor, device=device)


def image_processor_class():
    """CLIP's PIL-backed image processor (transformers 5); the default one there needs torchvision, which
    datakit does not depend on. transformers 4 has only the PIL one, under the plain name."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor


def _load_parts(source: str, *, local_only: bool):
    import transformers
    from transformers import CLIPModel, CLIPTokenizer

    # datakit prints its own progress; --quiet must stay quiet. Failures still raise.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model = CLIPModel.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:  # OSError, ValueError, safetensors errors: all mean "not a usable CLIP model here"
        raise ModelNotFoundError(f"cannot load a CLIPModel from {source}: {first_line(exc)}") from exc
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local_only)
    except Exception as exc:
        raise ModelNotFoundError(f"{source}: no CLIP tokenizer files (vocab.json + merges.txt): {first_line(exc)}") from exc
    if len(tokenizer) <= 256:  # transformers 5 builds a 2-3-token tokenizer when the files are missing
        raise ModelNotFoundError(f"{source}: the CLIP tokenizer has only {len(tokenizer)} tokens; "
                                 "its vocab.json and merges.txt are missing or incomplete")
    processor_cls = image_processor_class()
    local = Path(source).expanduser()
    try:
        if local.is_dir() and not (local / "preprocessor_config.json").is_file():
            raise FileNotFoundError("preprocessor_config.json")
        processor = processor_cls.from_pretrained(source, local_files_only=local_only)
    except OSError:  # no preprocessor_config.json: CLIP's own preprocessing at the model's input size
        size = int(model.config.vision_config.image_size)
        processor = processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                                  image_mean=list(OPENAI_MEAN), image_std=list(OPENAI_STD))
    return model, tokenizer, processor

