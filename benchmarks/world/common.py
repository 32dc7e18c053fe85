"""Shared plumbing of the world's scripts: paths, one-thread determinism, the cached picture set, logging."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

WORLD = Path(__file__).resolve().parent          # benchmarks/world: code and the committed weights
ROOT = WORLD.parent.parent                       # the repository
WEIGHTS = WORLD / "weights"                      # committed: model/, clip/, classifier.safetensors
CACHE = Path(os.environ.get("WORLD_CACHE", ROOT / "build" / "world"))  # not in git: pictures, latents, checkpoints
SEED = 1234                                      # the world's seed (pictures); held-out pictures use SEED + 1


def setup_torch(seed: int = 0, threads: int = 1):
    """One torch thread, deterministic algorithms, a seeded global generator; returns torch."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch


def log(path: Path | None, **row) -> None:
    """Print a JSON row and append it to the log file (one JSON object a line)."""
    row = {"time": round(time.time(), 1), **row}
    line = json.dumps(row)
    print(line, flush=True)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def picture_set(name: str = "train") -> tuple[np.ndarray, list[dict]]:
    """The cached pictures (uint8 N x 64 x 64 x 3, memory-mapped) and their items (scene, objects)."""
    folder = CACHE / name
    if not (folder / "items.json").is_file():
        sys.exit(f"no cached picture set in {folder}: run `python benchmarks/world/prepare.py` first")
    images = np.load(folder / "images.npy", mmap_mode="r")
    items = json.loads((folder / "items.json").read_text())
    return images, items
