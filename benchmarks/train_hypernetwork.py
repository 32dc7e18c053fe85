"""Hypernetwork training steps per second: datakit's loop against an A1111-style reference loop.

Both train the same A1111 hypernetwork (1,2,1, relu, sizes = every attention width) on the same
small random SD1-shaped model (a VAE with 8x downscaling, a two-level UNet with 32-wide attention
heads as in SD, a tiny CLIP text encoder) and dataset, 256 px, batch 2, for the same number of steps:

- reference ("as A1111 trains"): plain attention (diffusers' AttnProcessor, the non-SDPA path A1111
  falls back to for hypernetworks), the image through the VAE and the caption through the text
  encoder on every step, the hypernetwork applied before to_k / to_v;
- datakit: the step `datakit train --method hypernetwork` runs (its micro_step: SDPA attention,
  latents from the latent-distribution cache, text-encoder outputs from the text cache).

The two take turns step by step on the same model, so a busy machine slows both alike; the
caches' one-off filling is not counted (it is a few VAE passes per image, once per dataset).

The model is small (CPU-sized), so the figures show the ratio, not real-model speeds.

    .venv/bin/python benchmarks/train_hypernetwork.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datakit.train.config import build_config  # noqa: E402
from datakit.testing import write_tiny_dataset  # noqa: E402

IMAGE_PX = 256  # 32x32 latents (the VAE downscales 8x, as SD's): 1024 tokens in the first attention level
BATCH = 2


def save_bench_model(folder: Path) -> Path:
    """The tiny test pipeline with a bigger VAE and UNet, so that attention and the VAE weigh as in SD."""
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
                                attention_head_dim=32, norm_num_groups=16)
    pipe.register_modules(vae=vae, unet=unet)
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


class _NoAccelerator:
    """What micro_step asks of an accelerate.Accelerator, on the CPU in fp32."""

    @staticmethod
    def autocast():
        return contextlib.nullcontext()


def bench_hypernetwork(quick: bool = False) -> list[dict]:
    """Rows of {path, steps_per_s, speedup} (the reference first).

    The two paths share one model and one hypernetwork and take turns step by step, so a busy
    machine slows both alike; each figure is 1 / the median step time.
    """
    import numpy as np
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from datakit.train import data as D
    from datakit.train.buckets import load_for_bucket
    from datakit.train.cache import TextCache, build_latents
    from datakit.train.conditioning import chunk_count, encode_prompts
    from datakit.train.hypernetwork import Hypernetwork, sizes_for
    from datakit.train.model import load_base_model
    from datakit.train.objective import make_noise_scheduler
    from datakit.train.plan import make_plan
    from datakit.train.step import StepContext, micro_batch_loss

    steps = 3 if quick else 6
    with tempfile.TemporaryDirectory(prefix="datakit-bench-hn-") as tmp:
        root = Path(tmp)
        model = save_bench_model(root / "model")
        dataset = write_tiny_dataset(root / "ds", images=4, size=IMAGE_PX, repeats=1)
        cfg = build_config({"dataset": dataset, "base_model": str(model), "output": root / "out", "device": "cpu",
                            "method": "hypernetwork", "batch_size": BATCH})
        spec, _ = D.with_overrides(D.read_dataset(dataset), cfg.dataset_overrides)
        entries, _ = D.collect_entries(spec)
        make_plan(cfg, spec, entries, 1)  # assigns buckets
        base = load_base_model(str(model))
        for m in (base.unet, base.vae, *base.text_encoders):
            m.requires_grad_(False)
        torch.manual_seed(0)
        net = Hypernetwork(sizes_for(base, base.family), [1, 2, 1], "relu")
        net.apply_to(base)
        net.train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-5, foreach=True)
        noise_scheduler = make_noise_scheduler(base.scheduler_config, base.prediction_type, zero_terminal_snr=False)
        # datakit: latent distributions and prompts encoded once, SDPA attention.
        store = build_latents(entries, spec, base, sampling="once", mode="ram", folder=None, device="cpu", seed=0)
        text_cache = TextCache()
        text_cache.fill([e.caption for e in entries], lambda texts: encode_prompts(base, texts),
                        lambda text: chunk_count(base.tokenizers, text, 75))
        ctx = StepContext(base=base, spec=spec, entries=entries, store=store, text_cache=text_cache, encode=None,
                          prompt=lambda caption, rng: caption, scheduler=noise_scheduler,
                          alphas_cumprod=noise_scheduler.alphas_cumprod, is_reg=torch.zeros(len(entries), dtype=torch.bool),
                          device=torch.device("cpu"), autocast=_NoAccelerator.autocast, trains_text_encoder=False,
                          noise_offset=0.0, min_snr_gamma=None, prior_loss_weight=1.0, max_steps=steps)
        pixels = [torch.from_numpy(load_for_bucket(e.path, e.bucket, alpha_mask=False)[0]).permute(2, 0, 1) for e in entries]
        gen = torch.Generator().manual_seed(0)

        def reference_step(idx):  # A1111: VAE and text encoder every step, plain attention
            base.unet.set_attn_processor(AttnProcessor())
            with torch.no_grad():
                latents = base.vae.encode(torch.stack([pixels[k] for k in idx])).latent_dist.sample(generator=gen)
                latents = latents * base.vae_scale
                hidden, _ = encode_prompts(base, [entries[k].caption for k in idx])
            noise = torch.randn(latents.shape, generator=gen)
            t = torch.randint(0, 1000, (len(idx),), generator=gen)
            pred = base.unet(noise_scheduler.add_noise(latents, noise, t), t, hidden).sample
            return torch.nn.functional.mse_loss(pred.float(), noise)

        def datakit_step(idx):
            base.unet.set_attn_processor(AttnProcessor2_0())
            return micro_batch_loss(ctx, idx, gen, epoch=0, step=0)

        times = {"reference": [], "datakit": []}
        for i in range(steps + 1):  # step 0 warms both up
            idx = [(i * BATCH + j) % len(entries) for j in range(BATCH)]
            for name, fn in (("reference", reference_step), ("datakit", datakit_step)):
                t0 = time.perf_counter()
                fn(idx).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if i:
                    times[name].append(time.perf_counter() - t0)
        net.remove()
    ref, ours = (1 / float(np.median(times[k])) for k in ("reference", "datakit"))
    return [
        {"path": "A1111-style (plain attention, no caches)", "steps_per_s": ref, "speedup": 1.0},
        {"path": "datakit (SDPA, cached latents + text)", "steps_per_s": ours, "speedup": ours / ref},
    ]


def print_table(rows: list[dict]) -> None:
    title = f"hypernetwork training, batch {BATCH}, {IMAGE_PX} px"
    print(f"{title:<48} {'steps/s':>9} {'speed-up':>9}")
    for r in rows:
        print(f"{r['path']:<48} {r['steps_per_s']:>9.3f} {r['speedup']:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    args = parser.parse_args()
    print_table(bench_hypernetwork(args.quick))


if __name__ == "__main__":
    main()
