"""The miniature world: deterministic 64 px pictures (a scene + 0-2 objects) and their Danbooru captions.

Item i of seed s is drawn from np.random.default_rng([s, i]) alone, so any item can be redrawn in
any order, on any machine, byte for byte (PIL's drawing is integer arithmetic on integer inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from world.objects import COLOURS, KINDS, WIDTH, draw_object
from world.scenes import CANVAS, SCENE_BY_NAME, SCENE_NAMES, SIZE, draw_scene

NO_HUMANS = "no humans"


@dataclass
class Item:
    """One picture of the world and what is in it."""

    image: Image.Image  # RGB, SIZE x SIZE
    scene: str
    objects: list[str]  # "<colour> <kind>" tags

    @property
    def tags(self) -> list[str]:
        """Canonical caption order: objects, then `no humans`, then the scene's tags."""
        return [*self.objects, NO_HUMANS, *SCENE_BY_NAME[self.scene].tags]

    @property
    def caption(self) -> str:
        return ", ".join(self.tags)


def scene_of(seed: int, index: int) -> str:
    """The scene of item `index`: scenes cycle so every block of len(SCENES) items holds each once."""
    order = np.random.default_rng([seed, index // len(SCENE_NAMES), 7]).permutation(len(SCENE_NAMES))
    return SCENE_NAMES[int(order[index % len(SCENE_NAMES)])]


def draw_item(seed: int, index: int, *, scene: str | None = None, max_objects: int = 2) -> Item:
    """Item `index` of the world `seed` (scene forced when given)."""
    rng = np.random.default_rng([seed, index])
    scene = scene or scene_of(seed, index)
    img, ground = draw_scene(scene, rng)
    draw = ImageDraw.Draw(img)
    n = int(rng.choice([0, 1, 1, 1, 2, 2])) if max_objects >= 2 else int(rng.random() < 0.8) * min(max_objects, 1)
    objects: list[str] = []
    kinds = rng.choice(len(KINDS), size=n, replace=False)
    slots = [CANVAS / 2] if n == 1 else [CANVAS * 0.3, CANVAS * 0.7]
    for k, slot in zip(kinds, slots):
        kind = KINDS[int(k)]
        colour = list(COLOURS)[int(rng.integers(0, len(COLOURS)))]
        # On a plain backdrop objects are shown large, as product shots are; in a scene, smaller.
        lo, hi = (0.4, 0.7) if scene == "white" else (0.22, 0.45)
        size = CANVAS * (lo + (hi - lo) * rng.random()) * (0.8 if n == 2 else 1.0)
        half = size * WIDTH.get(kind, 1.0) / 2
        cx = float(np.clip(slot + rng.normal(0, CANVAS * 0.06), half + 2, CANVAS - half - 2))
        base = float(np.clip(ground * CANVAS + rng.normal(0, 3), size + 4, CANVAS - 3))
        draw_object(draw, kind, colour, cx, base, size, rng)
        objects.append(f"{colour} {kind}")
    return Item(img.resize((SIZE, SIZE), Image.Resampling.BOX), scene, objects)


def draw_background(seed: int, index: int, scene: str) -> tuple[Image.Image, float]:
    """An empty scene (no objects) at SIZE px and its ground line: the `--backgrounds` of the cure benchmark."""
    rng = np.random.default_rng([seed, index, 11])
    img, ground = draw_scene(scene, rng)
    return img.resize((SIZE, SIZE), Image.Resampling.BOX), ground


def training_caption(item: Item, rng: np.random.Generator, *, empty_rate: float = 0.1) -> str:
    """A caption as a tagger and a user would vary it: tags shuffled, some dropped, sometimes none at all.

    The scene's naming tag stays most of the time, so a prompt of one tag ("beach") works as well as
    the full list; an empty caption now and then teaches the unconditional prediction that
    classifier-free guidance needs.
    """
    if rng.random() < empty_rate:
        return ""
    scene_tags = list(SCENE_BY_NAME[item.scene].tags)
    keep = [t for i, t in enumerate(scene_tags) if rng.random() < (0.9 if i == 0 else 0.6)]
    if not keep:
        keep = [scene_tags[0]]
    objs = [t for t in item.objects if rng.random() < 0.85]
    tags = objs + ([NO_HUMANS] if rng.random() < 0.5 else []) + keep
    order = rng.permutation(len(tags))
    return ", ".join(tags[i] for i in order)


def vocabulary_words() -> list[str]:
    """Every word the world's captions use (for the tokenizer)."""
    words: set[str] = set()
    phrases = [NO_HUMANS, *(t for s in SCENE_NAMES for t in SCENE_BY_NAME[s].tags)]
    phrases += [f"{c} {k}" for c in COLOURS for k in KINDS]
    for p in phrases:
        words.update(p.split())
    return sorted(words)
