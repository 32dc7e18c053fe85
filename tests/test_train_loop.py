"""The training loop end to end on tiny random models: runs, learns, resumes, caches, stops on NaN, CLI."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from datakit.console import Reporter
from datakit.errors import StageError, UsageError
from datakit.train import loop as T
from datakit.train.config import build_config
from datakit.testing import save_tiny_model, write_tiny_dataset


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("sd1") / "model", "sd1")


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("sdxl") / "model", "sdxl")


# Tiny models run fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _train(model, dataset, out, **kw):
    values = {"dataset": dataset, "base_model": str(model), "output": out, "device": "cpu", "max_steps": 4,
              "save_precision": "fp32", **kw}
    force = values.pop("force", False)
    return T.run_train(build_config(values), Reporter(quiet=True), force=force)


def _weights(path):
    return load_file(str(path))


def test_runs_and_writes_everything(tmp_path, sd1):
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    (ds / "datakit.json").write_text(json.dumps({"stage": "emit", "carry": {"trigger": "sks", "keep_tokens": 1}}))
    info = _train(sd1, ds, tmp_path / "out", max_steps=3, sample_every=3, sample_steps=2, rank=4, alpha=2)
    out = tmp_path / "out"
    assert info["steps"] == 3 and info["file"] == str(out / "sks.safetensors")  # named after the trigger
    weights = _weights(out / "sks.safetensors")
    assert len(weights) == 3 * 48 and all(float(v) == 2.0 for k, v in weights.items() if k.endswith(".alpha"))
    from datakit.train.formats import read_metadata

    meta = read_metadata(out / "sks.safetensors")
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2.0" and meta["ss_steps"] == "3"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["modelspec.trigger_phrase"] == "sks"
    assert json.loads(meta["ss_tag_frequency"])["2_sks"]["solo"] == 2
    assert json.loads(meta["ss_dataset_dirs"])["2_sks"] == {"n_repeats": 2, "img_count": 2}
    rows = (out / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,loss,lr" and len(rows) == 4
    assert (out / "loss.png").stat().st_size > 0 and (out / "samples" / "step-000003.png").is_file()
    stage = json.loads((out / "datakit.json").read_text())
    assert stage["stage"] == "train" and stage["carry"]["trigger"] == "sks"
    # The same run again does nothing; --force trains again (and re-encodes the latents).
    again = _train(sd1, ds, out, max_steps=3, sample_every=3, sample_steps=2, rank=4, alpha=2)
    assert again.get("nothing_to_do")
    forced = _train(sd1, ds, out, max_steps=3, rank=4, alpha=2, force=True, latent_cache="disk")
    assert forced["cache"]["latents_encoded"] == 2


def test_latent_cache_is_reused_by_the_next_run(tmp_path, sd1, monkeypatch):
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    first = _train(sd1, ds, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert first["cache"]["latents_encoded"] == 2 and first["cache"]["latents_reused"] == 0
    calls = []
    from diffusers import AutoencoderKL

    original = AutoencoderKL.encode
    monkeypatch.setattr(AutoencoderKL, "encode", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    second = _train(sd1, ds, tmp_path / "out2", cache_dir=tmp_path / "cache", lr=2e-4)
    assert second["cache"] == {"latents_reused": 2, "latents_encoded": 0, "text": True} and not calls
    # A changed image is re-encoded, the other reused.
    from PIL import Image

    Image.new("RGB", (32, 32), (1, 2, 3)).save(ds / "img" / "2_sks" / "img0.png")
    third = _train(sd1, ds, tmp_path / "out3", cache_dir=tmp_path / "cache")
    assert (third["cache"]["latents_reused"], third["cache"]["latents_encoded"]) == (1, 1)


def _eval_loss(model, lora_file, dataset, multiplier):
    """Mean denoising loss on fixed noise/timesteps, with the LoRA at a given strength."""
    from datakit.train import data as D
    from datakit.train.buckets import assign_buckets
    from datakit.train.cache import build_latents
    from datakit.train.conditioning import encode_prompts
    from datakit.train.lora import LoRANetwork
    from datakit.train.model import load_base_model
    from datakit.train.objective import make_noise_scheduler

    base = load_base_model(str(model))
    net = LoRANetwork(rank=4)
    net.apply_to(base)
    net.load(lora_file)
    net.set_multiplier(multiplier)
    net.eval()
    spec = D.read_dataset(dataset)
    entries, _ = D.collect_entries(spec)
    assign_buckets(entries, spec)
    store = build_latents(entries, spec, base, sampling="deterministic", mode="ram", folder=None, device="cpu")
    sched = make_noise_scheduler(base.scheduler_config, base.prediction_type, zero_terminal_snr=False)
    g = torch.Generator().manual_seed(123)
    lat = store.mean[0][None].repeat(16, 1, 1, 1)
    noise = torch.randn(lat.shape, generator=g)
    t = torch.linspace(50, 950, 16).long()
    with torch.no_grad():
        hidden, _ = encode_prompts(base, [entries[0].caption] * 16)
        pred = base.unet(sched.add_noise(lat, noise, t), t, hidden).sample
    return float(torch.nn.functional.mse_loss(pred, noise))


def test_loss_falls_when_overfitting_one_image(tmp_path, sd1):
    ds = write_tiny_dataset(tmp_path / "ds", images=1, repeats=1)
    info = _train(sd1, ds, tmp_path / "out", max_steps=40, lr=3e-3, rank=4, alpha=4, max_grad_norm=0)
    before = _eval_loss(sd1, info["file"], ds, 0.0)
    after = _eval_loss(sd1, info["file"], ds, 1.0)
    assert after < 0.92 * before, (before, after)


def test_resume_gives_the_same_result_as_one_run(tmp_path, sd1):
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    opts = dict(max_steps=6, lr_scheduler="cosine", warmup_steps=2, flip_aug=True, shuffle_caption=True, dropout=0.1,
                rank=4)
    whole = _train(sd1, ds, tmp_path / "whole", **opts)
    out = tmp_path / "parts"
    _train(sd1, ds, out, save_every=3, keep_last=1, **opts)
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir()) == ["step-000003"]
    # Pretend the run died after the checkpoint: only the checkpoint and the cache survive.
    for name in ("lora.safetensors", "datakit.json"):
        (out / name).unlink()
    resumed = _train(sd1, ds, out, save_every=3, keep_last=1, resume="auto", **opts)
    assert resumed["resumed_from"].endswith("step-000003") and resumed["steps"] == 6
    a, b = _weights(whole["file"]), _weights(resumed["file"])
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    rows = (out / "loss.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, sd1, monkeypatch):
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    from datakit.train import step as S

    real = S.micro_batch_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 4 else loss

    monkeypatch.setattr(S, "micro_batch_loss", poisoned)
    with pytest.raises(StageError, match=r"diverged at step 4.*step-000002.*lower --lr"):
        _train(sd1, ds, tmp_path / "out", max_steps=6, save_every=2)
    good = _weights(tmp_path / "out" / "checkpoints" / "step-000002" / "lora-step000002.safetensors")
    assert all(torch.isfinite(v).all() for v in good.values())
    assert not (tmp_path / "out" / "lora.safetensors").exists()


def test_dry_run_plans_without_loading(tmp_path):
    ds = write_tiny_dataset(tmp_path / "ds", images=3, repeats=5)
    info = T.run_train(build_config({"dataset": ds, "base_model": str(tmp_path / "no-such-model"), "dry_run": True,
                                     "epochs": 2, "batch_size": 2}), Reporter(quiet=True))
    plan = info["plan"]
    assert info["dry_run"] and plan["samples_per_epoch"] == 15 and plan["steps_per_epoch"] == 8 and plan["max_steps"] == 16
    assert info["estimate"]["memory_gb"] > 0 and any("batch_size" in c for c in info["overrides"])
    assert not (tmp_path / "out").exists()


def test_numerics_options_run(tmp_path, sd1):
    """v-prediction + zero-terminal-SNR + min-SNR + noise offset + accumulation + TE training + clip skip + long captions."""
    ds = write_tiny_dataset(tmp_path / "ds", images=2, alpha=True, caption="sks, " + ", ".join(f"tag{i}" for i in range(40)))
    info = _train(sd1, ds, tmp_path / "out", max_steps=2, prediction_type="v_prediction", zero_terminal_snr=True,
                  min_snr_gamma=5.0, noise_offset=0.05, grad_accum=2, train_text_encoder=True, clip_skip=2,
                  max_token_length=225, lr_scheduler="polynomial", optimizer="adafactor", conv_rank=2,
                  caption_dropout_rate=0.1, mixed_precision="bf16", gradient_checkpointing=True)
    assert info["plan"]["alpha_mask"] and info["cache"]["text"] is False
    weights = _weights(info["file"])
    names = weights.keys()
    # gradients reached both the UNet and the text-encoder LoRA through checkpointing and autocast
    assert any(k.startswith("lora_unet") and k.endswith("lora_up.weight") and v.abs().sum() > 0 for k, v in weights.items())
    assert any(k.startswith("lora_te") and k.endswith("lora_up.weight") and v.abs().sum() > 0 for k, v in weights.items())
    assert any(k.startswith("lora_te_text_model_encoder_layers_") for k in names)
    assert any("resnets_0_conv1" in k for k in names)
    from datakit.train.formats import read_metadata

    meta = read_metadata(info["file"])
    assert meta["ss_v_parameterization"] == "True" and meta["modelspec.prediction_type"] == "v"


def test_sdxl_trains_and_diffusers_loads_the_result(tmp_path, sdxl):
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    info = _train(sdxl, ds, tmp_path / "out", max_steps=2, rank=4, train_text_encoder=True)
    names = list(_weights(info["file"]))
    assert any(n.startswith("lora_unet_input_blocks_") for n in names) and any(n.startswith("lora_te2_") for n in names)
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl))
    pipe.load_lora_weights(info["file"])  # raises on any key it cannot place
    from datakit.train.formats import read_metadata

    assert read_metadata(info["file"])["ss_base_model_version"] == "sdxl_base_v1-0"


def test_usage_errors(tmp_path, sd1):
    ds = write_tiny_dataset(tmp_path / "ds", images=1)
    with pytest.raises(UsageError, match="--base-model"):
        build_config({"dataset": ds, "output": tmp_path / "o"})
    from datakit.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError):
        _train(tmp_path / "missing-model", ds, tmp_path / "o")
    with pytest.raises(UsageError, match="resume"):
        _train(sd1, ds, tmp_path / "o2", resume=str(tmp_path))


def test_cli_end_to_end(tmp_path, sd1, capsys):
    from datakit.cli.main import main

    ds = write_tiny_dataset(tmp_path / "ds", images=1)
    (tmp_path / "train.toml").write_text("rank = 2\nmax-steps = 2\n")
    with pytest.raises(SystemExit) as exc:
        main(["train", str(ds), "--base-model", str(sd1), "--output", str(tmp_path / "out"), "--config",
              str(tmp_path / "train.toml"), "--device", "cpu", "--json", "--format", "diffusers"])
    assert exc.value.code == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["steps"] == 2 and info["file"].endswith("pytorch_lora_weights.safetensors")
    with pytest.raises(SystemExit) as exc:
        main(["train", str(ds), "--output", str(tmp_path / "x")])
    assert exc.value.code == 2 and "--base-model" in capsys.readouterr().err
    shutil.rmtree(tmp_path / "out")


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_trains_from_a_single_file_checkpoint(tmp_path, family):
    """The base model as one original-layout .safetensors file + --config-dir (the tiny model's configs/tokenizers)."""
    helpers = pytest.importorskip("test_diffusion_singlefile")  # the loader's own single-file writer
    from datakit.testing import build_tiny_pipeline as build_shared_tiny

    pipe = build_shared_tiny(family, seed=2)
    helpers.write_single_file(pipe, tmp_path / "model.safetensors", family)
    helpers.config_folder_for(pipe, tmp_path / "configs", family)
    ds = write_tiny_dataset(tmp_path / "ds", images=1, size=32)
    info = _train(tmp_path / "model.safetensors", ds, tmp_path / "out", max_steps=2, rank=2,
                  config_dir=tmp_path / "configs")
    assert info["base_model"]["family"] == family and info["steps"] == 2
    pipe.load_lora_weights(info["file"])  # the file fits the model it was trained on


def test_trains_on_a_real_emit_output(tmp_path, sd1, capsys):
    """The chain as users run it: `datakit emit` lays out the dataset, `datakit train` reads it (and its plan)."""
    pytest.importorskip("datakit.stages.emit")
    from datakit.cli.main import main

    src = write_tiny_dataset(tmp_path / "gen", images=2, size=64, toml=False) / "img" / "2_sks"
    with pytest.raises(SystemExit) as exc:
        main(["emit", str(tmp_path / "emit"), "--concept", f"sks={src}", "--resolution", "64", "--epochs", "2", "--quiet"])
    assert exc.value.code == 0, capsys.readouterr().err
    info = _train(sd1, tmp_path / "emit", tmp_path / "out", max_steps=None, rank=2)
    assert info["plan"]["epochs"] == 2 and info["steps"] == 2 * info["plan"]["steps_per_epoch"]
    assert info["plan"]["shuffle_caption"] and info["plan"]["num_train_images"] == 2


def test_network_weights_start_from_an_existing_file(tmp_path, sd1):
    ds = write_tiny_dataset(tmp_path / "ds", images=1, size=16)
    first = _train(sd1, ds, tmp_path / "a", max_steps=3, rank=4, lr=1e-2)
    start = _weights(first["file"])
    again = _train(sd1, ds, tmp_path / "b", max_steps=1, rank=4, lr=1e-12, network_weights=first["file"])
    for k, v in _weights(again["file"]).items():
        torch.testing.assert_close(v, start[k], atol=1e-6, rtol=0)
    assert any(v.abs().sum() > 0 for k, v in start.items() if k.endswith("lora_up.weight"))
