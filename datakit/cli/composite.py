"""`datakit composite`: paste cut-outs onto many backgrounds, with captions that describe the result."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from datakit.cli.common import DeviceOpt, ForceOpt, InDir, JsonOpt, OutDir, QuietOpt, SeedOpt, WorkersOpt, execute


class ImageFormat(str, enum.Enum):
    """Output image format."""

    png = "png"
    jpg = "jpg"
    webp = "webp"


class BgEngine(str, enum.Enum):
    """How generated backgrounds are made."""

    procedural = "procedural"
    sdxl = "sdxl"
    folder = "folder"


def _parse_options(pairs: list[str]) -> dict:
    """KEY=VALUE strings -> dict, numbers and true/false converted."""
    from datakit.errors import UsageError

    out: dict = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise UsageError(f"--bg-option: '{pair}' is not KEY=VALUE")
        key, value = (s.strip() for s in pair.split("=", 1))
        low = value.lower()
        if low in ("true", "false", "yes", "no"):
            out[key] = low in ("true", "yes")
            continue
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = value
    return out


def register(app: typer.Typer) -> None:
    """Add the `composite` command."""

    @app.command("composite")
    def composite(
        cutouts: InDir,
        out: OutDir,
        bg_count: Annotated[Optional[int], typer.Option("--bg-count", min=1, help="Number of backgrounds to use (default: all of --backgrounds, or 100 generated).", show_default=False)] = None,
        backgrounds: Annotated[Optional[Path], typer.Option("--backgrounds", help="Folder of backgrounds (a `datakit backgrounds` output or any images); without it they are generated into OUT/backgrounds.", show_default=False)] = None,
        reuse_backgrounds: Annotated[bool, typer.Option("--reuse-backgrounds", help="Allow --bg-count above the number of backgrounds, using some more than once.")] = False,
        bg_engine: Annotated[BgEngine, typer.Option("--bg-engine", help="Engine for generated backgrounds.")] = BgEngine.procedural,
        bg_model: Annotated[Optional[str], typer.Option("--bg-model", help="Model for --bg-engine sdxl (folder, checkpoint or Hugging Face id).", show_default=False)] = None,
        bg_prompts: Annotated[Optional[Path], typer.Option("--bg-prompts", help="Prompts file for generated backgrounds.", show_default=False)] = None,
        bg_from: Annotated[Optional[Path], typer.Option("--bg-from", help="Source folder for --bg-engine folder.", show_default=False)] = None,
        bg_tags: Annotated[Optional[List[str]], typer.Option("--bg-tag", help="Tags for --bg-engine folder photos that have no caption (repeatable).", show_default=False)] = None,
        bg_option: Annotated[Optional[List[str]], typer.Option("--bg-option", help="Any other backgrounds-stage option as KEY=VALUE (repeatable).", show_default=False)] = None,
        per_background: Annotated[int, typer.Option("--per-background", "-k", min=1, help="Composites per background (names get _k<n>).")] = 1,
        ground_y: Annotated[str, typer.Option("--ground-y", help="Ground line of backgrounds that do not give one: auto (estimated from the image's horizon or floor line; the lower part of the frame when none is found), none (no ground) or a fraction of the height from the top.")] = "auto",
        framing: Annotated[str, typer.Option("--framing", help="Mix of framings: full body, upper body, close-up (portrait).")] = "full=0.6,upper=0.3,close=0.1",
        height_range: Annotated[str, typer.Option("--height-range", help="Full-body subject height as a fraction of the frame height, MIN-MAX.")] = "0.35-0.9",
        rotate: Annotated[float, typer.Option("--rotate", min=0, max=45, help="Tilt the subject by up to this many degrees (0: never).")] = 0.0,
        flip: Annotated[bool, typer.Option("--flip", help="Mirror about half the composites (off by default: it harms asymmetric characters).")] = False,
        disable: Annotated[Optional[List[str]], typer.Option("--disable", help="Switch an effect off: feather, light_wrap, shadow, harmonise, grain, artefacts (repeatable or comma-separated).", show_default=False)] = None,
        image_format: Annotated[ImageFormat, typer.Option("--format", help="Output image format.")] = ImageFormat.png,
        quality: Annotated[int, typer.Option("--quality", min=1, max=100, help="JPEG/WebP quality.")] = 95,
        size: Annotated[Optional[int], typer.Option("--size", min=64, help="Square output size in pixels (default: each background's size).", show_default=False)] = None,
        width: Annotated[Optional[int], typer.Option("--width", min=64, help="Output width (with --height).", show_default=False)] = None,
        height: Annotated[Optional[int], typer.Option("--height", min=64, help="Output height (with --width).", show_default=False)] = None,
        underscores: Annotated[bool, typer.Option("--underscores", help="Write caption tags with underscores (long_hair) instead of spaces.")] = False,
        contact_sheet: Annotated[bool, typer.Option("--contact-sheet/--no-contact-sheet", help="Write OUT/contact_sheet.png.")] = True,
        seed: SeedOpt = 0,
        workers: WorkersOpt = None,
        device: DeviceOpt = "auto",
        force: ForceOpt = False,
        quiet: QuietOpt = False,
        json_mode: JsonOpt = False,
    ) -> None:
        """Composite cut-outs onto many backgrounds, with captions that describe each composite."""

        def work(reporter):
            from datakit.errors import UsageError
            from datakit.stages.composite import CompositeConfig, run_composite

            w, h = width, height
            if size is not None:
                if width is not None or height is not None:
                    raise UsageError("give --size or --width/--height, not both")
                w = h = size
            effects = [e.strip() for item in (disable or []) for e in item.split(",") if e.strip()]
            cfg = CompositeConfig(
                input_dir=cutouts, out_dir=out, bg_count=bg_count, backgrounds=backgrounds,
                reuse_backgrounds=reuse_backgrounds, bg_engine=bg_engine.value, bg_model=bg_model,
                bg_prompts=bg_prompts, bg_from=bg_from, bg_tags=list(bg_tags) if bg_tags else None,
                bg_options=_parse_options(bg_option or []), per_background=per_background, ground_y=ground_y, framing=framing,
                height_range=height_range, rotate=rotate, flip=flip, disable=effects, format=image_format.value,
                quality=quality, width=w, height=h, underscores=underscores, contact_sheet=contact_sheet,
                seed=seed, workers=workers, device=getattr(device, "value", device), force=force,
            )
            return run_composite(cfg, reporter)

        execute(work, quiet=quiet, json_mode=json_mode)
