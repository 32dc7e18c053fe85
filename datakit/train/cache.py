"""Caches that take the VAE and the frozen text encoder out of the training step.

Latents: each image's latent distribution (the VAE's mean and std, scaled as the UNet sees them,
and the same for its mirror image when the subset flips) is encoded once per (image bytes, VAE,
bucket size, flip, mask, resize filter): on disk (`--latent-cache disk`, the default: reused by
later and resumed runs of any method) or in RAM. Masks (alpha_mask) are kept at latent resolution.
A training step then takes (A1111's latent sampling methods):
    deterministic  the mean (LoRA; kohya caches the same thing)
    once           one sample per image, fixed by --seed and the image (hypernetwork default)
    random         a fresh sample each use, from the step's generator

Text: when the text encoder is frozen and captions never change, each distinct prompt is encoded
once and kept in RAM; a batch of prompts with different chunk counts is filled with the empty
chunk's encoding, as datakit.train.conditioning fills a batch it encodes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from datakit.imageio import write_bytes_atomic
from datakit.manifest import hash_file

CACHE_VERSION = "2"
SAMPLING = ("deterministic", "once", "random")


def vae_fingerprint(vae) -> str:
    """Identifies a VAE cheaply: its config and a sample of its weights."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    params = list(vae.parameters())
    h.update(str(sum(p.numel() for p in params)).encode())
    for p in params[:2] + params[-2:]:
        h.update(p.detach().float().cpu().numpy().tobytes()[:65536])
    return h.hexdigest()


def cache_key(file_hash: str, vae_id: str, bucket: tuple[int, int], flip: bool, mask: bool, interpolation: str | None) -> str:
    """The cache file name of one image's latents: everything the latents depend on."""
    raw = f"{CACHE_VERSION}|{file_hash}|{vae_id}|{bucket[0]}x{bucket[1]}|{int(flip)}|{int(mask)}|{interpolation or ''}"
    return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def mask_to_latent(mask: np.ndarray, down: int) -> torch.Tensor:
    """An alpha mask (H, W) in [0, 1] shrunk to latent resolution."""
    import cv2

    h, w = mask.shape
    small = cv2.resize(mask, (w // down, h // down), interpolation=cv2.INTER_AREA)
    return torch.from_numpy(np.ascontiguousarray(small)).float()


class LatentStore:
    """Every entry's latent distribution (and flipped copy, and mask), and the sampling a method asks for."""

    def __init__(self, sampling: str = "deterministic"):
        if sampling not in SAMPLING:
            raise ValueError(f"latent sampling must be one of {SAMPLING}")
        self.sampling = sampling
        self.mean: dict[int, torch.Tensor] = {}
        self.std: dict[int, torch.Tensor] = {}
        self.flipped_mean: dict[int, torch.Tensor] = {}
        self.flipped_std: dict[int, torch.Tensor] = {}
        self.masks: dict[int, torch.Tensor] = {}
        self.fixed: dict[tuple[int, bool], torch.Tensor] = {}  # "once": the sample drawn per image
        self.encoded = 0
        self.reused = 0
        self.bad: set[int] = set()

    def put(self, i: int, data: dict[str, torch.Tensor]) -> None:
        self.mean[i], self.std[i] = data["mean"], data["std"]
        if "flipped_mean" in data:
            self.flipped_mean[i], self.flipped_std[i] = data["flipped_mean"], data["flipped_std"]
        if "mask" in data:
            self.masks[i] = data["mask"]

    def draw_once(self, seed: int) -> None:
        """Fix each image's single sample for sampling "once" (same seed -> same samples)."""
        self.fixed = {}
        if self.sampling != "once":
            return
        for i in self.mean:
            for flip in (False, True):
                if flip and i not in self.flipped_mean:
                    continue
                gen = torch.Generator("cpu").manual_seed(int(np.random.SeedSequence([seed, i, int(flip), 0x1A7]).generate_state(1)[0]))
                mean, std = self._dist(i, flip)
                self.fixed[(i, flip)] = mean + std * torch.randn(mean.shape, generator=gen)

    def _dist(self, i: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.flipped_mean[i], self.flipped_std[i]) if flip else (self.mean[i], self.std[i])

    def get(self, i: int, flip: bool, gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent for one use of entry i (and its latent-resolution mask or None)."""
        if self.sampling == "once":
            lat = self.fixed[(i, flip)]
        else:
            mean, std = self._dist(i, flip)
            lat = mean if self.sampling == "deterministic" else mean + std * torch.randn(mean.shape, generator=gen)
        mask = self.masks.get(i)
        if mask is not None and flip:
            mask = torch.flip(mask, dims=[-1])
        return lat, mask

    def keep(self, indices: list[int]) -> None:
        """Drop entries not in indices and renumber the rest 0..n-1 (after unreadable images)."""
        remap = {old: new for new, old in enumerate(indices)}
        for name in ("mean", "std", "flipped_mean", "flipped_std", "masks"):
            setattr(self, name, {remap[i]: v for i, v in getattr(self, name).items() if i in remap})
        self.fixed = {(remap[i], flip): v for (i, flip), v in self.fixed.items() if i in remap}


@torch.no_grad()
def pixel_batches(entries, spec, todo: list[tuple[int, str]], *, batch_size: int, device, dtype,
                  bad: set[int], skipped: list | None):
    """Yield (pixels, [(index, key, subset, mask)]) for the images still to encode, one bucket per batch.

    Images that cannot be read are added to `bad` and named in `skipped`; they never reach the VAE.
    """
    from datakit.errors import ImageError
    from datakit.train.buckets import load_for_bucket

    by_bucket: dict[tuple[int, int], list[tuple[int, str]]] = {}
    for i, key in todo:
        by_bucket.setdefault(entries[i].bucket, []).append((i, key))
    for bucket, items in sorted(by_bucket.items()):
        for k in range(0, len(items), batch_size):
            pixels, ok = [], []
            for i, key in items[k:k + batch_size]:
                sub = spec.subsets[entries[i].subset]
                try:
                    rgb, mask = load_for_bucket(entries[i].path, bucket, alpha_mask=sub.alpha_mask,
                                                interpolation=sub.resize_interpolation)
                except ImageError as exc:
                    bad.add(i)
                    if skipped is not None:
                        skipped.append({"source": str(entries[i].path), "reason": str(exc)})
                    continue
                pixels.append(torch.from_numpy(rgb).permute(2, 0, 1))
                ok.append((i, key, sub, mask))
            if pixels:
                yield torch.stack(pixels).to(device, dtype), ok


@torch.no_grad()
def build_latents(entries, spec, base, *, sampling: str, mode: str, folder: Path | None, device, seed: int = 0,
                  batch_size: int = 4, progress=None, skipped: list | None = None, reuse: bool = True) -> LatentStore:
    """Encode (or reload from the disk cache) every entry's latent distribution; unreadable images go to `skipped`."""
    from safetensors.torch import load_file, save

    store = LatentStore(sampling)
    vae = base.vae
    vae_id = vae_fingerprint(vae)
    scale = base.vae_scale
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    down = base.vae_downscale
    on_disk = folder is not None and mode == "disk"
    todo: list[tuple[int, str]] = []
    hashes: dict = {}
    for i, e in enumerate(entries):
        sub = spec.subsets[e.subset]
        key = cache_key(hash_file(e.path, hashes), vae_id, e.bucket, sub.flip_aug, sub.alpha_mask, sub.resize_interpolation)
        path = folder / f"{key}.safetensors" if on_disk else None
        if reuse and path is not None and path.is_file():
            try:
                store.put(i, load_file(str(path)))
                store.reused += 1
                if progress:
                    progress.advance(1)
                continue
            except Exception:  # noqa: BLE001 - a damaged cache file is re-encoded, never trusted
                pass
        todo.append((i, key))
    vae_dtype = next(vae.parameters()).dtype
    for x, ok in pixel_batches(entries, spec, todo, batch_size=batch_size, device=device, dtype=vae_dtype,
                               bad=store.bad, skipped=skipped):
        dist = vae.encode(x).latent_dist
        flip_dist = vae.encode(torch.flip(x, dims=[-1])).latent_dist if any(s.flip_aug for _, _, s, _ in ok) else None
        for j, (i, key, sub, mask) in enumerate(ok):
            data = {"mean": ((dist.mean[j] - shift) * scale).float().cpu().contiguous(),
                    "std": (dist.std[j] * scale).float().cpu().contiguous()}
            if sub.flip_aug and flip_dist is not None:
                data["flipped_mean"] = ((flip_dist.mean[j] - shift) * scale).float().cpu().contiguous()
                data["flipped_std"] = (flip_dist.std[j] * scale).float().cpu().contiguous()
            if mask is not None:
                data["mask"] = mask_to_latent(mask, down)
            store.put(i, data)
            if on_disk:
                folder.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(folder / f"{key}.safetensors", save(data))
            store.encoded += 1
            if progress:
                progress.advance(1)
    store.draw_once(seed)
    return store


class TextCache:
    """Encoded prompts, by prompt text (only used when the text encoder is frozen and captions are fixed)."""

    def __init__(self):
        self.hidden: dict[str, torch.Tensor] = {}
        self.pooled: dict[str, torch.Tensor] = {}
        self.empty: torch.Tensor | None = None  # one empty chunk (77 positions): fills shorter prompts in a batch

    @torch.no_grad()
    def fill(self, prompts: list[str], encode, chunks, batch_size: int = 16) -> None:
        """Encode every prompt not yet cached; chunks(prompt) is its own chunk count (a batch has the longest's)."""
        if self.empty is None:
            hidden, _ = encode([""])
            self.empty = hidden[0].detach()
        width = self.empty.shape[0]
        todo = sorted(set(p for p in prompts if p not in self.hidden))
        for k in range(0, len(todo), batch_size):
            batch = todo[k:k + batch_size]
            hidden, pooled = encode(batch)
            for j, prompt in enumerate(batch):
                self.hidden[prompt] = hidden[j, : chunks(prompt) * width].detach()
                if pooled is not None:
                    self.pooled[prompt] = pooled[j].detach()

    def get(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        states = [self.hidden[p] for p in prompts]
        longest = max(s.shape[0] for s in states)
        width = self.empty.shape[0]
        states = [torch.cat([s, *[self.empty] * ((longest - s.shape[0]) // width)]) if s.shape[0] < longest else s
                  for s in states]
        pooled = torch.stack([self.pooled[p] for p in prompts]) if self.pooled else None
        return torch.stack(states), pooled
