"""How fast this device trains this UNet: one scaled-down slice of it, timed on the device, no weights loaded.

The slice is one ResnetBlock2D and (where the level has attention) one Transformer2DModel of every
UNet level, built from the model's own config at that level's width, heads, context width and the
plan's latent size and batch, with random weights. Its forward + backward (gradients to the input,
the frozen weights need none, as in LoRA and hypernetwork training) is timed after a warm-up, and its
forward FLOPs counted. The UNet's step time is then the slice's time scaled by the UNet's counted
FLOPs: the slice runs the same kernels on the same shapes, so its speed (memory-bound at small sizes,
compute-bound at large ones, attention at the real sequence lengths) carries over, where a fixed
FLOP/s per device kind was off by 15x on a CPU at 64 px.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class ProbeResult:
    """The slice's forward FLOPs and the seconds of one forward + backward."""

    forward_flops: int
    seconds: float
    device: str


def _levels(ucfg, latent_hw: tuple[int, int]):
    """(channels, (h, w), heads or None, transformer layers) for each down level of the UNet config."""
    channels = list(ucfg.block_out_channels)
    heads = ucfg.num_attention_heads or ucfg.attention_head_dim
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    h, w = latent_hw
    for i, (c, kind) in enumerate(zip(channels, ucfg.down_block_types)):
        yield c, (max(1, h >> i), max(1, w >> i)), (heads[i] if "CrossAttn" in kind else None)


def build_slice(ucfg, device, dtype):
    """One resnet (+ one transformer) per level, from the UNet config, on the device (meta: shapes only).

    On a real device the weights are filled with small random values directly (no initialiser pass:
    only the speed matters, and a 1280-wide slice would take seconds to initialise on a CPU).
    """
    import torch
    from diffusers import Transformer2DModel
    from diffusers.models.resnet import ResnetBlock2D

    temb = int(ucfg.block_out_channels[0]) * 4
    blocks = []
    for c, _hw, heads in _levels(ucfg, (1, 1)):
        with torch.device("meta"):
            resnet = ResnetBlock2D(in_channels=c, out_channels=c, temb_channels=temb, groups=ucfg.norm_num_groups,
                                   eps=ucfg.norm_eps)
            attn = None
            if heads:
                attn = Transformer2DModel(num_attention_heads=heads, attention_head_dim=c // heads, in_channels=c,
                                          num_layers=1, cross_attention_dim=ucfg.cross_attention_dim,
                                          norm_num_groups=ucfg.norm_num_groups,
                                          use_linear_projection=bool(ucfg.use_linear_projection))
        pair = []
        for module in (resnet, attn):
            if module is not None and str(device) != "meta":
                module = module.to_empty(device=device)
                with torch.no_grad():
                    for param in module.parameters():
                        param.normal_(0.0, 0.02)
            pair.append(module.to(dtype).requires_grad_(False) if module is not None else None)
        blocks.append(tuple(pair))
    return blocks, temb


def _inputs(ucfg, blocks, *, batch, latent_hw, tokens, temb_ch, device, dtype):
    import torch

    def make(*shape):
        if str(device) == "meta":
            return torch.empty(*shape, device="meta", dtype=dtype)
        return torch.randn(*shape, device=device, dtype=dtype)

    xs = [make(batch, c, *hw) for (c, hw, _heads), _ in zip(_levels(ucfg, latent_hw), blocks)]
    return xs, make(batch, temb_ch), make(batch, tokens, int(ucfg.cross_attention_dim))


def slice_flops(ucfg, *, batch: int, latent_hw: tuple[int, int], tokens: int, dtype) -> int:
    """Forward FLOPs of the slice, counted on the meta device (no memory, no time)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    blocks, temb_ch = build_slice(ucfg, "meta", dtype)
    xs, temb, context = _inputs(ucfg, blocks, batch=batch, latent_hw=latent_hw, tokens=tokens, temb_ch=temb_ch,
                                device="meta", dtype=dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        for (resnet, attn), x in zip(blocks, xs):
            h = resnet(x, temb)
            if attn is not None:
                attn(h, encoder_hidden_states=context, return_dict=False)
    return int(counter.get_total_flops())


def time_slice(ucfg, *, batch: int, latent_hw: tuple[int, int], tokens: int, dtype, device: str,
               budget_s: float = 1.0) -> ProbeResult:
    """Forward FLOPs of the slice, and its fastest forward + backward (a warm-up first on a GPU)."""
    import torch

    flops = slice_flops(ucfg, batch=batch, latent_hw=latent_hw, tokens=tokens, dtype=dtype)
    blocks, temb_ch = build_slice(ucfg, device, dtype)
    xs, temb, context = _inputs(ucfg, blocks, batch=batch, latent_hw=latent_hw, tokens=tokens, temb_ch=temb_ch,
                                device=device, dtype=dtype)

    def run() -> float:
        start = time.perf_counter()
        total = 0
        for (resnet, attn), x in zip(blocks, xs):
            x = x.detach().requires_grad_(True)
            h = resnet(x, temb)
            if attn is not None:
                h = attn(h, encoder_hidden_states=context, return_dict=False)[0]
            total = total + h.float().square().mean()
        total.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    if device != "cpu":
        run()  # warm-up: kernel loading and autotuning happen on the first call
    times = [run()]
    while len(times) < 3 and sum(times) < budget_s:  # a fast slice is timed again; the fastest run counts
        times.append(run())
    return ProbeResult(flops, min(times), device)
