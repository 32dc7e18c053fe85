"""`datakit tag IN OUT`: WD14 captions (or the given captions normalised, with --model none)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from datakit.cli.common import DeviceOpt, Device, ForceOpt, InDir, JsonOpt, OutDir, QuietOpt, WorkersOpt, execute


class Existing(str, enum.Enum):
    """What happens to a caption the image already has."""

    append = "append"
    keep = "keep"
    replace = "replace"


def tag(
    input_dir: InDir,
    out_dir: OutDir,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model", "-m",
            help="WD14 tagger: a folder with model.onnx + selected_tags.csv, a Hugging Face repo id (local cache; "
            "downloaded when online), or 'none' to keep and normalise the given captions. Default: $DATAKIT_TAGGER, else none.",
            show_default=False,
        ),
    ] = None,
    general_threshold: Annotated[float, typer.Option("--general-threshold", help="Minimum probability for a general tag.")] = 0.35,
    character_threshold: Annotated[
        float, typer.Option("--character-threshold", help="Minimum probability for a character tag (above 1 disables them).")
    ] = 0.85,
    mcut: Annotated[bool, typer.Option("--mcut", help="Choose thresholds per image by Maximum Cut instead (characters: at least 0.15).")] = False,
    batch_size: Annotated[
        Optional[int], typer.Option("--batch-size", "-b", min=1, help="Images per model call (default: 32 on a GPU, 4 on CPU; a fixed-batch model uses its own).", show_default=False)
    ] = None,
    existing: Annotated[
        Existing, typer.Option("--existing", help="A given caption: append (keep it, add new tags), keep (leave it as is), or replace (model tags only; the old caption stays in the manifest).")
    ] = Existing.append,
    undesired: Annotated[
        Optional[list[str]], typer.Option("--undesired", help="Tags the model must not add, comma-separated; repeatable.", show_default=False)
    ] = None,
    no_rating: Annotated[bool, typer.Option("--no-rating", help="Leave out the rating tag (general/sensitive/questionable/explicit).")] = False,
    underscores: Annotated[bool, typer.Option("--underscores", help="Write tags with underscores (long_hair) instead of spaces.")] = False,
    rethreshold: Annotated[
        bool, typer.Option("--rethreshold", help="Re-derive captions from OUT/tags.parquet with new thresholds; the model does not run.")
    ] = False,
    top: Annotated[int, typer.Option("--top", min=0, help="Rows of the tag frequency table to print (all are saved to OUT/tag_frequency.csv).")] = 20,
    device: DeviceOpt = Device.auto,
    workers: WorkersOpt = None,
    force: ForceOpt = False,
    quiet: QuietOpt = False,
    json_mode: JsonOpt = False,
) -> None:
    """Caption images with a WD14 tagger (onnxruntime), batched and pipelined."""
    from datakit.captions import split_caption
    from datakit.stages.tag import TagConfig, run_tag

    cfg = TagConfig(
        input_dir=Path(input_dir),
        out_dir=Path(out_dir),
        model=model,
        general_threshold=general_threshold,
        character_threshold=character_threshold,
        mcut=mcut,
        batch_size=batch_size,
        device=device.value,
        existing=existing.value,
        undesired=[t for chunk in (undesired or []) for t in split_caption(chunk)],
        rating=not no_rating,
        underscores=underscores,
        rethreshold=rethreshold,
        top=top,
        workers=workers,
        force=force,
    )
    execute(lambda reporter: run_tag(cfg, reporter), quiet=quiet, json_mode=json_mode)


def register(app: typer.Typer) -> None:
    """Add `datakit tag`."""
    app.command("tag")(tag)
