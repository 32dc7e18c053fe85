"""`datakit eval` end to end on tiny models saved to disk and loaded back through datakit's loaders."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

import eval_drawings as D
import eval_models as M
from datakit.errors import ModelNotFoundError, UsageError
from datakit.imageio import open_image
from datakit.manifest import read_manifest
from datakit.stages.eval import EvalConfig, run_eval

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny SD1 model, a LoRA and a hypernetwork for it, subject cut-outs, a tiny CLIP and a two-scene prompt file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("eval-world")
    M.save_pipeline(root / "sd1", "sd1", seed=3)
    M.write_lora(root / "mascot.safetensors", root / "sd1", "sd1")
    M.write_hypernetwork(root / "mascot_hn.pt", root / "sd1")
    M.save_tiny_clip(root / "clip")
    (root / "subject").mkdir()
    for size in (48, 64):
        Image.fromarray(D.mascot_rgba(size)).save(root / "subject" / f"pose{size}.png")
    (root / "scenes.txt").write_text("# two scenes\non a beach, ocean | beach\nin a forest, trees | forest\n")
    return root


def _cfg(world, out, **kw) -> EvalConfig:
    base = dict(out_dir=out, base_model=str(world / "sd1"), adapters=[world / "mascot.safetensors"],
                prompts_file=world / "scenes.txt", seeds=2, steps=2, guidance=3.0, batch_size=3, device="cpu")
    base.update(kw)
    return EvalConfig(**base)


def _pixels(path) -> np.ndarray:
    return np.asarray(open_image(path).image.convert("RGB")).astype(np.int16)


def _csv(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_lora_and_hypernetwork_against_the_base_model(world, tmp_path):
    out = tmp_path / "eval"
    info = run_eval(_cfg(world, out, adapters=[world / "mascot.safetensors", world / "mascot_hn.pt"],
                         subject_dir=world / "subject", clip_model=str(world / "clip")))
    models, prompts, seeds = ["base", "mascot", "mascot_hn"], ["beach", "forest", "plain"], [0, 1]
    rows = [r for r in read_manifest(out) if r["status"] == "ok"]
    assert len(rows) == info.counts.out == len(models) * len(prompts) * len(seeds)
    assert {(r["params"]["model"], r["params"]["scene"], r["seed"]) for r in rows} == {
        (m, p, s) for m in models for p in prompts for s in seeds}
    assert all(r["params"]["prompt"].startswith("sks") for r in rows)
    # The adapters really are applied: same prompt, same seed, different image than the base model.
    for model in ("mascot", "mascot_hn"):
        for scene in prompts:
            diff = np.abs(_pixels(out / f"samples/{model}/{scene}_s0.png") - _pixels(out / f"samples/base/{scene}_s0.png"))
            assert diff.mean() > 2.0, (model, scene)
    table = _csv(out / "eval.csv")
    assert [(r["model"], r["scene"]) for r in table] == [(m, p) for m in models for p in prompts]
    assert list(table[0])[:6] == ["model", "kind", "scene", "samples", "white_rate", "plain_rate"]
    for r in table:
        assert 0.0 <= float(r["white_rate"]) <= 1.0 and 0.0 <= float(r["plain_rate"]) <= 1.0
        assert 0.0 <= float(r["subject_presence_colour"]) <= 1.0
        if r["scene"] == "plain":
            assert r["scene_agreement"] == "n/a"  # no scene asked for
        else:
            assert 0.0 <= float(r["scene_agreement"]) <= 1.0
        if r["kind"] == "base":
            assert r["subject_presence"] == "reference"
        else:
            assert 0.0 <= float(r["subject_presence"]) <= 1.0
    report = json.loads((out / "eval.json").read_text())
    assert [r["model"] for r in report["overall"]] == models and report["not_measured"] == {}
    assert all(r["samples"] == 4 for r in report["overall"])  # scene prompts only: the plain prompt is left out
    assert len(report["samples"]) == 18
    assert all((out / s["file"]).is_file() and s["file"].endswith(f"_s{s['seed']}.png") for s in report["samples"])
    for model in models:
        assert (out / "grids" / f"{model}.png").is_file()
    assert (out / "eval.png").is_file()
    stage = json.loads((out / "datakit.json").read_text())
    assert stage["stage"] == "eval" and stage["clip_model"] == str(world / "clip") and stage["subject"] == ["pose48.png", "pose64.png"]


def test_rerun_does_no_work_and_only_changes_redo_work(world, tmp_path):
    out = tmp_path / "eval"
    first = run_eval(_cfg(world, out))
    assert first.counts.processed == 12
    stamp = (out / "datakit.json").stat().st_mtime_ns
    again = run_eval(_cfg(world, out, batch_size=1))  # batch size does not change an image
    assert again.nothing_to_do and again.counts.processed == 0
    assert (out / "datakit.json").stat().st_mtime_ns == stamp
    # Another measurement (a subject to look for) rebuilds the report without drawing anything.
    report = run_eval(_cfg(world, out, subject_dir=world / "subject"))
    assert report.counts.processed == 0 and not report.nothing_to_do
    assert _csv(out / "eval.csv")[0]["subject_presence_colour"] != "not measured"
    # New adapter bytes: only that adapter's samples are drawn again.
    lora = tmp_path / "mascot.safetensors"
    M.write_lora(lora, world / "sd1", "sd1", seed=5)
    changed = run_eval(_cfg(world, out, adapters=[lora], subject_dir=world / "subject"))
    assert changed.counts.processed == 6 and changed.counts.reused == 6
    # Another sampling option changes every image.
    assert run_eval(_cfg(world, out, adapters=[lora], subject_dir=world / "subject", steps=3)).counts.processed == 12


def test_without_clip_the_columns_say_not_measured(world, tmp_path, monkeypatch):
    monkeypatch.delenv("DATAKIT_CLIP_MODEL", raising=False)
    out = tmp_path / "eval"
    run_eval(_cfg(world, out, seeds=1))
    for r in _csv(out / "eval.csv"):
        for column in ("scene_agreement", "subject_presence", "subject_similarity", "subject_presence_colour"):
            assert r[column] == "not measured"
    report = json.loads((out / "eval.json").read_text())
    assert report["overall"][0]["scene_agreement"] is None and "scene_agreement" in report["not_measured"]


def test_clip_model_from_the_environment(world, tmp_path, monkeypatch):
    monkeypatch.setenv("DATAKIT_CLIP_MODEL", str(world / "clip"))
    out = tmp_path / "eval"
    info = run_eval(_cfg(world, out, seeds=1))
    assert info.clip_model == str(world / "clip")
    assert all(r["scene_agreement"] != "not measured" for r in _csv(out / "eval.csv") if r["scene"] != "plain")


def test_trigger_comes_from_the_file_or_the_flag(world, tmp_path):
    bare = tmp_path / "bare.safetensors"
    M.write_lora(bare, world / "sd1", "sd1", metadata={})
    with pytest.raises(UsageError, match="names no trigger word.*--trigger"):
        run_eval(_cfg(world, tmp_path / "a", adapters=[bare]))
    assert not (tmp_path / "a" / "datakit.json").exists()
    run_eval(_cfg(world, tmp_path / "b", adapters=[bare], trigger="mascot kun", seeds=1))
    prompts = {r["params"]["prompt"] for r in read_manifest(tmp_path / "b")}
    assert prompts == {"mascot kun, on a beach, ocean", "mascot kun, in a forest, trees", "mascot kun"}
    with pytest.raises(UsageError, match="comma"):
        run_eval(_cfg(world, tmp_path / "c", adapters=[bare], trigger="a, b"))


def test_strength_zero_is_the_base_model(world, tmp_path):
    out = tmp_path / "eval"
    run_eval(_cfg(world, out, seeds=1, lora_strength=0.0))
    for scene in ("beach", "forest", "plain"):
        diff = np.abs(_pixels(out / f"samples/mascot/{scene}_s0.png") - _pixels(out / f"samples/base/{scene}_s0.png"))
        assert diff.max() <= 1


def test_diffusers_format_lora_folder(world, tmp_path):
    from datakit.models.diffusion import load_diffusion_pipeline
    from datakit.train.formats import save_diffusers

    pipe = load_diffusion_pipeline(str(world / "sd1"))
    net = M.lora_network(pipe, "sd1", text_encoder=False)
    base = type("Base", (), {"unet": pipe.unet, "text_encoders": M.text_encoders(pipe)})()
    weights = save_diffusers(net, base, tmp_path / "mascot-diffusers")
    out = tmp_path / "eval"
    # The folder, and the file itself (named after its folder: diffusers' file name says nothing).
    run_eval(_cfg(world, out, adapters=[weights.parent], trigger="sks", seeds=1))
    run_eval(_cfg(world, tmp_path / "eval2", adapters=[weights], trigger="sks", seeds=1))
    for folder in (out, tmp_path / "eval2"):
        diff = np.abs(_pixels(folder / "samples/mascot-diffusers/beach_s0.png") - _pixels(folder / "samples/base/beach_s0.png"))
        assert diff.mean() > 2.0
    np.testing.assert_array_equal(_pixels(out / "samples/mascot-diffusers/beach_s0.png"),
                                  _pixels(tmp_path / "eval2" / "samples/mascot-diffusers/beach_s0.png"))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "empty"),
    (lambda p: p.write_bytes(b"\x00" * 64), "cannot read it as a .safetensors"),
    (lambda p: p.write_bytes(b'{"not": "a lora"}'), "cannot read it as a .safetensors"),
])
def test_bad_lora_files_are_usage_errors(world, tmp_path, make, message):
    bad = tmp_path / "bad.safetensors"
    make(bad)
    with pytest.raises(UsageError, match=message):
        run_eval(_cfg(world, tmp_path / "o", adapters=[bad]))
    assert not (tmp_path / "o" / "datakit.json").exists()


def test_a_lora_for_another_model_family_is_refused_before_drawing(world, tmp_path):
    M.save_pipeline(tmp_path / "xl", "sdxl")
    xl_lora = M.write_lora(tmp_path / "xl.safetensors", tmp_path / "xl", "sdxl")
    with pytest.raises(UsageError, match="xl.safetensors: diffusers cannot apply this LoRA"):
        run_eval(_cfg(world, tmp_path / "o", adapters=[xl_lora]))
    assert not list((tmp_path / "o").rglob("*.png"))


def test_unsafe_pickles_and_other_files_are_refused(world, tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({768: Evil()}))
    with pytest.raises(UsageError, match="weights_only|plain-data|cannot read"):
        run_eval(_cfg(world, tmp_path / "o", adapters=[evil]))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UsageError, match="not an adapter file"):
        run_eval(_cfg(world, tmp_path / "o", adapters=[text]))
    with pytest.raises(UsageError, match="no such file"):
        run_eval(_cfg(world, tmp_path / "o", adapters=[tmp_path / "gone.safetensors"]))
    base_ckpt = tmp_path / "base.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, str(base_ckpt))
    with pytest.raises(UsageError, match="full Stable Diffusion checkpoint"):
        run_eval(_cfg(world, tmp_path / "o", adapters=[base_ckpt]))


def test_missing_models_exit_4(world, tmp_path):
    with pytest.raises(ModelNotFoundError):
        run_eval(_cfg(world, tmp_path / "o", base_model=str(tmp_path / "no-model")))
    with pytest.raises(ModelNotFoundError, match="not a CLIP model folder"):
        run_eval(_cfg(world, tmp_path / "o", clip_model=str(world / "subject")))


def test_cli_errors_are_one_line(world, tmp_path, capsys):
    from datakit.cli.main import main

    bare = tmp_path / "bare.safetensors"
    M.write_lora(bare, world / "sd1", "sd1", metadata={})
    args = ["eval", "--base-model", str(world / "sd1"), "--output", str(tmp_path / "o"), "--steps", "1", "--seeds", "1",
            "--prompts", str(world / "scenes.txt"), "--device", "cpu"]
    for adapter, code, text in [(bare, 2, "--trigger"), (tmp_path / "nope.pt", 2, "no such file")]:
        with pytest.raises(SystemExit) as exc:
            main([*args, "--adapter", str(adapter)])
        err = capsys.readouterr().err
        assert exc.value.code == code and err.startswith("error:") and text in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main([*args, "--adapter", str(world / "mascot.safetensors"), "--json"])
    assert exc.value.code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["stage"] == "eval" and [r["model"] for r in summary["overall"]] == ["base", "mascot"]


def test_sdxl_base_with_a_lora(tmp_path):
    M.save_pipeline(tmp_path / "xl", "sdxl", seed=1)
    lora = M.write_lora(tmp_path / "xl-mascot.safetensors", tmp_path / "xl", "sdxl")
    out = tmp_path / "eval"
    prompts = tmp_path / "p.txt"
    prompts.write_text("on a beach\nin a forest\n")
    info = run_eval(EvalConfig(out_dir=out, base_model=str(tmp_path / "xl"), adapters=[lora], prompts_file=prompts,
                               seeds=1, steps=2, guidance=3.0, device="cpu"))
    assert info.family == "sdxl" and info.counts.out == 6
    diff = np.abs(_pixels(out / "samples/xl-mascot/on a beach_s0.png") - _pixels(out / "samples/base/on a beach_s0.png"))
    assert diff.mean() > 2.0


def test_hypernetworks_are_refused_on_sdxl(world, tmp_path):
    M.save_pipeline(tmp_path / "xl", "sdxl")
    with pytest.raises(UsageError, match="hypernetworks are for SD1/SD2"):
        run_eval(_cfg(world, tmp_path / "o", base_model=str(tmp_path / "xl"), adapters=[world / "mascot_hn.pt"]))


def test_output_must_not_hold_foreign_files(world, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(UsageError, match="datakit did not write"):
        run_eval(_cfg(world, out))
    shutil.rmtree(out)


def test_sd2_base_with_a_lora_and_a_hypernetwork(tmp_path):
    M.save_pipeline(tmp_path / "sd2", "sd2", seed=4)
    lora = M.write_lora(tmp_path / "l2.safetensors", tmp_path / "sd2", "sd2")
    hn = M.write_hypernetwork(tmp_path / "h2.pt", tmp_path / "sd2")
    prompts = tmp_path / "p.txt"
    prompts.write_text("on a beach | beach\n")
    out = tmp_path / "eval"
    info = run_eval(EvalConfig(out_dir=out, base_model=str(tmp_path / "sd2"), adapters=[lora, hn], prompts_file=prompts,
                               seeds=1, steps=2, guidance=3.0, device="cpu"))
    assert info.family == "sd2" and info.counts.out == 3 * 2
    for model in ("l2", "h2"):
        diff = np.abs(_pixels(out / f"samples/{model}/beach_s0.png") - _pixels(out / "samples/base/beach_s0.png"))
        assert diff.mean() > 1.0, model


def test_unusable_cutouts_are_skipped_and_named(world, tmp_path):
    from PIL import Image

    subject = tmp_path / "subject"
    subject.mkdir()
    Image.fromarray(D.mascot_rgba(40)).save(subject / "good.png")
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(subject / "empty.png")
    (subject / "broken.png").write_bytes(b"\x89PNG not really")
    info = run_eval(_cfg(world, tmp_path / "o", seeds=1, subject_dir=subject))
    assert info.subject == ["good.png"]
    assert sorted(s.source for s in info.skipped) == ["--subject broken.png", "--subject empty.png"]
    from datakit.stage import exit_code_for

    assert exit_code_for(info) == 3
    (subject / "good.png").unlink()
    with pytest.raises(UsageError, match="no readable cut-out"):
        run_eval(_cfg(world, tmp_path / "o2", seeds=1, subject_dir=subject))
