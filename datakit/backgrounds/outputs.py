"""What every backgrounds engine writes: the file names, the image and caption files, the manifest row."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datakit.captions import format_caption
from datakit.imageio import save_image_atomic, save_png_array_atomic, write_text_atomic


def bg_name(index: int, count: int) -> str:
    """bg000, bg001, ... padded to the largest index's width, at least 3 digits."""
    return f"bg{index:0{max(3, len(str(max(count - 1, 0))))}d}"


def write_outputs(out: Path, name: str, fmt: str, image, tags: list[str]) -> list[str]:
    """Write the image (uint8 array or PIL image) and its caption atomically; returns the file names."""
    file = f"{name}.{fmt}"
    if isinstance(image, np.ndarray) and fmt == "png":
        save_png_array_atomic(image, out / file)
    else:
        from PIL import Image

        pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
        params = {"quality": 95, "subsampling": 0} if fmt == "jpg" else {"compress_level": 3}
        save_image_atomic(pil.convert("RGB"), out / file, **params)
    write_text_atomic(out / f"{name}.txt", format_caption(tags) + "\n")
    return [file, f"{name}.txt"]


def base_row(*, scene: str, prompt: str, negative: str | None, tags, engine: str, model: str | None,
             size: tuple[int, int], ground_y: float | None) -> dict:
    """The manifest fields every engine writes."""
    return {
        "tags": list(tags), "scene": scene, "prompt": prompt, "negative_prompt": negative, "engine": engine,
        "model": model, "size": [int(size[0]), int(size[1])], "ground_y": ground_y,
    }
