"""A1111's hypernetwork file: NAME.pt (weights + settings) and NAME.pt.optim (optimizer state).

NAME.pt is a pickled dict of plain types only, so `torch.load(path, weights_only=True)` opens it:

    {768: (k_state_dict, v_state_dict), 320: (...), ...,      # int size -> pair of {key: tensor}
     "step": int, "name": str, "layer_structure": [1.0, 2.0, 1.0], "activation_func": str,
     "is_layer_norm": bool, "weight_initialization": str, "sd_checkpoint": str | None,
     "sd_checkpoint_name": str | None, "activate_output": bool, "use_dropout": bool,
     "dropout_structure": [float, ...], "last_layer_dropout": bool, "optional_info": str | None}

NAME.pt.optim is {"optimizer_name", "hash", "optimizer_state_dict"}; A1111 reuses the optimizer
state only when "hash" equals the first 10 hex digits of NAME.pt's sha256 — so do we.

Both are written in the zip layout torch used before 2.1 (only `<dir>/data.pkl`, `<dir>/data/N`
and `<dir>/version`): stock A1111's safe-unpickle check (modules/safe.py, on by default) refuses
any other entry, such as the `.format_version`, `.storage_alignment`, `byteorder` and
`.data/serialization_id` records torch adds today, and every torch reads this layout.

Reading accepts what A1111 reads: old files (no dropout_structure: A1111's default rule; old
"linear1"/"linear2" keys) and its defaults for missing settings (activate_output defaults to True).
Reading never runs pickled code (weights_only). This module only knows the file: building the
modules from it is datakit.train.hypernetwork's job.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from datakit.errors import UsageError

# The activations ComfyUI also loads; "swish" is Hardswish, as A1111 defines it.
ACTIVATIONS = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "elu": nn.ELU,
    "swish": nn.Hardswish,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "softsign": nn.Softsign,
    "mish": nn.Mish,
}
A1111_DROPOUT = 0.3  # the rate A1111's default dropout rule uses
# modules/safe.py in A1111: the only zip entries its check lets through.
A1111_ZIP_ENTRIES = re.compile(r"^[^/]+/((data/\d+)|version|(data\.pkl))$")
_ALIGN = 64  # tensor records start on 64-byte boundaries, as torch writes them (memory-mapped loading)
_PADDING_FIELD = 0xD935  # a zip "extra" field id used only for alignment padding; readers skip it

SETTING_KEYS = ("step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
                "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
                "last_layer_dropout", "optional_info")
OLD_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
            "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}


def default_dropout_structure(layer_structure: list[float], use_dropout: bool, last_layer_dropout: bool = True,
                              rate: float = A1111_DROPOUT) -> list[float]:
    """A1111's rule for files without a dropout structure: `rate` after every hidden layer, the last
    hidden layer only with last_layer_dropout, never after the output."""
    n = len(layer_structure)
    if not use_dropout:
        return [0.0] * n
    values = [0.0] + [rate] * max(0, n - 3)
    if n >= 3:
        values.append(rate if last_layer_dropout else 0.0)
    values.append(0.0)
    return values


def comfyui_differences(activation: str, layer_norm: bool, activate_output: bool,
                        dropout_structure: list[float]) -> list[str]:
    """Why ComfyUI's hypernetwork loader would compute these settings differently from A1111 (empty: it matches).

    ComfyUI (comfy_extras/nodes_hypernetwork.py) rebuilds the modules from the keys and counts the
    LayerNorms as layers, so with layer norm it puts the activation after the output Linear too;
    and it adds Dropout(0.3) by its own rule and never switches to eval mode, so any dropout stays
    on at inference and its output is random.
    """
    reasons = []
    if layer_norm and activation != "linear" and not activate_output:
        reasons.append(f"layer norm with the {activation} activation (ComfyUI also applies {activation} after the "
                       "output layer; --activate-output or --activation linear match it)")
    if any(p > 0 for p in dropout_structure):
        reasons.append("dropout (ComfyUI keeps dropout on when it generates, so its results are random)")
    return reasons


def shorthash(path: Path) -> str:
    """A1111's short hash of a file: the first 10 hex digits of its sha256."""
    from datakit.train.formats import sha256_file

    return sha256_file(path)[:10]


def _plain_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state as a plain dict of fp32 CPU tensors, each with its own storage."""
    return {k: v.detach().to("cpu", torch.float32).clone().contiguous() for k, v in module.state_dict().items()}


def build_state(network, *, step: int = 0, name: str = "hypernetwork", sd_checkpoint: str | None = None,
                sd_checkpoint_name: str | None = None, optional_info: str | None = None) -> dict:
    """The dict A1111 writes (sizes first, in the network's order, then the settings)."""
    state: dict = {}
    for size in network.sizes:
        k, v = network.layers_for(size)
        state[int(size)] = (_plain_state(k), _plain_state(v))
    state.update({
        "step": int(step),
        "name": str(name),
        "layer_structure": [float(x) for x in network.layer_structure],
        "activation_func": str(network.activation),
        "is_layer_norm": bool(network.layer_norm),
        "weight_initialization": str(network.weight_init),
        "sd_checkpoint": sd_checkpoint,
        "sd_checkpoint_name": sd_checkpoint_name,
        "activate_output": bool(network.activate_output),
        "use_dropout": bool(network.use_dropout),
        "dropout_structure": [float(x) for x in network.dropout_structure],
        "last_layer_dropout": bool(network.last_layer_dropout),
        "optional_info": optional_info or None,
    })
    return state


def torch_bytes_a1111_accepts(obj) -> bytes:
    """torch.save(obj) in the zip layout of torch < 2.1: the records A1111's check refuses are left out.

    torch needs none of them to read the file (they record the writer's byte order and layout
    version, and the newer torch falls back to the defaults these files were written with).
    """
    raw = io.BytesIO()
    torch.save(obj, raw)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(raw.getvalue())) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not A1111_ZIP_ENTRIES.match(info.filename):
                continue
            entry = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            entry.compress_type = zipfile.ZIP_STORED
            # local header (30 bytes) + name + a padding field, so that the record's data starts aligned
            start = out.tell() + 30 + len(info.filename.encode("utf-8")) + 4
            pad = -start % _ALIGN
            entry.extra = struct.pack("<HH", _PADDING_FIELD, pad) + bytes(pad)
            dst.writestr(entry, src.read(info))
    return out.getvalue()


def _write_atomic(obj, path: Path) -> None:
    from datakit.imageio import write_bytes_atomic

    write_bytes_atomic(Path(path), torch_bytes_a1111_accepts(obj))


def save_hypernetwork(network, path, *, optimizer=None, optimizer_name: str = "AdamW", **meta) -> Path:
    """Write NAME.pt (and NAME.pt.optim when an optimizer is given), each atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(build_state(network, **meta), path)
    optim_path = Path(f"{path}.optim")
    if optimizer is not None:
        _write_atomic({"optimizer_name": optimizer_name, "hash": shorthash(path),
                       "optimizer_state_dict": optimizer.state_dict()}, optim_path)
    elif optim_path.exists():
        optim_path.unlink()  # a stale .optim would belong to other weights
    return path


def _load_plain(path: Path, what: str):
    from datakit.torchfile import load_plain_torch

    return load_plain_torch(path, what=what)


@dataclass
class HypernetworkStructure:
    """The settings that shape an A1111 hypernetwork's modules (what the file's settings keys describe)."""

    layer_structure: list[float]
    activation: str
    layer_norm: bool
    dropout_structure: list[float]
    use_dropout: bool
    activate_output: bool
    weight_init: str


@dataclass
class HypernetworkFile:
    """An A1111 .pt file read and checked: its structure, each size's (k, v) state dicts, the matching .optim."""

    path: Path
    sizes: list[int]
    structure: HypernetworkStructure
    modules: dict[int, tuple[dict, dict]]
    meta: dict = field(default_factory=dict)
    optimizer_state: dict | None = None  # only when NAME.pt.optim belongs to these weights (its hash)
    optimizer_name: str | None = None


def read_hypernetwork_state(path, *, what: str = "hypernetwork") -> HypernetworkFile:
    """Read an A1111 .pt (and its .optim) with A1111's defaults for what old files lack; never runs pickled code."""
    path = Path(path)
    state = _load_plain(path, what)
    if not isinstance(state, dict):
        raise UsageError(f"{what}: {path} is not an A1111 hypernetwork (not a dict)")
    sizes = [k for k in state if isinstance(k, int)]
    if not sizes:
        raise UsageError(f"{what}: {path} holds no hypernetwork modules (no integer size keys)")
    layer_structure = [float(x) for x in (state.get("layer_structure") or [1, 2, 1])]
    activation = state.get("activation_func") or "linear"
    if activation not in ACTIVATIONS:
        raise UsageError(f"{what}: {path} uses activation {activation!r}; supported: {', '.join(ACTIVATIONS)}")
    dropout = state.get("dropout_structure")
    use_dropout = (True if dropout is not None and any(dropout) else bool(state.get("use_dropout", False)))
    if dropout is None:
        dropout = default_dropout_structure(layer_structure, use_dropout, bool(state.get("last_layer_dropout", False)))
    modules = {}
    for size in sizes:
        pair = state[size]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(isinstance(sd, dict) for sd in pair):
            raise UsageError(f"{what}: {path}: size {size} does not hold a (k, v) pair of state dicts")
        modules[size] = tuple({OLD_KEYS.get(k, k): v for k, v in sd.items()} for sd in pair)
    meta = {k: state.get(k) for k in SETTING_KEYS}
    meta["layer_structure"] = layer_structure
    meta["dropout_structure"] = [float(x) for x in dropout]
    meta["step"] = int(state.get("step") or 0)
    optimizer_state, optimizer_name = None, None
    optim_path = Path(f"{path}.optim")
    if optim_path.is_file():
        saved = _load_plain(optim_path, what)
        if isinstance(saved, dict) and saved.get("hash") == shorthash(path):
            optimizer_state = saved.get("optimizer_state_dict")
            optimizer_name = saved.get("optimizer_name", "AdamW")
    structure = HypernetworkStructure(layer_structure=layer_structure, activation=activation,
                                      layer_norm=bool(state.get("is_layer_norm", False)),
                                      dropout_structure=[float(x) for x in dropout], use_dropout=use_dropout,
                                      activate_output=bool(state.get("activate_output", True)),
                                      weight_init=state.get("weight_initialization") or "Normal")
    return HypernetworkFile(path=path, sizes=sizes, structure=structure, modules=modules, meta=meta,
                            optimizer_state=optimizer_state, optimizer_name=optimizer_name)
