"""Hypernetwork training steps per second: datakit's loop against an A1111-style reference loop.

Both train the same A1111 hypernetwork (1,2,1, relu, sizes = every attention width) on the same
small random SD1-shaped model and dataset, batch 2, for the same number of steps:

- reference ("as A1111 trains"): plain attention (diffusers' AttnProcessor, the non-SDPA path A1111
  falls back to for hypernetworks), the image through the VAE and the caption through the text
  encoder on every step, the hypernetwork applied before to_k / to_v;
- datakit: `datakit train --method hypernetwork` itself (SDPA attention, latent-distribution and
  text-encoder caches); its steps/s is the loop's own measurement (caching and loading excluded).

The model is tiny (CPU-sized), so the figures show the ratio, not real-model speeds.

    .venv/bin/python benchmarks/train_hypernetwork.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datakit.console import Reporter  # noqa: E402
from datakit.train.config import build_config  # noqa: E402
from datakit.train.testing import save_tiny_model, write_tiny_dataset  # noqa: E402

IMAGE_PX = 64  # the tiny VAE halves it: 32x32 latents, 1024 tokens in the first attention level
BATCH = 2


def reference_steps_per_s(model: Path, dataset: Path, steps: int) -> float:
    """A1111's way: plain attention, VAE + text encoder every step, hypernetwork on to_k/to_v inputs."""
    import numpy as np
    from diffusers import DDPMScheduler
    from diffusers.models.attention_processor import AttnProcessor
    from PIL import Image

    from datakit.train.hypernetwork import Hypernetwork, sizes_for
    from datakit.train.model import encode_prompts, load_base_model

    base = load_base_model(str(model))
    for m in (base.unet, base.vae, *base.text_encoders):
        m.requires_grad_(False)
    base.unet.set_attn_processor(AttnProcessor())
    torch.manual_seed(0)
    net = Hypernetwork(sizes_for(base, base.family), [1, 2, 1], "relu")
    net.apply_to(base)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-5)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    images = sorted((dataset / "img").rglob("*.png"))
    pixels = [torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 127.5 - 1).permute(2, 0, 1)
              for p in images]
    captions = [p.with_suffix(".txt").read_text() for p in images]
    gen = torch.Generator().manual_seed(0)

    def step(i: int) -> None:
        idx = [(i * BATCH + j) % len(images) for j in range(BATCH)]
        with torch.no_grad():
            x = torch.stack([pixels[k] for k in idx])
            latents = base.vae.encode(x).latent_dist.sample(generator=gen) * base.vae_scale
            hidden, _ = encode_prompts(base, [captions[k] for k in idx])
        noise = torch.randn(latents.shape, generator=gen)
        t = torch.randint(0, 1000, (BATCH,), generator=gen)
        pred = base.unet(sched.add_noise(latents, noise, t), t, hidden).sample
        torch.nn.functional.mse_loss(pred.float(), noise).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        step(i)
    return steps / (time.perf_counter() - t0)


def datakit_steps_per_s(model: Path, dataset: Path, out: Path, steps: int) -> float:
    from datakit.train.trainer import run_train

    cfg = build_config({"dataset": dataset, "base_model": str(model), "output": out, "device": "cpu",
                        "method": "hypernetwork", "max_steps": steps + 1, "batch_size": BATCH, "lr": "1e-5",
                        "layer_structure": "1,2,1", "activation": "relu", "latent_cache": "ram"})
    info = run_train(cfg, Reporter(quiet=True), force=True)
    return float(info["speed"]["steps_per_s"])


def bench_hypernetwork(quick: bool = False) -> list[dict]:
    """Rows of {path, steps_per_s, speedup} (the reference first)."""
    steps = 4 if quick else 10
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(prefix="datakit-bench-hn-") as tmp:
        root = Path(tmp)
        model = save_tiny_model(root / "model", "sd1")
        dataset = write_tiny_dataset(root / "ds", images=4, size=IMAGE_PX, repeats=1)
        ref = reference_steps_per_s(model, dataset, steps)
        ours = datakit_steps_per_s(model, dataset, root / "out", steps)
    return [
        {"path": "A1111-style (plain attention, no caches)", "steps_per_s": ref, "speedup": 1.0},
        {"path": "datakit (SDPA, cached latents + text)", "steps_per_s": ours, "speedup": ours / ref},
    ]


def print_table(rows: list[dict]) -> None:
    print(f"{'hypernetwork training, batch ' + str(BATCH) + ', ' + str(IMAGE_PX) + ' px, tiny SD1':<48} {'steps/s':>9} {'speed-up':>9}")
    for r in rows:
        print(f"{r['path']:<48} {r['steps_per_s']:>9.3f} {r['speedup']:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    args = parser.parse_args()
    print_table(bench_hypernetwork(args.quick))


if __name__ == "__main__":
    main()
