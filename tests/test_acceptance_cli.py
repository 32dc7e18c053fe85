"""Acceptance: options a user gets wrong are one `error:` line with exit 2, never ignored silently
and never a traceback (exit 1)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from datakit.cli.main import app
from datakit.errors import EXIT_USAGE


def _run(args: list[str]):
    return CliRunner().invoke(app, args)


def _one_error_line(result, fragment: str) -> None:
    assert result.exit_code == EXIT_USAGE, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--size", "0"], "size 0x0 is out of range"),  # was taken as "no size": 1024 px, exit 0
        (["--width", "0"], "size 0x1024 is out of range"),
        (["--ground", "0.5"], "--ground is for --engine folder"),  # was ignored by the procedural engine
        (["--tags", "beach"], "--tags is for --engine folder"),
    ],
)
def test_backgrounds_bad_sizes_and_folder_only_options(tmp_path, extra, fragment):
    out = tmp_path / "bg"
    _one_error_line(_run(["backgrounds", str(out), "--count", "1", "--quiet", *extra]), fragment)
    assert not any(out.glob("bg*"))


def test_backgrounds_folder_engine_still_takes_tags_and_ground(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (80, 60), (30, 90, 20)).save(photos / "field.jpg")
    out = tmp_path / "bg"
    result = _run(["backgrounds", str(out), "--engine", "folder", "--from", str(photos), "--tags", "grass",
                   "--ground", "none", "--size", "32", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "bg000.txt").read_text().strip() == "grass"


def test_tags_stats_unusable_out_is_a_usage_error(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a.txt").write_text("1girl, solo")
    from PIL import Image

    Image.new("RGB", (16, 16)).save(src / "a.png")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    _one_error_line(_run(["tags", "stats", str(src), "--out", str(blocker)]), "--out exists and is not a folder")
    _one_error_line(_run(["tags", "stats", str(src), "--out", str(blocker / "sub")]), "cannot create --out")


@pytest.mark.parametrize("value", ["abc", "-1", "0", "inf"])
def test_bad_pixel_limit_is_one_usage_error_not_every_item_failing(tmp_path, monkeypatch, value):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (32, 32), (10, 20, 30)).save(src / "a.png")
    monkeypatch.setenv("DATAKIT_MAX_PIXELS", value)
    _one_error_line(_run(["tag", str(src), str(tmp_path / "out"), "--model", "none", "--quiet"]), "DATAKIT_MAX_PIXELS")


def test_pixel_limit_accepts_the_ways_people_write_numbers(monkeypatch):
    from datakit.imageio import DEFAULT_MAX_PIXELS, max_pixels

    for value, expected in [("1000", 1000), ("5e8", 500_000_000), ("512_000_000", 512_000_000), ("", DEFAULT_MAX_PIXELS)]:
        monkeypatch.setenv("DATAKIT_MAX_PIXELS", value)
        assert max_pixels() == expected


def test_negative_seed_is_a_usage_error(tmp_path):
    """numpy refuses negative seeds: --seed -5 used to be an internal error (exit 1) in backgrounds."""
    result = _run(["backgrounds", str(tmp_path / "bg"), "--count", "1", "--seed", "-5", "--quiet"])
    assert result.exit_code == EXIT_USAGE and "--seed" in result.output
    assert "Traceback" not in result.output
