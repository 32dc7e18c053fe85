"""Where and how a run computes: device, precision, placing the frozen model, per-step generators, several processes.

Determinism: every random draw of micro-batch m on process r comes from a generator seeded by
(seed, m, r), so a resumed run draws exactly what the uninterrupted run would have, and nothing
depends on timing. Several processes (`accelerate launch`, `torchrun`): each takes its share of
every step's batches; gradients are averaged with one all-reduce before the optimizer step, so all
processes hold identical weights.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def device_type(requested: str) -> str:
    """auto -> cuda when a GPU is there, else cpu; anything else as given."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def mixed_precision(requested: str, device: str) -> str:
    """auto -> bf16 (or fp16 on GPUs without bf16) on CUDA, no elsewhere."""
    if requested != "auto":
        return requested
    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def weight_dtype(mixed: str):
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed, torch.float32)


def place(module, device, dtype) -> None:
    """Move a frozen model; cast only when its dtype differs."""
    if next(module.parameters()).dtype != dtype:
        module.to(dtype=dtype)
    module.to(device)


def use_sdpa(unet) -> None:
    """PyTorch's scaled-dot-product attention (the default in recent diffusers; set for older ones)."""
    try:
        from diffusers.models.attention_processor import AttnProcessor2_0

        unet.set_attn_processor(AttnProcessor2_0())
    except Exception:  # noqa: BLE001 - newer diffusers use SDPA by default
        pass


def step_generator(seed: int, micro: int, rank: int) -> torch.Generator:
    """The generator of micro-batch `micro` on process `rank`."""
    return torch.Generator("cpu").manual_seed(int(np.random.SeedSequence([seed, micro, rank]).generate_state(1)[0]))


def python_rng(gen: torch.Generator) -> random.Random:
    """A Python generator drawn from a step's generator (kohya's caption augmentation uses Python's random)."""
    return random.Random(int(torch.randint(0, 2**62, (1,), generator=gen)))


def average_gradients(params, world: int) -> None:
    """One all-reduce of every gradient, flattened, so every process applies the same update."""
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def weights_agree(network) -> bool:
    """All processes hold bit-identical trainable weights (checked once, at the end)."""
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1).double() for p in network.parameters()])
    mine = torch.stack([flat.sum(), flat.abs().sum(), (flat * torch.arange(len(flat), dtype=flat.dtype, device=flat.device)).sum()])
    gathered = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    return all(torch.equal(g, gathered[0]) for g in gathered)
