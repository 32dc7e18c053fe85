"""The plan of a training run: images, buckets, steps and epochs (kohya's arithmetic), printed by --dry-run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from datakit.train.buckets import assign_buckets, batches_per_epoch

DEFAULT_MAX_STEPS = 1600  # kohya's default when neither --max-steps nor --epochs is given


@dataclass
class Plan:
    """What a run will do; printed by --dry-run and stored in datakit.json."""

    resolution: tuple[int, int]
    batch_size: int
    world_size: int
    grad_accum: int
    num_train_images: int
    num_reg_images: int
    samples_per_epoch: int
    micro_per_epoch: int
    steps_per_epoch: int
    epochs: int
    max_steps: int
    enable_bucket: bool
    buckets: dict
    keep_tokens: int
    shuffle_caption: bool
    caption_dropout_rate: float
    caption_tag_dropout_rate: float
    flip_aug: bool
    alpha_mask: bool
    captions_fixed: bool = True  # no caption changes between uses: text-encoder outputs can be cached
    subsets: list = field(default_factory=list)


def make_plan(cfg, spec, entries, world_size: int) -> Plan:
    """Steps and epochs (kohya's arithmetic: epoch = sum of repeats x images, in batches)."""
    bs = spec.batch_size
    buckets = assign_buckets(entries, spec) if entries else {}
    batches = batches_per_epoch(entries, spec, bs)
    micro = max(1, math.ceil(batches / world_size))
    per_epoch = max(1, math.ceil(micro / cfg.grad_accum))
    if cfg.max_steps:
        max_steps = cfg.max_steps
        epochs = math.ceil(max_steps / per_epoch)
    elif cfg.epochs:
        epochs = cfg.epochs
        max_steps = epochs * per_epoch
    elif spec.plan_epochs:
        epochs = spec.plan_epochs  # emit's plan, unless --max-steps / --epochs say otherwise
        max_steps = epochs * per_epoch
    else:
        max_steps = DEFAULT_MAX_STEPS
        epochs = math.ceil(max_steps / per_epoch)
    subs = spec.subsets
    caps = [s.captions for s in subs]
    return Plan(
        resolution=spec.resolution, batch_size=bs, world_size=world_size, grad_accum=cfg.grad_accum,
        num_train_images=sum(1 for e in entries if not subs[e.subset].is_reg),
        num_reg_images=sum(1 for e in entries if subs[e.subset].is_reg),
        samples_per_epoch=sum(subs[e.subset].num_repeats for e in entries),
        micro_per_epoch=micro, steps_per_epoch=per_epoch, epochs=epochs, max_steps=max_steps,
        enable_bucket=spec.enable_bucket, buckets={f"{w}x{h}": n for (w, h), n in sorted(buckets.items())},
        keep_tokens=max((c.keep_tokens for c in caps), default=0),
        shuffle_caption=any(c.shuffle_caption for c in caps),
        caption_dropout_rate=max((c.caption_dropout_rate for c in caps), default=0.0),
        caption_tag_dropout_rate=max((c.caption_tag_dropout_rate for c in caps), default=0.0),
        flip_aug=any(s.flip_aug for s in subs), alpha_mask=any(s.alpha_mask for s in subs),
        captions_fixed=all(c.is_fixed for c in caps),
        subsets=[{"dir": str(s.image_dir), "repeats": s.num_repeats, "is_reg": s.is_reg,
                  "images": sum(1 for e in entries if e.subset == i)} for i, s in enumerate(subs)],
    )
