"""Hypernetwork training: `datakit train --method hypernetwork` against A1111's own training loop.

Reference: AUTOMATIC1111/stable-diffusion-webui, `modules/hypernetworks/hypernetwork.py`
`train_hypernetwork` with `modules/textual_inversion/dataset.py` `PersonalizedBase`, at their
defaults, re-done here on diffusers components:
- the dataset is prepared once: each image opened, resized (bicubic), encoded by the VAE once and
  one latent sampled ("once", the default latent sampling); the conditioning of its caption is
  encoded once and kept (`include_cond=True`, and neither tag shuffling nor tag dropout is on);
- each step takes a shuffled batch (drop_last) of cached latents and conditionings, draws timesteps
  and noise, runs the UNet with the hypernetwork applied to the attention context before to_k / to_v
  (A1111's `attention_CrossAttention_forward`: plain einsum attention, since
  `training_xattention_optimizations` is off by default), MSE to the noise, backward, AdamW with
  torch's defaults (A1111's `optimizer_dict["AdamW"]`), no gradient clipping (its default);
- fp32 on the CPU (A1111's autocast and GradScaler are CUDA-only).
datakit: the whole `run_train` of `datakit train --method hypernetwork` at its defaults (latent
cache on disk in a fresh output folder, text-encoder outputs cached, SDPA attention).

Both train the same hypernetwork shape (1,2,1, linear, every attention width of the model) on the
same small random SD1-shaped model (VAE with 8x downscaling, two-level UNet with 32-wide attention heads, tiny CLIP) and the same
images, 256 px, batch 2, for the same number of steps. Each run is its own process; the two take
turns (reference, datakit, then datakit, reference, ...) so a busy machine slows both alike. Reported:
the median optimizer-step time (after each run's first step; torch's global optimizer-step hook,
the same clock for both), the whole run (process start to exit), CPU seconds and peak RSS.

The model is small (CPU-sized), so the figures show the ratio, not real-model speeds.

    .venv/bin/python benchmarks/train_hypernetwork.py [--quick] [--rounds N] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from harness import Results, Row, StepClock, machine, median, print_rows, result_line, run_child, self_usage, write_results  # noqa: E402

IMAGE_PX = 256  # 32x32 latents (the VAE downscales 8x, as SD's): 1024 tokens in the first attention level
BATCH = 2
LAYERS = [1, 2, 1]  # A1111's default layer structure; activation "linear", Normal init, no layer norm, no dropout
LR = 5e-6


def save_bench_model(folder: Path) -> Path:
    """The tiny test pipeline with a bigger VAE and UNet (32-wide attention heads), so attention and the VAE weigh as in SD."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from datakit.testing import build_tiny_pipeline

    pipe = build_tiny_pipeline("sd1")
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(32, 64, 64, 64), latent_channels=4,
                        norm_num_groups=16, sample_size=IMAGE_PX, layers_per_block=1)
    unet = UNet2DConditionModel(sample_size=IMAGE_PX // 8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D",) * 2,
                                up_block_types=("CrossAttnUpBlock2D",) * 2, cross_attention_dim=32,
                                # diffusers reads attention_head_dim as the number of heads: 2 and 4 heads make
                                # them 32 wide, as SD's (40-160); 32 heads of width 2 would let the plain
                                # attention's n x n matrices dwarf everything else
                                attention_head_dim=(2, 4), norm_num_groups=16)
    pipe.register_modules(vae=vae, unet=unet)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


# ---- the reference: A1111's train_hypernetwork -------------------------------------------------------

def a1111_module(dim: int):
    """A1111's HypernetworkModule for layer_structure 1,2,1, activation linear: Linear(d, 2d), Linear(2d, d)."""
    import torch
    from torch import nn

    layers = [nn.Linear(int(dim * LAYERS[i]), int(dim * LAYERS[i + 1])) for i in range(len(LAYERS) - 1)]
    for layer in layers:  # weight_init "Normal": N(0, 0.01) weights, zero biases
        torch.nn.init.normal_(layer.weight, mean=0.0, std=0.01)
        torch.nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class A1111Attention:
    """diffusers attention processor computing A1111's attention_CrossAttention_forward with a hypernetwork.

    context = the text (cross-attention) or the image tokens (self-attention); context_k/v =
    context + HN_k/v(context) for the module of that width; q k v; softmax(q k^T * scale) v in einsum.
    """

    def __init__(self, modules):
        self.modules = modules  # {width: (hn_k, hn_v)}

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        import torch

        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q = attn.to_q(hidden_states)
        pair = self.modules.get(context.shape[-1])
        context_k, context_v = (context + pair[0](context), context + pair[1](context)) if pair else (context, context)
        k, v = attn.to_k(context_k), attn.to_v(context_v)
        b, n, _ = q.shape
        h = attn.heads
        q, k, v = (t.reshape(b, -1, h, t.shape[-1] // h).permute(0, 2, 1, 3).reshape(b * h, -1, t.shape[-1] // h) for t in (q, k, v))
        sim = torch.einsum("bid,bjd->bij", q, k) * attn.scale
        out = torch.einsum("bij,bjd->bid", sim.softmax(dim=-1), v)
        out = out.reshape(b, h, n, -1).permute(0, 2, 1, 3).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


def run_reference(model: Path, images: Path, steps: int, seed: int) -> None:
    """A1111's train_hypernetwork on diffusers components: prepare the dataset once, then train."""
    import numpy as np
    import torch
    from diffusers import DDPMScheduler, StableDiffusionPipeline
    from PIL import Image

    torch.manual_seed(seed)
    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None, requires_safety_checker=False)
    unet, vae, te, tok = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    for m in (unet, vae, te):
        m.requires_grad_(False)
    widths = sorted({mod.to_k.in_features for mod in unet.modules() if hasattr(mod, "to_k") and hasattr(mod, "heads")})
    hn = {w: (a1111_module(w), a1111_module(w)) for w in widths}
    unet.set_attn_processor(A1111Attention(hn))

    # PersonalizedBase: one pass over the folder, VAE and text encoder once per image.
    dataset = []
    with torch.no_grad():
        for path in sorted(images.glob("*.png")):
            image = Image.open(path).convert("RGB").resize((IMAGE_PX, IMAGE_PX), Image.BICUBIC)
            pixels = torch.from_numpy((np.array(image).astype(np.uint8) / 127.5 - 1.0).astype(np.float32)).permute(2, 0, 1)
            dist = vae.encode(pixels.unsqueeze(0)).latent_dist
            latent = (dist.sample() * vae.config.scaling_factor).squeeze(0)  # latent_sampling_method "once"
            text = path.with_suffix(".txt").read_text()  # template "[filewords]"
            ids = tok([text], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
            cond = te(ids)[0].squeeze(0)
            dataset.append((latent, cond))
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(BATCH, len(dataset)), shuffle=True, drop_last=True)

    params = [p for pair in hn.values() for m in pair for p in m.parameters()]
    for m in (x for pair in hn.values() for x in pair):
        m.train()
    optimizer = torch.optim.AdamW(params, lr=LR)  # A1111: optimizer_dict["AdamW"](params=weights, lr=...)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    step = 0
    while step < steps:
        for latents, cond in loader:
            if step >= steps:
                break
            # LatentDiffusion.forward -> p_losses: random t, noise, q_sample, eps target, mean MSE
            t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],)).long()
            noise = torch.randn_like(latents)
            pred = unet(sched.add_noise(latents, noise, t), t, cond).sample
            loss = torch.nn.functional.mse_loss(pred, noise, reduction="none").mean([1, 2, 3]).mean()
            loss.item()  # A1111 reads the loss every step (_loss_step += loss.item())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1


# ---- datakit -----------------------------------------------------------------------------------------

def run_datakit(model: Path, dataset: Path, out: Path, steps: int, seed: int) -> None:
    """`datakit train --method hypernetwork` with its defaults, same shape, steps and learning rate."""
    from datakit.console import Reporter
    from datakit.train.config import build_config
    from datakit.train.loop import run_train

    cfg = build_config({"dataset": dataset, "base_model": str(model), "output": out, "device": "cpu",
                        "method": "hypernetwork", "batch_size": BATCH, "resolution": IMAGE_PX, "max_steps": steps,
                        "layer_structure": ",".join(map(str, LAYERS)), "activation": "linear", "lr": LR,
                        "max_grad_norm": 0, "seed": seed})
    run_train(cfg, Reporter(quiet=True), force=True)


def child(args) -> None:
    """One run in this process; prints RESULT {...} with its step clock and resource use."""
    import torch

    torch.set_num_threads(args.threads)
    clock = StepClock(vae_encoders=False)
    t0 = time.perf_counter()
    if args.one == "reference":
        run_reference(args.model, args.images, args.steps, args.seed)
    else:
        run_datakit(args.model, args.dataset, args.out, args.steps, args.seed)
    print("RESULT " + json.dumps({**clock.summary(), "in_process_s": round(time.perf_counter() - t0, 3), **self_usage()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, one round (a smoke run)")
    ap.add_argument("--rounds", type=int, default=None, help="runs of each, alternating (default 2; quick 1)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 12; quick 4)")
    ap.add_argument("--images", type=int, default=8, help="images in the dataset")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (1: the same for both, whatever else runs)")
    ap.add_argument("--one", choices=["reference", "datakit"], help=argparse.SUPPRESS)
    ap.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dataset", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        args.images = args.dataset / "img" / "1_sks"
        child(args)
        return
    started, m0 = time.perf_counter(), machine()
    rounds = args.rounds or (1 if args.quick else 2)
    steps = args.steps or (4 if args.quick else 12)
    from datakit.testing import write_tiny_dataset

    runs: dict[str, list[dict]] = {"reference": [], "datakit": []}
    with tempfile.TemporaryDirectory(prefix="datakit-bench-hn-") as tmp:
        root = Path(tmp)
        model = save_bench_model(root / "model")
        dataset = write_tiny_dataset(root / "ds", images=args.images, size=IMAGE_PX, repeats=1)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONWARNINGS="ignore", HF_HUB_OFFLINE="1")
        for r in range(rounds):
            for name in (["reference", "datakit"] if r % 2 == 0 else ["datakit", "reference"]):
                cmd = [sys.executable, __file__, "--one", name, "--model", str(model), "--dataset", str(dataset),
                       "--out", str(root / f"out-{name}-{r}"), "--steps", str(steps), "--threads", str(args.threads)]
                run = run_child(cmd, env=env)
                if run.returncode:
                    raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
                data = {**result_line(run.stdout), "wall_s": round(run.wall_s, 2)}
                runs[name].append(data)
                print(f"  {name}: whole run {data['wall_s']:.1f} s, median step {data['median_step_s']} s, "
                      f"first step at {data['first_step_s']} s", flush=True)

    def step_median(name, key="step_s"):
        return median([g for x in runs[name] for g in x[key]])  # the gaps between steps: all after the first step

    def best(name, key):
        return min(x[key] for x in runs[name])

    r_step, d_step = step_median("reference"), step_median("datakit")
    r_cpu, d_cpu = step_median("reference", "step_cpu_s"), step_median("datakit", "step_cpu_s")
    r_wall, d_wall = best("reference", "wall_s"), best("datakit", "wall_s")
    where = f"small SD1-shaped model, {IMAGE_PX} px, batch {BATCH}, {args.images} images, {steps} steps, CPU fp32, {args.threads} thread(s)"
    rows = [
        Row(case=f"hypernetwork training, {where}: one step (median)", datakit=f"{1 / d_step:.2f} steps/s ({d_cpu:.3g} CPU-s/step)",
            baseline=f"A1111 train_hypernetwork (cached latents + conditioning, plain attention): {1 / r_step:.2f} steps/s "
                     f"({r_cpu:.3g} CPU-s/step)",
            goal="faster than A1111", result=f"{r_step / d_step:.2f}x", met=d_step < r_step),
        Row(case=f"hypernetwork training, {where}: whole run", datakit=f"{d_wall:.1f} s, CPU {best('datakit', 'cpu_s'):.1f} s, "
            f"peak RSS {best('datakit', 'peak_rss_gb'):.2f} GB",
            baseline=f"A1111: {r_wall:.1f} s, CPU {best('reference', 'cpu_s'):.1f} s, peak RSS {best('reference', 'peak_rss_gb'):.2f} GB",
            goal="—", result=f"{r_wall / d_wall:.2f}x"),
    ]
    print_rows(rows)
    write_results(Results(
        benchmark="train_hypernetwork", title="datakit train --method hypernetwork vs A1111 train_hypernetwork",
        settings={"image_px": IMAGE_PX, "batch": BATCH, "steps": steps, "images": args.images, "rounds": rounds,
                  "threads": args.threads, "layer_structure": LAYERS, "lr": LR, "precision": "fp32", "device": "cpu"},
        rows=rows, measurements=runs,
        notes=["step time: median over every round's steps after each run's first; whole run: best of the rounds, "
               "process start to exit (model load, dataset preparation / caches, steps, saving)"],
        quick=args.quick), started=started, machine_at_start=m0)


if __name__ == "__main__":
    main()
