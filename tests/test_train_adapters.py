"""datakit.train.adapters.apply_adapter: a saved LoRA or hypernetwork on a freshly loaded pipeline computes as in training."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from datakit.errors import UsageError
from datakit.testing import build_tiny_pipeline
from datakit.train.adapters import apply_adapter
from datakit.train.formats import save_diffusers
from datakit.train.hypernetwork import Hypernetwork, sizes_for
from datakit.train.hypernetwork_format import save_hypernetwork
from datakit.train.lora import LoRANetwork

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _unet_out(pipe, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, 8, 8, generator=g)
    ids = pipe.tokenizer("sks, solo", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        ctx = pipe.text_encoder(ids).last_hidden_state
        return pipe.unet(x, torch.tensor([500]), ctx).sample


def test_a_kohya_lora_file_applies_removes_and_scales(tmp_path):
    pipe = build_tiny_pipeline("sd1", seed=1)
    net = LoRANetwork(rank=4, alpha=2, conv_rank=2, conv_alpha=1, train_text_encoder=True)
    net.apply_to(SimpleNamespace(unet=pipe.unet, text_encoders=[pipe.text_encoder], family="sd1"))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in net.modules_list():
            m.lora_up.weight.copy_(torch.randn(m.lora_up.weight.shape, generator=g) * 0.1)
    net.eval()
    trained = _unet_out(pipe)
    net.save(tmp_path / "a.safetensors", {}, torch.float32)

    fresh = build_tiny_pipeline("sd1", seed=1)
    plain = _unet_out(fresh)
    handle = apply_adapter(fresh, tmp_path / "a.safetensors")
    torch.testing.assert_close(_unet_out(fresh), trained, rtol=1e-5, atol=1e-6)
    handle.set_strength(0.0)
    torch.testing.assert_close(_unet_out(fresh), plain)
    handle.set_strength(1.0)
    handle.remove()
    torch.testing.assert_close(_unet_out(fresh), plain)

    # the diffusers layout (--format diffusers) goes through diffusers' own loader
    folder = save_diffusers(net, SimpleNamespace(unet=pipe.unet, text_encoders=[pipe.text_encoder]), tmp_path / "d")  # the file
    other = build_tiny_pipeline("sd1", seed=1)
    handle = apply_adapter(other, folder)
    torch.testing.assert_close(_unet_out(other), trained, rtol=1e-4, atol=2e-4)
    handle.remove()
    torch.testing.assert_close(_unet_out(other), plain)


def test_a_hypernetwork_file_applies_with_its_strength(tmp_path):
    pipe = build_tiny_pipeline("sd1", seed=2)
    plain = _unet_out(pipe)
    torch.manual_seed(0)
    net = Hypernetwork(sizes_for(pipe.unet, "sd1"), [1, 2, 1], "relu", weight_init="XavierNormal")
    net.apply_to(pipe.unet)
    net.eval()
    net.set_multiplier(0.5)
    half = _unet_out(pipe)
    net.remove()
    save_hypernetwork(net, tmp_path / "h.pt", name="h")
    handle = apply_adapter(pipe, tmp_path / "h.pt", strength=0.5)
    torch.testing.assert_close(_unet_out(pipe), half, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(half, plain, atol=1e-4)
    handle.remove()
    torch.testing.assert_close(_unet_out(pipe), plain)


def test_unusable_files_are_usage_errors(tmp_path):
    pipe = build_tiny_pipeline("sd1")
    with pytest.raises(UsageError, match="not found"):
        apply_adapter(pipe, tmp_path / "missing.safetensors")
    (tmp_path / "x.ckpt").write_bytes(b"nope")
    with pytest.raises(UsageError, match="LoRA .safetensors or an A1111 hypernetwork"):
        apply_adapter(pipe, tmp_path / "x.ckpt")
