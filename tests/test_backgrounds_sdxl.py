"""The diffusion engine end to end on tiny random pipelines saved to disk and loaded back like a user's model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datakit.errors import ModelNotFoundError, UsageError
from datakit.imageio import open_image
from datakit.manifest import read_manifest
from datakit.testing import build_tiny_pipeline
from datakit.stages.backgrounds import DEFAULT_NEGATIVE, BackgroundsConfig, run_backgrounds


# Tiny models run fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "tiny-sdxl"
    build_tiny_pipeline("sdxl", seed=2).save_pretrained(str(folder))
    return folder


def _cfg(out, model_path, **kw):
    base = dict(out_dir=out, count=3, engine="sdxl", model=str(model_path) if model_path else None, width=32, height=32, steps=2, batch_size=2,
                device="cpu", seed=4)
    base.update(kw)
    return BackgroundsConfig(**base)


def _pixels(folder, name):
    return np.asarray(open_image(folder / name).image)


def test_sdxl_engine_writes_images_captions_and_manifest(tmp_path, tiny_sdxl):
    info = run_backgrounds(_cfg(tmp_path / "a", tiny_sdxl))
    assert info["counts"]["out"] == 3 and info["family"] == "sdxl" and info["steps"] == 2
    rows = read_manifest(tmp_path / "a")
    for r in rows:
        assert r["engine"] == "sdxl" and r["model"] == str(tiny_sdxl)
        assert r["negative_prompt"] == DEFAULT_NEGATIVE and "person" in r["negative_prompt"]
        assert r["size"] == [32, 32] and r["prompt"] and r["tags"] and "ground_y" in r
        assert _pixels(tmp_path / "a", r["file"]).shape == (32, 32, 3)
        assert (tmp_path / "a" / r["outputs"][1]).read_text().strip() == ", ".join(r["tags"])
    assert len({r["scene"] for r in rows}) == 3  # round-robin: three different scenes
    # Same seed, same images (in another folder, another batch size: one generator per image).
    run_backgrounds(_cfg(tmp_path / "b", tiny_sdxl, batch_size=3))
    for r in rows:
        np.testing.assert_allclose(_pixels(tmp_path / "a", r["file"]).astype(int),
                                   _pixels(tmp_path / "b", r["file"]).astype(int), atol=2)
    # A different seed gives different images; a rerun does nothing.
    run_backgrounds(_cfg(tmp_path / "c", tiny_sdxl, seed=5))
    assert not np.array_equal(_pixels(tmp_path / "a", "bg000.png"), _pixels(tmp_path / "c", "bg000.png"))
    assert run_backgrounds(_cfg(tmp_path / "a", tiny_sdxl)).get("nothing_to_do")


def test_negative_prompt_reaches_the_model(tmp_path, tiny_sdxl):
    run_backgrounds(_cfg(tmp_path / "a", tiny_sdxl, count=1, guidance=7.0))
    run_backgrounds(_cfg(tmp_path / "b", tiny_sdxl, count=1, guidance=7.0, negative_prompt="sky and the sea"))
    assert read_manifest(tmp_path / "b")[0]["negative_prompt"] == "sky and the sea"
    assert not np.array_equal(_pixels(tmp_path / "a", "bg000.png"), _pixels(tmp_path / "b", "bg000.png"))


def test_prompt_file_turbo_scheduler_and_env_model(tmp_path, tiny_sdxl, monkeypatch):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a quiet beach | beach, ocean\nspace | space, star_(sky) | ground=none\n", encoding="utf-8")
    monkeypatch.setenv("DATAKIT_BG_MODEL", str(tiny_sdxl))
    info = run_backgrounds(_cfg(tmp_path / "o", None, prompts_file=prompts, turbo=True, steps=None,
                                scheduler="euler_a", format="jpg"))
    assert info["steps"] == 4 and info["guidance"] == 0.0 and info["model"] == str(tiny_sdxl)
    rows = read_manifest(tmp_path / "o")
    assert {r["prompt"] for r in rows} == {"a quiet beach", "space"}
    space = next(r for r in rows if r["prompt"] == "space")
    assert space["tags"] == ["space", "star (sky)"] and space["ground_y"] is None
    assert all(r["file"].endswith(".jpg") for r in rows)


def test_sd15_class_model_through_the_same_engine(tmp_path):
    model = tmp_path / "tiny-sd1"
    build_tiny_pipeline("sd1").save_pretrained(str(model))
    info = run_backgrounds(_cfg(tmp_path / "o", model, count=2, width=40, height=24))
    assert info["family"] == "sd1" and info["counts"]["out"] == 2
    assert _pixels(tmp_path / "o", "bg001.png").shape == (24, 40, 3)


@pytest.mark.parametrize(
    "kw, error, message",
    [
        ({"width": 36}, UsageError, "multiples of 8"),
        ({"model": None}, UsageError, "needs a model"),
        ({"scheduler": "lms"}, UsageError, "unknown --scheduler"),
        ({"dtype": "fp8"}, UsageError, "unknown --dtype"),
    ],
)
def test_bad_options(tmp_path, tiny_sdxl, monkeypatch, kw, error, message):
    monkeypatch.delenv("DATAKIT_BG_MODEL", raising=False)
    with pytest.raises(error, match=message):
        run_backgrounds(_cfg(tmp_path / "o", tiny_sdxl, **kw))
    assert not list((tmp_path / "o").glob("bg*")) and not (tmp_path / "o" / "datakit.json").exists()


def test_missing_and_broken_models_leave_nothing_behind(tmp_path, tiny_sdxl):
    with pytest.raises(ModelNotFoundError, match="model not found"):
        run_backgrounds(_cfg(tmp_path / "o", tmp_path / "nowhere.safetensors"))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelNotFoundError, match="cannot read checkpoint"):
        run_backgrounds(_cfg(tmp_path / "o", broken))
    with pytest.raises(ModelNotFoundError, match="cannot load the VAE"):
        run_backgrounds(_cfg(tmp_path / "o", tiny_sdxl, vae=str(tmp_path / "no-vae")))
    assert not list((tmp_path / "o").glob("bg*")) and not (tmp_path / "o" / "datakit.json").exists()


def test_cli_exit_codes(tmp_path, tiny_sdxl, capsys, monkeypatch):
    from datakit.cli.main import main

    monkeypatch.delenv("DATAKIT_BG_MODEL", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", str(tmp_path / "o"), "-n", "2", "--engine", "sdxl"])
    assert exc.value.code == 2 and "needs a model" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", str(tmp_path / "o"), "-n", "2", "--engine", "sdxl", "--model", str(tmp_path / "gone")])
    assert exc.value.code == 4 and "error: model not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", str(tmp_path / "o"), "-n", "1", "--engine", "sdxl", "--model", str(tiny_sdxl), "--size", "32",
              "--steps", "1", "--json", "--device", "cpu"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["counts"]["out"] == 1


@pytest.mark.gpu
def test_gpu_fp16_generation(tmp_path, tiny_sdxl):
    info = run_backgrounds(_cfg(tmp_path / "o", tiny_sdxl, device="cuda", dtype="fp16"))
    assert info["device"] == "cuda" and info["counts"]["out"] == 3
