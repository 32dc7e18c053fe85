"""Procedural scenes drawn in code: skies, horizons, mountains, skylines, rooms, night lights, water.

Each scene is a function `draw(rng, h, w) -> Drawn`; everything random comes from `rng` (the
item's own generator), so an image is a pure function of its seed and size. Images are built in
float32 RGB 0..1 and converted once at the end (noise.finish). A scene's tags list only what every
variation of it really shows; parts drawn only sometimes (a moon, a window) add their own tag.

The scene list is in registry.py; the scenes, a module per family, draw with the layers in
sky_layers.py, ground_layers.py and outdoor.py.
"""

from datakit.backgrounds.procedural.drawn import Drawn
from datakit.backgrounds.procedural.registry import PROCEDURAL_SCENES, ProceduralScene, render, scene_by_name

__all__ = ["PROCEDURAL_SCENES", "Drawn", "ProceduralScene", "render", "scene_by_name"]
