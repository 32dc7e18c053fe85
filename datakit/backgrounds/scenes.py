"""Scenes for generated backgrounds: the built-in list, the prompt-file format, and even coverage.

A scene is a prompt plus the Danbooru tags of what it shows (spaces form, as captions are written)
and `ground_y`: the fraction of the image height, from the top, where a subject would stand; None
for scenes without a floor (sky, space, underwater).

Prompt file format (UTF-8 text, one scene per line):

    # comment lines and blank lines are ignored
    a sunny beach, ocean waves, blue sky | outdoors, beach, ocean, sky, cloud
    a cozy cafe interior | indoors, cafe, table, chair | ground=0.85
    a starry night sky | night, starry sky, night sky | ground=none

Fields are separated by `|`: the prompt, the tags (comma-separated; `_` or spaces), and optionally
`ground=<0..1|none>`. A bad line is a usage error naming the file and line number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from datakit.captions import canonical, format_tag, parse_caption
from datakit.errors import UsageError

DEFAULT_GROUND_Y = 0.82  # a typical standing line for a landscape or room photo


@dataclass(frozen=True)
class Scene:
    """A scene to generate: name, prompt, tags, where the ground is, and (for files) where it came from."""

    name: str
    prompt: str
    tags: tuple[str, ...]
    ground_y: float | None = DEFAULT_GROUND_Y
    origin: str = "built-in"
    extra: dict = field(default_factory=dict, compare=False, hash=False)


def _s(name: str, prompt: str, tags: str, ground_y: float | None = DEFAULT_GROUND_Y) -> Scene:
    return Scene(name, prompt, tuple(t.strip() for t in tags.split(",")), ground_y)


# Built-in scenes for the diffusion engine. Prompts describe empty places (no people): the subject is
# pasted in later. Tags are only what the prompt asks for, so they are true of a faithful image.
BUILTIN_SCENES: tuple[Scene, ...] = (
    _s("beach", "a sunny tropical beach, turquoise ocean waves, white sand, blue sky with clouds, scenery",
       "outdoors, beach, ocean, sand, sky, cloud, day, blue sky, water, horizon"),
    _s("forest", "a lush green forest, tall trees, sunlight filtering through the leaves, forest path",
       "outdoors, forest, nature, tree, day, sunlight, path, grass"),
    _s("desert", "vast desert with sand dunes under a clear blue sky, hot afternoon",
       "outdoors, desert, sand, sky, day, blue sky"),
    _s("night city street", "a city street at night, neon signs, wet asphalt reflecting lights, empty street",
       "outdoors, night, city, street, road, building, neon lights, city lights, reflection"),
    _s("classroom", "an empty japanese school classroom, wooden desks and chairs, chalkboard, windows, afternoon light",
       "indoors, classroom, desk, chair, chalkboard, window, school", 0.85),
    _s("bedroom", "a cozy bedroom interior, bed with pillows, bookshelf, window with curtains, warm light",
       "indoors, bedroom, bed, pillow, bookshelf, window, curtains", 0.86),
    _s("cafe", "inside a cozy cafe, wooden tables and chairs, warm lamps, plants, large windows",
       "indoors, cafe, table, chair, plant, window, lamp", 0.85),
    _s("snowy mountain", "snowy mountains under a blue sky, snowfield, winter landscape",
       "outdoors, snow, mountain, winter, sky, day, blue sky, landscape"),
    _s("space", "outer space, colorful nebula, countless stars, distant planet",
       "space, star (sky), starry sky, nebula, planet", None),
    _s("underwater", "underwater scene, coral reef, tropical fish, sun rays from the surface, bubbles",
       "underwater, water, coral reef, fish, light rays, bubble", None),
    _s("autumn park", "a park in autumn, trees with red and orange leaves, fallen leaves on a path, bench",
       "outdoors, autumn, autumn leaves, tree, park, path, bench, day"),
    _s("rooftop sunset", "a building rooftop at sunset, city skyline, orange sky, fence",
       "outdoors, rooftop, sunset, cityscape, orange sky, sky, fence, building, evening"),
    _s("grass field", "a wide green meadow with wildflowers, rolling hills, blue sky with fluffy clouds",
       "outdoors, field, grass, flower, hill, sky, cloud, day, blue sky"),
    _s("cherry blossoms", "a path lined with cherry blossom trees in full bloom, petals falling, spring day",
       "outdoors, cherry blossoms, tree, petals, path, spring (season), day"),
    _s("japanese shrine", "a japanese shinto shrine with a red torii gate, stone lanterns, trees",
       "outdoors, shrine, torii, stone lantern, tree, day, east asian architecture"),
    _s("library", "inside a grand old library, tall wooden bookshelves full of books, warm light",
       "indoors, library, bookshelf, book, wooden floor", 0.85),
    _s("kitchen", "a bright modern kitchen, counters, cabinets, window, tiled floor",
       "indoors, kitchen, counter, cabinet, window, tiled floor", 0.86),
    _s("living room", "a cozy living room, sofa, coffee table, rug, potted plant, large window",
       "indoors, living room, couch, table, rug, plant, window", 0.86),
    _s("train station", "an empty train station platform, railway tracks, roof, daytime",
       "outdoors, train station, railroad tracks, platform, day"),
    _s("city street day", "a busy-looking city street by day without people, shops, buildings, crosswalk",
       "outdoors, city, street, road, building, crosswalk, day, sky"),
    _s("starry night", "a starry night sky over a quiet hill, milky way",
       "outdoors, night, night sky, starry sky, star (sky), milky way, hill"),
    _s("bokeh lights", "blurred city lights at night, bokeh, out of focus background",
       "night, bokeh, blurry background, city lights, lights", None),
    _s("lake", "a calm mountain lake reflecting the mountains, pine trees, clear day",
       "outdoors, lake, mountain, reflection, tree, water, sky, day, nature"),
    _s("waterfall", "a waterfall in a green jungle, rocks, mist, lush plants",
       "outdoors, waterfall, water, rock, nature, plant, tree, day"),
    _s("sunset sea", "the sea at sunset, sun on the horizon, orange and purple sky, calm waves",
       "outdoors, ocean, sunset, sky, cloud, orange sky, horizon, water, sun, evening"),
    _s("castle", "a medieval stone castle on a hill, blue sky, grass",
       "outdoors, castle, hill, grass, sky, day, cloud"),
    _s("fantasy ruins", "ancient overgrown stone ruins in a forest, moss, ivy, god rays",
       "outdoors, ruins, forest, moss, ivy, light rays, nature, day"),
    _s("village", "a european village street, cobblestone road, colorful houses, flower boxes",
       "outdoors, town, street, house, road, building, flower, day, sky"),
    _s("rainy street", "a rainy city street at dusk, puddles, reflections, umbrellas-free empty sidewalk",
       "outdoors, rain, city, street, puddle, reflection, building, evening"),
    _s("snowy village", "a snowy village at night, warm windows, snow falling, lamps",
       "outdoors, snow, snowing, winter, night, house, lamppost, window"),
    _s("school hallway", "an empty school hallway, lockers, windows, polished floor",
       "indoors, school, hallway, locker, window, floor", 0.85),
    _s("gym", "an empty school gymnasium, wooden floor, basketball hoop",
       "indoors, gym, wooden floor, basketball hoop", 0.86),
    _s("office", "a modern office interior, desks, computers, large windows, city view",
       "indoors, office, desk, computer, window, chair", 0.85),
    _s("church", "inside a gothic cathedral, stained glass windows, stone pillars, light rays",
       "indoors, church, stained glass, pillar, light rays, window", 0.86),
    _s("greenhouse", "inside a glass greenhouse full of plants and flowers, sunlight",
       "indoors, greenhouse, plant, flower, sunlight, window", 0.85),
    _s("sky", "blue sky with white fluffy clouds, nothing else",
       "sky, cloud, blue sky, day, cloudy sky", None),
    _s("clouds sunset", "sunset clouds high in the sky, golden light",
       "sky, cloud, sunset, orange sky, evening", None),
    _s("flower field", "a field of sunflowers under a summer sky",
       "outdoors, flower, sunflower, field, sky, day, summer, cloud"),
    _s("river", "a river flowing through a green valley, stones, trees on the banks",
       "outdoors, river, water, tree, rock, grass, nature, day"),
    _s("cave", "inside a crystal cave, glowing crystals, rocks, dim light",
       "cave, crystal, rock, dark, glowing", 0.84),
    _s("bamboo forest", "a dense bamboo forest, tall green stalks, soft light",
       "outdoors, bamboo forest, bamboo, nature, day"),
    _s("night festival", "a japanese summer festival at night, paper lanterns, food stalls, no people",
       "outdoors, night, summer festival, paper lantern, lantern, stall"),
    _s("pool", "an outdoor swimming pool, clear blue water, tiles, sunny day",
       "outdoors, pool, water, tiles, day, sky"),
    _s("wooden room", "an empty room with a wooden floor and plain walls, soft daylight",
       "indoors, room, wall, wooden floor", 0.86),
    _s("alley", "a narrow back alley in a japanese city, vending machine, power lines",
       "outdoors, alley, vending machine, power lines, building, day"),
)


def slug(text: str, words: int = 4) -> str:
    """A short scene name from a prompt: its first few words."""
    parts = re.findall(r"[A-Za-z0-9]+", text.lower())
    return " ".join(parts[:words]) or "scene"


def normalise_tags(tags) -> tuple[str, ...]:
    """Tags in datakit's caption form (spaces, unescaped), duplicates removed, order kept."""
    out, seen = [], set()
    for t in tags:
        f = format_tag(t)
        if f and canonical(f) not in seen:
            seen.add(canonical(f))
            out.append(f)
    return tuple(out)


def parse_prompts_file(path: str | Path) -> list[Scene]:
    """Scenes from a prompt file (format in the module docstring); UsageError names the bad line."""
    from datakit.inputs import read_user_text

    path = Path(path)
    text = read_user_text(path, "prompts file")
    scenes: list[Scene] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 2:
            raise UsageError(f"{where}: expected 'prompt | tag1, tag2', found no '|' in: {line[:60]}")
        if len(fields) > 3:
            raise UsageError(f"{where}: too many '|' fields (prompt | tags | ground=...)")
        prompt, tag_text = fields[0], fields[1]
        if not prompt:
            raise UsageError(f"{where}: the prompt (before '|') is empty")
        tags = normalise_tags(parse_caption(tag_text))
        if not tags:
            raise UsageError(f"{where}: no tags after '|' (each scene needs the tags of what it shows)")
        ground: float | None = DEFAULT_GROUND_Y
        if len(fields) == 3:
            ground = _parse_ground(fields[2], where)
        scenes.append(Scene(slug(prompt), prompt, tags, ground, origin=f"{path.name}:{lineno}"))
    if not scenes:
        raise UsageError(f"{path}: no scenes (every line is blank or a # comment)")
    return scenes


def _parse_ground(text: str, where: str) -> float | None:
    key, _, value = text.partition("=")
    if key.strip().lower() != "ground" or not value.strip():
        raise UsageError(f"{where}: the third field must be 'ground=<0..1>' or 'ground=none', not {text!r}")
    value = value.strip().lower()
    if value in ("none", "null", "-"):
        return None
    try:
        g = float(value)
    except ValueError:
        raise UsageError(f"{where}: ground={value!r} is not a number between 0 and 1 or 'none'") from None
    if not 0.0 <= g <= 1.0:
        raise UsageError(f"{where}: ground={g} is outside 0..1 (a fraction of the image height)")
    return g


def assign_scenes(scenes: list, count: int, seed: int) -> list:
    """Scene for each of `count` images: round-robin over a seeded shuffle, so all are used evenly.

    The order depends only on the seed and the scene list (not on count), so asking for more
    images later keeps the earlier images' scenes.
    """
    order = list(np.random.default_rng([int(seed), 0x5CE7E]).permutation(len(scenes)))
    return [scenes[order[i % len(scenes)]] for i in range(count)]
