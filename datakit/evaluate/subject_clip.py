"""subject_presence with CLIP: is a sample more like the subject's cut-outs than the base model's sample?

The similarity of a sample to the subject is the mean cosine similarity of its CLIP image
embedding with those of the cut-outs (each cut-out cropped to its opaque pixels and flattened onto
mid grey, so neither a white nor a scene background is part of "the subject"): DreamBooth's CLIP-I.
A raw CLIP-I value depends on the CLIP model, so presence is decided against the reference: an
adapter's sample shows the subject when it is more similar to the cut-outs than the base model's
sample for the same prompt and seed, and is not an empty image (it has a foreground at all).
subject_presence is the share of samples that pass; the base model's own rows are the reference
and carry no presence. subject_similarity (mean CLIP-I) is reported beside it.

What it cannot tell: whether the subject is drawn well; a model that draws the subject's style
everywhere (colours, line art) without the subject can still raise the similarity.
"""

from __future__ import annotations

import numpy as np

GREY = 0.5


def cutout_for_clip(rgba: np.ndarray) -> np.ndarray:
    """A cut-out cropped to its opaque pixels and flattened onto mid grey (uint8 RGB)."""
    arr = np.asarray(rgba)
    if arr.ndim != 3 or arr.shape[2] != 4:
        return arr[..., :3] if arr.ndim == 3 else np.repeat(arr[..., None], 3, axis=2)
    alpha = arr[..., 3].astype(np.float32) / 255.0
    ys, xs = np.nonzero(alpha > 0.05)
    if len(ys):
        arr, alpha = arr[ys.min():ys.max() + 1, xs.min():xs.max() + 1], alpha[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    rgb = arr[..., :3].astype(np.float32) / 255.0
    flat = rgb * alpha[..., None] + GREY * (1.0 - alpha[..., None])
    return (flat * 255.0 + 0.5).astype(np.uint8)


def similarity(image_emb: np.ndarray, subject_emb: np.ndarray) -> np.ndarray:
    """Mean cosine similarity (n,) of each sample embedding with the subject embeddings (all L2-normalised)."""
    return (np.asarray(image_emb) @ np.asarray(subject_emb).T).mean(axis=1)


def present_against_reference(sim: np.ndarray, reference_sim: np.ndarray, has_foreground: np.ndarray) -> np.ndarray:
    """Per sample: more similar to the subject than its reference sample, and not empty."""
    return (np.asarray(sim) > np.asarray(reference_sim)) & np.asarray(has_foreground, dtype=bool)
