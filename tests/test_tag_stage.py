"""`datakit tag` end to end on the tiny WD14 model of tests/test_wd14.py: captions, modes, reuse, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.errors import ModelNotFoundError, UsageError
from datakit.manifest import read_manifest, read_stage_info
from datakit.models import taggers
from datakit.stages import tag as tag_stage
from datakit.stages.tag import TagConfig, run_tag
from test_wd14 import TAGS, build_tagger

RED = "kaname madoka, red background, solo, 1girl, ^_^, sensitive"
GREEN = "hatsune miku, green background, solo, 1girl, ^_^, questionable"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return build_tagger(tmp_path_factory.mktemp("tagmodel") / "wd14")


@pytest.fixture
def images(tmp_path) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (80, 80), (255, 0, 0)).save(src / "red.png")
    Image.new("RGB", (50, 50), (0, 255, 0)).save(src / "green.jpg", quality=100)  # enlarged; JPEG stays near-green
    Image.new("RGBA", (90, 60), (0, 0, 255, 0)).save(src / "clear.png")  # transparent -> white
    return src


@pytest.fixture(autouse=True)
def _no_env_model(monkeypatch):
    monkeypatch.delenv(taggers.ENV_MODEL, raising=False)


def tag(src, out, **kw) -> dict:
    return run_tag(TagConfig(input_dir=src, out_dir=out, **kw), Reporter(quiet=True))


def caption(out: Path, stem: str) -> str:
    return (out / f"{stem}.txt").read_text(encoding="utf-8").strip()


def rows(out: Path) -> dict:
    return {r["key"]: r for r in read_manifest(out)}


def test_tags_images_with_known_outputs(images, model, tmp_path):
    out = tmp_path / "out"
    info = tag(images, out, model=str(model), workers=2, batch_size=2)
    assert info["counts"]["out"] == 3 and info["provider"] == "CPUExecutionProvider" and info["input_size"] == 64
    assert caption(out, "red") == RED
    assert caption(out, "green") == GREEN
    # White (flattened transparency): both characters, every background at 1.0 in name order (ties are
    # broken by name, not by the CSV's order), rating tie -> first.
    assert caption(out, "clear") == (
        "hatsune miku, kaname madoka, blue background, green background, red background, white background, "
        "solo, 1girl, ^_^, general"
    )
    # Images are hard-linked, not re-encoded.
    assert os.stat(out / "red.png").st_ino == os.stat(images / "red.png").st_ino
    r = rows(out)["red.png"]
    assert r["file"] == "red.png" and r["outputs"] == ["red.png", "red.txt"]
    assert r["scores"]["red background"] == pytest.approx(1.0) and r["rating"] == "sensitive"
    assert r["old_caption"] is None
    assert (images / "red.txt").exists() is False  # the input is never touched


def test_probabilities_and_frequency_are_saved(images, model, tmp_path):
    out = tmp_path / "out"
    tag(images, out, model=str(model))
    df = tag_stage.read_probabilities(out)
    assert list(df.columns) == [t[0] for t in TAGS]
    assert df.loc["red.png", "red_background"] == pytest.approx(1.0)
    assert df.loc["red.png", "long_hair"] == pytest.approx(0.34)
    import pandas as pd

    freq = pd.read_csv(out / "tag_frequency.csv")
    top = dict(zip(freq["tag"], freq["count"]))
    assert top["solo"] == 3 and top["red background"] == 2 and top["^_^"] == 3


def test_batched_equals_one_at_a_time(images, model, tmp_path):
    tag(images, tmp_path / "b1", model=str(model), batch_size=1, workers=1)
    tag(images, tmp_path / "b3", model=str(model), batch_size=3, workers=2)
    a, b = tag_stage.read_probabilities(tmp_path / "b1"), tag_stage.read_probabilities(tmp_path / "b3")
    assert np.allclose(a.sort_index().values, b.sort_index().values, atol=1e-6)


def test_existing_caption_modes_and_old_caption_kept(images, model, tmp_path):
    (images / "red.txt").write_text("my_oc, Red_Background, (smile)\n", encoding="utf-8")
    out = tmp_path / "append"
    tag(images, out, model=str(model))
    assert caption(out, "red") == "my oc, Red Background, (smile), kaname madoka, solo, 1girl, ^_^, sensitive"
    assert rows(out)["red.png"]["old_caption"] == "my_oc, Red_Background, (smile)"
    tag(images, tmp_path / "keep", model=str(model), existing="keep")
    assert caption(tmp_path / "keep", "red") == "my oc, Red Background, (smile)"
    assert caption(tmp_path / "keep", "green") == GREEN  # no caption given: the model's
    tag(images, tmp_path / "replace", model=str(model), existing="replace")
    assert caption(tmp_path / "replace", "red") == RED
    assert rows(tmp_path / "replace")["red.png"]["old_caption"] == "my_oc, Red_Background, (smile)"


def test_options_rating_underscores_undesired_thresholds(images, model, tmp_path):
    out = tmp_path / "o1"
    tag(images, out, model=str(model), rating=False, underscores=True, undesired=["solo", "Kaname_Madoka"])
    assert caption(out, "red") == "red_background, 1girl, ^_^"
    tag(images, tmp_path / "o2", model=str(model), general_threshold=0.3, character_threshold=0.95)
    assert caption(tmp_path / "o2", "red") == "red background, solo, 1girl, ^_^, long hair, white background, sensitive"
    tag(images, tmp_path / "o3", model=str(model), mcut=True)
    assert caption(tmp_path / "o3", "red") == "kaname madoka, red background, solo, sensitive"


def test_rerun_does_nothing_and_new_thresholds_reuse_stored_probabilities(images, model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    tag(images, out, model=str(model))
    first = (out / "datakit.json").stat().st_mtime_ns
    again = tag(images, out, model=str(model))
    assert again.get("nothing_to_do") and (out / "datakit.json").stat().st_mtime_ns == first

    def no_session(*a, **k):
        raise AssertionError("the model must not run")

    monkeypatch.setattr(taggers, "open_session", no_session)
    tag(images, out, model=str(model), general_threshold=0.95)  # same images, same model: stored probabilities
    assert caption(out, "red") == "kaname madoka, red background, sensitive"
    tag(images, out, rethreshold=True, general_threshold=0.3, rating=False)  # no --model needed
    assert caption(out, "red") == "kaname madoka, red background, solo, 1girl, ^_^, long hair, white background"
    assert read_stage_info(out)["config"]["general_threshold"] == 0.3


def test_rethreshold_refuses_without_stored_probabilities(images, model, tmp_path):
    with pytest.raises(UsageError, match="tags.parquet"):
        tag(images, tmp_path / "fresh", rethreshold=True)
    out = tmp_path / "out"
    tag(images, out, model=str(model))
    Image.new("RGB", (30, 30), (1, 2, 3)).save(images / "new.png")
    with pytest.raises(UsageError, match="no stored probabilities.*new.png"):
        tag(images, out, rethreshold=True, general_threshold=0.5)
    assert (out / "datakit.json").exists()  # the refused run left the previous result complete


def test_changed_image_is_re_tagged(images, model, tmp_path):
    out = tmp_path / "out"
    tag(images, out, model=str(model))
    Image.new("RGB", (80, 80), (0, 255, 0)).save(images / "red.png")  # now green
    info = tag(images, out, model=str(model))
    assert info["counts"]["reused"] == 2 and info["counts"]["processed"] == 1
    assert caption(out, "red").startswith("hatsune miku, green background")
    assert tag_stage.read_probabilities(out).loc["green.jpg"].shape == (len(TAGS),)  # reused rows stay stored


def test_model_none_keeps_and_normalises_captions(images, tmp_path):
    (images / "red.txt").write_text("\ufeffmy_oc,  long_hair,,^_^, long hair\r\n", encoding="utf-8")
    (images / "bad.png").write_text("not an image")
    out = tmp_path / "out"
    info = tag(images, out)
    assert info["tagger"] is None and not (out / "tags.parquet").exists()
    assert [s["source"] for s in info["skipped"]] == ["bad.png"]  # checked even though no model ran
    assert caption(out, "red") == "my oc, long hair, ^_^"
    assert caption(out, "green") == ""
    assert any("empty caption" in w for w in rows(out)["green.jpg"]["warnings"])


def test_bad_images_are_skipped_and_named(images, model, tmp_path):
    (images / "empty.png").write_bytes(b"")
    (images / "text.png").write_text("hello")
    good = (images / "red.png").read_bytes()
    (images / "cut.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    info = tag(images, out, model=str(model), batch_size=2)
    assert info["counts"]["out"] == 3 and info["counts"]["skipped"] == 3
    assert {s["source"] for s in info["skipped"]} == {"empty.png", "text.png", "cut.png"}
    assert caption(out, "red") == RED


def test_fixed_batch_models(images, tmp_path):
    for batch in (1, 2):
        model = build_tagger(tmp_path / f"fixed{batch}", batch=batch)
        out = tmp_path / f"out{batch}"
        info = tag(images, out, model=str(model), batch_size=8)
        assert info["batch_size"] == batch and info["counts"]["out"] == 3
        assert caption(out, "red") == RED and caption(out, "green") == GREEN


def test_reads_upstream_manifest_and_keeps_its_fields(images, model, tmp_path):
    (images / "datakit.json").write_text(json.dumps({"stage": "composite", "carry": {"trigger": "oc"}}))
    (images / "manifest.jsonl").write_text(
        json.dumps({"file": "red.png", "key": "red.png", "status": "ok", "tags": ["red background"], "background": "bg001"}) + "\n"
    )
    out = tmp_path / "out"
    info = tag(images, out, model=str(model))
    assert info["counts"]["out"] == 1 and info["carry"] == {"trigger": "oc"}
    assert rows(out)["red.png"]["upstream"] == {"tags": ["red background"], "background": "bg001"}


def test_usage_errors(images, model, tmp_path):
    with pytest.raises(UsageError):
        tag(images, tmp_path / "o", model=str(model), existing="merge")
    with pytest.raises(UsageError):
        tag(images, tmp_path / "o", model=str(model), general_threshold=1.5)
    with pytest.raises(ModelNotFoundError, match="selected_tags.csv"):
        tag(images, tmp_path / "o", model=str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


def _cli(args, monkeypatch):
    from typer.testing import CliRunner

    from datakit.cli.main import app

    return CliRunner().invoke(app, args)


def test_cli_runs_and_reports_provider(images, model, tmp_path, monkeypatch):
    out = tmp_path / "out"
    res = _cli(["tag", str(images), str(out), "--model", str(model), "--undesired", "solo, 1girl", "--no-rating"], monkeypatch)
    assert res.exit_code == 0, res.output
    assert "CPUExecutionProvider" in res.output and "tag frequency" in res.output
    assert caption(out, "red") == "kaname madoka, red background, ^_^"


def test_cli_missing_model_and_partial_exit_codes(images, model, tmp_path, monkeypatch):
    res = _cli(["tag", str(images), str(tmp_path / "o"), "--model", str(tmp_path / "nope")], monkeypatch)
    assert res.exit_code == 4 and "error:" in res.output and "model.onnx" in res.output
    (images / "empty.png").write_bytes(b"")
    res = _cli(["tag", str(images), str(tmp_path / "o2"), "--model", str(model), "--json"], monkeypatch)
    assert res.exit_code == 3
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["skipped"][0]["source"] == "empty.png"


def test_cli_env_model_and_cuda_fallback_warning(images, model, tmp_path, monkeypatch):
    monkeypatch.setenv(taggers.ENV_MODEL, str(model))
    res = _cli(["tag", str(images), str(tmp_path / "o"), "--device", "cuda"], monkeypatch)
    assert res.exit_code == 0, res.output
    # Either the GPU is used and named, or the fallback is a warning (never silent).
    assert "on CUDAExecutionProvider" in res.output or ("warning" in res.output and "fell back to CPU" in res.output)


def test_gpu_fallback_is_a_warning_and_provider_is_named():
    class FakeSession:
        provider, on_gpu, fixed_batch, size = "CPUExecutionProvider", False, 1, 448

    reporter = Reporter(quiet=True)
    cfg = TagConfig(input_dir=Path("."), out_dir=Path("."), device="cuda", batch_size=8)
    tag_stage._report_session(FakeSession(), cfg, 1, reporter)
    assert len(reporter.warnings) == 1 and "fell back to CPU" in reporter.warnings[0]
    reporter = Reporter(quiet=True)
    FakeSession.provider, FakeSession.on_gpu = "CUDAExecutionProvider", True
    tag_stage._report_session(FakeSession(), cfg, 1, reporter)
    assert reporter.warnings == []


def test_loader_notes_reach_the_manifest(images, model, tmp_path):
    img = Image.new("RGB", (80, 40), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90: the tagger sees the picture upright
    img.save(images / "rotated.jpg", exif=exif, quality=95)
    out = tmp_path / "out"
    tag(images, out, model=str(model))
    assert any("EXIF orientation 6" in w for w in rows(out)["rotated.jpg"]["warnings"])
    assert caption(out, "rotated").startswith("kaname madoka, red background")


def test_a_changed_model_file_re_runs_the_model(images, tmp_path):
    folder = build_tagger(tmp_path / "m")
    out = tmp_path / "out"
    tag(images, out, model=str(folder))
    assert "solo" in caption(out, "red")
    quieter = [(n, c, w, 0.1 if n == "solo" else b) for n, c, w, b in TAGS]
    build_tagger(folder, tags=quieter)  # same path, new weights: must not be mistaken for the old model
    info = tag(images, out, model=str(folder))
    assert info["counts"]["processed"] == 3 and "solo" not in caption(out, "red")
