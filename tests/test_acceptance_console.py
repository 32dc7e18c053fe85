"""Acceptance: what the terminal says about bad inputs is complete and literal.

--quiet still names skipped and failed inputs (bad input never vanishes silently), and file names
with square brackets (`char [v2].png`, common in downloaded art) are printed as they are, not read
as rich markup (which dropped `[v2]` and crashed on `[/x]`).
"""

from __future__ import annotations

import io
import subprocess
import sys

from rich.console import Console

from datakit.console import Reporter
from datakit.results import StageResult

INFO = {
    "stage": "demo",
    "counts": {"in": 3, "out": 1, "skipped": 1, "failed": 1},
    "output": "out [final]",
    "skipped": [{"source": "char [v2].png", "reason": "zero-byte file"}],
    "failed": [{"source": "weird [/x].png", "reason": "ValueError: [red] oops"}],
}


def _reporter(**kw) -> tuple[Reporter, io.StringIO]:
    buf = io.StringIO()
    return Reporter(console=Console(file=buf, width=200, highlight=False), **kw), buf


def test_quiet_summary_still_names_skipped_and_failed_inputs():
    rep, buf = _reporter(quiet=True)
    rep.summary(StageResult.from_json(INFO))
    lines = buf.getvalue().splitlines()
    assert lines == ["skipped char [v2].png: zero-byte file", "failed weird [/x].png: ValueError: [red] oops"]


def test_brackets_in_names_are_printed_literally():
    rep, buf = _reporter()
    rep.summary(StageResult.from_json(INFO))
    rep.warn("could not read [v2]/a.png")
    rep.info("wrote [/bold] here")
    text = buf.getvalue()
    assert "out [final]" in text
    assert "skipped char [v2].png: zero-byte file" in text
    assert "failed weird [/x].png: ValueError: [red] oops" in text
    assert "warning: could not read [v2]/a.png" in text and "wrote [/bold] here" in text


def test_quiet_cli_run_names_a_bad_file(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "empty [v2].png").write_bytes(b"")
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 20, 30)).save(src / "ok.png")
    proc = subprocess.run(
        [sys.executable, "-m", "datakit", "tag", str(src), str(tmp_path / "out"), "--model", "none", "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.splitlines() == ["skipped empty [v2].png: zero-byte file"]
