"""LoRA training speed: datakit's trainer against the diffusers example loop, same model, data and precision.

Reference: huggingface/diffusers `examples/text_to_image/train_text_to_image_lora.py` (and its SDXL
sibling), the loop a user copies: peft LoRA on the attention projections (to_q/k/v/out), the VAE and
the text encoder(s) run on every step (no caching), AdamW, gradient clipping at 1; with
`--mixed_precision bf16` it casts the frozen models to bf16 and keeps the LoRA weights in fp32 under
autocast. datakit: `run_train` (the `datakit train --method lora` loop: latents and text-encoder
outputs cached, SDPA, LoRA on every kohya target, a larger network than the reference's).

Both run at the same precision: fp32 on the CPU; on a GPU (--gpu) bf16 for both, then fp32 for both,
so what bf16 adds is reported on its own line.

    .venv/bin/python benchmarks/train.py [--quick]            # CPU: a small random model
    .venv/bin/python benchmarks/train.py --gpu [--quick]      # also SD1.5-size @512 and SDXL-size @1024 (random weights)

Each measurement runs in its own process so peak memory (RSS on CPU, torch.cuda.max_memory_allocated
on GPU) belongs to that loop alone; the two loops take turns, round after round. Step time is the
median optimizer-step interval after 3 warm-up steps, from torch's global optimizer-step hook (the
same clock for both). The hypernetwork comparison is benchmarks/train_hypernetwork.py.
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
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import Results, Row, StepClock, machine, median, print_rows, result_line, run_child, write_results  # noqa: E402

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

def run_ours(pipe, family, dataset: Path, size: int, steps: int, device: str, batch: int, precision: str) -> None:
    from datakit.console import Reporter
    from datakit.train.config import build_config
    from datakit.train.model import base_from_pipeline
    from datakit.train.loop import run_train

    out = Path(tempfile.mkdtemp())
    cfg = build_config({"dataset": dataset, "base_model": "bench", "output": out, "max_steps": steps, "rank": 16,
                        "resolution": size, "batch_size": batch, "device": "cuda" if device == "cuda" else "cpu",
                        "latent_cache": "ram", "save_precision": "fp16", "mixed_precision": precision})
    run_train(cfg, Reporter(quiet=True), base=base_from_pipeline(pipe, name="bench", family=family))


def run_reference(pipe, family, dataset: Path, size: int, steps: int, device: str, batch: int, precision: str) -> None:
    """The diffusers example loop: encode image and caption every step, peft LoRA on attention only."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from PIL import Image

    weight_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    unet, vae, tes, toks = pipe.unet, pipe.vae, [pipe.text_encoder], [pipe.tokenizer]
    if family == "sdxl":
        tes.append(pipe.text_encoder_2)
        toks.append(pipe.tokenizer_2)
    for m in [unet, vae, *tes]:
        m.requires_grad_(False)
        m.to(device, weight_dtype)  # the example: frozen models in the mixed-precision dtype
    unet.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    params = [p for p in unet.parameters() if p.requires_grad]
    for p in params:  # cast_training_params: the trainable LoRA weights stay fp32
        p.data = p.data.float()
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")
    opt = torch.optim.AdamW(params, lr=1e-4)
    sched = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    images = sorted((dataset / "1_sks").glob("*.png"))
    for step in range(steps):
        paths = [images[(step * batch + k) % len(images)] for k in range(batch)]
        pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32) / 127.5 - 1)
                              .permute(2, 0, 1) for p in paths]).to(device, weight_dtype)
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
        with autocast:
            pred = unet(sched.add_noise(latents, noise, t), t, hidden, **kwargs).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        if device == "cuda":
            torch.cuda.synchronize()


def one(args) -> None:
    """Child process: build, run one loop, print RESULT {...} with its step times and peak memory."""
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
        clock = StepClock(vae_encoders=False)
        t0 = time.perf_counter()
        fn(pipe, family, data, args.size, args.steps, args.device, args.batch, args.precision)
        total = time.perf_counter() - t0
    result = {**clock.summary(warmup=WARMUP), "total_s": round(total, 3)}
    if args.device == "cuda":
        result["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    else:
        result["peak_mem_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print("RESULT " + json.dumps(result))


def measure(case, which, device, size, steps, images, batch, threads, precision) -> dict:
    cmd = [sys.executable, __file__, "--one", which, "--case", case, "--device", device, "--size", str(size),
           "--steps", str(steps), "--images", str(images), "--batch", str(batch), "--threads", str(threads),
           "--precision", precision]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(threads))
    run = run_child(cmd, env=env)
    if run.returncode:
        raise SystemExit(f"{case}/{which} failed:\n{run.stderr[-3000:]}")
    return result_line(run.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, one round")
    ap.add_argument("--gpu", action="store_true", help="also the SD1.5-size and SDXL-size cases on CUDA (bf16, then fp32)")
    ap.add_argument("--rounds", type=int, default=None, help="runs of each loop, alternating (default 2; quick 1)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--case", default="small", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, default=20, help=argparse.SUPPRESS)
    ap.add_argument("--images", type=int, default=8, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="no", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args)
        return
    started, m0 = time.perf_counter(), machine()
    rounds = args.rounds or (1 if args.quick else 2)
    # (case, device, px, steps, images, batch, threads, precision)
    cases = [("small", "cpu", 64, 10 if args.quick else 25, 8, 2, 1, "no")]
    if args.gpu:
        for precision in ("bf16", "no"):
            cases += [("sd15", "cuda", 512, 12 if args.quick else 30, 8, 1, 1, precision),
                      ("sdxl", "cuda", 1024, 8 if args.quick else 20, 8, 1, 1, precision)]
    found: dict[tuple, dict[str, list[dict]]] = {}
    for case in cases:
        runs = found.setdefault(case, {"reference": [], "ours": []})
        for r in range(rounds):
            for which in (("reference", "ours") if r % 2 == 0 else ("ours", "reference")):
                runs[which].append(measure(case[0], which, *case[1:]))
        print(f"{case[0]} {case[-1]}: reference {runs['reference']}  datakit {runs['ours']}", file=sys.stderr)

    def step(runs, key="step_s"):  # median over every round's steps after the warm-up
        return median([g for x in runs for g in x[key][WARMUP - 1:]])

    rows, table = [], {}
    for case, runs in found.items():
        name, device, size, steps, images, batch, threads, precision = case
        ref_s, ours_s = step(runs["reference"]), step(runs["ours"])
        ref_cpu, ours_cpu = step(runs["reference"], "step_cpu_s"), step(runs["ours"], "step_cpu_s")
        ref_mem, ours_mem = (min(x["peak_mem_gb"] for x in runs[k]) for k in ("reference", "ours"))
        prec = "fp32" if precision == "no" else precision
        table[(name, prec)] = 1 / ours_s
        mem = "GB GPU" if device == "cuda" else "GB peak RSS"
        model = {"small": "small SD1-layout model", "sd15": "SD1.5-size UNet", "sdxl": "SDXL-size UNet"}[name]
        rows.append(Row(case=f"LoRA, {model}, {size} px, batch {batch}, {device} {prec} (both)",
                        datakit=f"{1 / ours_s:.2f} steps/s ({ours_cpu:.3g} CPU-s/step), {ours_mem:.2f} {mem}",
                        baseline=f"diffusers example loop (peft on attention, VAE + text encoder every step): "
                                 f"{1 / ref_s:.2f} steps/s ({ref_cpu:.3g} CPU-s/step), {ref_mem:.2f} {mem}",
                        goal="never slower", result=f"{ref_s / ours_s:.2f}x", met=ours_s <= ref_s))
    for name in ("sd15", "sdxl"):
        if (name, "bf16") in table and (name, "fp32") in table:
            gain = table[(name, "bf16")] / table[(name, "fp32")]
            rows.append(Row(case=f"what bf16 adds to datakit ({name}, CUDA)", datakit=f"bf16: {table[(name, 'bf16')]:.2f} steps/s",
                            baseline=f"fp32: {table[(name, 'fp32')]:.2f} steps/s", result=f"{gain:.2f}x"))
    print_rows(rows)
    write_results(Results(
        benchmark="train", title="datakit train (LoRA) vs the diffusers example loop, same precision",
        settings={"rounds": rounds, "cases": [dict(zip(("case", "device", "px", "steps", "images", "batch", "threads", "precision"), c))
                                              for c in cases]},
        rows=rows, measurements={f"{c[0]}-{c[-1]}": v for c, v in found.items()},
        notes=[f"step time: median over {rounds} alternating rounds, after {WARMUP} warm-up steps; peak memory: the lower of the rounds"],
        quick=args.quick), started=started, machine_at_start=m0)


if __name__ == "__main__":
    main()
