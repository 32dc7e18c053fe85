"""Sample images during training: prompts (kohya's prompt-file syntax), generation, a grid per checkpoint."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from datakit.errors import UsageError

# Scenes chosen to show whether the adapter still paints everything on a white background.
DEFAULT_SCENES = ("standing in a forest", "on a city street at night", "on a beach, blue sky", "in a cozy room")


@dataclass
class SamplePrompt:
    prompt: str
    negative: str = ""
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    steps: int | None = None
    cfg: float | None = None


OPTION_RE = re.compile(r"\s--([a-z])\s+")


def parse_prompt_line(line: str) -> SamplePrompt | None:
    """kohya's syntax: `prompt --n negative --w 512 --h 768 --d seed --s steps --l cfg` (# comments)."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    parts = OPTION_RE.split(" " + line)
    sp = SamplePrompt(prompt=parts[0].strip())
    for flag, value in zip(parts[1::2], parts[2::2]):
        value = value.strip()
        try:
            if flag == "n":
                sp.negative = value
            elif flag == "w":
                sp.width = int(value)
            elif flag == "h":
                sp.height = int(value)
            elif flag == "d":
                sp.seed = int(value)
            elif flag == "s":
                sp.steps = int(value)
            elif flag == "l":
                sp.cfg = float(value)
        except ValueError:
            raise UsageError(f"sample prompt option --{flag} has a bad value {value!r}: {line}") from None
    return sp


def read_prompts(path: Path | None, trigger: str | None) -> list[SamplePrompt]:
    """Prompts from a file, else the trigger word on a few contrasting scenes."""
    if path is not None:
        if not Path(path).is_file():
            raise UsageError(f"sample prompts file not found: {path}")
        prompts = [p for p in (parse_prompt_line(x) for x in Path(path).read_text(encoding="utf-8").splitlines()) if p]
        if not prompts:
            raise UsageError(f"{path}: no prompts")
        return prompts
    subject = trigger or "1girl"
    return [SamplePrompt(prompt=f"{subject}, {scene}", negative="lowres, bad anatomy", seed=i)
            for i, scene in enumerate(DEFAULT_SCENES)]


@contextlib.contextmanager
def inference_ready(base, device):
    """The base pipeline ready to draw mid-training: VAE and text encoders on the device, an Euler sampler; restored after."""
    from diffusers import EulerDiscreteScheduler

    pipe = base.pipeline
    pipe.set_progress_bar_config(disable=True)
    old_scheduler = pipe.scheduler
    parked = [(m, next(m.parameters()).device) for m in [base.vae, *base.text_encoders]]
    pipe.scheduler = EulerDiscreteScheduler.from_config(old_scheduler.config)
    try:
        for module, _ in parked:
            module.to(device)
        yield pipe
    finally:
        pipe.scheduler = old_scheduler
        for module, where in parked:  # back where training keeps them (the CPU when cached, to free the GPU)
            module.to(where)


@torch.no_grad()
def generate_grid(base, prompts: list[SamplePrompt], *, size: tuple[int, int], steps: int, cfg_scale: float,
                  device, autocast, dest: Path) -> Path:
    """Render every prompt with a fixed seed and save them side by side as one PNG."""
    from PIL import Image

    from datakit.imageio import save_image_atomic

    images = []
    with inference_ready(base, device) as pipe:
        for i, sp in enumerate(prompts):
            gen = torch.Generator("cpu").manual_seed(sp.seed if sp.seed is not None else i)
            w, h = sp.width or size[0], sp.height or size[1]
            with autocast():
                out = pipe(prompt=sp.prompt, negative_prompt=sp.negative or None, width=w, height=h,
                           num_inference_steps=sp.steps or steps, guidance_scale=sp.cfg if sp.cfg is not None else cfg_scale,
                           generator=gen, output_type="pil")
            images.append(out.images[0])
    cols = min(4, len(images))
    rows = (len(images) + cols - 1) // cols
    cw, ch = max(im.width for im in images), max(im.height for im in images)
    grid = Image.new("RGB", (cols * cw, rows * ch), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * cw, (i // cols) * ch))
    save_image_atomic(grid, dest, format="PNG")
    return dest
