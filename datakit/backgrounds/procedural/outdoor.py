"""What every outdoor scene starts from: a sky down to a random horizon, the light on the ground, where to stand."""

from __future__ import annotations

import numpy as np

from datakit.backgrounds.noise import rgb
from datakit.backgrounds.procedural.sky_layers import clouds, sky, sun_glow

# Light on the ground by time of day: warm and dimmer at sunset, dark blue at night.
GROUND_TINT = {"day": np.ones(3, np.float32), "sunset": np.array([0.95, 0.72, 0.6], np.float32),
               "night": np.array([0.2, 0.24, 0.36], np.float32)}


def outdoor(rng, h, w, tod, horizon_range=(0.5, 0.68), cloud_cov=None):
    """Sky (and the low sun at sunset) to a random horizon, clouds unless cloud_cov is 0: (image, sky, horizon, row)."""
    horizon = rng.uniform(*horizon_range)
    img = sky(rng, h, w, horizon, tod)
    if tod == "sunset":  # the low sun, behind the clouds and the land drawn later
        sun_glow(img, h * horizon - h * rng.uniform(0.03, 0.12), w * rng.uniform(0.2, 0.8), w * rng.uniform(0.025, 0.045),
                 rgb("#ffcf7a"))
    sky_img = img.copy()
    if cloud_cov != 0:
        img = clouds(rng, img, horizon, tod, cloud_cov)
    return img, sky_img, horizon, int(h * horizon)


def stand_height(horizon: float, rng) -> float:
    """Where a subject's feet go: part-way between the horizon and the bottom edge."""
    return round(horizon + (1 - horizon) * rng.uniform(0.55, 0.75), 3)
