"""Benchmark `datakit backgrounds`: procedural images per second, and SDXL throughput when a GPU is present.

    .venv/bin/python benchmarks/backgrounds.py [--quick]

Procedural (CPU): the whole stage (draw + PNG encode + atomic write + manifest) at 1024 px with 1
and 2 worker processes; the 1-worker run is the baseline the pool must beat. Also the drawing time
of each scene alone.

SDXL (only with a CUDA GPU; random full-size weights, since speed does not depend on them):
datakit's generation path (fp16, SDPA, batches of 4, one generator per image) against the plain
diffusers call with default settings (fp32, one image per call), at 30 steps and at 4 steps with
a few-step (trailing) schedule.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def procedural(size: int, count: int) -> list[tuple[str, str]]:
    from datakit.stages.backgrounds import BackgroundsConfig, run_backgrounds

    rows = []
    base = None
    for workers in (1, 2):
        out = Path(tempfile.mkdtemp(prefix="bench-bg-"))
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            info = run_backgrounds(BackgroundsConfig(out_dir=out, count=count, width=size, height=size, workers=workers, seed=1))
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        assert info["counts"]["out"] == count
        rate = count / dt
        base = base or rate
        # With one worker everything runs in this process, so its CPU time is the cost of an image
        # (draw + PNG + write) whatever else the machine is doing.
        cpu_note = f", CPU {cpu / count * 1000:.0f} ms/img = {count / cpu:.2f} img/s per core" if workers == 1 else ""
        rows.append((f"procedural stage, {workers} worker{'s' if workers > 1 else ''}",
                     f"{rate:.2f} img/s wall ({dt / count * 1000:.0f} ms/img, x{rate / base:.2f}){cpu_note}"))
    return rows


def per_scene(size: int) -> list[tuple[str, str]]:
    from datakit.backgrounds.procedural import PROCEDURAL_SCENES, render

    rows = []
    total = 0.0
    for scene in PROCEDURAL_SCENES:
        render(scene, 0, 64, 64)  # warm caches
        # CPU time, not wall time: on a shared machine the wall clock mostly measures the neighbours.
        t0 = time.process_time()
        render(scene, 7, size, size)
        dt = time.process_time() - t0
        total += dt
        rows.append((f"  draw '{scene.name}' ({size} px, CPU time)", f"{dt * 1000:.0f} ms"))
    rows.append((f"  draw, mean over scenes ({size} px, CPU time)", f"{total / len(PROCEDURAL_SCENES) * 1000:.0f} ms"))
    return rows


def sdxl(quick: bool) -> list[tuple[str, str]]:
    import torch

    if not torch.cuda.is_available():
        return [("sdxl", "skipped: no CUDA GPU on this machine")]
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from datakit.models.diffusion import CONFIG_ROOT
    from datakit.testing import write_tiny_clip_tokenizer

    cfg = CONFIG_ROOT / "sdxl"
    tok = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(Path(tempfile.mkdtemp()) / "tok")))

    def build(dtype):
        with torch.device("cuda"):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")).to(dtype)
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")).to(dtype)
            te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")).to(dtype)
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg / "text_encoder_2")).to(dtype)
        sched = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(cfg / "scheduler"))
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                         unet=unet, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    n = 4 if quick else 8
    prompts = ["a sunny beach, ocean, blue sky"] * n
    rows = []
    for steps, turbo in ((30, False), (4, True)):
        results = {}
        for label, dtype, batch in (("plain diffusers (fp32, 1/call)", torch.float32, 1), ("datakit (fp16, batch 4)", torch.float16, 4)):
            pipe = build(dtype)
            if turbo:
                pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
            kwargs = dict(num_inference_steps=steps, guidance_scale=0.0 if turbo else 5.0, width=1024, height=1024,
                          output_type="np")
            if label.startswith("datakit"):
                pipe.vae.config.force_upcast = False  # stands in for the fp16-fix VAE (--vae)
            pipe(prompts[:1], **kwargs)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for i in range(0, n, batch):
                gens = [torch.Generator("cpu").manual_seed(i + j) for j in range(batch)]
                pipe(prompts[i : i + batch], generator=gens if batch > 1 else gens[0], **kwargs)
            torch.cuda.synchronize()
            results[label] = n / (time.perf_counter() - t0)
            del pipe
            torch.cuda.empty_cache()
        base = results["plain diffusers (fp32, 1/call)"]
        for label, rate in results.items():
            rows.append((f"sdxl 1024px {steps} steps: {label}", f"{rate:.3f} img/s (x{rate / base:.2f})"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (about 30 s)")
    args = parser.parse_args()
    size = 1024
    count = 8 if args.quick else 24
    import os

    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    rows = [("machine", f"{len(os.sched_getaffinity(0))} cores, load average {load}")]
    rows += procedural(size, count)
    rows += per_scene(size)
    rows += sdxl(args.quick)
    width = max(len(r[0]) for r in rows)
    print(f"\ndatakit backgrounds benchmark ({size} px procedural, {count} images per run)")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
