"""Train the world's VAE (an SD-layout AutoencoderKL, 64 px <-> 16x16x4) on the cached pictures.

    .venv/bin/python benchmarks/world/train_vae.py [--steps 3000] [--batch 16]

Loss as the LDM autoencoder's without its perceptual and adversarial terms (no weights for those
here): L1 reconstruction of a posterior sample, plus a small KL to keep the latent space smooth.
Resumable from build/world/vae/ (checkpoints every --save-every steps); one torch thread; batch i
of the run is drawn from a generator seeded by (seed, i), so a resumed run sees what an
uninterrupted one would. At the end it measures the latent standard deviation and stores SD's
`scaling_factor` (1 / std) in the VAE's config, then saves it to build/world/vae/final/.

`--decoder-only` then fine-tunes the decoder alone while the UNet pretrains on the same, now
fixed, latent space (as Stability fine-tuned SD's decoder after the fact).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world import checkpoint  # noqa: E402
from world.common import CACHE, log, picture_set, setup_torch  # noqa: E402
from world.models import build_vae, count_parameters  # noqa: E402

CROP = 32
KL_WEIGHT = 1e-6  # per summed element, as LDM's autoencoder configs (kl_weight 1e-6)


def to_tensor(torch, batch: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def crop_batch(torch, images: np.ndarray, batch: int, rng: np.random.Generator):
    """A batch of 32 px crops on the 4 px latent grid (the VAE is fully convolutional, and crops cost a quarter)."""
    idx = np.sort(rng.choice(len(images), size=batch, replace=False))
    oy, ox = (int(v) * 4 for v in rng.integers(0, 9, size=2))
    return to_tensor(torch, images[idx, oy:oy + CROP, ox:ox + CROP])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pictures", default="train", help="the cached picture set to learn from")
    ap.add_argument("--run", default=None, help="run folder under build/world/ (default: vae, or vae-decoder)")
    ap.add_argument("--init", default=None, help="start from this saved VAE folder (warm start) instead of random weights")
    ap.add_argument("--colour-aug", type=float, default=0.0,
                    help="share of crops whose colours are rotated about the grey axis and channel-permuted, so the "
                         "VAE encodes colours the world never uses (a new mascot's) as a general VAE would")
    ap.add_argument("--decoder-only", action="store_true",
                    help="fine-tune only the decoder of build/world/vae/final (the encoder, so the latent space and "
                         "the UNet trained on it, stays as it is: SD's ft-MSE VAE recipe)")
    args = ap.parse_args()
    torch = setup_torch(args.seed)
    images, _ = picture_set(args.pictures)
    run = CACHE / (args.run or ("vae-decoder" if args.decoder_only else "vae"))
    if args.decoder_only:
        finetune_decoder(torch, args, images, run)
        return
    if args.init:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(args.init)
    else:
        vae = build_vae()
    print(f"VAE: {count_parameters(vae):,} parameters")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.lr, weight_decay=0.0)
    start = checkpoint.resume(run / "ckpt", modules={"vae": vae}, optimizer=opt)[0]["step"]
    vae.train()
    t0, seen = time.time(), 0
    for step in range(start, args.steps):
        lr = set_lr(opt, args, step)
        rng = np.random.default_rng([args.seed, step])
        x = crop_batch(torch, images, args.batch, rng)
        if rng.random() < 0.5:
            x = x.flip(3)
        if args.colour_aug:
            x = recolour(torch, x, rng, args.colour_aug)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        # LDM sums both terms over elements; in per-pixel means the KL term is scaled by 1 / pixel count.
        kl = post.kl().mean()
        loss = l1 + KL_WEIGHT * kl / x[0].numel()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        seen += 1
        if step % 50 == 0 or step == args.steps - 1:
            log(run / "log.jsonl", step=step, l1=round(l1.item(), 5), kl=round(kl.item(), 4), lr=lr,
                s_per_step=round((time.time() - t0) / seen, 3))
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            checkpoint.save(run / "ckpt", step + 1, modules={"vae": vae}, ema=None, optimizer=opt, extra={"args": vars(args)})
    finish(torch, vae, run)


def recolour(torch, x, rng: np.random.Generator, share: float):
    """Rotate the hue of a share of the batch (a rotation of RGB about the grey axis) and permute channels.

    Greys and white stay where they are; saturated colours move round the colour wheel, so red
    objects become magenta ones, green become orange, and so on.
    """
    out = x.clone()
    u = torch.full((3,), 3 ** -0.5, dtype=torch.float64)
    cross = torch.tensor([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]], dtype=torch.float64)
    for i in range(x.shape[0]):
        if rng.random() >= share:
            continue
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.cos(theta) * torch.eye(3, dtype=torch.float64) + (1 - np.cos(theta)) * torch.outer(u, u) + np.sin(theta) * cross
        rot = rot[torch.from_numpy(rng.permutation(3))].float()
        img = (x[i] + 1) / 2
        out[i] = (torch.einsum("ij,jhw->ihw", rot, img).clamp(0, 1)) * 2 - 1
    return out


def set_lr(opt, args, step: int) -> float:
    """Cosine decay after a short warm-up; set per step so a resumed run lands on the same value."""
    lr = args.lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
    for g in opt.param_groups:
        g["lr"] = lr
    return lr


def finetune_decoder(torch, args, images: np.ndarray, run: Path) -> None:
    """Decoder-only fine-tuning: the frozen encoder's posterior samples of 32 px crops (recoloured as
    --colour-aug says), decoded and compared with L1."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(str(CACHE / "vae" / "final"))
    vae.requires_grad_(False)
    decoder = torch.nn.ModuleDict({"post_quant_conv": vae.post_quant_conv, "decoder": vae.decoder})
    decoder.requires_grad_(True)
    opt = torch.optim.AdamW(decoder.parameters(), lr=args.lr, weight_decay=0.0)
    start = checkpoint.resume(run / "ckpt", modules={"decoder": decoder}, optimizer=opt)[0]["step"]
    decoder.train()
    t0, seen = time.time(), 0
    for step in range(start, args.steps):
        lr = set_lr(opt, args, step)
        rng = np.random.default_rng([args.seed, step])
        x = crop_batch(torch, images, args.batch, rng)
        if args.colour_aug:
            x = recolour(torch, x, rng, args.colour_aug)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with torch.no_grad():
            post = vae.encode(x).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        opt.zero_grad(set_to_none=True)
        l1.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        opt.step()
        seen += 1
        if step % 50 == 0 or step == args.steps - 1:
            log(run / "log.jsonl", step=step, l1=round(l1.item(), 5), lr=lr, s_per_step=round((time.time() - t0) / seen, 3))
        if (step + 1) % args.save_every == 0 or step + 1 == args.steps:
            checkpoint.save(run / "ckpt", step + 1, modules={"decoder": decoder}, ema=None, optimizer=opt,
                            extra={"args": vars(args)})
    vae.eval()
    held, _ = picture_set("heldout")
    errs = []
    with torch.no_grad():
        for i in range(0, 1000, 50):
            x = to_tensor(torch, held[i:i + 50])
            errs.append((vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1) - x).abs().mean().item() * 127.5)
    vae.save_pretrained(str(run / "final"), safe_serialization=True)  # scaling_factor unchanged: same encoder
    log(run / "log.jsonl", final=True, heldout_mae_0_255=round(float(np.mean(errs)), 3))


def finish(torch, vae, run: Path) -> None:
    """Measure the latent scale on held-out pictures, store scaling_factor, save the VAE and report its error."""
    held, _ = picture_set("heldout")
    vae.eval()
    means, errs = [], []
    with torch.no_grad():
        for i in range(0, 1000, 50):
            x = to_tensor(torch, held[i:i + 50])
            m = vae.encode(x).latent_dist.mean
            means.append(m)
            errs.append((vae.decode(m).sample.clamp(-1, 1) - x).abs().mean().item() * 127.5)
    lat = torch.cat(means)
    std = lat.std().item()
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(str(run / "final"), safe_serialization=True)
    log(run / "log.jsonl", final=True, latent_mean=round(lat.mean().item(), 4), latent_std=round(std, 4),
        scaling_factor=round(1.0 / std, 5), heldout_mae_0_255=round(float(np.mean(errs)), 3))


if __name__ == "__main__":
    main()
