"""`datakit eval`: how much an adapter leaks its training background, against the base model."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from datakit.cli.common import Device, DeviceOpt, ForceOpt, JsonOpt, QuietOpt, SeedOpt, execute


class Family(str, enum.Enum):
    """Stable Diffusion model family."""

    sd1 = "sd1"
    sd2 = "sd2"
    sdxl = "sdxl"


class Dtype(str, enum.Enum):
    """Weights precision."""

    auto = "auto"
    fp16 = "fp16"
    bf16 = "bf16"
    fp32 = "fp32"


def register(app: typer.Typer) -> None:
    """Add the `eval` command."""

    @app.command("eval")
    def eval_(
        adapter: Annotated[List[Path], typer.Option("--adapter", help="A LoRA .safetensors (kohya or diffusers format, or a diffusers LoRA folder) or an A1111 hypernetwork .pt; repeatable.", show_default=False)],
        output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the samples, grids, eval.csv, eval.json and eval.png (created).", show_default=False)],
        base_model: Annotated[Optional[str], typer.Option("--base-model", envvar="DATAKIT_BASE_MODEL", help="The base model the adapters were trained on: diffusers folder, .safetensors checkpoint or Hugging Face id (env DATAKIT_BASE_MODEL).", show_default=False)] = None,
        subject: Annotated[Optional[Path], typer.Option("--subject", help="Cut-outs of the subject (e.g. `datakit cutout` output): measures whether the subject is still drawn.", show_default=False)] = None,
        prompts: Annotated[Optional[Path], typer.Option("--prompts", help="Scene file, one scene per line ('on a beach, ocean | beach'); replaces the built-in scenes. The plain prompt is always added.", show_default=False)] = None,
        seeds: Annotated[int, typer.Option("--seeds", min=1, help="Samples per prompt and model (seeds --seed, --seed+1, ...).")] = 4,
        trigger: Annotated[Optional[str], typer.Option("--trigger", help="Trigger word for every adapter (default: the one each file's metadata names; required when a file names none).", show_default=False)] = None,
        clip_model: Annotated[Optional[str], typer.Option("--clip-model", help="CLIP model folder or Hugging Face id for scene agreement and subject similarity (default: $DATAKIT_CLIP_MODEL; none: not measured).", show_default=False)] = None,
        steps: Annotated[int, typer.Option("--steps", min=1, help="Denoising steps per sample.")] = 25,
        guidance: Annotated[float, typer.Option("--guidance", min=0.0, help="Classifier-free guidance scale.")] = 7.0,
        size: Annotated[Optional[int], typer.Option("--size", help="Square sample size in pixels (default: the model's own).", show_default=False)] = None,
        width: Annotated[Optional[int], typer.Option("--width", help="Sample width (default: --size, else the model's own).", show_default=False)] = None,
        height: Annotated[Optional[int], typer.Option("--height", help="Sample height (default: --size, else the model's own).", show_default=False)] = None,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per batch (does not change the images).")] = 4,
        negative_prompt: Annotated[str, typer.Option("--negative-prompt", help="Negative prompt for every sample.")] = "",
        lora_strength: Annotated[float, typer.Option("--lora-strength", help="LoRA multiplier (1 = as trained).")] = 1.0,
        hn_strength: Annotated[float, typer.Option("--hn-strength", help="Hypernetwork strength (1 = as trained).")] = 1.0,
        scheduler: Annotated[Optional[str], typer.Option("--scheduler", help="Sampler: euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, unipc (default: the model's own).", show_default=False)] = None,
        family: Annotated[Optional[Family], typer.Option("--family", help="Base model family when detection is not enough.", show_default=False)] = None,
        config_dir: Annotated[Optional[Path], typer.Option("--config-dir", help="Single-file base models: folder with the model's configs and tokenizer files.", show_default=False)] = None,
        dtype: Annotated[Dtype, typer.Option("--dtype", help="Precision (auto: fp16 on a GPU, fp32 on the CPU).")] = Dtype.auto,
        seed: SeedOpt = 0,
        device: DeviceOpt = Device.auto,
        force: ForceOpt = False,
        quiet: QuietOpt = False,
        json_mode: JsonOpt = False,
    ) -> None:
        """Measure background leakage: white and plain backgrounds, scene agreement, subject presence per adapter."""

        def work(reporter):
            from datakit.errors import UsageError
            from datakit.stages.eval import EvalConfig, run_eval

            if not base_model:
                raise UsageError("give --base-model (the model the adapters were trained on) or set DATAKIT_BASE_MODEL")
            w = next((v for v in (width, size) if v is not None), None)
            h = next((v for v in (height, size) if v is not None), None)
            cfg = EvalConfig(
                out_dir=output, base_model=base_model, adapters=list(adapter), subject_dir=subject, prompts_file=prompts,
                seeds=seeds, seed=seed, trigger=trigger, clip_model=clip_model, steps=steps, guidance=guidance, width=w,
                height=h, batch_size=batch_size, negative_prompt=negative_prompt, lora_strength=lora_strength,
                hypernetwork_strength=hn_strength, family=family.value if family else None, config_dir=config_dir,
                scheduler=scheduler, dtype=dtype.value, device=device.value, force=force,
            )
            return run_eval(cfg, reporter)

        execute(work, quiet=quiet, json_mode=json_mode)
