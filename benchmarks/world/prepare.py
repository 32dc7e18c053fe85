"""Draw the world's picture sets once (train: 40,000; held out: 2,000) and write its tokenizer.

    .venv/bin/python benchmarks/world/prepare.py [--train N] [--heldout N]

Pictures go to build/world/<set>/images.npy (uint8) + items.json, the tokenizer to
build/world/tokenizer/; all are redrawn identically from the seed, so none is committed (the
tokenizer travels inside the saved model and CLIP folders).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from world.common import CACHE, SEED  # noqa: E402
from world.tokenizer import write_tokenizer  # noqa: E402
from world.pictures import draw_item, vocabulary_words  # noqa: E402


def draw_set(name: str, seed: int, count: int) -> None:
    folder = CACHE / name
    if (folder / "items.json").is_file() and len(json.loads((folder / "items.json").read_text())) == count:
        print(f"{folder}: {count} pictures already drawn")
        return
    folder.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(folder / "images.npy.tmp", mode="w+", dtype=np.uint8, shape=(count, 64, 64, 3))
    items = []
    for i in range(count):
        it = draw_item(seed, i)
        images[i] = np.asarray(it.image)
        items.append({"scene": it.scene, "objects": it.objects})
        if i % 5000 == 4999:
            print(f"{name}: {i + 1}/{count}", flush=True)
    images.flush()
    del images
    (folder / "images.npy.tmp").rename(folder / "images.npy")
    (folder / "items.json").write_text(json.dumps(items))


def word_counts(items: list[dict]) -> dict[str, int]:
    """How often each word of the world's captions occurs (every world word at least once)."""
    from world.scenes import SCENE_BY_NAME
    from world.pictures import NO_HUMANS

    counts: Counter = Counter({w: 1 for w in vocabulary_words()})
    for it in items:
        for tag in [*it["objects"], NO_HUMANS, *SCENE_BY_NAME[it["scene"]].tags]:
            counts.update(tag.split())
    return dict(counts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=40000)
    ap.add_argument("--heldout", type=int, default=2000)
    args = ap.parse_args()
    draw_set("heldout", SEED + 1, args.heldout)
    items = json.loads((CACHE / "heldout" / "items.json").read_text())
    # Word frequencies only order the merges; the held-out set has the training distribution.
    write_tokenizer(CACHE / "tokenizer", word_counts(items))
    print(f"tokenizer: {CACHE / 'tokenizer'}")
    draw_set("train", SEED, args.train)


if __name__ == "__main__":
    main()
