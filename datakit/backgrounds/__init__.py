"""Background generation: procedural scenes, scene lists and prompt files, photo folders, diffusion models."""
