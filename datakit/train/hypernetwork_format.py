"""A1111's hypernetwork file: NAME.pt (weights + settings) and NAME.pt.optim (optimizer state).

NAME.pt is a pickled dict of plain types only, so `torch.load(path, weights_only=True)` opens it:

    {768: (k_state_dict, v_state_dict), 320: (...), ...,      # int size -> pair of {key: tensor}
     "step": int, "name": str, "layer_structure": [1.0, 2.0, 1.0], "activation_func": str,
     "is_layer_norm": bool, "weight_initialization": str, "sd_checkpoint": str | None,
     "sd_checkpoint_name": str | None, "activate_output": bool, "use_dropout": bool,
     "dropout_structure": [float, ...], "last_layer_dropout": bool, "optional_info": str | None}

NAME.pt.optim is {"optimizer_name", "hash", "optimizer_state_dict"}; A1111 reuses the optimizer
state only when "hash" equals the first 10 hex digits of NAME.pt's sha256 — so do we.

Reading accepts what A1111 reads: old files (no dropout_structure: A1111's default rule; old
"linear1"/"linear2" keys) and its defaults for missing settings (activate_output defaults to True).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from datakit.errors import UsageError

SETTING_KEYS = ("step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
                "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
                "last_layer_dropout", "optional_info")
OLD_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
            "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}


def shorthash(path: Path) -> str:
    """A1111's short hash of a file: the first 10 hex digits of its sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:10]


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


def _write_atomic(obj, path: Path) -> None:
    from datakit.imageio import write_bytes_atomic

    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes_atomic(Path(path), buf.getvalue())


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


def read_hypernetwork_file(path, *, what: str = "hypernetwork") -> dict:
    """Rebuild a Hypernetwork from an A1111 .pt file: {"network", "meta", "optimizer_state"}."""
    from datakit.train.hypernetwork import ACTIVATIONS, Hypernetwork, default_dropout_structure

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
    net = Hypernetwork(sizes, layer_structure, activation, layer_norm=bool(state.get("is_layer_norm", False)),
                       dropout_structure=[float(x) for x in dropout], use_dropout=use_dropout,
                       activate_output=bool(state.get("activate_output", True)),
                       weight_init=state.get("weight_initialization") or "Normal", init=False)
    for size in sizes:
        pair = state[size]
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise UsageError(f"{what}: {path}: size {size} does not hold a (k, v) pair")
        for module, sd in zip(net.layers_for(size), pair):
            sd = {OLD_KEYS.get(k, k): v for k, v in sd.items()}
            try:
                module.load_state_dict(sd)
            except RuntimeError as exc:
                raise UsageError(f"{what}: {path}: size {size} does not match its settings "
                                 f"({' '.join(str(exc).split())[:300]})") from None
    meta = {k: state.get(k) for k in SETTING_KEYS}
    meta["layer_structure"] = layer_structure
    meta["dropout_structure"] = list(net.dropout_structure)
    meta["step"] = int(state.get("step") or 0)
    optimizer_state, optimizer_name = None, None
    optim_path = Path(f"{path}.optim")
    if optim_path.is_file():
        saved = _load_plain(optim_path, what)
        if isinstance(saved, dict) and saved.get("hash") == shorthash(path):
            optimizer_state = saved.get("optimizer_state_dict")
            optimizer_name = saved.get("optimizer_name", "AdamW")
    return {"network": net, "meta": meta, "optimizer_state": optimizer_state, "optimizer_name": optimizer_name}
