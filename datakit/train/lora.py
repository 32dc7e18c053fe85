"""LoRA modules, their injection into a diffusers UNet / transformers CLIP, and kohya's module names.

A LoRA module wraps one Linear or Conv2d of the frozen base model: out = W x + up(down(x)) * alpha/rank.
The base weights are never copied; the wrapped module's `forward` is replaced by ours.

Names are exactly the ones kohya sd-scripts writes, because that is what A1111, ComfyUI, diffusers
and kohya itself look up:
- SD1/SD2 UNet: the diffusers module path with `.` -> `_`, prefixed `lora_unet_`.
- SDXL UNet: kohya trains its own SGM-layout UNet, so paths are SGM ones:
  down_blocks.i.attentions.j -> input_blocks.(1 + i*(L+1) + j).1, mid_block.attentions.0 ->
  middle_block.1, up_blocks.i.attentions.j -> output_blocks.(i*(L+1) + j).1 (L = layers per block).
- Text encoders: `lora_te_` (SDXL: `lora_te1_`, `lora_te2_`) + `text_model_encoder_layers_N_...`,
  whatever path the installed transformers gives the module (transformers 5 drops `text_model.`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import torch
from torch import nn

# kohya's defaults: LoRA on every Linear / 1x1 conv inside these UNet blocks ...
UNET_TARGETS = ("Transformer2DModel",)
# ... and, with conv LoRA (LoCon), on the 3x3 convs of resnets and samplers too.
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")


class LoRAModule(nn.Module):
    """One low-rank adapter around a Linear or Conv2d."""

    def __init__(self, name: str, org: nn.Module, rank: int, alpha: float, *, dropout: float = 0.0,
                 rank_dropout: float = 0.0, module_dropout: float = 0.0):
        super().__init__()
        self.lora_name = name
        if isinstance(org, nn.Conv2d):
            self.lora_down = nn.Conv2d(org.in_channels, rank, org.kernel_size, org.stride, org.padding, bias=False)
            self.lora_up = nn.Conv2d(rank, org.out_channels, 1, 1, bias=False)
        else:
            self.lora_down = nn.Linear(org.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, org.out_features, bias=False)
        # As kohya: down random, up zero, so the network starts as an exact no-op.
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)
        alpha = rank if alpha is None or alpha == 0 else alpha
        # A buffer, so it is saved as `<name>.alpha` and restored by load_state_dict.
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.rank = rank
        self.scale = float(alpha) / rank
        self.multiplier = 1.0
        self.dropout, self.rank_dropout, self.module_dropout = dropout, rank_dropout, module_dropout
        self._org = [org]  # a list: not registered as a submodule, so base weights stay out of our state dict
        self._org_forward = None

    @property
    def org_module(self) -> nn.Module:
        """The base model's Linear or Conv2d this adapter wraps."""
        return self._org[0]

    def apply(self) -> None:
        """Route the wrapped module's forward through this adapter."""
        org = self._org[0]
        self._org_forward = org.forward
        org.forward = self.forward

    def remove(self) -> None:
        """Restore the wrapped module's own forward."""
        if self._org_forward is not None:
            self._org[0].forward = self._org_forward
            self._org_forward = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._org_forward(x)
        if self.training and self.module_dropout and torch.rand(()) < self.module_dropout:
            return out
        h = self.lora_down(x)
        if self.training and self.dropout:
            h = nn.functional.dropout(h, p=self.dropout)
        scale = self.scale
        if self.training and self.rank_dropout:
            keep = (torch.rand(h.shape[0], self.rank, device=h.device) > self.rank_dropout).to(h.dtype)
            keep = keep.view(h.shape[0], *([1] * (h.dim() - 2)), self.rank) if h.dim() == 3 else keep
            keep = keep.view(*keep.shape, 1, 1) if h.dim() == 4 else keep
            h = h * keep
            scale = scale / (1.0 - self.rank_dropout)  # keep the expected output unchanged
        return out + self.lora_up(h).to(out.dtype) * (self.multiplier * scale)


# ---- kohya names -------------------------------------------------------------------------------

def to_sgm_path(path: str, layers_per_block: int, up_has_attention: dict[int, bool] | None = None) -> str:
    """Map a diffusers SDXL UNet module path to kohya's SGM path (the SDXL UNet kohya trains)."""
    step = layers_per_block + 1
    resnet_names = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
                    "conv_shortcut": "skip_connection"}

    def resnet_rest(rest: str) -> str:
        head, _, tail = rest.partition(".")
        return resnet_names.get(head, head) + (("." + tail) if tail else "")

    m = re.match(r"down_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", path)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "attentions":
            return f"input_blocks.{1 + i * step + j}.1.{rest}"
        return f"input_blocks.{1 + i * step + j}.0.{resnet_rest(rest)}"
    m = re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv(.*)", path)
    if m:
        return f"input_blocks.{(int(m[1]) + 1) * step}.0.op{m[2]}"
    m = re.match(r"mid_block\.attentions\.0\.(.+)", path)
    if m:
        return f"middle_block.1.{m[1]}"
    m = re.match(r"mid_block\.resnets\.(\d+)\.(.+)", path)
    if m:
        return f"middle_block.{2 * int(m[1])}.{resnet_rest(m[2])}"
    m = re.match(r"up_blocks\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", path)
    if m:
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "attentions":
            return f"output_blocks.{i * step + j}.1.{rest}"
        return f"output_blocks.{i * step + j}.0.{resnet_rest(rest)}"
    m = re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv(.*)", path)
    if m:
        i = int(m[1])
        pos = 2 if (up_has_attention or {}).get(i, True) else 1
        return f"output_blocks.{i * step + layers_per_block}.{pos}.conv{m[2]}"
    return path


def text_model_path(path: str) -> str:
    """`encoder.layers.0.self_attn.q_proj` (transformers 5) or `text_model.encoder...` -> `text_model.encoder...`."""
    if path.startswith("text_model."):
        return path
    return "text_model." + path


def kohya_name(prefix: str, path: str) -> str:
    """kohya's flat LoRA name: prefix + module path with dots as underscores."""
    return f"{prefix}_{path.replace('.', '_')}"


def text_encoder_prefixes(count: int) -> list[str]:
    """`lora_te` for one text encoder, `lora_te1`/`lora_te2` for SDXL's two."""
    return ["lora_te"] if count == 1 else [f"lora_te{i + 1}" for i in range(count)]


# ---- finding target modules ------------------------------------------------------------------

def _is_1x1(mod: nn.Module) -> bool:
    return isinstance(mod, nn.Conv2d) and tuple(mod.kernel_size) == (1, 1)


def unet_targets(unet: nn.Module, *, sdxl: bool, conv: bool) -> list[tuple[str, nn.Module, bool]]:
    """(kohya name, module, is_conv3x3) for every module kohya puts a LoRA on, in module order."""
    lpb = int(getattr(unet.config, "layers_per_block", 2)) if hasattr(unet, "config") else 2
    up_attn = {}
    if sdxl and hasattr(unet, "up_blocks"):
        up_attn = {i: getattr(b, "attentions", None) is not None and len(b.attentions) > 0 for i, b in enumerate(unet.up_blocks)}
    found: list[tuple[str, nn.Module, bool]] = []
    seen: set[int] = set()
    kinds = UNET_TARGETS + (UNET_CONV_TARGETS if conv else ())
    for block_path, block in unet.named_modules():
        if type(block).__name__ not in kinds:
            continue
        for child_path, child in block.named_modules():
            if not child_path or id(child) in seen:
                continue
            is_linear = isinstance(child, nn.Linear)
            is_conv = isinstance(child, nn.Conv2d)
            if not (is_linear or is_conv):
                continue
            is_3x3 = is_conv and not _is_1x1(child)
            if is_3x3 and not conv:
                continue
            path = f"{block_path}.{child_path}"
            if sdxl:
                path = to_sgm_path(path, lpb, up_attn)
            seen.add(id(child))
            found.append((kohya_name("lora_unet", path), child, is_3x3))
    return found


def text_encoder_targets(encoder: nn.Module, prefix: str) -> list[tuple[str, nn.Module, bool]]:
    """Every Linear in the CLIP attention and MLP blocks (q, k, v, out_proj, fc1, fc2)."""
    found = []
    for path, mod in encoder.named_modules():
        if isinstance(mod, nn.Linear) and re.search(r"(^|\.)encoder\.layers\.\d+\.(self_attn|mlp)\.", path):
            found.append((kohya_name(prefix, text_model_path(path)), mod, False))
    return found


# ---- the network -----------------------------------------------------------------------------

class LoRANetwork(nn.Module):
    """All LoRA modules of one training run; implements datakit.train.network.Network."""

    file_suffix = ".safetensors"

    def __init__(self, *, rank: int = 16, alpha: float = 1.0, conv_rank: int | None = None,
                 conv_alpha: float = 1.0, dropout: float = 0.0, rank_dropout: float = 0.0,
                 module_dropout: float = 0.0, train_unet: bool = True, train_text_encoder: bool = False):
        """Defaults as kohya's networks/lora.py create_network: alpha 1 and conv alpha 1 (scale alpha/rank)."""
        super().__init__()
        self.rank, self.alpha = rank, float(alpha)
        self.conv_rank = conv_rank
        self.conv_alpha = float(conv_alpha) if conv_rank else None
        self.dropouts = dict(dropout=dropout, rank_dropout=rank_dropout, module_dropout=module_dropout)
        self.train_unet = train_unet
        self.trains_text_encoder = train_text_encoder
        self.unet_loras = nn.ModuleList()
        self.te_loras = nn.ModuleList()
        self._by_name: dict[str, LoRAModule] = {}

    # Network protocol ------------------------------------------------------------------------
    def create_modules(self, unet: nn.Module, text_encoders: list[nn.Module], *, sdxl: bool) -> None:
        """Build (without applying) one LoRA per kohya target."""
        if self.train_unet:
            for name, mod, is_3x3 in unet_targets(unet, sdxl=sdxl, conv=bool(self.conv_rank)):
                rank, alpha = (self.conv_rank, self.conv_alpha) if is_3x3 else (self.rank, self.alpha)
                self.unet_loras.append(LoRAModule(name, mod, rank, alpha, **self.dropouts))
        if self.trains_text_encoder:
            for prefix, enc in zip(text_encoder_prefixes(len(text_encoders)), text_encoders):
                for name, mod, _ in text_encoder_targets(enc, prefix):
                    self.te_loras.append(LoRAModule(name, mod, self.rank, self.alpha, **self.dropouts))
        self._by_name = {m.lora_name: m for m in self.modules_list()}

    def modules_list(self) -> list[LoRAModule]:
        return [*self.unet_loras, *self.te_loras]

    def apply_to(self, base) -> None:
        """Create the modules for this base model and hook them in."""
        if not self._by_name:
            self.create_modules(base.unet, base.text_encoders, sdxl=base.family == "sdxl")
        for m in self.modules_list():
            m.apply()

    def remove(self) -> None:
        for m in self.modules_list():
            m.remove()

    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        groups = []
        if len(self.unet_loras):
            groups.append({"params": [p for m in self.unet_loras for p in m.parameters()], "lr": unet_lr})
        if len(self.te_loras):
            groups.append({"params": [p for m in self.te_loras for p in m.parameters()], "lr": text_encoder_lr})
        return groups

    def set_multiplier(self, value: float) -> None:
        for m in self.modules_list():
            m.multiplier = value

    def refresh_scales(self) -> None:
        """scale = alpha / rank again after the alpha buffers were loaded (a checkpoint, another file)."""
        for m in self.modules_list():
            m.scale = float(m.alpha) / m.rank

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """Exactly kohya's tensors: `<name>.lora_down.weight`, `<name>.lora_up.weight`, `<name>.alpha`."""
        out = {}
        for m in self.modules_list():
            out[f"{m.lora_name}.lora_down.weight"] = m.lora_down.weight.detach()
            out[f"{m.lora_name}.lora_up.weight"] = m.lora_up.weight.detach()
            out[f"{m.lora_name}.alpha"] = m.alpha.detach()
        return out

    def save(self, path: Path, metadata: dict[str, str], dtype=None) -> None:
        from datakit.train.formats import save_kohya

        save_kohya(self.kohya_state_dict(), path, metadata, dtype)

    def load(self, path: Path) -> dict:
        """Load a kohya LoRA file into these modules (rank must match; alpha is taken from the file)."""
        from datakit.train.formats import load_kohya_into

        return load_kohya_into(self, path)
