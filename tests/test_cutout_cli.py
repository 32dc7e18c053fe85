"""`datakit cutout` on the command line: help text, exit codes, JSON summary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from test_cutout_synth import backdrop, compose, draw_subject

from datakit.cli.main import main


def cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(["cutout", *args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    colour, alpha = draw_subject(96)
    Image.fromarray(compose(colour, alpha, backdrop("white", 96))).save(d / "pose.png")
    return d


def test_help_lists_every_option():
    # A fresh interpreter: --help must work without importing the heavy libraries.
    res = subprocess.run([sys.executable, "-m", "datakit", "cutout", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    for opt in ("--method", "--model", "--holes", "--holes-file", "--threshold", "--matting", "--trim", "--margin",
                "--review", "--no-review", "--seed", "--device", "--workers", "--force", "--quiet", "--json",
                "DATAKIT_REMBG_MODEL"):
        assert opt in res.stdout, opt


def test_help_stays_light():
    code = "import sys; import datakit.cli.cutout; print(sorted(m for m in ('cv2', 'numpy', 'rembg', 'pymatting', 'torch') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "[]"


def test_success_and_json_summary(folder: Path, tmp_path: Path, capsys):
    code, out, _ = cli([str(folder), str(tmp_path / "out"), "--json", "-j", "1"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["counts"]["out"] == 1 and info["stage"] == "cutout"


def test_partial_exit_code(folder: Path, tmp_path: Path, capsys):
    (folder / "broken.png").write_bytes(b"")
    code, _, err = cli([str(folder), str(tmp_path / "out"), "-j", "1"], capsys)
    assert code == 3
    assert "broken.png" in err


def test_usage_error_exit_code(folder: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("DATAKIT_REMBG_MODEL", raising=False)
    code, _, err = cli([str(folder), str(tmp_path / "out"), "--method", "rembg"], capsys)
    assert code == 2
    assert err.startswith("error: ") and "--model" in err and "Traceback" not in err
    code, _, err = cli([str(folder), str(tmp_path / "out"), "--holes", "sometimes"], capsys)
    assert code == 2


def test_missing_model_exit_code(folder: Path, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    code, _, err = cli([str(folder), str(tmp_path / "out"), "--method", "rembg", "--model", "isnet-anime"], capsys)
    assert code == 4
    assert "isnet-anime" in err and "rembg d isnet-anime" in err
    code, _, err = cli([str(folder), str(tmp_path / "out"), "--method", "rembg", "--model", str(tmp_path / "nope.onnx")], capsys)
    assert code == 4 and "not found" in err
