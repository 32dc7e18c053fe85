"""pipelines/pipeline.mk's optional review step: off by default, and with REVIEW_DECISIONS=FILE the
rejected composites stay out of the dataset and edited captions go in, without a browser."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from review_support import figure

ROOT = Path(__file__).resolve().parents[1]


def make(tmp: Path, out: Path, subjects: Path, *extra: str) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "datakit"
    datakit = str(script) if script.is_file() else f"{sys.executable} -m datakit"
    cmd = ["make", "--no-print-directory", "-f", "pipelines/pipeline.mk", f"DATAKIT={datakit}", f"SUBJECTS={subjects}",
           f"OUT={out}", "BG_COUNT=3", "COMPOSITE_FLAGS=--size 128", *extra, "all"]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba"), COLUMNS="120")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)


@pytest.mark.slow
def test_pipeline_review_step(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    subjects = tmp_path / "subjects"
    subjects.mkdir()
    for i, colour in enumerate([(200, 80, 60), (60, 90, 200)]):
        Image.fromarray(figure(140, 180, colour, seed=i)).save(subjects / f"pose{i}.png")
        (subjects / f"pose{i}.txt").write_text("solo, 1boy, smile, full body, white background, simple background")
    out = tmp_path / "build"
    first = make(tmp_path, out, subjects)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert not (out / "composite-reviewed").exists()  # off by default
    composite_folder = lambda: next((out / "dataset/img").glob("*_sail_kun_with_background"))  # noqa: E731 - repeats vary
    assert len(list(composite_folder().glob("*.txt"))) == 3

    composites = sorted(p for p in (out / "composite-rewritten").iterdir() if p.suffix == ".png")
    reject, edit = composites[0], composites[1]
    caption = (edit.with_suffix(".txt")).read_text().strip().split(", ")
    decisions = tmp_path / "review.json"
    digest = lambda p: hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()  # noqa: E731 - as the manifests hash
    decisions.write_text(json.dumps({"format": "datakit-review", "version": 1, "items": {
        reject.name: {"hash": digest(reject), "action": "reject"},
        edit.name: {"hash": digest(edit), "tags": caption + ["sunset"], "base_tags": caption},
    }}))
    stamps = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/datakit.json")}
    second = make(tmp_path, out, subjects, f"REVIEW_DECISIONS={decisions}")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert (out / "composite-reviewed/datakit.json").is_file()
    folder = composite_folder()
    txts = sorted(p.name for p in folder.glob("*.txt"))
    assert len(txts) == 2 and reject.with_suffix(".txt").name not in txts
    assert (folder / edit.with_suffix(".txt").name).read_text().strip().endswith("sunset")
    for stage in ("cutout", "composite", "composite-tagged", "composite-rewritten"):  # nothing upstream redone
        assert (out / stage / "datakit.json").stat().st_mtime_ns == stamps[stage], stage
    # and a third run does nothing
    now = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/datakit.json")}
    third = make(tmp_path, out, subjects, f"REVIEW_DECISIONS={decisions}")
    assert third.returncode == 0 and {p.parent.name: p.stat().st_mtime_ns for p in out.glob("*/datakit.json")} == now
