"""`datakit emit`: a kohya-ready, repeat-balanced dataset from captioned folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

from datakit.cli.common import ForceOpt, JsonOpt, OutDir, QuietOpt, SeedOpt, WorkersOpt, execute


def register(app: typer.Typer) -> None:
    """Add the `emit` command."""

    @app.command("emit")
    def emit(
        out: OutDir,
        concept: Annotated[List[str], typer.Option("--concept", "-c", metavar="NAME=DIR", help="A concept: its name (the folder becomes <repeats>_NAME) and a captioned folder. Repeat for more concepts.", show_default=False)] = [],  # noqa: B006
        weight: Annotated[List[str], typer.Option("--weight", "-w", metavar="NAME=W", help="Relative share of steps per epoch for a concept (default 1 each: equal shares).", show_default=False)] = [],  # noqa: B006
        reg: Annotated[Optional[Path], typer.Option("--reg", metavar="DIR", help="Regularisation images (written to OUT/reg/<repeats>_<class>/).", show_default=False)] = None,
        reg_class: Annotated[Optional[str], typer.Option("--reg-class", metavar="CLASS", help="Class tokens of the regularisation images (e.g. '1girl').", show_default=False)] = None,
        alpha_mask: Annotated[List[str], typer.Option("--alpha-mask", metavar="NAME", help="Keep this concept's transparent images as RGBA and set alpha_mask = true (masked loss).", show_default=False)] = [],  # noqa: B006
        keep_tokens: Annotated[Optional[int], typer.Option("--keep-tokens", min=0, help="Leading caption tags kept in place when shuffling (default: from the tags rewrite stage, else 1 with a trigger, else 0).", show_default=False)] = None,
        target_steps: Annotated[Optional[int], typer.Option("--target-steps", min=1, help="Derive the epoch count that reaches this many optimizer steps.", show_default=False)] = None,
        epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epoch count recorded in the plan (excludes --target-steps).", show_default=False)] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Training batch size (dataset.toml and the step arithmetic).")] = 1,
        resolution: Annotated[int, typer.Option("--resolution", min=64, help="Training resolution; buckets span half to twice it (512: kohya's 256..1024).")] = 512,
        bucket_no_upscale: Annotated[bool, typer.Option("--bucket-no-upscale", help="Never upscale small images into a bucket (kohya's bucket_no_upscale).")] = False,
        shuffle_caption: Annotated[bool, typer.Option("--shuffle-caption/--no-shuffle-caption", help="Let kohya shuffle the tags after the first keep_tokens.")] = True,
        copy: Annotated[bool, typer.Option("--copy/--link", help="Copy images instead of hard-linking unchanged ones.")] = False,
        flatten_color: Annotated[str, typer.Option("--flatten-color", metavar="#RRGGBB", help="Colour transparent images are flattened onto (concepts without --alpha-mask).")] = "#ffffff",
        min_size: Annotated[int, typer.Option("--min-size", min=1, help="Skip images whose shorter side is below this many pixels.")] = 64,
        dup_threshold: Annotated[int, typer.Option("--dup-threshold", min=0, max=64, help="Report image pairs whose perceptual hashes differ by at most this many bits.")] = 3,
        seed: SeedOpt = 0,
        workers: WorkersOpt = None,
        force: ForceOpt = False,
        quiet: QuietOpt = False,
        json_mode: JsonOpt = False,
    ) -> None:
        """Lay captioned folders out as a kohya dataset: repeat folders, dataset.toml, plan and report.html."""

        def work(reporter):
            from datakit.emit.names import split_assignment
            from datakit.errors import UsageError
            from datakit.stages.emit import EmitConfig, run_emit

            concepts = [split_assignment(v, "--concept") for v in concept]
            weights = {}
            for v in weight:
                name, w = split_assignment(v, "--weight")
                try:
                    weights[name] = float(w)
                except ValueError:
                    raise UsageError(f"--weight {v!r}: {w!r} is not a number") from None
            cfg = EmitConfig(
                out_dir=out, concepts=[(n, Path(d)) for n, d in concepts], weights=weights, reg_dir=reg,
                reg_class=reg_class, alpha_mask=list(alpha_mask), keep_tokens=keep_tokens, target_steps=target_steps,
                epochs=epochs, batch_size=batch_size, resolution=resolution, bucket_no_upscale=bucket_no_upscale,
                shuffle_caption=shuffle_caption, copy=copy, flatten_color=flatten_color, min_size=min_size,
                dup_threshold=dup_threshold, seed=seed, workers=workers, force=force,
            )
            return run_emit(cfg, reporter)

        execute(work, quiet=quiet, json_mode=json_mode)
