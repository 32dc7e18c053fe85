"""LoRA modules, kohya names, the file format, and loading our files with diffusers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from datakit.errors import UsageError
from datakit.models.diffusion import CONFIG_ROOT
from datakit.train.formats import read_lora_file, save_diffusers
from datakit.train.lora import LoRANetwork, text_encoder_targets, to_sgm_path, unet_targets
from datakit.testing import build_tiny_pipeline


# Tiny models run fastest on one torch thread (see conftest.one_torch_thread).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _meta_model(family: str):
    """A full-size UNet and text encoders from the shipped configs, on the meta device (no memory)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = CONFIG_ROOT / family
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(root / "unet")))
        tes = [CLIPTextModel(CLIPTextConfig.from_pretrained(str(root / "text_encoder")))]
        if family == "sdxl":
            tes.append(CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(root / "text_encoder_2"))))
    return unet, tes


def _network_on(family, unet, tes, **kwargs):
    net = LoRANetwork(rank=4, train_text_encoder=True, **kwargs)
    with torch.device("meta"):
        net.create_modules(unet, tes, sdxl=family == "sdxl")
    return net


def test_sd15_golden_names_and_counts():
    unet, tes = _meta_model("sd1")
    assert sum(p.numel() for p in unet.parameters()) == 859_520_964
    net = _network_on("sd1", unet, tes)
    unet_names = [m.lora_name for m in net.unet_loras]
    te_names = [m.lora_name for m in net.te_loras]
    assert (len(unet_names), len(te_names)) == (192, 72)
    assert len(set(unet_names)) == 192
    for name in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
                 "lora_unet_down_blocks_0_attentions_0_proj_in",
                 "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj",
                 "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0",
                 "lora_unet_up_blocks_1_attentions_0_proj_out"):
        assert name in unet_names
    # transformers 5 has no `text_model.` in CLIPTextModel's paths; the names must still carry it (A1111).
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in te_names
    assert "lora_te_text_model_encoder_layers_11_mlp_fc2" in te_names
    keys = net.kohya_state_dict()
    assert len(keys) == 3 * (192 + 72)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)


def test_sdxl_golden_names_and_counts():
    unet, tes = _meta_model("sdxl")
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    net = _network_on("sdxl", unet, tes)
    unet_names = [m.lora_name for m in net.unet_loras]
    te_names = [m.lora_name for m in net.te_loras]
    assert len(unet_names) == 722
    assert sum(n.startswith("lora_te1_") for n in te_names) == 72
    assert sum(n.startswith("lora_te2_") for n in te_names) == 192
    for name in ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
                 "lora_unet_input_blocks_8_1_transformer_blocks_9_ff_net_2",
                 "lora_unet_middle_block_1_transformer_blocks_9_attn2_to_k",
                 "lora_unet_output_blocks_0_1_proj_in",
                 "lora_unet_output_blocks_5_1_transformer_blocks_1_attn2_to_out_0",
                 "lora_te1_text_model_encoder_layers_11_self_attn_out_proj",
                 "lora_te2_text_model_encoder_layers_31_mlp_fc1"):
        assert name in unet_names + te_names
    inputs = {int(n.split("_")[4]) for n in unet_names if n.startswith("lora_unet_input_blocks")}
    outputs = {int(n.split("_")[4]) for n in unet_names if n.startswith("lora_unet_output_blocks")}
    assert inputs == {4, 5, 7, 8} and outputs == {0, 1, 2, 3, 4, 5}
    assert not any("down_blocks" in n or "up_blocks" in n or "mid_block_" in n for n in unet_names)


def test_conv_lora_counts_sd15():
    unet, tes = _meta_model("sd1")
    targets = unet_targets(unet, sdxl=False, conv=True)
    assert len(targets) == 278  # kohya's LoCon count for SD1.5
    # 22 resnets x (conv1, conv2) + 3 downsamplers + 3 upsamplers are 3x3; time_emb_proj and 1x1 shortcuts use --rank.
    assert sum(1 for _, _, is3 in targets if is3) == 22 * 2 + 3 + 3


@pytest.mark.parametrize("path,expected", [
    ("down_blocks.1.attentions.0.proj_in", "input_blocks.4.1.proj_in"),
    ("down_blocks.2.attentions.1.transformer_blocks.3.attn1.to_q", "input_blocks.8.1.transformer_blocks.3.attn1.to_q"),
    ("mid_block.attentions.0.proj_out", "middle_block.1.proj_out"),
    ("up_blocks.0.attentions.2.proj_out", "output_blocks.2.1.proj_out"),
    ("up_blocks.1.attentions.0.transformer_blocks.0.ff.net.2", "output_blocks.3.1.transformer_blocks.0.ff.net.2"),
    ("down_blocks.0.resnets.1.conv1", "input_blocks.2.0.in_layers.2"),
    ("down_blocks.0.downsamplers.0.conv", "input_blocks.3.0.op"),
    ("mid_block.resnets.1.conv2", "middle_block.2.out_layers.3"),
    ("up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
])
def test_sgm_paths(path, expected):
    assert to_sgm_path(path, 2) == expected


def _randomise(net: LoRANetwork, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules_list():
            m.lora_up.weight.copy_(torch.randn(m.lora_up.weight.shape, generator=g) * 0.2)


def _unet_out(pipe, family, seed=0):
    g = torch.Generator().manual_seed(seed)
    unet = pipe.unet
    x = torch.randn(1, 4, 8, 8, generator=g)
    ctx = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    kwargs = {}
    if family == "sdxl":
        pooled_dim = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled_dim, generator=g),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
    with torch.no_grad():
        return unet(x, torch.tensor([500]), ctx, **kwargs).sample


def _te_out(pipe):
    ids = pipe.tokenizer("sks, solo", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids).last_hidden_state


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_diffusers_loads_our_file_exactly(tmp_path, family):
    """Our kohya file, loaded by diffusers' own loader, gives the same UNet and text-encoder outputs as our modules."""
    pipe = build_tiny_pipeline(family, seed=1)
    base = SimpleNamespace(unet=pipe.unet, text_encoders=[t for t in (pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if t is not None], family=family)
    plain_unet = _unet_out(pipe, family)
    net = LoRANetwork(rank=4, alpha=2, train_text_encoder=True)
    net.apply_to(base)
    _randomise(net)
    ours_unet, ours_te = _unet_out(pipe, family), _te_out(pipe)
    assert not torch.allclose(ours_unet, plain_unet, atol=1e-4)
    path = tmp_path / "x.safetensors"
    net.save(path, {"ss_network_dim": "4"}, torch.float32)

    fresh = build_tiny_pipeline(family, seed=1)
    fresh.load_lora_weights(str(path), adapter_name="ours")  # raises if any key is left over
    n_peft = sum(1 for _, m in [*fresh.unet.named_modules(), *fresh.text_encoder.named_modules()]
                 if "ours" in getattr(m, "lora_A", {}))
    if family == "sdxl":
        n_peft += sum(1 for _, m in fresh.text_encoder_2.named_modules() if "ours" in getattr(m, "lora_A", {}))
    assert n_peft == len(net.modules_list())
    torch.testing.assert_close(_unet_out(fresh, family), ours_unet, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(_te_out(fresh), ours_te, atol=2e-4, rtol=1e-3)

    # diffusers' own layout gives the same output too (alpha/rank folded into lora_B).
    folder = save_diffusers(net, base, tmp_path / "diffusers")
    fresh2 = build_tiny_pipeline(family, seed=1)
    fresh2.load_lora_weights(str(folder), weight_name="pytorch_lora_weights.safetensors")
    torch.testing.assert_close(_unet_out(fresh2, family), ours_unet, atol=2e-4, rtol=1e-3)


def test_file_contents_and_alpha_round_trip(tmp_path):
    pipe = build_tiny_pipeline("sd1")
    base = SimpleNamespace(unet=pipe.unet, text_encoders=[pipe.text_encoder], family="sd1")
    net = LoRANetwork(rank=8, alpha=2)
    net.apply_to(base)
    _randomise(net, 3)
    path = tmp_path / "a.safetensors"
    net.save(path, {"ss_network_alpha": "2", "modelspec.architecture": "stable-diffusion-v1/lora"}, torch.float16)
    tensors, meta = read_lora_file(path)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in tensors)
    alphas = [v for k, v in tensors.items() if k.endswith(".alpha")]
    assert len(alphas) == len(net.modules_list()) and all(float(a) == 2.0 for a in alphas)
    assert tensors[next(k for k in tensors if k.endswith("lora_up.weight"))].dtype == torch.float16
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and len(meta["sshs_model_hash"]) == 64

    pipe2 = build_tiny_pipeline("sd1")
    other = LoRANetwork(rank=8)  # alpha defaults to 1 as kohya's (scale 1/8) until the file says otherwise
    other.apply_to(SimpleNamespace(unet=pipe2.unet, text_encoders=[pipe2.text_encoder], family="sd1"))
    assert other.modules_list()[0].scale == 1 / 8
    other.load(path)
    assert all(m.scale == 0.25 for m in other.modules_list())
    up = other.modules_list()[0].lora_up.weight
    torch.testing.assert_close(up, net.modules_list()[0].lora_up.weight.half().float())


def test_loading_a_mismatched_file_is_a_usage_error(tmp_path):
    pipe = build_tiny_pipeline("sd1")
    base = SimpleNamespace(unet=pipe.unet, text_encoders=[pipe.text_encoder], family="sd1")
    net = LoRANetwork(rank=4)
    net.apply_to(base)
    path = tmp_path / "a.safetensors"
    net.save(path, {}, torch.float32)
    pipe2 = build_tiny_pipeline("sd1")
    wrong_rank = LoRANetwork(rank=8)
    wrong_rank.apply_to(SimpleNamespace(unet=pipe2.unet, text_encoders=[pipe2.text_encoder], family="sd1"))
    with pytest.raises(UsageError, match="shape"):
        wrong_rank.load(path)
    with_te = LoRANetwork(rank=4, train_text_encoder=True)
    pipe3 = build_tiny_pipeline("sd1")
    with_te.apply_to(SimpleNamespace(unet=pipe3.unet, text_encoders=[pipe3.text_encoder], family="sd1"))
    with pytest.raises(UsageError, match="does not match"):
        with_te.load(path)
    with pytest.raises(UsageError, match="not found"):
        net.load(tmp_path / "missing.safetensors")


def test_text_encoder_names_follow_text_model_either_way():
    pipe = build_tiny_pipeline("sd1")
    names = [n for n, _, _ in text_encoder_targets(pipe.text_encoder, "lora_te")]
    assert len(names) == 2 * 6  # 2 CLIP layers x (q, k, v, out_proj, fc1, fc2)
    assert all(n.startswith("lora_te_text_model_encoder_layers_") for n in names)


def test_lora_is_a_no_op_at_start_and_removable():
    pipe = build_tiny_pipeline("sd1")
    before = _unet_out(pipe, "sd1")
    net = LoRANetwork(rank=4)
    net.apply_to(SimpleNamespace(unet=pipe.unet, text_encoders=[pipe.text_encoder], family="sd1"))
    torch.testing.assert_close(_unet_out(pipe, "sd1"), before)  # lora_up starts at zero
    _randomise(net)
    assert not torch.allclose(_unet_out(pipe, "sd1"), before)
    net.set_multiplier(0.0)
    torch.testing.assert_close(_unet_out(pipe, "sd1"), before)
    net.set_multiplier(1.0)
    net.remove()
    torch.testing.assert_close(_unet_out(pipe, "sd1"), before)


def kohya_lora_forward(org, down, up, x, *, multiplier, rank, alpha, dropout, rank_dropout, training):
    """kohya networks/lora.py LoRAModule.forward (module dropout off), re-derived; draws from torch's global generator."""
    lx = torch.nn.functional.linear(x, down) if x.dim() != 4 else torch.nn.functional.conv2d(x, down)
    if dropout and training:
        lx = torch.nn.functional.dropout(lx, p=dropout)
    scale = alpha / rank
    if rank_dropout and training:
        mask = torch.rand((lx.size(0), rank), device=lx.device) > rank_dropout
        if len(lx.size()) == 3:
            mask = mask.unsqueeze(1)
        elif len(lx.size()) == 4:
            mask = mask.unsqueeze(-1).unsqueeze(-1)
        lx = lx * mask
        scale = scale * (1.0 / (1.0 - rank_dropout))
    lx = torch.nn.functional.linear(lx, up) if lx.dim() != 4 else torch.nn.functional.conv2d(lx, up)
    return org(x) + lx * multiplier * scale


@pytest.mark.parametrize("shape,conv", [((2, 7, 12), False), ((3, 12), False), ((2, 12, 5, 5), True)])
@pytest.mark.parametrize("rank,alpha,dropout,rank_dropout", [(4, 1.0, 0.0, 0.0), (8, 16.0, 0.0, 0.25), (4, 2.0, 0.1, 0.5)])
def test_lora_scale_and_rank_dropout_are_kohya_s(shape, conv, rank, alpha, dropout, rank_dropout):
    from torch import nn

    from datakit.train.lora import LoRAModule

    torch.manual_seed(0)
    org = nn.Conv2d(12, 6, 1) if conv else nn.Linear(12, 6)
    module = LoRAModule("x", org, rank, alpha, dropout=dropout, rank_dropout=rank_dropout)
    with torch.no_grad():
        module.lora_up.weight.normal_()
    plain = org.forward
    module.apply()
    module.multiplier = 0.7
    x = torch.randn(shape)
    down, up = module.lora_down.weight.detach(), module.lora_up.weight.detach()
    for training in (False, True):
        module.train(training)
        torch.manual_seed(11)
        ours = org(x)
        torch.manual_seed(11)
        ref = kohya_lora_forward(plain, down, up, x, multiplier=0.7, rank=rank, alpha=alpha, dropout=dropout,
                                 rank_dropout=rank_dropout, training=training)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert module.scale == alpha / rank
