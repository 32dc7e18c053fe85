"""Benchmark `datakit backgrounds`: procedural images per second, and the diffusion engine against plain diffusers.

    .venv/bin/python benchmarks/backgrounds.py [--quick] [--gpu]

Procedural (CPU): the whole stage (draw + PNG encode + atomic write + manifest) at 1024 px with 1
and 2 worker processes; the 1-worker run is the baseline the pool must beat. Also the drawing time
of each scene alone. No outside tool draws these scenes, so there is no outside baseline.

Diffusion engine. Reference: the diffusers text-to-image call as its docs show it
(`AutoPipelineForText2Image.from_pretrained(folder, torch_dtype=...)`, `.to(device)`,
`pipe(prompts, num_inference_steps=..., guidance_scale=..., generator=...).images`, then
`image.save("bgNNN.png")`), against `datakit backgrounds --engine sdxl` (its real stage: planning,
model loading, batched generation with one generator per image, PNG + caption + manifest). Both
load the same model folder, at the same dtype and the same batch size, and take turns; each figure
is the whole run (load, generate, save) per image. What half precision adds and what batching adds
are measured separately, on the plain diffusers call.

- with --gpu (CUDA): SDXL at full size with random weights (speed does not depend on them), 1024 px,
  30 steps; fp32 and fp16, batch 1 and 4;
- otherwise (CPU): a tiny random SDXL-layout pipeline, 128 px, 8 steps, fp32, batch 1 and 4 (half
  precision is slow or unsupported on CPUs): the figures show datakit's overhead over the bare call.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Results, Row, machine, print_rows, write_results  # noqa: E402


def procedural(size: int, count: int) -> list[Row]:
    """The whole procedural stage with 1 and 2 worker processes (the 1-worker run is the baseline)."""
    from datakit.stages.backgrounds import BackgroundsConfig, run_backgrounds

    rate, cpu_ms = {}, None
    for workers in (1, 2):
        out = Path(tempfile.mkdtemp(prefix="bench-bg-"))
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            info = run_backgrounds(BackgroundsConfig(out_dir=out, count=count, width=size, height=size, workers=workers, seed=1))
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            shutil.rmtree(out, ignore_errors=True)
        assert info["counts"]["out"] == count
        rate[workers] = count / dt
        if workers == 1:
            # With one worker everything runs in this process, so its CPU time is the cost of an image
            # (draw + PNG + write) whatever else the machine is doing.
            cpu_ms = cpu / count * 1000
    return [Row(case=f"procedural engine, {size} px, {count} images", datakit=f"{rate[2]:.2f} img/s with 2 workers",
                baseline=f"the same stage with 1 worker: {rate[1]:.2f} img/s ({cpu_ms:.0f} ms of CPU per image)",
                goal="—", result=f"{rate[2] / rate[1]:.2f}x")]


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


def diffusion(gpu: bool, quick: bool) -> tuple[list[Row], dict]:
    """Plain diffusers against datakit's stage, same model folder, dtype and batch; taking turns."""
    import torch

    from datakit.console import Reporter
    from datakit.stages.backgrounds import BackgroundsConfig, run_backgrounds

    if gpu and not torch.cuda.is_available():
        raise SystemExit("backgrounds.py --gpu: no CUDA GPU on this machine")
    device = "cuda" if gpu else "cpu"
    size, steps = (1024, 30) if gpu else (128, 4 if quick else 8)
    n = 4 if quick else 8
    dtypes = [("fp32", torch.float32), ("fp16", torch.float16)] if gpu else [("fp32", torch.float32)]
    prompts = [f"a sunny beach, ocean, blue sky, scene {i}" for i in range(n)]
    root = Path(tempfile.mkdtemp(prefix="bench-bg-diffusion-"))
    try:
        model = _save_model(root / "model", gpu)
        timings: dict[str, list[float]] = {}

        def plain(dtype, batch, dest: Path):
            from diffusers import AutoPipelineForText2Image

            dest.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            pipe = AutoPipelineForText2Image.from_pretrained(str(model), torch_dtype=dtype).to(device)
            pipe.set_progress_bar_config(disable=True)
            for start in range(0, n, batch):
                gens = [torch.Generator("cpu").manual_seed(start + j) for j in range(min(batch, n - start))]
                images = pipe(prompts[start:start + batch], num_inference_steps=steps, guidance_scale=5.0, width=size,
                              height=size, generator=gens).images
                for j, img in enumerate(images):
                    img.save(dest / f"bg{start + j:03d}.png")
            if gpu:
                torch.cuda.synchronize()
            del pipe
            return time.perf_counter() - t0

        def ours(dtype_name, batch, dest: Path):
            t0 = time.perf_counter()
            info = run_backgrounds(BackgroundsConfig(out_dir=dest, count=n, engine="sdxl", model=str(model), width=size, height=size,
                                                     steps=steps, guidance=5.0, batch_size=batch, device=device, dtype=dtype_name,
                                                     force=True), Reporter(quiet=True))
            if gpu:
                torch.cuda.synchronize()
            assert info["counts"]["out"] == n, info["counts"]
            return time.perf_counter() - t0

        plain(dtypes[-1][1], 1, root / "warm")  # CUDA context, kernels, file cache: outside the timings
        cases = [(name, dtype, batch) for name, dtype in dtypes for batch in (1, 4)]
        for rep in range(1 if quick else 2):
            for name, dtype, batch in cases:
                pair = [("plain", lambda d: plain(dtype, batch, d)), ("datakit", lambda d: ours(name, batch, d))]
                for who, fn in (pair if rep % 2 == 0 else pair[::-1]):
                    dest = root / f"{who}-{name}-b{batch}-{rep}"
                    timings.setdefault(f"{who} {name} b{batch}", []).append(fn(dest))
                    shutil.rmtree(dest, ignore_errors=True)
                    if gpu:
                        torch.cuda.empty_cache()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    best = {k: min(v) for k, v in timings.items()}
    rate = {k: n / v for k, v in best.items()}
    model_name = "SDXL (random weights)" if gpu else "tiny SDXL-layout model"
    rows = []
    for name, _, batch in cases:
        ours_rate, base_rate = rate[f"datakit {name} b{batch}"], rate[f"plain {name} b{batch}"]
        rows.append(Row(case=f"diffusion engine, {model_name}, {size} px, {steps} steps, {n} images, {device} {name}, batch {batch}",
                        datakit=f"{ours_rate:.3f} img/s (whole run)",
                        baseline=f"plain diffusers call + PIL save, same dtype and batch: {base_rate:.3f} img/s",
                        goal="within 5% of the plain call", result=f"{ours_rate / base_rate:.2f}x", met=ours_rate / base_rate >= 0.95))
    top = dtypes[-1][0]
    batching = rate[f"plain {top} b4"] / rate[f"plain {top} b1"]
    rows.append(Row(case=f"what batching adds ({model_name}, {device} {top}, plain diffusers)", datakit=f"batch 4: {rate[f'plain {top} b4']:.3f} img/s",
                    baseline=f"batch 1: {rate[f'plain {top} b1']:.3f} img/s", result=f"{batching:.2f}x"))
    if gpu:
        half = rate["plain fp16 b1"] / rate["plain fp32 b1"]
        rows.append(Row(case=f"what fp16 adds ({model_name}, batch 1, plain diffusers)", datakit=f"fp16: {rate['plain fp16 b1']:.3f} img/s",
                        baseline=f"fp32: {rate['plain fp32 b1']:.3f} img/s", result=f"{half:.2f}x"))
    return rows, {"seconds": {k: [round(x, 3) for x in v] for k, v in timings.items()}, "images": n, "size": size, "steps": steps}


def _save_model(folder: Path, gpu: bool) -> Path:
    """A random-weight SDXL-layout pipeline saved as a diffusers folder (full size on a GPU, tiny on the CPU)."""
    import torch

    if not gpu:
        from datakit.testing import build_tiny_pipeline

        build_tiny_pipeline("sdxl", sample_size=16).save_pretrained(str(folder), safe_serialization=True)
        return folder
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from datakit.models.diffusion import CONFIG_ROOT
    from datakit.testing import write_tiny_clip_tokenizer

    cfg = CONFIG_ROOT / "sdxl"
    tok = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(folder.parent / "tok")))
    with torch.device("cuda"):  # random init on the GPU: seconds instead of minutes
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(cfg / "unet")).half()
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(cfg / "vae")).half()
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(cfg / "text_encoder")).half()
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(cfg / "text_encoder_2")).half()
    sched = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(cfg / "scheduler"))
    StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok, unet=unet,
                              scheduler=sched).save_pretrained(str(folder), safe_serialization=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images (about 30 s)")
    parser.add_argument("--gpu", action="store_true", help="the diffusion comparison with full-size SDXL on CUDA")
    args = parser.parse_args()
    started, m0 = time.perf_counter(), machine()
    size = 1024
    count = 8 if args.quick else 24
    rows = procedural(size, count)
    scene_rows = per_scene(size)
    drow, dmeasure = diffusion(args.gpu, args.quick)
    rows += drow
    print(f"\ndatakit backgrounds benchmark ({size} px procedural, {count} images per run)")
    for name, value in scene_rows:
        print(f"{name}  {value}")
    print_rows(rows)
    write_results(Results(benchmark="backgrounds", title="datakit backgrounds: procedural pool, diffusion engine vs plain diffusers",
                          settings={"procedural_px": size, "procedural_images": count, "gpu": args.gpu},
                          rows=rows, measurements={"diffusion": dmeasure, "draw_ms": dict(scene_rows)},
                          notes=["diffusion: best of the runs, each the whole run (model load, generation, PNG writing)"],
                          quick=args.quick), started=started, machine_at_start=m0)


if __name__ == "__main__":
    main()
