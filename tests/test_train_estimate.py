"""The --dry-run estimate from the base model's configs: meta-device parameter counts, scaling, fallbacks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from datakit.console import Reporter
from datakit.models.diffusion import CONFIG_ROOT
from datakit.train import estimate as E
from datakit.train import meta_model as M
from datakit.train import loop as T
from datakit.train.plan import Plan
from datakit.train.config import build_config
from datakit.testing import write_tiny_dataset

SD15_UNET_PARAMS = 859_520_964  # the published SD1.5 UNet size (also the golden figure)


def _plan(resolution=(64, 64), batch=1, **kw) -> Plan:
    values = dict(resolution=resolution, batch_size=batch, world_size=1, grad_accum=1, num_train_images=4,
                  num_reg_images=0, samples_per_epoch=4, micro_per_epoch=4, steps_per_epoch=4, epochs=25,
                  max_steps=100, enable_bucket=False, buckets={}, keep_tokens=0, shuffle_caption=False,
                  caption_dropout_rate=0.0, caption_tag_dropout_rate=0.0, flip_aug=False, alpha_mask=False)
    values.update(kw)
    return Plan(**values)


def _config_folder(folder: Path, *, channels=(32, 64), cross=32) -> Path:
    """A diffusers model folder holding configs only, no weight files: the estimate must not need any."""
    shutil.copytree(CONFIG_ROOT / "sd1", folder)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    unet.update(block_out_channels=list(channels), down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], layers_per_block=1, norm_num_groups=16,
                cross_attention_dim=cross, attention_head_dim=4)
    (folder / "unet" / "config.json").write_text(json.dumps(unet))
    te = json.loads((folder / "text_encoder" / "config.json").read_text())
    te.update(hidden_size=cross, intermediate_size=cross * 2, num_attention_heads=4, num_hidden_layers=2, projection_dim=cross)
    (folder / "text_encoder" / "config.json").write_text(json.dumps(te))
    vae = json.loads((folder / "vae" / "config.json").read_text())
    vae.update(block_out_channels=[32, 32], down_block_types=["DownEncoderBlock2D"] * 2,
               up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=16)
    (folder / "vae" / "config.json").write_text(json.dumps(vae))
    return folder


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _config_folder(tmp_path_factory.mktemp("est") / "small")


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return _config_folder(tmp_path_factory.mktemp("est") / "large", channels=(64, 128), cross=64)


def _est(model, plan=None, device="cuda", mixed="bf16", **cfg):
    config = build_config({"dataset": "unused", "base_model": str(model), "dry_run": True, **cfg})
    return E.estimate(plan or _plan(), config, "sd1", device, mixed)


def test_reads_configs_without_weights(small):
    assert not list(small.rglob("*.safetensors")) and not list(small.rglob("*.bin"))
    est = _est(small)
    assert est["basis"] == "model configs" and est["family"] == "sd1"
    assert est["params"]["unet"] > 0 and est["params"]["vae"] > 0 and len(est["params"]["text_encoders"]) == 1
    assert est["params"]["trainable"] > 0 and est["memory_bytes"] > 0 and est["step_flops"] > 0


def test_scales_with_model_size(small, large):
    a, b = _est(small), _est(large)
    assert b["params"]["unet"] > 3 * a["params"]["unet"]
    assert b["params"]["trainable"] > a["params"]["trainable"]
    assert b["memory_parts_bytes"]["unet_weights"] > a["memory_parts_bytes"]["unet_weights"]
    assert b["memory_parts_bytes"]["activations"] > a["memory_parts_bytes"]["activations"]
    assert b["step_flops"] > 2 * a["step_flops"]


def test_scales_with_resolution_and_batch(small):
    base = _est(small, _plan((64, 64)))
    wide = _est(small, _plan((128, 128)))
    batch = _est(small, _plan((64, 64), batch=2))
    act = base["memory_parts_bytes"]["activations"]
    # Activations grow with the pixel count (4x) and the batch (2x); so does the compute.
    assert 3.5 < wide["memory_parts_bytes"]["activations"] / act < 4.5
    assert 1.8 < batch["memory_parts_bytes"]["activations"] / act < 2.2
    assert wide["step_flops"] > 3 * base["step_flops"] and batch["step_flops"] > 1.8 * base["step_flops"]
    assert wide["memory_bytes"] > base["memory_bytes"] and batch["memory_bytes"] > base["memory_bytes"]


def test_gradient_checkpointing_lowers_memory_and_costs_compute(large):
    plan = _plan((256, 256))
    plain, ckpt = _est(large, plan), _est(large, plan, gradient_checkpointing=True)
    assert ckpt["memory_parts_bytes"]["activations"] < plain["memory_parts_bytes"]["activations"] / 2
    assert ckpt["memory_bytes"] < plain["memory_bytes"]
    assert ckpt["step_flops"] > plain["step_flops"]


def test_precision_and_optimizer_change_memory(small):
    half, full = _est(small, mixed="bf16"), _est(small, mixed="no")
    assert full["memory_parts_bytes"]["unet_weights"] == pytest.approx(2 * half["memory_parts_bytes"]["unet_weights"], rel=0.02)
    adam, lion = _est(small, optimizer="adamw"), _est(small, optimizer="lion")
    assert lion["memory_parts_bytes"]["trainable_and_optimizer"] < adam["memory_parts_bytes"]["trainable_and_optimizer"]


def test_lora_count_matches_the_real_network(small):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from datakit.train.lora import LoRANetwork

    cfg = build_config({"dataset": "unused", "base_model": str(small), "dry_run": True, "rank": 4, "conv_rank": 2, "train_text_encoder": True})
    meta = M.build_meta_model(M.locate_configs(str(small)))
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(small / "unet")))
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(str(small / "text_encoder")))
    net = LoRANetwork(rank=4, conv_rank=2, train_text_encoder=True)
    net.create_modules(unet, [te], sdxl=False)
    real = sum(p.numel() for p in net.parameters())
    assert M.lora_params(meta, cfg) == real
    assert M.count_params(meta.unet) == sum(p.numel() for p in unet.parameters())


def test_hypernetwork_count_matches_the_real_network(small):
    from datakit.train.hypernetwork import Hypernetwork, sizes_for

    cfg = build_config({"dataset": "unused", "base_model": str(small), "dry_run": True, "method": "hypernetwork", "layer_structure": "1,2,1"})
    meta = M.build_meta_model(M.locate_configs(str(small)))
    real = Hypernetwork(sizes_for(meta.unet, "sd1"), [1, 2, 1])
    assert M.trainable_params(meta, cfg) == sum(p.numel() for p in real.parameters()) > 0


def test_text_encoder_counted_when_not_cached(small):
    cached = _est(small)
    shuffled = _est(small, _plan(shuffle_caption=True, captions_fixed=False))
    trained = _est(small, train_text_encoder=True)
    assert cached["text_encoder_cached"] and cached["memory_parts_bytes"]["text_encoder_weights"] == 0
    assert not shuffled["text_encoder_cached"] and shuffled["memory_parts_bytes"]["text_encoder_weights"] > 0
    assert shuffled["step_flops"] > cached["step_flops"]
    assert trained["params"]["trainable"] > cached["params"]["trainable"]


def test_sd15_single_file_uses_shipped_configs_on_meta(tmp_path):
    """A checkpoint whose header says SD1 (a few tiny tensors: only names are read) -> SD1.5's real sizes."""
    from safetensors.torch import save_file

    ckpt = tmp_path / "model.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
               "cond_stage_model.transformer.text_model.final_layer_norm.weight": torch.zeros(1)}, str(ckpt))
    est = _est(ckpt, _plan((512, 512)))
    assert est["basis"] == "model configs" and est["family"] == "sd1" and "configs" in est["source"]
    assert est["params"]["unet"] == SD15_UNET_PARAMS
    assert est["params"]["text_encoders"][0] == pytest.approx(123e6, rel=0.01)
    assert est["params"]["vae"] == pytest.approx(83.65e6, rel=0.01)
    # rank-16 LoRA on kohya's 192 SD1.5 UNet modules: a few million parameters
    assert 5e6 < est["params"]["trainable"] < 8e6
    # bf16 weights 1.6 GB + activations: a few GB on a GPU, far from the fp32 weights alone
    assert 3 < est["memory_gb"] < 10 and est["memory_parts_gb"]["unet_weights"] == pytest.approx(1.6, abs=0.01)
    assert 0.5e12 < est["step_flops"] < 5e12


def test_hub_id_from_local_cache(small, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache",
                        lambda repo, name, **kw: str(small / name) if repo == "someone/tiny-sd" else None)
    est = _est("someone/tiny-sd")
    assert est["basis"] == "model configs" and "Hugging Face cache" in est["source"]
    assert est["params"]["unet"] == _est(small)["params"]["unet"]
    missing = _est("someone/not-cached")
    assert missing["basis"] == "family table" and "not in the Hugging Face cache" in missing["notes"][0]


def test_falls_back_to_family_table_with_a_note(tmp_path):
    est = _est(tmp_path / "no-such-model")
    assert est["basis"] == "family table" and est["memory_gb"] > 0 and est["params"]["unet"] == 859.5e6
    assert "could not be read" in est["notes"][0]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    assert _est(broken)["basis"] == "family table"


def test_cpu_is_slower_than_cuda(small):
    cuda, cpu = _est(small, _plan((128, 128))), _est(small, _plan((128, 128)), device="cpu", mixed="no")
    assert cpu["seconds_per_step"] > cuda["seconds_per_step"]
    assert cpu["total_minutes"] == pytest.approx(cpu["seconds_per_step"] * 100 / 60, rel=0.05)


def test_dry_run_prints_parameter_counts(tmp_path, small, capsys):
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    info = T.run_train(build_config({"dataset": ds, "base_model": str(small), "dry_run": True, "device": "cpu"}), Reporter())
    err = capsys.readouterr().err
    assert info["estimate"]["basis"] == "model configs"
    assert "parameters (configs of" in err and "UNet " in err and "trained " in err and "activations" in err
    assert not (small / "unet" / "diffusion_pytorch_model.safetensors").exists()


def test_describe_lines_for_the_fallback():
    lines = E.describe({"basis": "family table", "notes": ["configs missing"]})
    assert lines == ["note: configs missing"]


def test_sdxl_single_file_on_meta(tmp_path):
    from safetensors.torch import save_file

    ckpt = tmp_path / "xl.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1),
               "conditioner.embedders.1.model.ln_final.weight": torch.zeros(1)}, str(ckpt))
    est = _est(ckpt, _plan((1024, 1024)))
    assert est["family"] == "sdxl" and est["params"]["unet"] == pytest.approx(2.567e9, rel=0.001)
    assert len(est["params"]["text_encoders"]) == 2 and est["params"]["text_encoders"][1] > 600e6
    sd15 = _est(CONFIG_ROOT / "sd1", _plan((1024, 1024)))  # the shipped folder doubles as a weightless model
    assert sd15["params"]["unet"] == SD15_UNET_PARAMS
    assert est["step_flops"] > sd15["step_flops"] and est["memory_bytes"] > sd15["memory_bytes"]


def test_hypernetwork_dry_run_uses_the_model(tmp_path, small, capsys):
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    info = T.run_train(build_config({"dataset": ds, "base_model": str(small), "dry_run": True, "device": "cpu",
                                     "method": "hypernetwork"}), Reporter())
    est = info["estimate"]
    assert est["basis"] == "model configs" and est["params"]["trainable"] > 0
    assert "trained " in capsys.readouterr().err


def test_a_failing_meta_pass_falls_back(small, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no meta kernel for this op")

    monkeypatch.setattr(E, "profile_unet", broken)
    est = _est(small)
    assert est["basis"] == "family table" and "could not be profiled" in est["notes"][0] and "no meta kernel" in est["notes"][0]


def test_dry_run_times_a_slice_of_the_unet_on_the_device(tmp_path, small, capsys):
    """The time per step comes from a slice of this UNet run on this device (one block per level), scaled by FLOPs."""
    from datakit.train.speed_probe import build_slice, slice_flops, time_slice

    meta = M.build_meta_model(M.locate_configs(str(small)))
    ucfg = meta.unet.config
    blocks, _ = build_slice(ucfg, "meta", torch.float32)
    assert len(blocks) == len(ucfg.block_out_channels)
    assert [attn is not None for _, attn in blocks] == ["CrossAttn" in t for t in ucfg.down_block_types]
    full = M.profile_unet(meta, batch=2, resolution=(64, 64), dtype=torch.float32).forward_flops
    part = slice_flops(ucfg, batch=2, latent_hw=(8, 8), tokens=77, dtype=torch.float32)
    assert 0 < part < full  # a scaled-down slice of the same UNet
    probe = time_slice(ucfg, batch=2, latent_hw=(8, 8), tokens=77, dtype=torch.float32, device="cpu")
    assert probe.forward_flops == part and probe.seconds > 0
    ds = write_tiny_dataset(tmp_path / "ds", images=2)
    info = T.run_train(build_config({"dataset": ds, "base_model": str(small), "dry_run": True, "device": "cpu"}), Reporter())
    est = info["estimate"]
    assert est["time_basis"] == "measured" and est["flops_per_s"] > 0
    assert est["seconds_per_step"] == pytest.approx(est["step_flops"] / est["flops_per_s"] + E.STEP_OVERHEAD_S["cpu"], rel=0.01)
    assert "time from a slice of the UNet timed on cpu" in capsys.readouterr().err
