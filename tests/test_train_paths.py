"""Train's handling of moved datasets, unusable output folders and bad seeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from datakit.train.data import read_toml_dataset


def _write_dataset(root: Path, image_dir: str) -> Path:
    sub = root / "img" / "2_sail_kun"
    sub.mkdir(parents=True)
    Image.new("RGB", (64, 64), (200, 50, 50)).save(sub / "a.png")
    (sub / "a.txt").write_text("sail_kun, solo", encoding="utf-8")
    toml = root / "dataset.toml"
    toml.write_text(
        "[general]\ncaption_extension = \".txt\"\n\n[[datasets]]\nresolution = 64\n\n"
        f"[[datasets.subsets]]\nimage_dir = \"{image_dir}\"\nnum_repeats = 2\nclass_tokens = \"sail_kun\"\n",
        encoding="utf-8",
    )
    return toml


def test_a_moved_dataset_finds_its_folders_beside_the_toml(tmp_path):
    # emit wrote an absolute path on another machine; the copy keeps the img/N_name layout.
    toml = _write_dataset(tmp_path / "copy", "/elsewhere/build/dataset/img/2_sail_kun")
    spec = read_toml_dataset(toml, [])
    assert spec.subsets[0].image_dir == tmp_path / "copy" / "img" / "2_sail_kun"


def test_a_missing_image_dir_is_a_usage_error(tmp_path):
    import pytest

    from datakit.errors import UsageError

    toml = _write_dataset(tmp_path / "d", "/elsewhere/build/dataset/img/9_other")
    with pytest.raises(UsageError, match="image_dir not found"):
        read_toml_dataset(toml, [])


def _datakit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datakit", *args], capture_output=True, text=True, timeout=120)


def test_an_output_folder_that_cannot_be_created_is_a_usage_error(tmp_path):
    toml = _write_dataset(tmp_path / "d", str(tmp_path / "d" / "img" / "2_sail_kun"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = _datakit("train", str(toml), "--base-model", str(tmp_path / "none"), "-o", str(blocker / "out"))
    assert res.returncode == 2, res.stderr
    assert "cannot create the output folder" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_negative_seed_is_a_usage_error(tmp_path):
    res = _datakit("train", str(tmp_path), "--base-model", "x", "-o", str(tmp_path / "o"), "--seed", "-1")
    assert res.returncode == 2
    assert res.stderr.startswith("error:")
