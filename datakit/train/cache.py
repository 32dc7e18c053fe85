"""Caches that take the VAE and the frozen text encoder out of the training step.

Latents: each image is encoded once per (image bytes, VAE, bucket size, flip); on disk
(`--latent-cache disk`, the default: reused by later runs and by resumed runs) or in RAM. The
VAE's mean is cached (deterministic; the VAE's sampling noise is tiny next to the diffusion noise).
Masks (alpha_mask) are stored at latent resolution beside the latent.

Text: when the text encoder is frozen and captions never change between steps (no shuffle, no
dropout), each distinct caption is encoded once and kept in RAM.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from datakit.imageio import write_bytes_atomic
from datakit.manifest import hash_file

CACHE_VERSION = "1"


def vae_fingerprint(vae) -> str:
    """Identifies a VAE cheaply: its config and a sample of its weights."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    params = list(vae.parameters())
    h.update(str(sum(p.numel() for p in params)).encode())
    for p in params[:2] + params[-2:]:
        h.update(p.detach().float().cpu().numpy().tobytes()[:65536])
    return h.hexdigest()


class LatentStore:
    """Latents (and optional masks) for every entry, in RAM after `build`."""

    def __init__(self):
        self.latents: dict[int, torch.Tensor] = {}
        self.flipped: dict[int, torch.Tensor] = {}
        self.masks: dict[int, torch.Tensor] = {}
        self.encoded = 0
        self.reused = 0

    def get(self, index: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        lat = self.flipped[index] if flip else self.latents[index]
        mask = self.masks.get(index)
        if mask is not None and flip:
            mask = torch.flip(mask, dims=[-1])
        return lat, mask


def _key(file_hash: str, vae_id: str, bucket: tuple[int, int], flip: bool, mask: bool) -> str:
    raw = f"{CACHE_VERSION}|{file_hash}|{vae_id}|{bucket[0]}x{bucket[1]}|{int(flip)}|{int(mask)}"
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def _mask_to_latent(mask: np.ndarray, down: int) -> torch.Tensor:
    import cv2

    h, w = mask.shape
    small = cv2.resize(mask, (w // down, h // down), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(small)).float()


@torch.no_grad()
def pixel_batches(entries, spec, todo: list[tuple[int, str]], *, batch_size: int, device, dtype,
                  bad: set[int], skipped: list | None):
    """Yield (pixels, [(index, key, subset, mask)]) for the images still to encode, one bucket per batch.

    Images that cannot be read are added to `bad` and named in `skipped`; they never reach the VAE.
    """
    from datakit.errors import ImageError
    from datakit.train.data import load_for_bucket

    by_bucket: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for i, key in todo:
        by_bucket.setdefault(entries[i].bucket, []).append((i, key))
    for bucket, items in sorted(by_bucket.items()):
        for k in range(0, len(items), batch_size):
            pixels, ok = [], []
            for i, key in items[k:k + batch_size]:
                sub = spec.subsets[entries[i].subset]
                try:
                    rgb, mask = load_for_bucket(entries[i].path, bucket, alpha_mask=sub.alpha_mask)
                except ImageError as exc:
                    bad.add(i)
                    if skipped is not None:
                        skipped.append({"source": str(entries[i].path), "reason": str(exc)})
                    continue
                pixels.append(torch.from_numpy(rgb).permute(2, 0, 1))
                ok.append((i, key, sub, mask))
            if pixels:
                yield torch.stack(pixels).to(device, dtype), ok


def build_latents(entries, spec, base, *, mode: str, folder: Path | None, device, batch_size: int = 4,
                  progress=None, skipped: list | None = None, reuse: bool = True) -> LatentStore:
    """Encode (or reload) every entry's latent; unusable images are removed into `skipped`."""
    from safetensors.torch import load_file, save


    store = LatentStore()
    vae = base.vae
    vae_id = vae_fingerprint(vae)
    scale = base.vae_scale
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    down = base.vae_downscale
    todo: list[tuple[int, str]] = []
    file_hashes: dict = {}
    keys = {}
    for i, e in enumerate(entries):
        sub = spec.subsets[e.subset]
        key = _key(hash_file(e.path, file_hashes), vae_id, e.bucket, sub.flip_aug, sub.alpha_mask)
        keys[i] = key
        path = folder / f"{key}.safetensors" if (folder and mode == "disk") else None
        if reuse and path is not None and path.is_file():
            try:
                data = load_file(str(path))
                store.latents[i] = data["latent"]
                if "flipped" in data:
                    store.flipped[i] = data["flipped"]
                if "mask" in data:
                    store.masks[i] = data["mask"]
                store.reused += 1
                if progress:
                    progress.advance(1)
                continue
            except Exception:  # a damaged cache file is re-encoded, never trusted
                pass
        todo.append((i, key))
    # Encode what is missing, batched by bucket so every batch has one shape.
    bad: set[int] = set()
    vae_dtype = next(vae.parameters()).dtype
    for x, ok in pixel_batches(entries, spec, todo, batch_size=batch_size, device=device, dtype=vae_dtype,
                               bad=bad, skipped=skipped):
        lat = (vae.encode(x).latent_dist.mode() - shift) * scale
        flips = None
        if any(sub.flip_aug for _, _, sub, _ in ok):
            flips = (vae.encode(torch.flip(x, dims=[-1])).latent_dist.mode() - shift) * scale
        for j, (i, key, sub, mask) in enumerate(ok):
            tensors = {"latent": lat[j].float().cpu().contiguous()}
            store.latents[i] = tensors["latent"]
            if sub.flip_aug and flips is not None:
                tensors["flipped"] = flips[j].float().cpu().contiguous()
                store.flipped[i] = tensors["flipped"]
            if mask is not None:
                tensors["mask"] = _mask_to_latent(mask, down)
                store.masks[i] = tensors["mask"]
            if folder and mode == "disk":
                folder.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(folder / f"{key}.safetensors", save(tensors))
            store.encoded += 1
            if progress:
                progress.advance(1)
    store.bad = bad
    return store


class TextCache:
    """Encoded captions, by caption text (only used when the text encoder is frozen and captions are fixed)."""

    def __init__(self):
        self.hidden: dict[str, torch.Tensor] = {}
        self.pooled: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def fill(self, captions: list[str], encode, batch_size: int = 16) -> None:
        todo = sorted(set(c for c in captions if c not in self.hidden))
        for k in range(0, len(todo), batch_size):
            chunk = todo[k:k + batch_size]
            hidden, pooled = encode(chunk)
            for j, cap in enumerate(chunk):
                self.hidden[cap] = hidden[j].detach()
                if pooled is not None:
                    self.pooled[cap] = pooled[j].detach()

    def get(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        hidden = torch.stack([self.hidden[c] for c in captions])
        pooled = torch.stack([self.pooled[c] for c in captions]) if self.pooled else None
        return hidden, pooled
