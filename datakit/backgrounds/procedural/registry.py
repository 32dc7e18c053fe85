"""The scene list: each procedural scene's name, prompt and tags, and rendering one from a seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from datakit.backgrounds.noise import finish
from datakit.backgrounds.procedural.cities import draw_bokeh, draw_city_street, draw_night_city, draw_sunset_city
from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.fields import (
    draw_desert,
    draw_grass_field,
    draw_mountains,
    draw_snowy_mountain,
    draw_sunset_field,
)
from datakit.backgrounds.procedural.forests import draw_autumn_forest, draw_forest
from datakit.backgrounds.procedural.rooms import draw_tiled_room, draw_wood_room
from datakit.backgrounds.procedural.skies import draw_sky, draw_space, draw_starry_night
from datakit.backgrounds.procedural.waters import draw_beach, draw_lake, draw_sunset_sea, draw_underwater


@dataclass(frozen=True)
class ProceduralScene:
    """A scene the procedural engine can draw: its name, a describing prompt, tags true of every variation."""

    name: str
    prompt: str
    tags: tuple[str, ...]
    draw: Callable[[np.random.Generator, int, int], Drawn]


PROCEDURAL_SCENES: tuple[ProceduralScene, ...] = (
    ProceduralScene("grass field", "a green grass field under a blue sky with clouds",
                    ("outdoors", "sky", "cloud", "day", "blue sky", "grass", "field", "horizon"), draw_grass_field),
    ProceduralScene("sunset field", "a grass field at sunset, the sun low over the horizon",
                    ("outdoors", "sunset", "sky", "cloud", "orange sky", "grass", "field", "horizon", "evening"),
                    draw_sunset_field),
    ProceduralScene("beach", "a sandy beach by the ocean on a sunny day",
                    ("outdoors", "beach", "ocean", "sand", "sky", "cloud", "day", "blue sky", "horizon", "water"), draw_beach),
    ProceduralScene("sunset sea", "the sea at sunset, the sun low over the water",
                    ("outdoors", "ocean", "sunset", "sky", "cloud", "orange sky", "sun", "horizon", "water", "evening"),
                    draw_sunset_sea),
    ProceduralScene("mountains", "green valley with mountains in the distance",
                    ("outdoors", "mountain", "sky", "cloud", "day", "blue sky", "grass", "nature", "landscape"), draw_mountains),
    ProceduralScene("snowy mountain", "snowy mountains and a snowfield in winter",
                    ("outdoors", "snow", "mountain", "winter", "sky", "cloud", "day", "landscape"), draw_snowy_mountain),
    ProceduralScene("desert", "sand dunes in a desert under a hazy sky",
                    ("outdoors", "desert", "sand", "sky", "day", "horizon"), draw_desert),
    ProceduralScene("forest", "inside a green forest, tree trunks and leaves",
                    ("outdoors", "forest", "nature", "tree", "grass", "day"), draw_forest),
    ProceduralScene("autumn forest", "a forest in autumn with red and orange leaves on the ground",
                    ("outdoors", "forest", "nature", "tree", "autumn", "autumn leaves", "day"), draw_autumn_forest),
    ProceduralScene("lake", "a calm lake reflecting hills, grass on the shore",
                    ("outdoors", "lake", "water", "reflection", "sky", "cloud", "day", "grass", "nature"), draw_lake),
    ProceduralScene("sky", "blue sky with white clouds",
                    ("sky", "cloud", "blue sky", "day", "cloudy sky"), draw_sky),
    ProceduralScene("starry night", "a starry night sky over dark hills",
                    ("outdoors", "night", "night sky", "starry sky", "star (sky)", "silhouette"), draw_starry_night),
    ProceduralScene("city night", "a city skyline at night with lit windows and a road",
                    ("outdoors", "night", "city", "cityscape", "building", "city lights", "night sky", "road", "street"),
                    draw_night_city),
    ProceduralScene("city street", "a city street by day with buildings and a road",
                    ("outdoors", "city", "building", "road", "street", "sky", "day", "cloud"), draw_city_street),
    ProceduralScene("city sunset", "a city street at sunset, building silhouettes against an orange sky",
                    ("outdoors", "city", "building", "road", "street", "sunset", "sky", "orange sky", "evening"),
                    draw_sunset_city),
    ProceduralScene("bokeh lights", "out-of-focus lights at night",
                    ("night", "bokeh", "blurry background", "lights", "dark background"), draw_bokeh),
    ProceduralScene("underwater", "underwater in clear blue water with light rays and bubbles",
                    ("underwater", "water", "bubble", "light rays", "blue theme"), draw_underwater),
    ProceduralScene("space", "outer space with stars and a nebula",
                    ("space", "star (sky)", "starry sky", "nebula", "dark background"), draw_space),
    ProceduralScene("wooden room", "an empty room with a wooden floor and plain walls",
                    ("indoors", "room", "wall", "wooden floor"), draw_wood_room),
    ProceduralScene("tiled room", "an empty room with a tiled floor",
                    ("indoors", "room", "wall", "tiles", "tiled floor"), draw_tiled_room),
)


def scene_by_name(name: str) -> ProceduralScene:
    """The procedural scene with this name (KeyError otherwise)."""
    for s in PROCEDURAL_SCENES:
        if s.name == name:
            return s
    raise KeyError(name)


def render(scene: ProceduralScene, seed: int, width: int, height: int) -> tuple[np.ndarray, float | None, list[str]]:
    """Draw a scene deterministically from a seed: (uint8 RGB array, ground_y, tags)."""
    rng = np.random.default_rng(seed)
    drawn = scene.draw(rng, height, width)
    img = finish(drawn.image.astype(np.float32), rng)
    tags = list(dict.fromkeys([*scene.tags, *drawn.extra_tags]))
    return img, drawn.ground_y, tags
