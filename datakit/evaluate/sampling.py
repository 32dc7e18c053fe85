"""Sampling: prompts x seeds through a loaded pipeline, in batches, one generator per image.

Each image's starting noise comes from its own CPU torch.Generator seeded with the image's seed,
so an image does not depend on the batch it lands in (batch size, order, other prompts) nor on
the GPU: the same seed gives the same noise for every model and prompt, which is what makes the
base model's sample a fair reference for an adapter's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from datakit.errors import StageError, UsageError


@dataclass(frozen=True)
class SamplingOptions:
    """How samples are drawn (the same for the base model and every adapter)."""

    steps: int = 25
    guidance: float = 7.0
    width: int | None = None  # None: the model's own size (UNet sample size x VAE scale)
    height: int | None = None
    batch_size: int = 4
    negative_prompt: str = ""

    def check(self) -> None:
        if self.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {self.steps}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.guidance < 0:
            raise UsageError(f"--guidance must be 0 or more, got {self.guidance}")
        for name, value in (("width", self.width), ("height", self.height)):
            if value is not None and (value < 8 or value % 8 or value > 8192):
                raise UsageError(f"--{name} {value}: must be a multiple of 8 between 8 and 8192")


@dataclass(frozen=True)
class SampleRequest:
    """One image to draw: its key (unique in a run), prompt and seed."""

    key: str
    prompt: str
    seed: int


def model_size(pipe) -> tuple[int, int]:
    """The pipeline's native (width, height): the UNet's sample size times the VAE's scale factor."""
    size = pipe.unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    scale = int(getattr(pipe, "vae_scale_factor", 8))
    return int(w) * scale, int(h) * scale


def generate(pipe, requests: list[SampleRequest], options: SamplingOptions,
             on_batch: Callable[[int], None] | None = None) -> Iterator[tuple[SampleRequest, np.ndarray]]:
    """Yield (request, HxWx3 uint8 image) for every request, batch by batch."""
    import torch

    width, height = options.width, options.height
    if width is None or height is None:
        native = model_size(pipe)
        width, height = width or native[0], height or native[1]
    pipe.set_progress_bar_config(disable=True)
    for start in range(0, len(requests), options.batch_size):
        batch = requests[start:start + options.batch_size]
        generators = [torch.Generator("cpu").manual_seed(int(r.seed)) for r in batch]
        try:
            with torch.no_grad():
                out = pipe(prompt=[r.prompt for r in batch],
                           negative_prompt=[options.negative_prompt] * len(batch) if options.guidance > 1 else None,
                           width=width, height=height, num_inference_steps=options.steps,
                           guidance_scale=options.guidance, generator=generators, output_type="np")
        except torch.cuda.OutOfMemoryError as exc:
            raise StageError(f"out of GPU memory at batch size {options.batch_size}: "
                             f"try --batch-size {max(1, options.batch_size // 2)}") from exc
        images = (np.clip(out.images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
        for request, image in zip(batch, images):
            yield request, image
        if on_batch is not None:
            on_batch(len(batch))
