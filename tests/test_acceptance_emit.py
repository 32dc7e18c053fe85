"""Acceptance: when emit gives up because a concept has no usable image, the manifest it points
the user at exists and names each skipped image with its reason."""

from __future__ import annotations

import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.errors import StageError
from datakit.manifest import read_manifest
from datakit.stages.emit import EmitConfig, run_emit


def test_all_bad_concept_error_points_at_a_manifest_that_exists(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    Image.new("RGB", (96, 96), (200, 30, 30)).save(good / "a.png")
    (good / "a.txt").write_text("1girl, solo")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not an image")
    (bad / "empty.png").write_bytes(b"")
    out = tmp_path / "out"
    with pytest.raises(StageError, match="manifest.jsonl") as err:
        run_emit(EmitConfig(out_dir=out, concepts=[("a", good), ("b", bad)], workers=1), Reporter(quiet=True))
    assert str(out / "manifest.jsonl") in str(err.value)
    rows = {r["source"]: r for r in read_manifest(out)}
    assert rows["b/x.png"]["status"] == "skipped" and rows["b/x.png"]["reason"]
    assert rows["b/empty.png"]["status"] == "skipped" and "zero-byte" in rows["b/empty.png"]["reason"]
    assert not (out / "datakit.json").exists() and not (out / "dataset.toml").exists()
