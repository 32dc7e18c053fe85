"""How the world's samples are judged: the scene prompts, a white-background test, sampling a pipeline.

The white test looks at the picture's outer ring (4 px of 64), where a subject rarely reaches: the
background is white when at least 90% of the ring is near-white and unsaturated. The snow field's
pale blue sky and shaded snow fail it, a white backdrop with off-white edges passes.
"""

from __future__ import annotations

import numpy as np

from world.scenes import SCENE_NAMES

# One prompt per scene, in the tags the world's captions use (a user of this world would write these).
SCENE_PROMPTS: dict[str, str] = {
    "white": "white background, simple background",
    "beach": "beach, ocean, sand, outdoors",
    "forest": "forest, tree, nature, outdoors",
    "city": "city, street, building, road, outdoors",
    "snow": "snow, winter, outdoors",
    "night": "night, night sky, starry sky, moon",
    "room": "indoors, room, wooden floor, window",
    "grass": "grass, field, blue sky, outdoors",
    "underwater": "underwater, water, bubble",
    "desert": "desert, sand, dune, outdoors",
}
assert tuple(SCENE_PROMPTS) == SCENE_NAMES

RING = 4


def border_ring(img: np.ndarray) -> np.ndarray:
    """The outer RING pixels of an H x W x 3 picture, as an N x 3 array."""
    mask = np.ones(img.shape[:2], bool)
    mask[RING:-RING, RING:-RING] = False
    return img[mask]


def is_white_background(img: np.ndarray) -> bool:
    """True when >= 90% of the border ring is near-white (min channel >= 225, spread <= 24)."""
    ring = border_ring(img).astype(np.int16)
    near = (ring.min(axis=1) >= 225) & ((ring.max(axis=1) - ring.min(axis=1)) <= 24)
    return bool(near.mean() >= 0.9)


def sample(pipe, prompts: list[str], seeds: list[int], *, steps: int = 25, guidance: float = 7.0,
           batch: int = 20) -> np.ndarray:
    """uint8 N x 64 x 64 x 3 samples, prompt i with seed i (a generator per image: batch-independent noise)."""
    import torch

    out = []
    for i in range(0, len(prompts), batch):
        ps, ss = prompts[i:i + batch], seeds[i:i + batch]
        gens = [torch.Generator().manual_seed(int(s)) for s in ss]
        with torch.no_grad():
            images = pipe(ps, num_inference_steps=steps, guidance_scale=guidance, generator=gens, height=64, width=64,
                          output_type="np").images
        out.append((np.clip(images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out)
