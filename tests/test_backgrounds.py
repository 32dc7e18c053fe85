"""The procedural engine and the backgrounds stage contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from datakit.captions import format_caption
from datakit.errors import UsageError
from datakit.backgrounds.procedural import PROCEDURAL_SCENES, render, scene_by_name
from datakit.backgrounds.scenes import BUILTIN_SCENES, assign_scenes
from datakit.imageio import open_image
from datakit.manifest import read_manifest, read_stage_info
from datakit.stages.backgrounds import BackgroundsConfig, bg_name, match_procedural, run_backgrounds

NO_GROUND = {"sky", "space", "underwater", "bokeh lights", "sunset sea"}


def _load(path: Path) -> np.ndarray:
    return np.asarray(open_image(path).image.convert("RGB"))


@pytest.fixture(scope="module")
def hundred(tmp_path_factory):
    """100 procedural backgrounds at 96 px, made once for several checks."""
    out = tmp_path_factory.mktemp("bg100")
    info = run_backgrounds(BackgroundsConfig(out_dir=out, count=100, width=96, height=96, seed=11, workers=2))
    return out, info


def test_hundred_backgrounds_are_varied_and_not_white(hundred):
    out, info = hundred
    assert info.counts.out == 100 and info.counts.failed == 0
    rows = read_manifest(out)
    assert [r["file"] for r in rows] == [f"bg{i:03d}.png" for i in range(100)]
    imgs = np.stack([_load(out / r["file"]) for r in rows]).astype(np.float32)
    assert imgs.shape == (100, 96, 96, 3)
    near_white = (imgs >= 235).all(axis=3).mean(axis=(1, 2))
    assert near_white.max() < 0.15, f"{rows[int(near_white.argmax())]['scene']} is {near_white.max():.0%} white"
    # Every pair differs clearly (mean absolute difference on a 24 px thumbnail).
    thumbs = imgs.reshape(100, 24, 4, 24, 4, 3).mean(axis=(2, 4)).reshape(100, -1)
    dist = np.abs(thumbs[:, None, :] - thumbs[None, :, :]).mean(axis=2)
    np.fill_diagonal(dist, np.inf)
    assert dist.min() > 3.0
    # Each image has real texture, not a flat fill.
    assert (imgs.std(axis=(1, 2)).mean(axis=1) > 8).all()


def test_scenes_cover_evenly_and_tags_are_recorded(hundred):
    out, _ = hundred
    rows = read_manifest(out)
    counts = {}
    for r in rows:
        counts[r["scene"]] = counts.get(r["scene"], 0) + 1
        scene = scene_by_name(r["scene"])
        assert set(scene.tags) <= set(r["tags"])
        assert (out / r["outputs"][1]).read_text() == format_caption(r["tags"]) + "\n"
        assert r["engine"] == "procedural" and r["model"] is None and r["size"] == [96, 96]
        assert r["prompt"] == scene.prompt and r["negative_prompt"] is None
        if r["scene"] in NO_GROUND:
            assert r["ground_y"] is None
        else:
            assert 0.4 < r["ground_y"] < 1.0
    assert set(counts) == {s.name for s in PROCEDURAL_SCENES}
    assert max(counts.values()) - min(counts.values()) <= 1


def test_tags_are_true_of_the_pictures(hundred):
    """Cheap checks that the tags describe the image: night is dark, day skies are blue, underwater is blue."""
    out, _ = hundred
    for r in read_manifest(out):
        img = _load(out / r["file"]).astype(np.float32) / 255
        top = img[: img.shape[0] // 5].reshape(-1, 3).mean(axis=0)
        if "night" in r["tags"] or "space" in r["tags"]:
            assert img.mean() < 0.35, r["scene"]
        if "blue sky" in r["tags"]:
            assert top[2] > top[0] + 0.1, r["scene"]
        if "underwater" in r["tags"]:
            mean = img.reshape(-1, 3).mean(axis=0)
            assert mean[2] > mean[0] + 0.15, r["scene"]
        if "indoors" in r["tags"]:
            assert "outdoors" not in r["tags"] and "sky" not in r["tags"]


def test_render_is_deterministic_per_seed():
    scene = scene_by_name("beach")
    a, ga, ta = render(scene, 42, 80, 64)
    b, gb, tb = render(scene, 42, 80, 64)
    c, _, _ = render(scene, 43, 80, 64)
    assert a.shape == (64, 80, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and ga == gb and ta == tb
    assert not np.array_equal(a, c)


def test_outputs_identical_whatever_the_worker_count(tmp_path):
    one = run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "a", count=5, width=64, height=48, seed=3, workers=1))
    two = run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "b", count=5, width=64, height=48, seed=3, workers=2))
    assert one.counts.out == two.counts.out == 5
    for i in range(5):
        name = f"bg{i:03d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert _load(tmp_path / "a" / "bg000.png").shape == (48, 64, 3)


def test_rerun_reuses_and_more_images_keep_the_first(tmp_path):
    cfg = BackgroundsConfig(out_dir=tmp_path, count=4, width=48, height=48, workers=1)
    run_backgrounds(cfg)
    before = (tmp_path / "bg002.png").read_bytes()
    mtime = (tmp_path / "datakit.json").stat().st_mtime_ns
    again = run_backgrounds(cfg)
    assert again.nothing_to_do and (tmp_path / "datakit.json").stat().st_mtime_ns == mtime
    more = run_backgrounds(BackgroundsConfig(out_dir=tmp_path, count=6, width=48, height=48, workers=1))
    assert more.counts.reused == 4 and more.counts.processed == 2
    assert (tmp_path / "bg002.png").read_bytes() == before
    forced = run_backgrounds(BackgroundsConfig(out_dir=tmp_path, count=6, width=48, height=48, workers=1, force=True))
    assert forced.counts.processed == 6
    fewer = run_backgrounds(BackgroundsConfig(out_dir=tmp_path, count=3, width=48, height=48, workers=1))
    assert fewer.counts.out == 3 and not (tmp_path / "bg004.png").exists()
    info = read_stage_info(tmp_path)
    assert info["stage"] == "backgrounds" and info["engine"] == "procedural"


def test_names_are_padded_to_the_count():
    assert bg_name(7, 10) == "bg007"
    assert bg_name(999, 1000) == "bg999"
    assert bg_name(1000, 1001) == "bg1000"
    assert bg_name(5, 12000) == "bg00005"


def test_assignment_is_round_robin_and_stable():
    scenes = list(range(7))
    first = assign_scenes(scenes, 21, seed=5)
    assert sorted(first) == sorted(scenes * 3)
    assert first[:7] == first[7:14]  # each round visits every scene once
    assert assign_scenes(scenes, 30, seed=5)[:21] == first  # more images keep the earlier scenes
    assert assign_scenes(scenes, 7, seed=6) != first[:7]


def test_builtin_scene_list_is_large_and_tagged():
    assert len(BUILTIN_SCENES) >= 40
    assert len({s.name for s in BUILTIN_SCENES}) == len(BUILTIN_SCENES)
    for s in BUILTIN_SCENES:
        assert s.tags and all(t == t.strip() and "_" not in t for t in s.tags)
        assert s.ground_y is None or 0 < s.ground_y < 1
        assert "person" not in s.tags


def test_builtin_prompts_map_to_procedural_scenes_where_they_can():
    mapped = {s.name: match_procedural(s.tags) for s in BUILTIN_SCENES}
    assert mapped["beach"].name == "beach"
    assert mapped["sky"].name == "sky"
    assert mapped["classroom"] is None  # no desks or chalkboards in code


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"count": 0}, "--count must be at least 1"),
        ({"count": -3}, "--count must be at least 1"),
        ({"count": None}, "--count is required"),
        ({"count": 2, "engine": "dalle"}, "unknown engine"),
        ({"count": 2, "width": 4}, "out of range"),
        ({"count": 2, "format": "gif"}, "unknown format"),
        ({"count": 2, "engine": "folder"}, "needs --from"),
    ],
)
def test_bad_options_are_usage_errors(tmp_path, kwargs, message):
    with pytest.raises(UsageError, match=message):
        run_backgrounds(BackgroundsConfig(out_dir=tmp_path / "out", **kwargs))
    assert not (tmp_path / "out").exists()


def test_unwritable_out_is_a_usage_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="OUT"):
        run_backgrounds(BackgroundsConfig(out_dir=blocker / "sub", count=1, width=32, height=32))
    with pytest.raises(UsageError, match="not a folder"):
        run_backgrounds(BackgroundsConfig(out_dir=blocker, count=1, width=32, height=32))


def test_cli_end_to_end(tmp_path, capsys):
    from datakit.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", str(tmp_path / "o"), "--count", "3", "--size", "40", "--json", "-j", "1", "--format", "jpg"])
    assert exc.value.code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["counts"]["out"] == 3
    assert sorted(p.name for p in (tmp_path / "o").glob("bg*")) == [
        "bg000.jpg", "bg000.txt", "bg001.jpg", "bg001.txt", "bg002.jpg", "bg002.txt"]
    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", str(tmp_path / "p"), "--count", "0"])
    assert exc.value.code == 2
    assert "error: --count must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", "--list-scenes"])
    assert exc.value.code == 0
    assert "starry night" in capsys.readouterr().out
