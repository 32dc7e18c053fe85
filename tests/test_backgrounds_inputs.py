"""Prompt files (format, bad lines, procedural matching) and the folder engine (user photos)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datakit.backgrounds.scenes import parse_prompts_file
from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.manifest import read_manifest
from datakit.stages.backgrounds import BackgroundsConfig, run_backgrounds

GOOD = """\
# my scenes
a sunny beach with waves | outdoors, beach, ocean

a starry sky over hills | night, starry_sky | ground=none
a cafe interior, wooden tables | indoors, cafe, table | ground=0.85
"""


def test_prompt_file_is_parsed(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("\ufeff" + GOOD, encoding="utf-8")
    scenes = parse_prompts_file(f)
    assert [s.prompt for s in scenes] == ["a sunny beach with waves", "a starry sky over hills", "a cafe interior, wooden tables"]
    assert scenes[1].tags == ("night", "starry sky")  # underscores become spaces
    assert [s.ground_y for s in scenes] == [0.82, None, 0.85]
    assert scenes[2].origin == "p.txt:5"


@pytest.mark.parametrize(
    "line, message",
    [
        ("just a prompt without tags", r"p.txt:2: expected 'prompt \| tag1, tag2'"),
        ("a beach |  ", "p.txt:2: no tags"),
        (" | beach", "p.txt:2: the prompt .* is empty"),
        ("a beach | beach | ground=2", r"p.txt:2: ground=2.0 is outside 0..1"),
        ("a beach | beach | height=0.5", "p.txt:2: the third field"),
        ("a beach | beach | ground=low", "p.txt:2: ground='low' is not a number"),
        ("a | b | ground=1 | d", "p.txt:2: too many"),
    ],
)
def test_bad_prompt_lines_name_the_line(tmp_path, line, message):
    f = tmp_path / "p.txt"
    f.write_text("# header\n" + line + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match=message):
        parse_prompts_file(f)


def test_empty_and_missing_prompt_files(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("# only comments\n\n", encoding="utf-8")
    with pytest.raises(UsageError, match="no scenes"):
        parse_prompts_file(f)
    with pytest.raises(UsageError, match="prompts file not found"):
        parse_prompts_file(tmp_path / "missing.txt")
    f.write_bytes(b"\xff\xfe a | b")
    with pytest.raises(UsageError, match="not UTF-8"):
        parse_prompts_file(f)


def test_procedural_draws_known_lines_and_names_the_others(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text(GOOD, encoding="utf-8")
    reporter = Reporter(quiet=True)
    info = run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "o", count=4, width=48, height=48, prompts_file=f, workers=1),
                           reporter)
    assert info.counts.out == 4
    rows = read_manifest(tmp_path / "o")
    assert {r["prompt"] for r in rows} == {"a sunny beach with waves", "a starry sky over hills"}
    for r in rows:
        assert {"beach", "ocean"} <= set(r["tags"]) or {"night", "starry sky"} <= set(r["tags"])
    assert any("p.txt:5" in w and "cafe" in w for w in reporter.warnings)


def test_procedural_with_no_drawable_line_is_a_usage_error(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("a classroom | indoors, classroom, chalkboard\n", encoding="utf-8")
    with pytest.raises(UsageError, match="can draw none"):
        run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "o", count=2, width=32, height=32, prompts_file=f))


# ---------------------------------------------------------------------------------------------
# Folder engine
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 160, 3), dtype=np.uint8)).save(src / "wide.jpg")
    Image.fromarray(rng.integers(0, 255, (200, 100, 3), dtype=np.uint8)).save(src / "tall.png")
    (src / "tall.txt").write_text("outdoors, street_lamp, night\n", encoding="utf-8")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return src


def test_folder_engine_crops_and_tags(photos, tmp_path):
    out = tmp_path / "o"
    info = run_backgrounds(BackgroundsConfig(out_dir=out, count=None, engine="folder", from_dir=photos, width=64, height=64,
                                             tags=["outdoors", "scenery"], workers=1))
    assert info.counts.out == 2 and info.counts.skipped == 1
    assert info.skipped[0].source == "broken.png"
    rows = {r["photo"]: r for r in read_manifest(out) if r["status"] == "ok"}
    assert rows["tall.png"]["tags"] == ["outdoors", "street lamp", "night"]
    assert rows["wide.jpg"]["tags"] == ["outdoors", "scenery"]
    assert rows["wide.jpg"]["crop"] == {"mode": "center", "box": [35, 0, 125, 90]}
    assert rows["tall.png"]["crop"]["box"] == [0, 50, 100, 150]
    for r in rows.values():
        assert r["engine"] == "folder" and r["size"] == [64, 64] and r["ground_y"] == 0.82
        img = Image.open(out / r["file"])
        assert img.size == (64, 64) and img.mode == "RGB"
    assert (out / rows["tall.png"]["outputs"][1]).read_text() == "outdoors, street lamp, night\n"
    assert (photos / "broken.png").exists() and (photos / "tall.txt").read_text().startswith("outdoors")


def test_folder_random_crops_vary_and_repeat_by_seed(photos, tmp_path):
    def boxes(out, seed):
        run_backgrounds(BackgroundsConfig(out_dir=out, count=4, engine="folder", from_dir=photos, width=48, height=48,
                                          crop="random", seed=seed, ground_y=None, workers=1))
        rows = [r for r in read_manifest(out) if r["status"] == "ok"]
        assert all(r["ground_y"] is None for r in rows)
        return [r["crop"]["box"] for r in rows]

    a, b, c = boxes(tmp_path / "a", 1), boxes(tmp_path / "b", 1), boxes(tmp_path / "c", 2)
    assert a == b and a != c
    assert len(a) == 4  # 4 backgrounds from 2 usable photos: each photo twice, cropped differently
    assert a[0] != a[2] or a[1] != a[3]


def test_folder_engine_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no usable images"):
        run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "o", count=None, engine="folder", from_dir=empty))
    with pytest.raises(UsageError, match="does not exist"):
        run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "o", count=None, engine="folder", from_dir=tmp_path / "nope"))
    with pytest.raises(UsageError, match="--from is for --engine folder"):
        run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "o", count=2, from_dir=empty))
