"""Train the scene classifier (a small CNN) that the quality gate uses to check generated samples.

    .venv/bin/python benchmarks/world/train_classifier.py [--steps 600]

It learns from the world's pictures with mild blur, noise and colour shifts, because it judges
samples decoded by the VAE, which are a little softer than the drawings. Deterministic (one
thread, per-step generators); saved to benchmarks/world/weights/classifier.safetensors with its
scene names and held-out accuracy in the header metadata.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world.common import CACHE, WEIGHTS, log, picture_set, setup_torch  # noqa: E402
from world.models import SceneClassifier  # noqa: E402
from world.scenes import SCENE_NAMES  # noqa: E402

FILE = WEIGHTS / "classifier.safetensors"


def to_tensor(torch, batch: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0


def augment(torch, x, gen):
    """Blur (a 3x3 box mixed in), noise and a small per-image colour shift."""
    b = x.shape[0]
    mix = torch.rand(b, 1, 1, 1, generator=gen) * 0.8
    blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = (1 - mix) * x + mix * blurred
    x = x + torch.randn(x.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.04
    x = x + (torch.rand(b, 3, 1, 1, generator=gen) - 0.5) * 0.08
    return x.clamp(0, 1)


def load_classifier():
    """The trained classifier (eval mode) from the committed weights."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(FILE), framework="pt") as fh:
        meta = fh.metadata()
    names = json.loads(meta["scenes"])
    model = SceneClassifier(len(names))
    model.load_state_dict(load_file(str(FILE)))
    model.eval()
    return model, names


def classify(model, images: np.ndarray, batch: int = 100) -> np.ndarray:
    """Scene index per picture (uint8 N x 64 x 64 x 3)."""
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(model(to_tensor(torch, images[i:i + batch])).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, int)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch = setup_torch(args.seed)
    images, items = picture_set("train")
    labels = np.array([SCENE_NAMES.index(it["scene"]) for it in items])
    model = SceneClassifier(len(SCENE_NAMES))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    model.train()
    for step in range(args.steps):
        rng = np.random.default_rng([args.seed, step])
        idx = np.sort(rng.choice(len(items), size=args.batch, replace=False))
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        x = augment(torch, to_tensor(torch, images[idx]), gen)
        if rng.random() < 0.5:
            x = x.flip(3)
        loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels[idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            log(CACHE / "classifier.log.jsonl", step=step, loss=round(loss.item(), 4))
    model.eval()
    held, held_items = picture_set("heldout")
    pred = classify(model, held)
    truth = np.array([SCENE_NAMES.index(it["scene"]) for it in held_items])
    acc = float((pred == truth).mean())
    from safetensors.torch import save_file

    FILE.parent.mkdir(parents=True, exist_ok=True)
    tmp = FILE.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
              metadata={"scenes": json.dumps(list(SCENE_NAMES)), "heldout_accuracy": f"{acc:.4f}", "steps": str(args.steps)})
    tmp.rename(FILE)
    log(CACHE / "classifier.log.jsonl", final=True, heldout_accuracy=round(acc, 4), file=str(FILE))


if __name__ == "__main__":
    main()
