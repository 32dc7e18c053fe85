"""What a scene function returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Drawn:
    """A drawn scene: the image, where a subject would stand (fraction of height, None: no ground), extra tags."""

    image: np.ndarray  # float32 HxWx3, 0..1
    ground_y: float | None
    extra_tags: list[str] = field(default_factory=list)
