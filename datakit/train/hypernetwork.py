"""A1111 hypernetworks: the module layout, its initialisation, and how it hooks into attention.

A hypernetwork holds, for each context width ("size": 768, 320, ...), two small MLPs (k, v). In
every attention layer whose context has that width, A1111 replaces the context given to to_k by
context + HN_k(context) * strength, and the context given to to_v likewise (to_q is untouched).
Self-attention layers count too: their context is the hidden state itself (320/640/1280 wide in
SD1/SD2), which is why A1111 creates those sizes beside the text width (768 or 1024).

We hook the inputs of to_k / to_v (forward pre-hooks) instead of replacing the attention
function, so whatever attention processor the UNet uses (SDPA, xformers) keeps running. The MLP
runs in fp32 with autocast off, as A1111 runs it (cond_cast_float), and the result is cast back.

Module layout (the state-dict key indices must match A1111's Sequential exactly): for each pair of
widths in the layer structure, in this order:
    Linear;  activation (not after the last Linear unless activate_output; none for "linear");
    LayerNorm (if layer norm);  Dropout(p) (if dropout_structure[i + 1] > 0).
"""

from __future__ import annotations

import torch
from torch import nn

from datakit.errors import UsageError
from datakit.train.hypernetwork_format import (  # noqa: F401 - ACTIVATIONS, default_dropout_structure: used here and re-exported
    ACTIVATIONS,
    default_dropout_structure,
    read_hypernetwork_state,
    save_hypernetwork,
)

WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
DEFAULT_SIZES = {"sd1": [768, 320, 640, 1280], "sd2": [1024, 320, 640, 1280]}  # A1111's order: text width first


def parse_layer_structure(value) -> list[float]:
    """"1,2,1" -> [1.0, 2.0, 1.0]; must start and end with 1 (the MLP maps a width onto itself)."""
    try:
        nums = [float(x) for x in (value.split(",") if isinstance(value, str) else value) if str(x).strip()]
    except ValueError:
        raise UsageError(f"--layer-structure must be numbers like 1,2,1, not {value!r}") from None
    if len(nums) < 2:
        raise UsageError("--layer-structure needs at least two numbers, e.g. 1,2,1")
    if nums[0] != 1 or nums[-1] != 1:
        raise UsageError(f"--layer-structure must start and end with 1 (e.g. 1,2,1), not {value!r}")
    if any(n <= 0 for n in nums):
        raise UsageError("--layer-structure numbers must be positive")
    return nums


def parse_dropout_structure(value, layer_structure: list[float]) -> list[float]:
    """"0,0.3,0" -> [0.0, 0.3, 0.0]: one probability per layer width, first and last 0."""
    try:
        nums = [float(x) for x in (value.split(",") if isinstance(value, str) else value) if str(x).strip()]
    except ValueError:
        raise UsageError(f"--dropout-structure must be numbers like 0,0.3,0, not {value!r}") from None
    if len(nums) != len(layer_structure):
        raise UsageError(f"--dropout-structure needs {len(layer_structure)} numbers, one per --layer-structure "
                         f"entry, not {len(nums)}")
    if nums[0] != 0 or nums[-1] != 0:
        raise UsageError("--dropout-structure must start and end with 0 (no dropout on the input or the output)")
    if any(not 0 <= p < 1 for p in nums):
        raise UsageError("--dropout-structure probabilities must be in [0, 1)")
    return nums


def _init_layer(layer: nn.Module, weight_init: str, activation: str) -> None:
    """A1111's initialisation: LayerNorms always get Normal; biases N(0, 0) (zero) or zeros."""
    w, b = layer.weight.data, layer.bias.data
    if weight_init == "Normal" or isinstance(layer, nn.LayerNorm):
        nn.init.normal_(w, mean=0.0, std=0.01)
        nn.init.zeros_(b)
        return
    nonlinearity = "leaky_relu" if activation == "leakyrelu" else "relu"
    if weight_init == "XavierUniform":
        nn.init.xavier_uniform_(w)
    elif weight_init == "XavierNormal":
        nn.init.xavier_normal_(w)
    elif weight_init == "KaimingUniform":
        nn.init.kaiming_uniform_(w, nonlinearity=nonlinearity)
    elif weight_init == "KaimingNormal":
        nn.init.kaiming_normal_(w, nonlinearity=nonlinearity)
    else:
        raise UsageError(f"--weight-init must be one of {', '.join(WEIGHT_INITS)}, not {weight_init!r}")
    nn.init.zeros_(b)


class HypernetworkModule(nn.Module):
    """One MLP: x + linear(x) * multiplier (multiplier 1 while training, as A1111)."""

    def __init__(self, dim: int, layer_structure: list[float], activation: str = "linear", *,
                 layer_norm: bool = False, dropout_structure: list[float] | None = None,
                 activate_output: bool = False, weight_init: str = "Normal", init: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UsageError(f"--activation must be one of {', '.join(ACTIVATIONS)}, not {activation!r}")
        self.multiplier = 1.0
        n = len(layer_structure)
        layers: list[nn.Module] = []
        for i in range(n - 1):
            layers.append(nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
            is_last = i >= n - 2
            if activation != "linear" and (not is_last or activate_output):
                layers.append(ACTIVATIONS[activation]())
            if layer_norm:
                layers.append(nn.LayerNorm(int(dim * layer_structure[i + 1])))
            if dropout_structure is not None and dropout_structure[i + 1] > 0:
                layers.append(nn.Dropout(p=dropout_structure[i + 1]))
        self.linear = nn.Sequential(*layers)
        if init:
            for layer in self.linear:
                if isinstance(layer, (nn.Linear, nn.LayerNorm)):
                    _init_layer(layer, weight_init, activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.linear(x) * (1.0 if self.training else self.multiplier)


class Hypernetwork(nn.Module):
    """All (k, v) module pairs of one hypernetwork, its A1111 settings, and the attention hooks."""

    trains_text_encoder = False
    file_suffix = ".pt"

    def __init__(self, sizes: list[int], layer_structure: list[float], activation: str = "linear", *,
                 layer_norm: bool = False, dropout_structure: list[float] | None = None, use_dropout: bool | None = None,
                 activate_output: bool = False, weight_init: str = "Normal", init: bool = True):
        super().__init__()
        self.sizes = [int(s) for s in sizes]
        self.layer_structure = [float(x) for x in layer_structure]
        self.activation = activation
        self.layer_norm = bool(layer_norm)
        self.dropout_structure = ([float(x) for x in dropout_structure] if dropout_structure is not None
                                  else [0.0] * len(self.layer_structure))
        self.use_dropout = any(self.dropout_structure) if use_dropout is None else bool(use_dropout)
        self.activate_output = bool(activate_output)
        self.weight_init = weight_init
        self.pairs = nn.ModuleDict()  # str(size) -> ModuleList([k, v]); insertion order = A1111's param order
        for size in self.sizes:
            self.pairs[str(size)] = nn.ModuleList([self._module(size, init) for _ in range(2)])
        self._handles: list = []
        self.hooked: dict[int, int] = {}  # size -> number of attention layers using it

    def _module(self, size: int, init: bool) -> HypernetworkModule:
        return HypernetworkModule(size, self.layer_structure, self.activation, layer_norm=self.layer_norm,
                                  dropout_structure=self.dropout_structure, activate_output=self.activate_output,
                                  weight_init=self.weight_init, init=init)

    @property
    def last_layer_dropout(self) -> bool:
        """A1111 stores this as 'dropout after the last hidden layer'."""
        return len(self.dropout_structure) >= 2 and self.dropout_structure[-2] != 0

    def layers_for(self, size: int):
        pair = self.pairs[str(size)] if str(size) in self.pairs else None
        return (pair[0], pair[1]) if pair is not None else None

    # -- applying ------------------------------------------------------------------------------

    def context(self, x: torch.Tensor, which: int) -> torch.Tensor:
        """context + HN(context) * strength for key (which=0) or value (which=1), chosen by width, in fp32."""
        pair = self.pairs[str(x.shape[-1])] if str(x.shape[-1]) in self.pairs else None
        if pair is None:
            return x
        with torch.autocast(x.device.type, enabled=False):
            out = pair[which](x.float())
        return out.to(x.dtype)

    def apply_to(self, base) -> None:
        """Hook to_k/to_v of every attention layer of the UNet whose context width has modules."""
        unet = getattr(base, "unet", base)
        self.remove()
        for name, module in unet.named_modules():
            to_k, to_v = getattr(module, "to_k", None), getattr(module, "to_v", None)
            if not isinstance(to_k, nn.Linear) or not isinstance(to_v, nn.Linear):
                continue
            width = to_k.in_features
            if str(width) not in self.pairs:
                continue
            self._handles.append(to_k.register_forward_pre_hook(self._pre_hook(0)))
            self._handles.append(to_v.register_forward_pre_hook(self._pre_hook(1)))
            self.hooked[width] = self.hooked.get(width, 0) + 1

    def _pre_hook(self, which: int):
        def hook(_module, args):
            return (self.context(args[0], which), *args[1:])
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.hooked = {}

    # -- training --------------------------------------------------------------------------------

    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": unet_lr}]

    def set_multiplier(self, value: float) -> None:
        for pair in self.pairs.values():
            for m in pair:
                m.multiplier = float(value)

    def save(self, path, metadata: dict | None = None, dtype=None) -> None:
        save_hypernetwork(self, path, **(metadata or {}))

    def load(self, path) -> dict:
        """Copy weights from an A1111 file with the same settings; returns its metadata."""
        data = read_hypernetwork_file(path)
        other = data["network"]
        mine = {k: v.shape for k, v in self.state_dict().items()}
        theirs = {k: v.shape for k, v in other.state_dict().items()}
        if mine != theirs:
            raise UsageError(f"{path}: its sizes or layer structure differ from this run's settings")
        self.load_state_dict(other.state_dict())
        return data["meta"]

    def describe(self) -> str:
        ls = ",".join(f"{x:g}" for x in self.layer_structure)
        extra = [f"activation {self.activation}"]
        if self.layer_norm:
            extra.append("layer norm")
        if any(self.dropout_structure):
            extra.append("dropout " + ",".join(f"{x:g}" for x in self.dropout_structure))
        if self.activate_output:
            extra.append("activated output")
        return f"hypernetwork {ls} ({', '.join(extra)}; init {self.weight_init}) on sizes {self.sizes}"


def read_hypernetwork_file(path, *, what: str = "hypernetwork") -> dict:
    """Rebuild a Hypernetwork from an A1111 .pt file: {"network", "meta", "optimizer_state", "optimizer_name"}."""
    f = read_hypernetwork_state(path, what=what)
    st = f.structure
    net = Hypernetwork(f.sizes, st.layer_structure, st.activation, layer_norm=st.layer_norm,
                       dropout_structure=st.dropout_structure, use_dropout=st.use_dropout,
                       activate_output=st.activate_output, weight_init=st.weight_init, init=False)
    for size, pair in f.modules.items():
        for module, sd in zip(net.layers_for(size), pair):
            try:
                module.load_state_dict(sd)
            except RuntimeError as exc:
                raise UsageError(f"{what}: {f.path}: size {size} does not match its settings "
                                 f"({' '.join(str(exc).split())[:300]})") from None
    return {"network": net, "meta": f.meta, "optimizer_state": f.optimizer_state, "optimizer_name": f.optimizer_name}


def sizes_for(base, family: str) -> list[int]:
    """Default --sizes: the text-context width first (A1111's order), then every attention width of the UNet."""
    if family == "sdxl":
        raise UsageError("hypernetworks for SDXL are not supported: A1111 and ComfyUI have no 2048-wide modules; "
                         "train a LoRA (--method lora) for SDXL")
    unet = getattr(base, "unet", base)
    cross = int(unet.config.cross_attention_dim)
    widths = []
    for module in unet.modules():
        to_k = getattr(module, "to_k", None)
        if isinstance(to_k, nn.Linear) and to_k.in_features not in widths and to_k.in_features != cross:
            widths.append(to_k.in_features)
    return [cross] + sorted(widths)
