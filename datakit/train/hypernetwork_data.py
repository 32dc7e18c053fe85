"""Hypernetwork training data, the A1111 way: latent sampling methods and prompt templates.

Latents: the VAE's latent distribution (mean and std) of every image is cached once (disk or RAM),
so all three A1111 sampling methods cost no VAE pass in the loop:
    once          one sample per image, drawn when caching (fixed by --seed and the image index)
    deterministic the distribution's mean
    random        a fresh sample every time the image is used (from the step's generator)

Prompts: a template file holds one prompt per line; each use picks a line at random and puts the
(shuffled, tag-dropped) caption in place of [filewords] and the hypernetwork's name in place of
[name]. Without a template the prompt is the caption itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datakit.errors import UsageError

DEFAULT_TEMPLATE = "[filewords]"


def read_templates(path: Path | None) -> list[str]:
    """Template lines (blank lines skipped); ["[filewords]"] without a file."""
    if path is None:
        return [DEFAULT_TEMPLATE]
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise UsageError(f"--template {path}: the file has no prompt lines")
    return lines


def fill_template(template: str, caption: str, name: str) -> str:
    """A1111's substitution: [filewords] -> the caption, [name] -> the hypernetwork's name."""
    return template.replace("[filewords]", caption).replace("[name]", name)


class LatentDists:
    """Per entry: latent mean and std (scaled like the UNet sees them), flipped copies, masks."""

    def __init__(self, method: str):
        self.method = method
        self.mean: dict[int, torch.Tensor] = {}
        self.std: dict[int, torch.Tensor] = {}
        self.flipped_mean: dict[int, torch.Tensor] = {}
        self.flipped_std: dict[int, torch.Tensor] = {}
        self.masks: dict[int, torch.Tensor] = {}
        self.fixed: dict[tuple[int, bool], torch.Tensor] = {}  # "once": the sample drawn at caching
        self.encoded = 0
        self.reused = 0
        self.bad: set[int] = set()

    def draw_once(self, seed: int) -> None:
        """Fix each image's single sample for --latent-sampling once (same seed -> same samples)."""
        self.fixed = {}
        if self.method != "once":
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

    def get(self, i: int, flip: bool, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent for one use of entry i (and its latent-resolution mask or None)."""
        if self.method == "once":
            lat = self.fixed[(i, flip)]
        else:
            mean, std = self._dist(i, flip)
            lat = mean if self.method == "deterministic" else mean + std * torch.randn(mean.shape, generator=gen)
        mask = self.masks.get(i)
        if mask is not None and flip:
            mask = torch.flip(mask, dims=[-1])
        return lat, mask

    def keep(self, indices: list[int]) -> None:
        """Drop entries not in indices and renumber the rest 0..n-1 (after unreadable images)."""
        remap = {old: new for new, old in enumerate(indices)}
        for name in ("mean", "std", "flipped_mean", "flipped_std", "masks"):
            setattr(self, name, {remap[i]: v for i, v in getattr(self, name).items() if i in remap})


@torch.no_grad()
def build_latent_dists(entries, spec, base, *, method: str, mode: str, folder: Path | None, device, seed: int,
                       batch_size: int = 4, progress=None, skipped: list | None = None, reuse: bool = True) -> LatentDists:
    """Encode (or reload from the disk cache) every entry's latent distribution."""
    from safetensors.torch import load_file, save

    from datakit.imageio import write_bytes_atomic
    from datakit.manifest import hash_file
    from datakit.train.cache import _key, _mask_to_latent, pixel_batches, vae_fingerprint

    store = LatentDists(method)
    vae = base.vae
    vae_id = vae_fingerprint(vae) + "|dist"  # a different payload from the LoRA cache: its own keys
    scale = base.vae_scale
    shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
    down = base.vae_downscale
    on_disk = folder is not None and mode == "disk"
    todo: list[tuple[int, str]] = []
    hashes: dict = {}
    for i, e in enumerate(entries):
        sub = spec.subsets[e.subset]
        key = _key(hash_file(e.path, hashes), vae_id, e.bucket, sub.flip_aug, sub.alpha_mask)
        path = folder / f"{key}.safetensors" if on_disk else None
        if reuse and path is not None and path.is_file():
            try:
                data = load_file(str(path))
                _put(store, i, data)
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
                data["mask"] = _mask_to_latent(mask, down)
            _put(store, i, data)
            if on_disk:
                folder.mkdir(parents=True, exist_ok=True)
                write_bytes_atomic(folder / f"{key}.safetensors", save(data))
            store.encoded += 1
            if progress:
                progress.advance(1)
    return store


def _put(store: LatentDists, i: int, data: dict) -> None:
    store.mean[i], store.std[i] = data["mean"], data["std"]
    if "flipped_mean" in data:
        store.flipped_mean[i], store.flipped_std[i] = data["flipped_mean"], data["flipped_std"]
    if "mask" in data:
        store.masks[i] = data["mask"]
