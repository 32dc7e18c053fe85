"""`datakit backgrounds`: N varied backgrounds (procedural, a diffusion model, or your photos), each with scene tags."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from datakit.cli.common import Device, DeviceOpt, ForceOpt, JsonOpt, QuietOpt, SeedOpt, WorkersOpt, execute


class Engine(str, enum.Enum):
    """How backgrounds are made."""

    procedural = "procedural"
    sdxl = "sdxl"
    folder = "folder"


class Fmt(str, enum.Enum):
    """Output image format."""

    png = "png"
    jpg = "jpg"


class Crop(str, enum.Enum):
    """How the folder engine crops photos."""

    center = "center"
    random = "random"


class Dtype(str, enum.Enum):
    """Weights precision for the diffusion engine."""

    auto = "auto"
    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


class Sched(str, enum.Enum):
    """Diffusion sampler."""

    euler = "euler"
    euler_a = "euler_a"
    dpmpp_2m = "dpmpp_2m"
    dpmpp_2m_karras = "dpmpp_2m_karras"
    ddim = "ddim"
    unipc = "unipc"


class Family(str, enum.Enum):
    """Stable Diffusion model family."""

    sd1 = "sd1"
    sd2 = "sd2"
    sdxl = "sdxl"


def _ground(value: Optional[str]) -> float | None:
    from datakit.errors import UsageError

    if value is None:
        return -1.0
    if value.strip().lower() in ("none", "null"):
        return None
    try:
        return float(value)
    except ValueError:
        raise UsageError(f"--ground must be a fraction 0..1 or 'none', not {value!r}") from None


def _list_scenes() -> None:
    from datakit.backgrounds.procedural import PROCEDURAL_SCENES
    from datakit.backgrounds.scenes import BUILTIN_SCENES

    typer.echo("procedural engine scenes (name: tags):")
    for s in PROCEDURAL_SCENES:
        typer.echo(f"  {s.name}: {', '.join(s.tags)}")
    typer.echo(f"\nsdxl engine built-in scenes ({len(BUILTIN_SCENES)}; prompt | tags):")
    for s in BUILTIN_SCENES:
        typer.echo(f"  {s.prompt} | {', '.join(s.tags)}")


def register(app: typer.Typer) -> None:
    """Add the `backgrounds` command."""

    @app.command("backgrounds")
    def backgrounds(
        out: Annotated[Optional[Path], typer.Argument(help="Output folder (created).", show_default=False)] = None,
        count: Annotated[Optional[int], typer.Option("--count", "-n", help="How many backgrounds to make (folder engine: default one per photo).", show_default=False)] = None,
        engine: Annotated[Engine, typer.Option("--engine", help="procedural (drawn in code, no weights), sdxl (a diffusion model) or folder (your photos).")] = Engine.procedural,
        prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Scene file: one 'prompt | tag1, tag2 [| ground=0.8]' per line (default: the built-in list).", show_default=False)] = None,
        size: Annotated[Optional[int], typer.Option("--size", help="Square size in pixels (sets width and height; default 1024).", show_default=False)] = None,
        width: Annotated[Optional[int], typer.Option("--width", help="Width in pixels (default: --size).", show_default=False)] = None,
        height: Annotated[Optional[int], typer.Option("--height", help="Height in pixels (default: --size).", show_default=False)] = None,
        fmt: Annotated[Fmt, typer.Option("--format", help="Image format of the outputs.")] = Fmt.png,
        model: Annotated[Optional[str], typer.Option("--model", help="sdxl engine: diffusers folder, .safetensors checkpoint or Hugging Face id (default: $DATAKIT_BG_MODEL).", show_default=False)] = None,
        family: Annotated[Optional[Family], typer.Option("--family", help="sdxl engine: model family when detection is not enough (sd1, sd2, sdxl).", show_default=False)] = None,
        config_dir: Annotated[Optional[Path], typer.Option("--config-dir", help="sdxl engine, single files: folder with the model's configs and tokenizer/ (tokenizer_2/) files.", show_default=False)] = None,
        vae: Annotated[Optional[str], typer.Option("--vae", help="sdxl engine: replacement VAE, e.g. madebyollin/sdxl-vae-fp16-fix (fast fp16 decoding).", show_default=False)] = None,
        steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="sdxl engine: denoising steps (default 30, or 4 with --turbo).", show_default=False)] = None,
        guidance: Annotated[Optional[float], typer.Option("--guidance", help="sdxl engine: classifier-free guidance scale (default 6, or 0 with --turbo).", show_default=False)] = None,
        negative_prompt: Annotated[Optional[str], typer.Option("--negative-prompt", help="sdxl engine: negative prompt (default: people, text, watermarks and low quality).", show_default=False)] = None,
        scheduler: Annotated[Optional[Sched], typer.Option("--scheduler", help="sdxl engine: sampler (default: the model's own).", show_default=False)] = None,
        turbo: Annotated[bool, typer.Option("--turbo", help="sdxl engine: few-step model (SDXL-Turbo/Lightning): trailing timesteps, 4 steps, guidance 0.")] = False,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="sdxl engine: images per batch on the GPU.")] = 4,
        dtype: Annotated[Dtype, typer.Option("--dtype", help="sdxl engine: precision (auto: fp16 on GPU, fp32 on CPU).")] = Dtype.auto,
        prediction_type: Annotated[Optional[str], typer.Option("--prediction-type", help="sdxl engine: override the scheduler's prediction type (epsilon or v_prediction).", show_default=False)] = None,
        from_dir: Annotated[Optional[Path], typer.Option("--from", help="folder engine: your photos (same-stem .txt files give their tags).", show_default=False)] = None,
        tags: Annotated[Optional[List[str]], typer.Option("--tags", help="folder engine: tags for photos without a .txt (comma-separated; repeatable).", show_default=False)] = None,
        crop: Annotated[Crop, typer.Option("--crop", help="folder engine: crop the centre or a random part of each photo.")] = Crop.center,
        ground: Annotated[Optional[str], typer.Option("--ground", help="folder engine: where the ground is, as a fraction of the height from the top, or 'none' (default 0.82).", show_default=False)] = None,
        list_scenes: Annotated[bool, typer.Option("--list-scenes", help="Print the built-in scenes and their tags, then exit.")] = False,
        seed: SeedOpt = 0,
        workers: WorkersOpt = None,
        device: DeviceOpt = Device.auto,
        force: ForceOpt = False,
        quiet: QuietOpt = False,
        json_mode: JsonOpt = False,
    ) -> None:
        """Make N varied backgrounds, each with a caption of its scene tags."""
        if list_scenes:
            _list_scenes()
            raise typer.Exit(0)
        if out is None:
            raise typer.BadParameter("missing the OUT folder argument", param_hint="OUT")

        def work(reporter):
            from datakit.captions import split_caption
            from datakit.stages.backgrounds import BackgroundsConfig, run_backgrounds

            from datakit.errors import UsageError

            # `is not None`: --size 0 is a mistake to report, not "no size given".
            w = next((v for v in (width, size) if v is not None), 1024)
            h = next((v for v in (height, size) if v is not None), 1024)
            if engine.value != "folder" and (tags or ground is not None):
                flag = "--tags" if tags else "--ground"
                raise UsageError(f"{flag} is for --engine folder (the engine is {engine.value}; its scenes carry their own tags and ground)")
            tag_list = [t for chunk in (tags or []) for t in split_caption(chunk)] or None
            cfg = BackgroundsConfig(
                out_dir=out, count=count, engine=engine.value, width=w, height=h, seed=seed, prompts_file=prompts,
                model=model, from_dir=from_dir, tags=tag_list, workers=workers, force=force, format=fmt.value,
                family=family.value if family else None, config_dir=config_dir, vae=vae, steps=steps, guidance=guidance,
                negative_prompt=negative_prompt, scheduler=scheduler.value if scheduler else None, turbo=turbo,
                batch_size=batch_size, device=device.value, dtype=dtype.value, prediction_type=prediction_type,
                crop=crop.value, ground_y=_ground(ground),
            )
            return run_backgrounds(cfg, reporter)

        execute(work, quiet=quiet, json_mode=json_mode)
