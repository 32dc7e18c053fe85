"""report.html: a static page with the plan, tag statistics, thumbnails and captions.

The rendering test opens it in headless Chromium (installed by .ci/run). Without Chromium it fails
under CI (CI set, as .ci/run sets it) and is skipped, saying why, elsewhere.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.emit.report import tag_table
from datakit.stages.emit import EmitConfig, run_emit

CAPTIONS = {
    "orig": ["sail kun, 1girl, white background, smile"],
    "comp": ["sail kun, 1girl, outdoors, sky", "sail kun, 1girl, indoors, <b>bold & co</b>", "sail kun, 1girl, outdoors"],
}


@pytest.fixture
def report(tmp_path) -> Path:
    rng = np.random.default_rng(5)
    concepts = []
    for name, caps in CAPTIONS.items():
        d = tmp_path / name
        d.mkdir()
        for i, cap in enumerate(caps):
            Image.fromarray(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8)).save(d / f"{name}{i}.png")
            (d / f"{name}{i}.txt").write_text(cap)
        concepts.append((name, d))
    out = tmp_path / "out"
    run_emit(EmitConfig(out_dir=out, concepts=concepts, workers=1), Reporter(quiet=True))
    return out / "report.html"


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "<h2>Balance</h2>" in text and "Tag statistics" in text
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', text)
    assert len(srcs) == 4 and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    assert html.escape("<b>bold & co</b>") in text and "<b>bold" not in text  # captions are escaped
    assert "CLIP tokens max" in text and "in every image" in text  # `datakit tags stats` summary per concept


def test_tag_table_counts_per_concept():
    rows = [{"concept": c, "caption": cap} for c, caps in CAPTIONS.items() for cap in caps]
    concepts, tags = tag_table(rows)
    assert concepts == ["comp", "orig"]
    table = {t: (counts, total) for t, counts, total in tags}
    assert table["sail kun"] == ([3, 1], 4)
    assert table["outdoors"] == ([2, 0], 2)
    assert tags[0][0] in ("sail kun", "1girl")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _under_ci() -> bool:
    """CI=true (GitHub, GitLab, .ci/run) or any other value but an explicit 0/false."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def test_report_renders_in_headless_chromium(report, tmp_path):
    browser = _chromium()
    if browser is None:
        if _under_ci():
            pytest.fail("CI is set but Chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("Chromium is not installed (apt-get install chromium); under CI this test fails instead")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", report.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    dom = proc.stdout
    assert proc.returncode == 0, proc.stderr[-2000:]
    # the page's own load handler counted the decoded thumbnails into the DOM
    check = re.search(r'id="render-check"[^>]*', dom)
    assert check, dom[:2000]
    ok = re.search(r'data-images-ok="(\d+)"', check.group(0))
    total = re.search(r'data-images-total="(\d+)"', check.group(0))
    assert ok and total and ok.group(1) == total.group(1) == "4"
    captions = re.findall(r'<span class="caption">([^<]*)</span>', dom)
    assert html.unescape(captions[0]) == CAPTIONS["orig"][0]
    assert len(captions) == 4
