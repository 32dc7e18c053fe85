"""Acceptance: `datakit tag -b 4096` on a handful of images does not allocate a batch buffer for 4096
images (9 GiB at 448 px: a MemoryError, reported as an internal error). The tagger runs one fixed,
padded batch shape whatever the number of images (so results never depend on it), so the shape is
capped at 256 images and the user is told."""

from __future__ import annotations

import numpy as np
from PIL import Image

from datakit.console import Reporter
from datakit.stages import tag as tag_stage
from datakit.stages.tag import TagConfig, run_tag
from test_wd14 import build_tagger


def test_batch_buffer_is_no_bigger_than_the_work(tmp_path, monkeypatch):
    model = build_tagger(tmp_path / "wd14")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (40, 40), (80 * i, 0, 200)).save(src / f"img{i}.png")
    shapes = []
    real_empty = np.empty

    class _NumpyProxy:
        def __getattr__(self, name):
            return getattr(np, name)

        @staticmethod
        def empty(shape, *args, **kwargs):
            shapes.append(tuple(shape))
            return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(tag_stage, "np", _NumpyProxy())
    reporter = Reporter(quiet=True)
    info = run_tag(TagConfig(input_dir=src, out_dir=tmp_path / "out", model=str(model), batch_size=4096, workers=1),
                   reporter)
    assert info["counts"]["out"] == 3
    batch_buffers = [s for s in shapes if len(s) == 4]
    assert batch_buffers and all(s[0] <= 256 for s in batch_buffers)
    assert any("--batch-size 4096" in w for w in reporter.warnings)
