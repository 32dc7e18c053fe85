"""Optimizers and learning-rate schedules.

AdamW is torch's own (fused on CUDA, foreach elsewhere). 8-bit AdamW, Prodigy and Lion come from
their packages when installed; Adafactor from transformers. Schedules are diffusers' (the ones
kohya and the diffusers examples use), so LR curves match those tools.
"""

from __future__ import annotations

import torch

from datakit.errors import DependencyError, UsageError


def make_optimizer(name: str, groups: list[dict], cfg, *, device_type: str):
    """The optimizer for the network's parameter groups."""
    name = name.lower()
    betas = tuple(cfg.betas)
    if name == "adamw":
        extra = {"fused": True} if device_type == "cuda" else {"foreach": True}
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay, **extra)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=betas[0], weight_decay=cfg.weight_decay)
    if name == "adamw8bit":
        bnb = _require("bitsandbytes", "--optimizer adamw8bit")
        return bnb.optim.AdamW8bit(groups, lr=cfg.lr, betas=betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if name == "prodigy":
        prodigyopt = _require("prodigyopt", "--optimizer prodigy")
        return prodigyopt.Prodigy(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if name == "lion":
        lion = _require("lion_pytorch", "--optimizer lion", pip="lion-pytorch")
        return lion.Lion(groups, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        # Fixed LR (no relative step) so --lr and the schedulers mean what they say.
        return Adafactor(groups, lr=cfg.lr, scale_parameter=False, relative_step=False, warmup_init=False,
                         weight_decay=cfg.weight_decay)
    raise UsageError(f"unknown optimizer {name!r}")


def _require(module: str, purpose: str, pip: str | None = None):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DependencyError(f"{purpose} needs the package '{pip or module}'; install it with: pip install {pip or module}") from None


def make_scheduler(optimizer, cfg, total_steps: int):
    """constant, constant_with_warmup, cosine, cosine_with_restarts (--lr-cycles), linear, polynomial (--lr-power)."""
    from diffusers.optimization import get_scheduler

    name = cfg.lr_scheduler
    if name == "constant" and cfg.warmup_steps:
        name = "constant_with_warmup"  # a warmup asked for is a warmup given
    kwargs = {}
    if name == "cosine_with_restarts":
        kwargs["num_cycles"] = max(1, cfg.lr_cycles)
    if name == "polynomial":
        kwargs["power"] = cfg.lr_power
    return get_scheduler(name, optimizer=optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=max(1, total_steps), **kwargs)


def clip_gradients(params: list[torch.Tensor], cfg) -> float | None:
    """Clip by global norm (--max-grad-norm) or by value (--clip-mode value); returns the norm when computed."""
    if not cfg.max_grad_norm:
        return None
    if cfg.clip_mode == "value":
        torch.nn.utils.clip_grad_value_(params, cfg.max_grad_norm)
        return None
    return float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
