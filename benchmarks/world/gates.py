"""The world model's quality gates, measured and printed before anything uses the model.

    .venv/bin/python benchmarks/world/gates.py [--model DIR] [--samples 20] [--json FILE]

Loads the model through datakit's own loader (datakit.models.diffusion.load_diffusion_pipeline),
samples every scene prompt with fixed seeds (half of them with an object in front, "red ball,
beach, ..."), and checks:
- "white background" prompts give a white background (judge.is_white_background) >= 90% of the time;
- the scene classifier (train_classifier.py) recognises the prompted scene in >= 80% of all samples.
Exit status 0 when both gates pass, 1 when one fails. Also writes a sample grid (PNG) beside --json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world.common import ROOT, WEIGHTS, setup_torch  # noqa: E402
from world.judge import SCENE_PROMPTS, is_white_background, sample  # noqa: E402
from world.objects import COLOURS, KINDS  # noqa: E402
from world.scenes import SCENE_NAMES  # noqa: E402

WHITE_GATE = 0.90
SCENE_GATE = 0.80


def gate_prompts(samples: int) -> tuple[list[str], list[int], list[str]]:
    """(prompts, seeds, scene of each): `samples` per scene, every other one with an object first."""
    prompts, seeds, scenes = [], [], []
    rng = np.random.default_rng(7)
    for si, scene in enumerate(SCENE_NAMES):
        for k in range(samples):
            obj = f"{list(COLOURS)[rng.integers(len(COLOURS))]} {KINDS[rng.integers(len(KINDS))]}, "
            prompts.append((obj if k % 2 else "") + SCENE_PROMPTS[scene])
            seeds.append(10_000 + si * 1000 + k)
            scenes.append(scene)
    return prompts, seeds, scenes


def shown(path: str) -> str:
    """A path as the repository names it (relative to its root) where it lies inside."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)


def pretraining(model: str) -> dict | None:
    """The step (and how it was exported) of a world model folder, from its world_pretrain.json."""
    info = Path(model) / "world_pretrain.json"
    if not info.is_file():
        return None
    data = json.loads(info.read_text())
    return {k: data.get(k) for k in ("step", "cpu_hours", "wall_hours", "source")}


def measure(model: str, samples: int, steps: int, guidance: float) -> tuple[dict, np.ndarray]:
    from datakit.models.diffusion import load_diffusion_pipeline
    from world.train_classifier import classify, load_classifier

    import torch

    pipe = load_diffusion_pipeline(model, torch_dtype=torch.float32)  # the weights are stored in fp16
    pipe.set_progress_bar_config(disable=True)
    prompts, seeds, scenes = gate_prompts(samples)
    images = sample(pipe, prompts, seeds, steps=steps, guidance=guidance)
    clf, names = load_classifier()
    pred = [names[i] for i in classify(clf, images)]
    per_scene = {}
    for scene in SCENE_NAMES:
        idx = [i for i, s in enumerate(scenes) if s == scene]
        per_scene[scene] = {
            "classifier_agrees": round(float(np.mean([pred[i] == scene for i in idx])), 3),
            "white_rate": round(float(np.mean([is_white_background(images[i]) for i in idx])), 3),
        }
    white_rate = per_scene["white"]["white_rate"]
    scene_acc = float(np.mean([p == s for p, s in zip(pred, scenes)]))
    others_white = float(np.mean([is_white_background(images[i]) for i, s in enumerate(scenes) if s != "white"]))
    result = {
        "model": shown(model), "pretraining": pretraining(model), "samples_per_scene": samples, "steps": steps, "guidance": guidance,
        "white_rate_on_white_prompts": white_rate, "white_gate": WHITE_GATE, "white_pass": white_rate >= WHITE_GATE,
        "scene_accuracy": round(scene_acc, 3), "scene_gate": SCENE_GATE, "scene_pass": scene_acc >= SCENE_GATE,
        "white_rate_on_scene_prompts": round(others_white, 3), "per_scene": per_scene,
    }
    return result, images


def grid(images: np.ndarray, columns: int) -> np.ndarray:
    rows = int(np.ceil(len(images) / columns))
    out = np.full((rows * 64, columns * 64, 3), 255, np.uint8)
    for i, im in enumerate(images):
        out[(i // columns) * 64:(i // columns + 1) * 64, (i % columns) * 64:(i % columns + 1) * 64] = im
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(WEIGHTS / "model"))
    ap.add_argument("--samples", type=int, default=20, help="samples per scene")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.0, help="datakit eval's default")
    ap.add_argument("--json", default=str(WEIGHTS / "gates.json"))
    args = ap.parse_args()
    setup_torch(0)
    result, images = measure(args.model, args.samples, args.steps, args.guidance)
    print(f"{'scene':<12} {'classifier agrees':>18} {'white rate':>11}")
    for scene, row in result["per_scene"].items():
        print(f"{scene:<12} {row['classifier_agrees']:>18.2f} {row['white_rate']:>11.2f}")
    ok = result["white_pass"] and result["scene_pass"]
    print(f"gate 1: 'white background' prompts give white {result['white_rate_on_white_prompts']:.0%} "
          f"(need >= {WHITE_GATE:.0%}): {'PASS' if result['white_pass'] else 'FAIL'}")
    print(f"gate 2: classifier recognises the prompted scene in {result['scene_accuracy']:.0%} "
          f"(need >= {SCENE_GATE:.0%}): {'PASS' if result['scene_pass'] else 'FAIL'}")
    print(f"(white backgrounds on the other scenes' prompts: {result['white_rate_on_scene_prompts']:.0%})")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    from PIL import Image

    Image.fromarray(grid(images, args.samples)).save(out.with_suffix(".png"))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
