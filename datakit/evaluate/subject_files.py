"""The subject's cut-outs for subject presence: a folder of RGBA images, read once for a whole measurement."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datakit.errors import ImageError, UsageError
from datakit.imageio import open_image


def read_cutouts(folder: Path | None, flag: str = "--subject") -> tuple[list[np.ndarray], list[str], list[dict]]:
    """(RGBA arrays, their names, skipped rows); unreadable or empty files are skipped and named, none usable is an error."""
    if folder is None:
        return [], [], []
    from datakit.evaluate.subject_colour import subject_pixels
    from datakit.inputs import discover

    inputs = discover(folder, stage="eval")
    cutouts, names, skipped = [], [], list(inputs.skipped)
    for item in inputs.items:
        try:
            arr = np.asarray(open_image(item.path).image)
        except ImageError as exc:
            skipped.append({"source": f"{flag} {item.key}", "reason": str(exc)})
            continue
        if len(subject_pixels(arr)) == 0:
            skipped.append({"source": f"{flag} {item.key}", "reason": "no subject in it (fully transparent or blank)"})
            continue
        cutouts.append(arr)
        names.append(item.key)
    if not cutouts:
        raise UsageError(f"{flag} {folder}: no readable cut-out images in it")
    return cutouts, names, skipped
