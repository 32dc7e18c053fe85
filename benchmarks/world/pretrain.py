"""Pretrain the world's text-to-image model (SD1 layout: CLIP text encoder + UNet) on the cached pictures.

    .venv/bin/python benchmarks/world/pretrain.py [--steps 9000] [--batch 32]     # resumes by itself

The text encoder and the UNet learn together from scratch (there is no pretrained CLIP to freeze
here). The UNet is conditioned on the text encoder's `last_hidden_state`, i.e. after CLIP's final
layer norm: what diffusers' StableDiffusionPipeline, A1111 and ComfyUI feed it at inference.

- Latents: the VAE's posterior (mean, std) of every training picture is cached once
  (build/world/latents.npz); each step draws a posterior sample, as SD training does.
- Captions: shuffled, partly dropped tags, 10% empty (classifier-free guidance needs the empty one).
- Loss: epsilon MSE with min-SNR-5 weighting (Hang et al. 2023), timesteps uniform over SD1.5's 1000.
- AdamW at a constant learning rate after warm-up, and an EMA of the weights (what gets exported),
  so the run can be extended with a larger --steps without changing what came before.
- Deterministic on a device: every draw of step s comes from generators seeded by (seed, s);
  checkpoints (build/world/pretrain/ckpt/step-N: safetensors + JSON) hold weights, EMA, AdamW
  moments and the RNG state, so a killed run resumes where its last checkpoint left it.
- Every --export-every steps the EMA model is saved as a diffusers folder in
  build/world/pretrain/export/ so the quality gates can be measured while training goes on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world import checkpoint  # noqa: E402
from world.common import CACHE, log, picture_set, setup_torch  # noqa: E402
from world.models import (  # noqa: E402
    build_text_encoder, build_unet, count_parameters, save_pipeline, training_alphas_cumprod,
)
from world.pictures import Item, training_caption  # noqa: E402

MIN_SNR_GAMMA = 5.0


def cache_latents(torch, vae, images: np.ndarray, path: Path) -> dict[str, np.ndarray]:
    """Posterior mean and std of every picture, computed once (float16 on disk)."""
    if path.is_file():
        with np.load(path) as z:
            return {"mean": z["mean"], "std": z["std"]}
    means, stds = [], []
    t0 = time.time()
    with torch.no_grad():
        for i in range(0, len(images), 100):
            x = torch.from_numpy(np.ascontiguousarray(images[i:i + 100])).permute(0, 3, 1, 2).float() / 127.5 - 1
            post = vae.encode(x).latent_dist
            means.append(post.mean.numpy().astype(np.float16))
            stds.append(post.std.numpy().astype(np.float16))
            if i % 5000 == 0:
                print(f"latents {i}/{len(images)} ({time.time() - t0:.0f} s)", flush=True)
    out = {"mean": np.concatenate(means), "std": np.concatenate(stds)}
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.rename(path)
    return out


def load_parts(torch):
    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    vae = AutoencoderKL.from_pretrained(str(CACHE / "vae" / "final"))
    vae.requires_grad_(False).eval()
    tokenizer = CLIPTokenizer.from_pretrained(str(CACHE / "tokenizer"))
    torch.manual_seed(1)
    text_encoder = build_text_encoder(tokenizer)
    torch.manual_seed(2)
    unet = build_unet()
    return vae, tokenizer, text_encoder, unet


def export(torch, folder: Path, *, vae, tokenizer, text_encoder, unet, ema: dict, step: int, info: dict) -> None:
    """Save the EMA weights as a diffusers folder (atomically replaces the previous export)."""
    from world.models import build_text_encoder as new_te
    from world.models import build_unet as new_unet

    te, un = new_te(tokenizer), new_unet()
    te.load_state_dict({k[3:]: v for k, v in ema.items() if k.startswith("te.")})
    un.load_state_dict({k[5:]: v for k, v in ema.items() if k.startswith("unet.")})
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_pipeline(tmp, vae=vae, text_encoder=te, tokenizer=tokenizer, unet=un)
    (tmp / "world_pretrain.json").write_text(json.dumps({"step": step, **info}, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=9000, help="total steps (raise it and re-run to extend a finished run)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--save-every", type=int, default=200)
    ap.add_argument("--export-every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run", default="pretrain", help="run folder under build/world/")
    args = ap.parse_args()
    torch = setup_torch(args.seed, args.threads)
    run = CACHE / args.run
    images, items = picture_set("train")
    vae, tokenizer, text_encoder, unet = load_parts(torch)
    lat = cache_latents(torch, vae, images, CACHE / "latents.npz")
    scale = float(vae.config.scaling_factor)
    print(f"text encoder {count_parameters(text_encoder):,} + UNet {count_parameters(unet):,} parameters; "
          f"{len(items)} pictures; latent scale {scale:.4f}", flush=True)

    params = list(text_encoder.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01, betas=(0.9, 0.999))
    modules = {"te": text_encoder, "unet": unet}
    named = {f"{n}.{k}": p for n, m in modules.items() for k, p in m.named_parameters()}
    ema = {k: p.detach().clone() for k, p in named.items()}
    meta, saved_ema = checkpoint.resume(run / "ckpt", modules=modules, optimizer=opt)
    ema.update(saved_ema)
    start, elapsed, cpu = meta["step"], meta.get("elapsed_s", 0.0), meta.get("cpu_s", 0.0)
    ab = training_alphas_cumprod().float()
    snr = ab / (1 - ab)
    text_encoder.train()
    unet.train()
    # Wall time counts the waits of a busy shared machine; CPU time is the work itself (one thread).
    t_last, c_last, losses = time.time(), time.process_time(), []
    for step in range(start, args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        rng = np.random.default_rng([args.seed, step])
        idx = np.sort(rng.choice(len(items), size=args.batch, replace=False))
        captions = [training_caption(Item(None, items[i]["scene"], items[i]["objects"]), rng) for i in idx]
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        mean = torch.from_numpy(lat["mean"][idx].astype(np.float32))
        std = torch.from_numpy(lat["std"][idx].astype(np.float32))
        x0 = (mean + std * torch.randn(mean.shape, generator=gen)) * scale
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = ab[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        cond = text_encoder(ids).last_hidden_state  # after the final layer norm, as every client conditions
        pred = unet(noisy, t, encoder_hidden_states=cond).sample
        weight = torch.clamp(snr[t], max=MIN_SNR_GAMMA) / snr[t]
        loss = (weight * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, p in named.items():
                ema[k].mul_(decay).add_(p.detach(), alpha=1 - decay)
        losses.append(loss.item())
        now, cnow = time.time(), time.process_time()
        elapsed, cpu = elapsed + now - t_last, cpu + cnow - c_last
        t_last, c_last = now, cnow
        done = step + 1
        if done % 25 == 0:
            log(run / "log.jsonl", step=done, loss=round(float(np.mean(losses)), 5), lr=opt.param_groups[0]["lr"],
                wall_hours=round(elapsed / 3600, 3), cpu_hours=round(cpu / 3600, 3))
            losses = []
        if done % args.save_every == 0 or done == args.steps:
            checkpoint.save(run / "ckpt", done, modules=modules, ema=ema, optimizer=opt,
                            extra={"elapsed_s": elapsed, "cpu_s": cpu, "args": vars(args)})
        if done % args.export_every == 0 or done == args.steps:
            export(torch, run / "export", vae=vae, tokenizer=tokenizer, text_encoder=text_encoder, unet=unet,
                   ema=ema, step=done, info={"wall_hours": round(elapsed / 3600, 3), "cpu_hours": round(cpu / 3600, 3),
                                             "args": vars(args)})
            log(run / "log.jsonl", step=done, exported=str(run / "export"))


if __name__ == "__main__":
    main()
