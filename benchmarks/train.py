"""LoRA training speed: datakit's trainer against a plain reference loop, same model and data, one run.

The reference is the diffusers example pattern (train_text_to_image_lora*.py): peft LoRA on the
attention projections only, the VAE and the text encoder(s) run on every step, fp32, no caching.
datakit: latents and text-encoder outputs cached, SDPA, bf16 autocast with fp32 LoRA weights on a
GPU, fused AdamW, LoRA on every kohya target (a larger network than the reference's).

    .venv/bin/python benchmarks/train.py [--quick]            # CPU: a small random model
    .venv/bin/python benchmarks/train.py --gpu [--quick]      # also SD1.5-size @512 and SDXL-size @1024 (random weights)

Each measurement runs in its own process so peak memory (RSS on CPU, torch.cuda.max_memory_allocated
on GPU) belongs to that loop alone. Steps/s is measured after 3 warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WARMUP = 3


# ---- models and data ----------------------------------------------------------------------------

def build_pipeline(case: str, device: str):
    """'small': a small random SD1-layout model; 'sd15'/'sdxl': full-size random models from the shipped configs."""
    import torch

    if case == "small":
        from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        from datakit.testing import write_tiny_clip_tokenizer

        torch.manual_seed(0)
        tok = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(Path(tempfile.mkdtemp()) / "tok")))
        te = CLIPTextModel(CLIPTextConfig(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=4,
                                          vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                                          eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
        unet = UNet2DConditionModel(sample_size=16, layers_per_block=1, block_out_channels=(32, 64, 64),
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                    cross_attention_dim=64, attention_head_dim=8, norm_num_groups=16)
        vae = AutoencoderKL(block_out_channels=(32, 64, 64, 64), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, norm_num_groups=16)
        sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False), "sd1"
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from datakit.models.diffusion import CONFIG_ROOT
    from datakit.testing import write_tiny_clip_tokenizer

    family = "sdxl" if case == "sdxl" else "sd1"
    root = CONFIG_ROOT / family
    tok = CLIPTokenizer.from_pretrained(str(write_tiny_clip_tokenizer(Path(tempfile.mkdtemp()) / "tok")))
    with torch.device(device):  # random init on the GPU: seconds instead of minutes
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(root / "unet")))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(root / "vae")))
        te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(root / "text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(root / "text_encoder_2"))) if family == "sdxl" else None
    sched = EulerDiscreteScheduler.from_config(EulerDiscreteScheduler.load_config(str(root / "scheduler")))
    if family == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        return StableDiffusionXLPipeline(vae=vae, text_encoder=te, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                         unet=unet, scheduler=sched), family
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False), family


def make_dataset(folder: Path, n: int, size: int) -> Path:
    """n captioned images of one size, in kohya folder mode (1 repeat)."""
    import numpy as np
    from PIL import Image

    sub = folder / "1_sks"
    sub.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = np.full((size, size, 3), rng.integers(0, 255, 3), np.uint8)
        arr[size // 4: 3 * size // 4, size // 3: 2 * size // 3] = rng.integers(0, 255, 3)
        Image.fromarray(arr).save(sub / f"{i:03d}.png")
        (sub / f"{i:03d}.txt").write_text(f"sks, solo, standing, pose {i}, white background")
    return folder


# ---- the two loops --------------------------------------------------------------------------------

def run_ours(pipe, family, dataset: Path, size: int, steps: int, device: str, batch: int) -> dict:
    from datakit.console import Reporter
    from datakit.train.config import build_config
    from datakit.train.model import base_from_pipeline
    from datakit.train.loop import run_train

    out = Path(tempfile.mkdtemp())
    cfg = build_config({"dataset": dataset, "base_model": "bench", "output": out, "max_steps": steps, "rank": 16,
                        "resolution": size, "batch_size": batch, "device": "cuda" if device == "cuda" else "cpu",
                        "latent_cache": "ram", "save_precision": "fp16", "alpha": 16})
    info = run_train(cfg, Reporter(quiet=True), base=base_from_pipeline(pipe, name="bench", family=family))
    return {"steps_per_s": info["speed"].get("steady_steps_per_s") or info["speed"]["steps_per_s"],
            "total_s": info["timings"]["total_s"]}


def run_reference(pipe, family, dataset: Path, size: int, steps: int, device: str, batch: int) -> dict:
    """The diffusers example loop: encode image and caption every step, fp32, peft LoRA on attention only."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from PIL import Image

    t_start = time.perf_counter()
    unet, vae, tes, toks = pipe.unet, pipe.vae, [pipe.text_encoder], [pipe.tokenizer]
    if family == "sdxl":
        tes.append(pipe.text_encoder_2)
        toks.append(pipe.tokenizer_2)
    for m in [unet, vae, *tes]:
        m.requires_grad_(False)
        m.to(device, torch.float32)
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    images = sorted((dataset / "1_sks").glob("*.png"))
    ends = []
    for step in range(steps):
        paths = [images[(step * batch + k) % len(images)] for k in range(batch)]
        pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32) / 127.5 - 1)
                              .permute(2, 0, 1) for p in paths]).to(device)
        captions = [p.with_suffix(".txt").read_text() for p in paths]
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            states, pooled = [], None
            for i, (te, tok) in enumerate(zip(tes, toks)):
                ids = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids.to(device)
                out = te(ids, output_hidden_states=True)
                states.append(out.hidden_states[-2] if family == "sdxl" else out[0])
                if i == 1:
                    pooled = out.text_embeds
            hidden = torch.cat(states, dim=-1)
        noise = torch.randn_like(latents)
        t = torch.randint(0, 1000, (batch,), device=device)
        kwargs = {}
        if family == "sdxl":
            ids = torch.tensor([[size, size, 0, 0, size, size]] * batch, device=device, dtype=hidden.dtype)
            kwargs["added_cond_kwargs"] = {"text_embeds": pooled, "time_ids": ids}
        pred = unet(sched.add_noise(latents, noise, t), t, hidden, **kwargs).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()
        ends.append(time.perf_counter())
    steady = (len(ends) - WARMUP) / (ends[-1] - ends[WARMUP - 1])
    return {"steps_per_s": round(steady, 4), "total_s": round(time.perf_counter() - t_start, 3)}


def one(args) -> None:
    """Child process: build, run one loop, print JSON with the peak memory."""
    import resource

    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    pipe, family = build_pipeline(args.case, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp), args.images, args.size)
        if args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        fn = run_ours if args.one == "ours" else run_reference
        result = fn(pipe, family, data, args.size, args.steps, args.device, args.batch)
    if args.device == "cuda":
        result["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        result["peak_mem_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print("RESULT " + json.dumps(result))


def measure(case, which, device, size, steps, images, batch, threads) -> dict:
    cmd = [sys.executable, __file__, "--one", which, "--case", case, "--device", device, "--size", str(size),
           "--steps", str(steps), "--images", str(images), "--batch", str(batch), "--threads", str(threads)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{case}/{which} failed:\n{proc.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps")
    ap.add_argument("--gpu", action="store_true", help="also the SD1.5-size and SDXL-size cases on CUDA")
    ap.add_argument("--only", choices=["lora", "hypernetwork"], help="run only the LoRA or only the hypernetwork comparison")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="small", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument("--images", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args)
        return
    if args.only == "hypernetwork":
        _hypernetwork_section(args.quick)
        return
    cases = [("small", "cpu", 64, 10 if args.quick else 25, 8, 2, 1)]
    if args.gpu:
        cases += [("sd15", "cuda", 512, 12 if args.quick else 30, 8, 1, 1), ("sdxl", "cuda", 1024, 8 if args.quick else 20, 8, 1, 1)]
    rows = []
    for case, device, size, steps, images, batch, threads in cases:
        ref = measure(case, "reference", device, size, steps, images, batch, threads)
        ours = measure(case, "ours", device, size, steps, images, batch, threads)
        rows.append((case, device, size, batch, ref, ours))
        print(f"{case}: reference {ref}  datakit {ours}", file=sys.stderr)
    print(f"{'case':<7}{'device':<7}{'px':>6}{'batch':>6}{'ref steps/s':>13}{'ours steps/s':>14}{'speed-up':>10}"
          f"{'ref peak GB':>13}{'ours peak GB':>14}")
    for case, device, size, batch, ref, ours in rows:
        print(f"{case:<7}{device:<7}{size:>6}{batch:>6}{ref['steps_per_s']:>13.3f}{ours['steps_per_s']:>14.3f}"
              f"{ours['steps_per_s'] / ref['steps_per_s']:>9.2f}x{ref['peak_mem_gb']:>13.2f}{ours['peak_mem_gb']:>14.2f}")
    print("peak memory: process RSS on CPU, torch.cuda.max_memory_allocated on GPU; steps/s after 3 warm-up steps")
    if args.only != "lora":
        _hypernetwork_section(args.quick)


def _hypernetwork_section(quick: bool) -> None:
    """--method hypernetwork against A1111's way (plain attention, no caches): benchmarks/train_hypernetwork.py."""
    from train_hypernetwork import bench_hypernetwork, print_table

    print()
    print_table(bench_hypernetwork(quick))


if __name__ == "__main__":
    main()
