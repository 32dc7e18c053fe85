"""Single-file checkpoints: a tiny model written in the original LDM/SGM key layout loads through our loader.

diffusers only converts original-layout files *to* diffusers, so the test writes the reverse
mapping (diffusers names -> original names) for the UNet, VAE and CLIP text encoders, checks it by
a round trip through diffusers' own converter, and then loads the file like a user would.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch

from datakit.errors import ModelNotFoundError, UsageError
from datakit.models.diffusion import (
    CONFIG_ROOT,
    detect_family,
    family_of_checkpoint,
    load_diffusion_pipeline,
)
from datakit.testing import build_tiny_pipeline, write_tiny_clip_tokenizer

_RESNET_UNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_FIXED_UNET = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}


# Tiny models run fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _resnet(rest: str, table: dict) -> str:
    head, _, tail = rest.partition(".")
    return f"{table.get(head, head)}.{tail}"


def unet_to_ldm(sd: dict, config) -> dict:
    """diffusers UNet2DConditionModel state dict -> original `model.diffusion_model.*` names."""
    per = config.layers_per_block
    up_has_attn = ["CrossAttn" in t for t in config.up_block_types]
    out = {}
    for key, value in sd.items():
        new = None
        for src, dst in _FIXED_UNET.items():
            if key.startswith(src + "."):
                new = dst + key[len(src):]
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = 1 + i * (per + 1) + j
            new = f"input_blocks.{idx}.0.{_resnet(rest, _RESNET_UNET)}" if kind == "resnets" else f"input_blocks.{idx}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * (per + 1)}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2], _RESNET_UNET)}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", key):
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = i * (per + 1) + j
            new = f"output_blocks.{idx}.0.{_resnet(rest, _RESNET_UNET)}" if kind == "resnets" else f"output_blocks.{idx}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key):
            i = int(m[1])
            new = f"output_blocks.{i * (per + 1) + per}.{2 if up_has_attn[i] else 1}.conv.{m[2]}"
        assert new is not None, key
        out["model.diffusion_model." + new] = value
    return out


def vae_to_ldm(sd: dict, n_blocks: int) -> dict:
    """diffusers AutoencoderKL state dict -> original `first_stage_model.*` names (attention as 1x1 convs)."""
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for key, value in sd.items():
        new = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder.down.\1.block.\2", new)
        new = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)",
                     lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.block.{m[2]}", new)
        new = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
                     lambda m: f"decoder.up.{n_blocks - 1 - int(m[1])}.upsample", new)
        new = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m[1]) + 1}", new)
        if m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)$", key):
            new = f"{m[1]}.mid.attn_1.{attn[m[2]]}.{m[3]}"
            if m[3] == "weight" and value.ndim == 2:
                value = value[:, :, None, None]
        out["first_stage_model." + new] = value
    return out


def clip_to_ldm(sd: dict, prefix: str) -> dict:
    """HF CLIPTextModel state dict -> original names (`text_model.` as the released checkpoints have it)."""
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def openclip_to_sgm(sd: dict, prefix: str, width: int) -> dict:
    """HF CLIPTextModelWithProjection state dict -> OpenCLIP names (fused q/k/v, transposed projection)."""
    out = {}
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out[prefix + "positional_embedding"] = sd.pop("embeddings.position_embedding.weight")
    out[prefix + "token_embedding.weight"] = sd.pop("embeddings.token_embedding.weight")
    out[prefix + "ln_final.weight"] = sd.pop("final_layer_norm.weight")
    out[prefix + "ln_final.bias"] = sd.pop("final_layer_norm.bias")
    out[prefix + "text_projection"] = sd.pop("text_projection.weight").T.contiguous()
    sd.pop("embeddings.position_ids", None)
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([sd.pop(src + f"self_attn.{p}_proj.{kind}") for p in "qkv"])
            out[dst + f"attn.out_proj.{kind}"] = sd.pop(src + f"self_attn.out_proj.{kind}")
            out[dst + f"ln_1.{kind}"] = sd.pop(src + f"layer_norm1.{kind}")
            out[dst + f"ln_2.{kind}"] = sd.pop(src + f"layer_norm2.{kind}")
            out[dst + f"mlp.c_fc.{kind}"] = sd.pop(src + f"mlp.fc1.{kind}")
            out[dst + f"mlp.c_proj.{kind}"] = sd.pop(src + f"mlp.fc2.{kind}")
    assert not sd, f"unmapped OpenCLIP keys: {list(sd)[:5]}"
    return out


def write_single_file(pipe, path, family: str) -> None:
    """Save a diffusers pipeline as one original-layout .safetensors file."""
    from safetensors.torch import save_file

    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), len(pipe.vae.config.block_out_channels)))
    if family == "sdxl":
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer."))
        state.update(openclip_to_sgm(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model.",
                                     pipe.text_encoder_2.config.hidden_size))
    else:
        state.update(clip_to_ldm(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    state = {k: v.contiguous() for k, v in state.items() if not k.endswith("position_ids")}
    save_file(state, str(path))


def config_folder_for(pipe, folder, family: str):
    """A --config-dir for the tiny model: its diffusers configs + tokenizer files, no weights."""
    pipe.save_pretrained(str(folder))
    for p in folder.rglob("*.safetensors"):
        p.unlink()
    for name in ("tokenizer", "tokenizer_2"):
        if (folder / name).is_dir():
            shutil.rmtree(folder / name)
            write_tiny_clip_tokenizer(folder / name)
    return folder


def _image(pipe, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return pipe("the sky", num_inference_steps=2, height=32, width=32, generator=gen, output_type="np").images[0]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_reverse_mapping_round_trips_through_diffusers(family):
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    pipe = build_tiny_pipeline(family)
    unet_sd = pipe.unet.state_dict()
    back = convert_ldm_unet_checkpoint(unet_to_ldm(unet_sd, pipe.unet.config), dict(pipe.unet.config))
    assert set(back) == set(unet_sd)
    assert all(torch.equal(back[k], unet_sd[k]) for k in unet_sd)
    vae_sd = pipe.vae.state_dict()
    back = convert_ldm_vae_checkpoint(vae_to_ldm(vae_sd, 2), dict(pipe.vae.config))
    assert set(back) == set(vae_sd)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_single_file_loads_with_config_dir(tmp_path, family):
    pipe = build_tiny_pipeline(family, seed=5)
    ckpt = tmp_path / f"tiny-{family}.safetensors"
    write_single_file(pipe, ckpt, family)
    configs = config_folder_for(pipe, tmp_path / "configs", family)

    from safetensors import safe_open

    with safe_open(str(ckpt), framework="pt") as fh:
        assert family_of_checkpoint(list(fh.keys())) == family

    loaded = load_diffusion_pipeline(ckpt, config_dir=configs)
    assert detect_family(loaded) == family
    # Every weight came through the conversion unchanged.
    for name in ("unet", "vae", "text_encoder") + (("text_encoder_2",) if family == "sdxl" else ()):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        for k, v in ours.items():
            if k.endswith("position_ids"):
                continue
            assert torch.allclose(v.float(), theirs[k].float()), f"{name}.{k}"
    np.testing.assert_allclose(_image(pipe), _image(loaded), atol=1e-4)


def test_single_file_without_tokenizer_names_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    pipe = build_tiny_pipeline("sd1")
    ckpt = tmp_path / "tiny.safetensors"
    write_single_file(pipe, ckpt, "sd1")
    with pytest.raises(ModelNotFoundError, match=r"tokenizer.*--config-dir"):
        load_diffusion_pipeline(ckpt)


def test_ckpt_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": Evil()}}, bad)
    with pytest.raises(UsageError, match="refusing to load"):
        load_diffusion_pipeline(bad)


def test_ckpt_plain_tensors_detected(tmp_path):
    from datakit.models.diffusion import checkpoint_keys

    ok = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1), "cond_stage_model.model.y": torch.zeros(1)}}, ok)
    assert family_of_checkpoint(checkpoint_keys(ok)) == "sd2"


def test_shipped_configs_have_no_tokenizer_files():
    assert not list(CONFIG_ROOT.rglob("vocab.json")) and not list(CONFIG_ROOT.rglob("merges.txt"))


def test_backgrounds_stage_on_a_single_file(tmp_path):
    """The path users hit most: `datakit backgrounds --engine sdxl --model x.safetensors --config-dir DIR`."""
    from datakit.cli.main import main
    from datakit.manifest import read_manifest

    pipe = build_tiny_pipeline("sdxl", seed=9)
    ckpt = tmp_path / "tiny.safetensors"
    write_single_file(pipe, ckpt, "sdxl")
    configs = config_folder_for(pipe, tmp_path / "configs", "sdxl")
    with pytest.raises(SystemExit) as exc:
        main(["backgrounds", str(tmp_path / "out"), "-n", "2", "--engine", "sdxl", "--model", str(ckpt),
              "--config-dir", str(configs), "--size", "32", "--steps", "1", "--quiet", "--device", "cpu"])
    assert exc.value.code == 0
    rows = read_manifest(tmp_path / "out")
    assert [r["file"] for r in rows] == ["bg000.png", "bg001.png"]
    assert rows[0]["model"] == str(ckpt) and rows[0]["engine"] == "sdxl"
