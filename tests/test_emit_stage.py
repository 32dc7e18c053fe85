"""`datakit emit` end to end on tiny folders: tree, TOML, links, alpha, captions, bad inputs, reuse."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.emit import kohya_toml
from datakit.errors import StageError, UsageError
from datakit.results import Carry
from datakit.stages.emit import EmitConfig, EmitResult, run_emit


def _img(path: Path, seed: int, size=(96, 80), mode="RGB", caption: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, (size[1], size[0], 4 if mode == "RGBA" else 3), dtype=np.uint8)
    if mode == "RGBA":
        arr[..., 3] = 0
        arr[10:-10, 10:-10, 3] = 255
    Image.fromarray(arr, mode).save(path)
    if caption is not None:
        path.with_suffix(".txt").write_text(caption, encoding="utf-8")
    return path


@pytest.fixture
def folders(tmp_path):
    orig = tmp_path / "orig"
    _img(orig / "pose1.png", 1, caption="sail kun, 1girl, white background")
    comp = tmp_path / "comp"
    for i in range(4):
        _img(comp / f"pose1__bg{i:03d}.jpg", 10 + i, caption=f"sail kun, 1girl, outdoors, scene{i}")
    return tmp_path, orig, comp


def _run(out: Path, concepts, **kw) -> EmitResult:
    cfg = EmitConfig(out_dir=out, concepts=concepts, workers=1, **kw)
    return run_emit(cfg, Reporter(quiet=True))


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_golden_tree_and_toml(folders):
    tmp, orig, comp = folders
    out = tmp / "out"
    info = _run(out, [("sail_kun", orig), ("sail kun with background", comp)], target_steps=80, batch_size=2)
    assert _tree(out) == [
        "datakit.json", "dataset.toml",
        "img/1_sail_kun_with_background/pose1__bg000.jpg", "img/1_sail_kun_with_background/pose1__bg000.txt",
        "img/1_sail_kun_with_background/pose1__bg001.jpg", "img/1_sail_kun_with_background/pose1__bg001.txt",
        "img/1_sail_kun_with_background/pose1__bg002.jpg", "img/1_sail_kun_with_background/pose1__bg002.txt",
        "img/1_sail_kun_with_background/pose1__bg003.jpg", "img/1_sail_kun_with_background/pose1__bg003.txt",
        "img/4_sail_kun/pose1.png", "img/4_sail_kun/pose1.txt",
        "manifest.jsonl", "metadata.jsonl", "plan.csv", "plan.json", "report.html",
    ]
    cfg = tomllib.loads((out / "dataset.toml").read_text())
    assert kohya_toml.validate(cfg) == []
    assert cfg["general"]["caption_extension"] == ".txt"
    subsets = cfg["datasets"][0]["subsets"]
    assert [(Path(s["image_dir"]).name, s["num_repeats"], s["is_reg"], s["caption_extension"]) for s in subsets] == [
        ("4_sail_kun", 4, False, ".txt"), ("1_sail_kun_with_background", 1, False, ".txt")]
    assert all(Path(s["image_dir"]).is_absolute() and Path(s["image_dir"]).is_dir() for s in subsets)
    assert cfg["datasets"][0]["batch_size"] == 2
    # 8 images per epoch at batch 2 = 4 steps; 80 target steps = 20 epochs
    assert info.plan["steps_per_epoch"] == 4 and info.plan["epochs"] == 20
    # unchanged RGB files are hard links, not re-encodings
    assert os.path.samefile(out / "img/4_sail_kun/pose1.png", orig / "pose1.png")
    assert (out / "img/4_sail_kun/pose1.txt").read_text() == "sail kun, 1girl, white background\n"
    meta = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert meta[0] == {"file_name": "img/4_sail_kun/pose1.png", "text": "sail kun, 1girl, white background",
                       "concept": "sail_kun", "is_reg": False}
    assert all((out / m["file_name"]).is_file() for m in meta)
    plan = json.loads((out / "plan.json").read_text())
    assert plan["folders"] == {"sail_kun": "img/4_sail_kun", "sail_kun_with_background": "img/1_sail_kun_with_background"}
    assert (out / "plan.csv").read_text().splitlines()[0].startswith("concept,folder,images,repeats,steps_per_epoch,share")
    # written files get normal permissions (not mkstemp's 0600): a trainer running as another user reads them
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "dataset.toml").stat().st_mode & 0o777 == 0o666 & ~umask
    # the inputs are untouched
    assert sorted(p.name for p in orig.iterdir()) == ["pose1.png", "pose1.txt"]


def test_second_run_does_nothing_and_changes_move_folders(folders):
    tmp, orig, comp = folders
    out = tmp / "out"
    _run(out, [("a", orig), ("b", comp)])
    stamp = (out / "datakit.json").stat().st_mtime_ns
    info = _run(out, [("a", orig), ("b", comp)])
    assert info.nothing_to_do and (out / "datakit.json").stat().st_mtime_ns == stamp
    # two more composites: the original's repeats go from 4 to 6 and its folder is renamed
    _img(comp / "pose1__bg004.jpg", 30, caption="x")
    _img(comp / "pose1__bg005.jpg", 31, caption="y")
    info = _run(out, [("a", orig), ("b", comp)])
    assert info.counts.reused == 5 and info.counts.processed == 2
    assert sorted(p.name for p in (out / "img").iterdir()) == ["1_b", "6_a"]
    assert (out / "img/6_a/pose1.png").is_file()
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all((out / f).is_file() for r in rows for f in r["outputs"])
    assert {r["file"] for r in rows if r["concept"] == "a"} == {"img/6_a/pose1.png"}
    # --force re-links files that are already links to their source: no stray temporary links remain
    _run(out, [("a", orig), ("b", comp)], force=True)
    assert not [p for p in (out / "img").rglob(".*")]
    # removing composites shrinks the epoch: the folder is renamed and the old one is gone, not left empty
    for p in sorted(comp.glob("pose1__bg00[2-5].*")):
        p.unlink()
    _run(out, [("a", orig), ("b", comp)])
    assert sorted(p.name for p in (out / "img").iterdir()) == ["1_b", "2_a"]


def test_rgba_is_flattened_unless_alpha_mask(tmp_path):
    cut = tmp_path / "cut"
    _img(cut / "c.png", 3, mode="RGBA", caption="sail kun")
    out = tmp_path / "out"
    info = _run(out, [("cut", cut)], flatten_color="#ff0000")
    with Image.open(out / "img/1_cut/c.png") as im:
        assert im.mode == "RGB"
        assert im.getpixel((0, 0)) == (255, 0, 0)  # a transparent corner shows the flatten colour
    assert info.findings.flattened == ["cut/c.png"]
    out2 = tmp_path / "out2"
    _run(out2, [("cut", cut)], alpha_mask=["cut"])
    with Image.open(out2 / "img/1_cut/c.png") as im:
        assert im.mode == "RGBA"
    sub = tomllib.loads((out2 / "dataset.toml").read_text())["datasets"][0]["subsets"][0]
    assert sub["alpha_mask"] is True
    assert os.path.samefile(out2 / "img/1_cut/c.png", cut / "c.png")


def test_caption_variants(tmp_path):
    src = tmp_path / "src"
    _img(src / "none.png", 1)  # no caption
    _img(src / "empty.png", 2, caption="  \n")
    _img(src / "dotcap.png", 3)
    (src / "dotcap.caption").write_text("from caption file")
    _img(src / "clash.png", 4, caption="txt wins")
    (src / "clash.caption").write_text("loser")
    _img(src / "bom.png", 5)
    (src / "bom.txt").write_bytes("\ufeffa, b\r\nc\r\n".encode())
    out = tmp_path / "out"
    info = _run(out, [("s", src)])
    f = info.findings
    assert sorted(f.no_caption) == ["s/empty.png", "s/none.png"]
    assert f.caption_clash == ["s/clash.png"]
    assert f.caption_from_dot_caption == ["s/dotcap.png"]
    d = out / "img/1_s"
    assert not (d / "none.txt").exists() and not (d / "empty.txt").exists()
    assert (d / "dotcap.txt").read_text() == "from caption file\n"
    assert (d / "clash.txt").read_text() == "txt wins\n"
    assert (d / "bom.txt").read_bytes() == b"a, b, c\n"  # no BOM, one line: kohya reads the first line only
    assert not list(d.glob("*.caption"))


def test_bad_inputs_are_skipped_and_named(tmp_path):
    src = tmp_path / "src"
    _img(src / "good.png", 1, caption="ok")
    _img(src / "tiny.png", 2, size=(32, 32), caption="tiny")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    (src / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out"
    info = _run(out, [("s", src)])
    assert info.counts.out == 1 and info.counts.skipped == 3
    reasons = {s.source: s.reason for s in info.skipped}
    assert "too small" in reasons["s/tiny.png"] and "zero-byte" in reasons["s/empty.jpg"]
    assert sorted(p.name for p in (out / "img/1_s").iterdir()) == ["good.png", "good.txt"]


def test_usage_errors(tmp_path, folders):
    _, orig, comp = folders
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="does not exist"):
        _run(out, [("a", tmp_path / "missing")])
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(UsageError, match="no images"):
        _run(out, [("a", tmp_path / "emptydir")])
    with pytest.raises(UsageError, match="share the name"):
        _run(out, [("a b", orig), ("a_b", comp)])
    with pytest.raises(UsageError, match="not a --concept"):
        _run(out, [("a", orig)], weights={"zzz": 2.0})
    with pytest.raises(UsageError, match="not a --concept"):
        _run(out, [("a", orig)], alpha_mask=["zzz"])
    with pytest.raises(UsageError, match="exclude"):
        _run(out, [("a", orig)], epochs=2, target_steps=10)
    with pytest.raises(UsageError, match="go together"):
        _run(out, [("a", orig)], reg_dir=comp)
    with pytest.raises(UsageError, match="same name as concept"):
        _run(out, [("1girl", orig)], reg_dir=comp, reg_class="1girl")
    with pytest.raises(UsageError, match="differ"):
        _run(orig, [("a", orig)])
    with pytest.raises(UsageError):
        _run(out, [("..", orig)])


def test_concept_with_only_bad_images_fails(tmp_path, folders):
    _, orig, _ = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not an image")
    with pytest.raises(StageError, match="no usable images"):
        _run(tmp_path / "out", [("a", orig), ("b", bad)])


def test_regularisation_and_near_duplicates(tmp_path, folders):
    _, orig, comp = folders
    reg = tmp_path / "reg"
    for i in range(2):
        _img(reg / f"r{i}.png", 50 + i)
    # a re-encoded, resized copy of an original is a near-duplicate
    with Image.open(orig / "pose1.png") as im:
        im.resize((192, 160)).save(comp / "copy.jpg", quality=90)
    out = tmp_path / "out"
    info = _run(out, [("a", orig), ("b", comp)], reg_dir=reg, reg_class="1girl")
    plan = info.plan
    assert plan["reg"]["repeats"] == 5  # 10 training images per epoch / 2 regularisation images
    sub = tomllib.loads((out / "dataset.toml").read_text())["datasets"][0]["subsets"][-1]
    assert sub["is_reg"] is True and sub["class_tokens"] == "1girl" and Path(sub["image_dir"]).name == "5_1girl"
    assert (out / "reg/5_1girl/r0.png").is_file()
    pairs = {(d["a"], d["b"]) for d in info.findings.near_duplicates}
    assert ("a/pose1.png", "b/copy.jpg") in pairs


def test_carry_from_upstream_sets_keep_tokens_and_class_tokens(tmp_path, folders):
    _, orig, comp = folders
    # a finished upstream stage folder: manifest + datakit.json carrying the trigger
    up = tmp_path / "rewritten"
    _img(up / "p.png", 7, caption="sail_kun, 1girl")
    _img(up / "side.png", 8)  # not in the manifest: never an item
    (up / "manifest.jsonl").write_text(json.dumps({"file": "p.png", "key": "p.png", "status": "ok"}) + "\n")
    (up / "datakit.json").write_text(json.dumps({"stage": "tags rewrite", "carry": {"trigger": "sail_kun", "keep_tokens": 2}}))
    out = tmp_path / "out"
    info = _run(out, [("a", up), ("b", comp)])
    assert info.carry == Carry(trigger="sail_kun", keep_tokens=2)
    cfg = tomllib.loads((out / "dataset.toml").read_text())
    assert cfg["general"]["keep_tokens"] == 2
    assert all(s["class_tokens"] == "sail_kun" and s["keep_tokens"] == 2 for s in cfg["datasets"][0]["subsets"])
    assert info.counts.in_ == 5
    out2 = tmp_path / "out2"
    assert _run(out2, [("a", up)], keep_tokens=0).carry.keep_tokens == 0


def test_cli_errors_and_json(tmp_path, folders, capsys):
    from datakit.cli.main import main

    _, orig, comp = folders
    with pytest.raises(SystemExit) as exc:
        main(["emit", str(tmp_path / "o"), "--concept", "nodir"])
    assert exc.value.code == 2
    assert "error: --concept expects NAME=VALUE" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["emit", str(tmp_path / "o"), "--concept", f"a={orig}", "--weight", "a=abc"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["emit", str(tmp_path / "o"), "-c", f"a={orig}", "-c", f"b={comp}", "-w", "a=2", "-j", "2", "--json"])
    assert exc.value.code == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [c["repeats"] for c in info["plan"]["concepts"]] == [8, 1]


def _report_images(out: Path) -> list[str]:
    import re

    return re.findall(r'src="data:image/jpeg;base64,([^"]+)"', (out / "report.html").read_text())


def test_report_pictures_of_reused_items_equal_fresh_ones(folders):
    """Pictures travel in memory from the workers; reused items (RGB links, flattened, masked RGBA) are
    decoded from their emitted files into the very same JPEG bytes."""
    tmp, orig, comp = folders
    _img(orig / "cut.png", 7, mode="RGBA", caption="sail kun")
    masked = tmp / "masked"
    _img(masked / "m.png", 8, mode="RGBA", caption="sail kun")
    concepts = [("a", orig), ("b", comp), ("m", masked)]
    a, b = tmp / "a", tmp / "b"
    _run(a, concepts, alpha_mask=["m"])
    _img(comp / "pose1__bg004.jpg", 30, caption="x")
    assert _run(a, concepts, alpha_mask=["m"]).counts.reused == 7
    _run(b, concepts, alpha_mask=["m"])
    pictures = _report_images(a)
    assert len(pictures) == 8 and pictures == _report_images(b)
    assert not (a / ".thumbs").exists()


def test_thumbnails_listed_by_older_runs_are_removed_from_out_and_manifest(folders):
    tmp, orig, comp = folders
    out = tmp / "out"
    _run(out, [("a", orig), ("b", comp)])
    pictures = _report_images(out)
    # What an earlier version left: a thumbnail per item under .thumbs/<concept>/, listed in its row.
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    for r in rows:
        thumb = f".thumbs/{r['concept']}/{Path(r['file']).stem}.jpg"
        (out / thumb).parent.mkdir(parents=True, exist_ok=True)
        (out / thumb).write_bytes(b"jpeg")
        r["outputs"].append(thumb)
        r["thumb"] = thumb
    (out / ".thumbs/a/mine.jpg").write_bytes(b"the user's own file")
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = _run(out, [("a", orig), ("b", comp)])
    assert not info.nothing_to_do and info.counts.reused == 5  # nothing redone, but the manifest is rewritten
    assert sorted(str(p.relative_to(out / ".thumbs")) for p in (out / ".thumbs").rglob("*")) == ["a", "a/mine.jpg"]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert all("thumb" not in r and not any(".thumbs" in f for f in r["outputs"]) for r in rows)
    assert _report_images(out) == pictures
    assert _run(out, [("a", orig), ("b", comp)]).nothing_to_do
