"""A1111 hypernetwork modules: layout and key indices, dropout rules, init statistics, the attention rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from datakit.errors import UsageError
from datakit.train.hypernetwork import (Hypernetwork, HypernetworkModule, default_dropout_structure,
                                        parse_dropout_structure, parse_layer_structure, sizes_for)

L, R, HS, LN, D = "Linear", "ReLU", "Hardswish", "LayerNorm", "Dropout"


# (layer structure, activation, layer norm, dropout structure, activate output) -> A1111's Sequential
@pytest.mark.parametrize("ls, act, norm, drop, act_out, layout", [
    ([1, 2, 1], "linear", False, None, False, [L, L]),
    ([1, 2, 1], "linear", False, None, True, [L, L]),  # "linear" adds nothing, even on the output
    ([1, 2, 1], "relu", False, None, False, [L, R, L]),
    ([1, 2, 1], "relu", False, None, True, [L, R, L, R]),
    ([1, 2, 1], "relu", True, None, False, [L, R, LN, L, LN]),
    ([1, 2, 1], "relu", True, [0, 0.3, 0], False, [L, R, LN, D, L, LN]),
    ([1, 2, 2, 1], "linear", False, [0, 0.3, 0.3, 0], False, [L, D, L, D, L]),
    ([1, 2, 2, 1], "linear", False, [0, 0.3, 0, 0], False, [L, D, L, L]),
    ([1, 2, 2, 1], "swish", True, [0, 0.3, 0, 0], True, [L, HS, LN, D, L, HS, LN, L, HS, LN]),
    ([1, 1.5, 1], "tanh", False, None, False, [L, "Tanh", L]),
    ([1, 2, 4, 2, 1], "mish", True, [0, 0.1, 0.2, 0.3, 0], False,
     [L, "Mish", LN, D, L, "Mish", LN, D, L, "Mish", LN, D, L, LN]),
])
def test_layout_and_key_indices_match_a1111(ls, act, norm, drop, act_out, layout):
    m = HypernetworkModule(8, ls, act, layer_norm=norm, dropout_structure=drop, activate_output=act_out)
    assert [type(x).__name__ for x in m.linear] == layout
    expected = [f"linear.{i}.{p}" for i, kind in enumerate(layout) if kind in (L, LN) for p in ("weight", "bias")]
    assert list(m.state_dict()) == expected
    linears = [x for x in m.linear if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [
        (int(8 * a), int(8 * b)) for a, b in zip(ls, ls[1:])]
    drops = [x.p for x in m.linear if isinstance(x, nn.Dropout)]
    assert drops == [p for p in (drop or [])[1:] if p > 0]


@pytest.mark.parametrize("ls, use, last, expected", [
    ([1, 2, 1], False, True, [0, 0, 0]),
    ([1, 2, 1], True, True, [0, 0.3, 0]),
    ([1, 2, 1], True, False, [0, 0, 0]),
    ([1, 2, 2, 1], True, True, [0, 0.3, 0.3, 0]),
    ([1, 2, 2, 1], True, False, [0, 0.3, 0, 0]),
    ([1, 2, 4, 2, 1], True, False, [0, 0.3, 0.3, 0, 0]),
    ([1, 1], True, True, [0, 0]),
])
def test_a1111_default_dropout_rule(ls, use, last, expected):
    assert default_dropout_structure(ls, use, last) == pytest.approx(expected)


@pytest.mark.parametrize("value, message", [
    ("1,2", "start and end with 1"),
    ("2,2,1", "start and end with 1"),
    ("1", "at least two"),
    ("1,a,1", "numbers like 1,2,1"),
    ("1,0,1", "positive"),
])
def test_layer_structure_errors(value, message):
    with pytest.raises(UsageError, match=message):
        parse_layer_structure(value)


@pytest.mark.parametrize("value, message", [
    ("0,0.3", "needs 3 numbers"),
    ("0.1,0.3,0", "start and end with 0"),
    ("0,1.0,0", r"\[0, 1\)"),
    ("0,x,0", "numbers like"),
])
def test_dropout_structure_errors(value, message):
    with pytest.raises(UsageError, match=message):
        parse_dropout_structure(value, [1, 2, 1])


def test_parsers_accept_good_values():
    assert parse_layer_structure("1, 2, 2, 1") == [1.0, 2.0, 2.0, 1.0]
    assert parse_layer_structure([1, 1.5, 1]) == [1.0, 1.5, 1.0]
    assert parse_dropout_structure("0,0.3,0", [1, 2, 1]) == [0.0, 0.3, 0.0]


def _weights(init: str, act: str = "relu", dim: int = 256):
    torch.manual_seed(0)
    m = HypernetworkModule(dim, [1, 2, 1], act, layer_norm=True, weight_init=init)
    return [x for x in m.linear if isinstance(x, nn.Linear)], [x for x in m.linear if isinstance(x, nn.LayerNorm)]


def test_normal_init_statistics():
    linears, norms = _weights("Normal")
    for layer in linears + norms:  # A1111 gives LayerNorms the Normal init too
        w = layer.weight.detach()
        assert abs(float(w.std()) - 0.01) < 0.001 and abs(float(w.mean())) < 0.001
        assert torch.count_nonzero(layer.bias) == 0


@pytest.mark.parametrize("init, act", [("XavierUniform", "relu"), ("XavierNormal", "relu"), ("KaimingUniform", "relu"),
                                       ("KaimingNormal", "relu"), ("KaimingNormal", "leakyrelu")])
def test_other_init_statistics(init, act):
    linears, norms = _weights(init, act)
    for layer in linears:
        w = layer.weight.detach()
        fan_out, fan_in = w.shape
        gain = math.sqrt(2.0 / (1 + 0.01 ** 2)) if act == "leakyrelu" else math.sqrt(2.0)
        std = {"XavierUniform": math.sqrt(2.0 / (fan_in + fan_out)), "XavierNormal": math.sqrt(2.0 / (fan_in + fan_out)),
               "KaimingUniform": gain / math.sqrt(fan_in), "KaimingNormal": gain / math.sqrt(fan_in)}[init]
        assert abs(float(w.std()) / std - 1) < 0.05
        if init.endswith("Uniform"):
            assert float(w.abs().max()) <= std * math.sqrt(3) + 1e-6
        assert torch.count_nonzero(layer.bias) == 0
    for layer in norms:
        assert abs(float(layer.weight.detach().std()) - 0.01) < 0.002


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="--activation"):
        HypernetworkModule(8, [1, 2, 1], "gelu2")
    with pytest.raises(UsageError, match="--weight-init"):
        HypernetworkModule(8, [1, 2, 1], "relu", weight_init="Zeros")


def test_forward_rule_and_strength():
    torch.manual_seed(0)
    m = HypernetworkModule(8, [1, 2, 1], "relu", weight_init="XavierNormal")
    x = torch.randn(2, 5, 8)
    delta = m.linear(x)
    m.multiplier = 0.5
    m.eval()
    assert torch.allclose(m(x), x + 0.5 * delta)
    m.train()  # A1111 trains at strength 1 whatever the multiplier
    assert torch.allclose(m(x), x + delta)


def _attention(query_dim=16, cross=24):
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0

    torch.manual_seed(1)
    attn = Attention(query_dim, cross_attention_dim=cross, heads=2, dim_head=8)
    attn.set_processor(AttnProcessor2_0())
    return attn


def _reference(attn, x, ctx, hn_k, hn_v):
    """A1111's attention: k = to_k(HN_k(context)), v = to_v(HN_v(context)), q from x; softmax attention."""
    lin = nn.functional.linear  # the projections' weights, bypassing the hooks under test
    q = lin(x, attn.to_q.weight, attn.to_q.bias)
    k, v = lin(hn_k(ctx), attn.to_k.weight, attn.to_k.bias), lin(hn_v(ctx), attn.to_v.weight, attn.to_v.bias)
    b, n, _ = q.shape
    split = lambda t: t.view(b, -1, attn.heads, t.shape[-1] // attn.heads).transpose(1, 2)  # noqa: E731
    w = (split(q) @ split(k).transpose(-1, -2) * attn.scale).softmax(-1)
    out = (w @ split(v)).transpose(1, 2).reshape(b, n, -1)
    return attn.to_out[1](attn.to_out[0](out))


def test_attention_rule_cross_and_self_attention_keyed_by_width():
    cross_attn, self_attn = _attention(16, 24), _attention(16, None)
    holder = nn.ModuleDict({"a": cross_attn, "b": self_attn})
    torch.manual_seed(2)
    net = Hypernetwork([24, 16], [1, 2, 1], "relu", weight_init="XavierNormal")
    net.apply_to(holder)
    assert net.hooked == {24: 1, 16: 1}
    net.set_multiplier(0.7)
    net.eval()
    x, ctx = torch.randn(2, 6, 16), torch.randn(2, 5, 24)
    k24, v24 = net.layers_for(24)
    k16, v16 = net.layers_for(16)
    with torch.no_grad():
        assert torch.allclose(cross_attn(x, encoder_hidden_states=ctx), _reference(cross_attn, x, ctx, k24, v24), atol=1e-5)
        assert torch.allclose(self_attn(x), _reference(self_attn, x, x, k16, v16), atol=1e-5)
        # The k and v modules differ, and strength 0 gives the plain model back.
        assert not torch.allclose(k24(ctx), v24(ctx))
        net.set_multiplier(0.0)
        hooked = cross_attn(x, encoder_hidden_states=ctx)
        net.remove()
        assert torch.allclose(hooked, cross_attn(x, encoder_hidden_states=ctx), atol=1e-6)


def test_widths_without_modules_are_untouched():
    attn = _attention(16, 24)
    net = Hypernetwork([768], [1, 2, 1])
    net.apply_to(nn.ModuleDict({"a": attn}))
    assert net.hooked == {}
    x = torch.randn(1, 3, 24)
    assert net.context(x, 0) is x


def test_hypernetwork_runs_in_fp32_and_returns_the_input_dtype():
    torch.manual_seed(0)
    net = Hypernetwork([8], [1, 2, 1], "relu", weight_init="XavierNormal").eval()
    x = torch.randn(2, 3, 8).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net.context(x, 0)
    assert out.dtype == torch.bfloat16
    k, _ = net.layers_for(8)
    assert torch.equal(out, k(x.float()).to(torch.bfloat16))


class _FakeUNet(nn.Module):
    """Only what sizes_for reads: attention to_k widths and the config's cross_attention_dim."""

    def __init__(self, cross, widths):
        super().__init__()
        self.config = type("C", (), {"cross_attention_dim": cross})()
        blocks = []
        for w in widths:
            for ctx in (w, cross):
                blk = nn.Module()
                blk.to_k, blk.to_v = nn.Linear(ctx, w, bias=False), nn.Linear(ctx, w, bias=False)
                blocks.append(blk)
        self.blocks = nn.ModuleList(blocks)


def test_default_sizes_are_the_model_widths_in_a1111_order():
    assert sizes_for(_FakeUNet(768, [320, 640, 1280, 1280]), "sd1") == [768, 320, 640, 1280]
    assert sizes_for(_FakeUNet(1024, [320, 640, 1280]), "sd2") == [1024, 320, 640, 1280]
    with pytest.raises(UsageError, match="SDXL"):
        sizes_for(_FakeUNet(2048, [320, 640, 1280]), "sdxl")


def test_param_groups_and_protocol():
    from datakit.train.network import Network

    net = Hypernetwork([8, 4], [1, 2, 1])
    assert isinstance(net, Network) and net.file_suffix == ".pt" and not net.trains_text_encoder
    (group,) = net.param_groups(1e-3, 5e-4)
    assert group["lr"] == 1e-3 and len(group["params"]) == 16  # 2 sizes x (k, v) x 2 Linears x (w, b)
    # A1111's parameter order: sizes in order, k then v, layers in order (the .optim file depends on it).
    names = [n for n, _ in net.named_parameters()]
    assert names[:4] == ["pairs.8.0.linear.0.weight", "pairs.8.0.linear.0.bias", "pairs.8.0.linear.1.weight",
                         "pairs.8.0.linear.1.bias"] and names[4].startswith("pairs.8.1.") and names[-1].startswith("pairs.4.1.")
