"""`datakit cutout IN OUT`: RGBA cut-outs of subjects, trimmed, with captions passed through."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.common import (
    Device,
    DeviceOpt,
    ForceOpt,
    InDir,
    JsonOpt,
    OutDir,
    QuietOpt,
    SeedOpt,
    WorkersOpt,
    execute,
)


class Method(str, enum.Enum):
    """How the subject is separated from its background."""

    flat = "flat"
    rembg = "rembg"
    auto = "auto"


class Holes(str, enum.Enum):
    """What happens to background-coloured regions the subject encloses."""

    auto = "auto"
    keep = "keep"
    cut = "cut"


def cutout(
    input_dir: InDir,
    out_dir: OutDir,
    method: Annotated[
        Method,
        typer.Option(
            "--method",
            help="flat: classical cut-out for a plain backdrop (white, off-white, grey, gradient, vignette; no weights). "
            "rembg: a segmentation model (needs --model). auto: flat when the border is one flat colour, else rembg "
            "when a model is named, else the image is skipped with a message.",
        ),
    ] = Method.flat,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model", "-m",
            help="rembg model name (isnet-anime, u2net, birefnet-general, ...; looked up in U2NET_HOME / REMBG_HOME) "
            "or a path to a U2-Net-style .onnx file. Default: $DATAKIT_REMBG_MODEL. With --method flat (and auto on "
            "a flat backdrop) it decides enclosed regions while the flat matte keeps the exact edge.",
            show_default=False,
        ),
    ] = None,
    holes: Annotated[
        Holes,
        typer.Option(
            "--holes",
            help="Enclosed regions of backdrop colour (a gap between an arm and the body, or a white shirt): auto "
            "cuts one only on evidence (listed under cut in --holes-file, or a segmenter named with --model sees "
            "backdrop there) and keeps and flags the others; keep keeps them all; cut cuts them all. The holes "
            "file overrides this for the regions it lists.",
        ),
    ] = Holes.auto,
    holes_file: Annotated[
        Optional[Path],
        typer.Option(
            "--holes-file",
            help="holes.toml: per image stem, the numbers of enclosed regions to cut and to keep "
            "([pose1] cut = [1]), as the manifest and review.png number them.",
            show_default=False,
        ),
    ] = None,
    threshold: Annotated[
        Optional[float],
        typer.Option(
            "--threshold",
            help="Colour distance to the backdrop (8-bit RGB levels) below which a pixel is backdrop. "
            "Default: from the measured noise, at least 10.",
            show_default=False,
        ),
    ] = None,
    matting: Annotated[
        bool, typer.Option("--matting", help="Refine a narrow band at the edge with closed-form matting (pymatting; slower).")
    ] = False,
    trim: Annotated[bool, typer.Option("--trim/--no-trim", help="Crop to the subject plus --margin.")] = True,
    margin: Annotated[int, typer.Option("--margin", min=0, help="Transparent pixels kept around the subject when trimming.")] = 8,
    review: Annotated[
        bool,
        typer.Option("--review/--no-review", help="Write OUT/review.png: every cut-out on a checkerboard and a dark "
                     "colour, enclosed regions outlined and numbered."),
    ] = True,
    seed: SeedOpt = 0,
    device: DeviceOpt = Device.auto,
    workers: WorkersOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Cut subjects out of their background into trimmed RGBA PNGs (straight alpha)."""
    from datakit.stages.cutout import CutoutConfig, run_cutout

    cfg = CutoutConfig(
        input_dir=Path(input_dir),
        out_dir=Path(out_dir),
        method=method.value,
        model=model,
        holes=holes.value,
        threshold=threshold,
        matting=matting,
        trim=trim,
        margin=margin,
        device=device.value,
        seed=seed,
        workers=workers,
        force=force,
        holes_file=holes_file,
        review=review,
    )
    execute(lambda reporter: run_cutout(cfg, reporter), quiet=quiet, json_mode=json_mode)


def register(app: typer.Typer) -> None:
    """Add `datakit cutout` to the app."""
    app.command("cutout")(cutout)
