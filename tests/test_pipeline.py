"""pipelines/pipeline.mk end to end on two tiny subjects: the dataset tree, then a re-run that does nothing,
then an edited subject that redoes only its own items."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
# Procedural backgrounds (the demo's path) at 128 px.
COMPOSITE_FLAGS = "--size 128"


def _subject(path: Path, colour, offset: int) -> None:
    """A flat-coloured figure with a dark outline on white, like the samples but 160 px."""
    import cv2

    arr = np.full((160, 160, 3), 255, np.uint8)
    cv2.ellipse(arr, (80 + offset, 60), (26, 30), 0, 0, 360, colour, -1)
    cv2.rectangle(arr, (58 + offset, 88), (102 + offset, 140), colour, -1)
    cv2.ellipse(arr, (80 + offset, 60), (26, 30), 0, 0, 360, (30, 30, 30), 3)
    cv2.rectangle(arr, (58 + offset, 88), (102 + offset, 140), (30, 30, 30), 3)
    Image.fromarray(arr).save(path)
    path.with_suffix(".txt").write_text("solo, 1boy, brown hair, smile, full body, white background, simple background")


def _make(tmp: Path, out: Path, subjects: Path, bg_flags: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "datakit"
    datakit = str(script) if script.is_file() else f"{sys.executable} -m datakit"  # not installed as a script
    cmd = ["make", "--no-print-directory", "-f", "pipelines/pipeline.mk", f"DATAKIT={datakit}", f"SUBJECTS={subjects}",
           f"OUT={out}", "BG_COUNT=4", f"COMPOSITE_FLAGS={bg_flags}", "all"]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba"), COLUMNS="120")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


def _stamps(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.glob("*/datakit.json")}


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    subjects = tmp_path / "subjects"
    subjects.mkdir()
    _subject(subjects / "standing.png", (200, 80, 60), 0)
    _subject(subjects / "waving.png", (60, 90, 200), 8)
    out = tmp_path / "build"
    bg = COMPOSITE_FLAGS

    first = _make(tmp_path, out, subjects, bg)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    ds = out / "dataset"
    folders = sorted(p.name for p in (ds / "img").iterdir())
    assert folders == ["1_sail_kun_with_background", "2_sail_kun"], folders  # 2 originals x 2 = 4 composites x 1
    originals = sorted((ds / "img/2_sail_kun").glob("*.txt"))
    composites = sorted((ds / "img/1_sail_kun_with_background").glob("*.txt"))
    assert len(originals) == 2 and len(composites) == 4
    for cap in originals:  # trigger first, and the white background that is true of them
        text = cap.read_text()
        assert text.startswith("sail_kun, ") and "white background" in text
    for cap in composites:
        text = cap.read_text()
        assert text.startswith("sail_kun, ") and "white background" not in text and "simple background" not in text
    for name in ("dataset.toml", "report.html", "metadata.jsonl", "plan.csv"):
        assert (ds / name).is_file()
    info = json.loads((ds / "datakit.json").read_text())
    assert info["carry"]["trigger"] == "sail_kun" and info["carry"]["keep_tokens"] >= 1
    assert "datakit train" in first.stdout and "report.html" in first.stdout

    # a second run does no work: no stage runs, no datakit.json changes
    before = _stamps(out)
    second = _make(tmp_path, out, subjects, bg)
    assert second.returncode == 0, second.stderr[-3000:]
    assert _stamps(out) == before
    assert " cutout " not in second.stdout and " emit " not in second.stdout

    # editing one subject redoes its own cut-out and composites, and reuses the other's; a broken file
    # makes stages exit 3 (skipped, named), which does not stop the chain
    _subject(subjects / "waving.png", (60, 160, 90), 8)
    (subjects / "broken.png").write_bytes(b"not a png")
    third = _make(tmp_path, out, subjects, bg)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert "some inputs were skipped" in third.stderr and "broken.png" in third.stderr
    cut = json.loads((out / "cutout/datakit.json").read_text())["counts"]
    assert (cut["reused"], cut["skipped"], cut["out"]) == (1, 1, 2)  # standing reused, waving redone
    comp = json.loads((out / "composite/datakit.json").read_text())["counts"]
    assert comp["processed"] >= 1 and comp["reused"] >= 1 and comp["processed"] + comp["reused"] == 4
    assert json.loads((out / "dataset/datakit.json").read_text())["counts"]["reused"] >= 1
