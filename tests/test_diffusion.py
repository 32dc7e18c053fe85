"""The shared diffusion loader: tiny pipelines saved and loaded back, shipped configs, clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from datakit.errors import ModelNotFoundError, UsageError
from datakit.models.diffusion import (
    CONFIG_ROOT,
    detect_family,
    family_of_folder,
    load_diffusion_pipeline,
)
from datakit.testing import build_tiny_pipeline


# Tiny models run fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny_sdxl_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-sdxl")
    build_tiny_pipeline("sdxl", seed=1).save_pretrained(str(folder))
    return folder


def _generate(pipe, seeds, negative=None):
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    return pipe(["a beach"] * len(seeds), negative_prompt=negative, num_inference_steps=2, height=32, width=32,
                generator=gens, output_type="np").images


def test_sdxl_folder_round_trip(tiny_sdxl_dir):
    from diffusers import StableDiffusionXLPipeline

    pipe = load_diffusion_pipeline(tiny_sdxl_dir)
    assert isinstance(pipe, StableDiffusionXLPipeline)
    assert detect_family(pipe) == detect_family(pipe.unet) == family_of_folder(tiny_sdxl_dir) == "sdxl"
    a = _generate(pipe, [7, 8])
    b = _generate(pipe, [7, 9])
    assert a.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(a[0], b[0])  # same seed, same image
    assert not np.array_equal(a[1], b[1])
    c = _generate(pipe, [7], negative=["person, text"])
    assert not np.array_equal(a[0], c[0])  # the negative prompt reaches the model


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_sd_folder_round_trip(tmp_path, family):
    from diffusers import StableDiffusionPipeline

    build_tiny_pipeline(family).save_pretrained(str(tmp_path))
    pipe = load_diffusion_pipeline(tmp_path, prediction_type="v_prediction")
    assert isinstance(pipe, StableDiffusionPipeline)
    assert detect_family(pipe) == family
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert _generate(pipe, [1]).shape == (1, 32, 32, 3)


@pytest.mark.parametrize(
    "family, unet_params, text_params",
    [("sd1", 859_520_964, [123_060_480]), ("sd2", 865_910_724, [340_387_840]),
     ("sdxl", 2_567_463_684, [123_060_480, 694_659_840])],
)
def test_shipped_configs_build_full_size_models(family, unet_params, text_params):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    base = CONFIG_ROOT / family
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with init_empty_weights():  # meta device: no memory
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(base / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(base / "vae"))
        encoders = [CLIPTextModel(CLIPTextConfig.from_pretrained(base / "text_encoder"))]
        if family == "sdxl":
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(base / "text_encoder_2")))
    assert count(unet) == unet_params
    assert count(vae) == 83_653_863
    assert [count(e) for e in encoders] == text_params
    assert detect_family(unet) == family
    index = json.loads((base / "model_index.json").read_text())
    assert index["_class_name"] == ("StableDiffusionXLPipeline" if family == "sdxl" else "StableDiffusionPipeline")


def test_missing_model_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model not found: .*nothing-here"):
        load_diffusion_pipeline(tmp_path / "nothing-here.safetensors")


def test_folder_without_model_index(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotFoundError, match="no model_index.json"):
        load_diffusion_pipeline(tmp_path)


def test_broken_and_empty_checkpoints(tmp_path):
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelNotFoundError, match="empty"):
        load_diffusion_pipeline(empty)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ModelNotFoundError, match="cannot read checkpoint"):
        load_diffusion_pipeline(broken)
    notsd = tmp_path / "lora.safetensors"
    from safetensors.torch import save_file

    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 2)}, str(notsd))
    with pytest.raises(ModelNotFoundError, match="not a Stable Diffusion"):
        load_diffusion_pipeline(notsd)


def test_broken_folder_weights(tmp_path, tiny_sdxl_dir):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_sdxl_dir, folder)
    for p in (folder / "unet").glob("*.safetensors"):
        p.write_bytes(b"garbage")
    with pytest.raises(ModelNotFoundError, match="cannot load the diffusers model"):
        load_diffusion_pipeline(folder)


def test_folder_with_empty_tokenizer_is_refused(tmp_path, tiny_sdxl_dir):
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(tiny_sdxl_dir, folder)
    for p in (folder / "tokenizer_2").iterdir():
        p.unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer_2"):
        load_diffusion_pipeline(folder)


def test_hub_id_not_cached_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        load_diffusion_pipeline("nobody/no-such-model-datakit")


def test_bad_family_and_prediction_type(tiny_sdxl_dir):
    with pytest.raises(UsageError, match="family"):
        load_diffusion_pipeline(tiny_sdxl_dir, family="sd3")
    with pytest.raises(UsageError, match="prediction type"):
        load_diffusion_pipeline(tiny_sdxl_dir, prediction_type="x0")
