"""Running pipelines/pipeline.mk from a test: the installed `datakit` script, small sizes, a private numba cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_pipeline(tmp: Path, out: Path, subjects: Path, *variables: str, bg_count: int = 3) -> subprocess.CompletedProcess:
    """`make -f pipelines/pipeline.mk all` on SUBJECTS into OUT; `variables` are extra NAME=VALUE settings."""
    script = Path(sys.executable).parent / "datakit"
    datakit = str(script) if script.is_file() else f"{sys.executable} -m datakit"  # not installed as a script
    cmd = ["make", "--no-print-directory", "-f", "pipelines/pipeline.mk", f"DATAKIT={datakit}", f"SUBJECTS={subjects}",
           f"OUT={out}", f"BG_COUNT={bg_count}", *variables, "all"]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp / "numba"), COLUMNS="120")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL)
