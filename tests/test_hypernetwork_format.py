"""The A1111 .pt file: plain types (weights_only), A1111's safe-unpickle check, exact rebuild, .optim, old files, ComfyUI."""

from __future__ import annotations

import importlib
import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from datakit.errors import UsageError
from datakit.train.hypernetwork import ACTIVATIONS, Hypernetwork, read_hypernetwork_file
from datakit.train.hypernetwork_format import comfyui_differences, save_hypernetwork, shorthash

SETTINGS = ["step", "name", "layer_structure", "activation_func", "is_layer_norm", "weight_initialization",
            "sd_checkpoint", "sd_checkpoint_name", "activate_output", "use_dropout", "dropout_structure",
            "last_layer_dropout", "optional_info"]


def _net(**kw):
    torch.manual_seed(0)
    args = dict(sizes=[16, 8], layer_structure=[1, 2, 2, 1], activation="swish", layer_norm=True,
                dropout_structure=[0, 0.3, 0.3, 0], weight_init="XavierNormal")
    args.update(kw)
    return Hypernetwork(args.pop("sizes"), args.pop("layer_structure"), **args)


def _comfy_rebuild(pair: dict, activation: str, layer_norm: bool, use_dropout: bool, activate_output: bool,
                   last_layer_dropout: bool) -> nn.Sequential:
    """How ComfyUI's hypernetwork loader rebuilds one module from the keys alone (independent of our code)."""
    names = [k[: -len(".weight")] for k in pair if k.endswith(".weight")]
    layers, i = [], 0
    while i < len(names):
        last, penultimate = i == len(names) - 1, i == len(names) - 2
        w = pair[f"{names[i]}.weight"]
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.load_state_dict({"weight": w, "bias": pair[f"{names[i]}.bias"]})
        layers.append(lin)
        if activation != "linear" and (not last or activate_output):
            layers.append(ACTIVATIONS[activation]())
        if layer_norm:
            i += 1
            ln_w = pair[f"{names[i]}.weight"]
            ln = nn.LayerNorm(ln_w.shape[0])
            ln.load_state_dict({"weight": ln_w, "bias": pair[f"{names[i]}.bias"]})
            layers.append(ln)
        if use_dropout and not last and (not penultimate or last_layer_dropout):
            layers.append(nn.Dropout(0.3))
        i += 1
    return nn.Sequential(*layers)


def test_file_is_plain_and_has_every_a1111_key(tmp_path):
    net = _net()
    path = save_hypernetwork(net, tmp_path / "hn.pt", step=7, name="hn", sd_checkpoint="0123456789",
                             sd_checkpoint_name="model", optional_info="info")
    state = torch.load(path, weights_only=True)  # no pickled code: opens with the safe loader
    assert [k for k in state if isinstance(k, int)] == [16, 8]
    assert all(k in state for k in SETTINGS)
    assert state["step"] == 7 and state["name"] == "hn" and state["activation_func"] == "swish"
    assert state["layer_structure"] == [1.0, 2.0, 2.0, 1.0] and state["dropout_structure"] == [0.0, 0.3, 0.3, 0.0]
    assert state["is_layer_norm"] is True and state["use_dropout"] is True and state["last_layer_dropout"] is True
    assert state["activate_output"] is False and state["weight_initialization"] == "XavierNormal"
    k, v = state[16]
    assert isinstance(state[16], tuple) and type(k) is dict and all(t.dtype == torch.float32 for t in k.values())
    assert list(k) == ["linear.0.weight", "linear.0.bias", "linear.2.weight", "linear.2.bias", "linear.4.weight",
                       "linear.4.bias", "linear.6.weight", "linear.6.bias", "linear.8.weight", "linear.8.bias",
                       "linear.9.weight", "linear.9.bias"]
    assert not (tmp_path / "hn.pt.optim").exists()


def test_saved_file_rebuilds_identical_modules(tmp_path):
    net = _net().eval()
    path = save_hypernetwork(net, tmp_path / "hn.pt", step=3)
    loaded = read_hypernetwork_file(path)
    again = loaded["network"].eval()
    assert loaded["meta"]["step"] == 3 and again.sizes == [16, 8]
    assert [type(m).__name__ for m in again.layers_for(16)[0].linear] == [type(m).__name__ for m in net.layers_for(16)[0].linear]
    for (a, ta), (b, tb) in zip(net.state_dict().items(), again.state_dict().items()):
        assert a == b and torch.equal(ta, tb)
    x = torch.randn(2, 3, 16)
    assert torch.equal(net.context(x, 1), again.context(x, 1))


# ComfyUI counts LayerNorms as layers when it looks for the last Linear, so with --layer-norm it adds an
# activation after the output layer that A1111 does not; these cases (no layer norm) it reads exactly.
@pytest.mark.parametrize("kw", [
    {"layer_norm": False},
    {"layer_structure": [1, 2, 1], "activation": "linear", "layer_norm": False, "dropout_structure": None},
    {"layer_structure": [1, 2, 1], "activation": "relu", "layer_norm": False, "activate_output": True,
     "dropout_structure": [0, 0.3, 0]},
    {"layer_structure": [1, 2, 2, 1], "activation": "mish", "layer_norm": False, "dropout_structure": [0, 0.3, 0, 0]},
])
def test_comfyui_style_rebuild_gives_the_same_outputs(tmp_path, kw):
    net = _net(**kw).eval()
    state = torch.load(save_hypernetwork(net, tmp_path / "hn.pt"), weights_only=True)
    for size in (16, 8):
        for which in (0, 1):
            seq = _comfy_rebuild(state[size][which], state["activation_func"], state["is_layer_norm"],
                                 state["use_dropout"], state["activate_output"], state["last_layer_dropout"]).eval()
            x = torch.randn(3, size)
            module = net.layers_for(size)[which]
            assert [type(m).__name__ for m in seq] == [type(m).__name__ for m in module.linear]
            assert torch.allclose(x + seq(x), module(x), atol=1e-6)


def _trained_one_step():
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss = sum(m(torch.randn(2, s)).pow(2).mean() for s in (16, 8) for m in net.layers_for(s))
    loss.backward()
    opt.step()
    return net, opt


def test_optimizer_state_goes_beside_the_file_and_is_checked_by_hash(tmp_path):
    net, opt = _trained_one_step()
    path = save_hypernetwork(net, tmp_path / "hn.pt", optimizer=opt, step=1)
    saved = torch.load(f"{path}.optim", weights_only=True)
    assert saved["optimizer_name"] == "AdamW" and saved["hash"] == shorthash(path) and len(saved["hash"]) == 10
    loaded = read_hypernetwork_file(path)
    assert loaded["optimizer_name"] == "AdamW" and loaded["optimizer_state"]["state"]
    fresh = torch.optim.AdamW(loaded["network"].parameters(), lr=1e-3)
    fresh.load_state_dict(loaded["optimizer_state"])  # same parameter order: it fits
    # Weights changed without the .optim: A1111 (and we) ignore the stale optimizer state.
    save_hypernetwork(_net(weight_init="Normal"), tmp_path / "other.pt", step=1)
    (tmp_path / "other.pt.optim").write_bytes((tmp_path / "hn.pt.optim").read_bytes())
    assert read_hypernetwork_file(tmp_path / "other.pt")["optimizer_state"] is None


def test_reads_old_a1111_files(tmp_path):
    torch.manual_seed(0)
    pair = ({"linear1.weight": torch.randn(16, 8), "linear1.bias": torch.randn(16),
             "linear2.weight": torch.randn(8, 16), "linear2.bias": torch.randn(8)},) * 2
    torch.save({8: pair, "step": 100, "name": "old"}, tmp_path / "old.pt")
    loaded = read_hypernetwork_file(tmp_path / "old.pt")
    net, meta = loaded["network"], loaded["meta"]
    # A1111's defaults for what old files lack: 1,2,1, no activation, and activate_output True.
    assert net.layer_structure == [1.0, 2.0, 1.0] and net.activation == "linear" and net.activate_output is True
    assert meta["step"] == 100 and net.dropout_structure == [0.0, 0.0, 0.0]
    assert torch.equal(net.layers_for(8)[0].linear[1].weight, pair[0]["linear2.weight"])
    # use_dropout without a dropout structure: A1111's rule (here without last-layer dropout).
    sd = {}
    for idx, (a, b) in zip((0, 2, 3), ((8, 16), (16, 16), (16, 8))):  # Linear, Dropout, Linear, Linear
        sd[f"linear.{idx}.weight"], sd[f"linear.{idx}.bias"] = torch.zeros(b, a), torch.zeros(b)
    torch.save({8: (sd, sd), "layer_structure": [1, 2, 2, 1], "activation_func": "linear", "use_dropout": True,
                "last_layer_dropout": False}, tmp_path / "drop.pt")
    assert read_hypernetwork_file(tmp_path / "drop.pt")["network"].dropout_structure == [0.0, 0.3, 0.0, 0.0]


class _NotPlain:
    pass


def test_unsafe_or_foreign_files_are_refused_clearly(tmp_path):
    torch.save({8: ({}, {}), "extra": _NotPlain()}, tmp_path / "unsafe.pt")
    with pytest.raises(UsageError, match="refusing to load"):
        read_hypernetwork_file(tmp_path / "unsafe.pt")
    torch.save({"step": 1}, tmp_path / "empty.pt")
    with pytest.raises(UsageError, match="no hypernetwork modules"):
        read_hypernetwork_file(tmp_path / "empty.pt")
    net = _net(activation="relu")
    path = save_hypernetwork(net, tmp_path / "gelu.pt")
    state = torch.load(path, weights_only=True)
    state["activation_func"] = "gelu"
    torch.save(state, path)
    with pytest.raises(UsageError, match="activation 'gelu'"):
        read_hypernetwork_file(path)
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(UsageError, match="cannot read"):
        read_hypernetwork_file(tmp_path / "junk.pt")
    with pytest.raises(UsageError, match="not found"):
        read_hypernetwork_file(tmp_path / "missing.pt")


def test_load_into_network_checks_shapes(tmp_path):
    path = save_hypernetwork(_net(), tmp_path / "hn.pt")
    same = _net(weight_init="Normal")
    same.load(path)
    assert torch.equal(same.state_dict()["pairs.16.0.linear.0.weight"], _net().state_dict()["pairs.16.0.linear.0.weight"])
    with pytest.raises(UsageError, match="differ"):
        _net(layer_structure=[1, 1], dropout_structure=None).load(path)


# ---- stock A1111 opens the files -----------------------------------------------------------------------
# Its safe-unpickle check, re-implemented here from reading AUTOMATIC1111/stable-diffusion-webui
# modules/safe.py (check_pt, check_zip_filenames, RestrictedUnpickler.find_class / persistent_load):
# a zip may hold only `<dir>/data.pkl`, `<dir>/version`, `<dir>/data/<n>` and exactly one data.pkl,
# which is unpickled with a class allow-list; a non-zip file (torch's legacy format) has its first
# five pickles unpickled with the same allow-list.

A1111_ENTRY = re.compile(r"^([^/]+)/((data/\d+)|version|(data\.pkl))$")
A1111_DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")
A1111_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    *(("torch", n) for n in ("FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "DoubleStorage",
                             "ByteStorage", "float32", "BFloat16Storage")),
    ("torch.nn.modules.container", "ParameterDict"),
    ("numpy.core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "dtype"), ("numpy", "ndarray"), ("_codecs", "encode"), ("__builtin__", "set"),
}


class _A1111Unpickler(pickle.Unpickler):
    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return torch.storage.TypedStorage(_internal=True)

    def find_class(self, module, name):
        if (module, name) in A1111_GLOBALS:
            return getattr(importlib.import_module(module), name)
        raise pickle.UnpicklingError(f"global '{module}/{name}' is forbidden")


def a1111_safe_check(path) -> None:
    """Raises where stock A1111 (safe unpickling on, its default) refuses to open the file."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if not A1111_ENTRY.match(name):
                    raise ValueError(f"bad file inside {path}: {name}")
            pkls = [n for n in z.namelist() if A1111_DATA_PKL.match(n)]
            if len(pkls) != 1:
                raise ValueError(f"{len(pkls)} data.pkl in {path}")
            with z.open(pkls[0]) as fh:
                _A1111Unpickler(fh).load()
    except zipfile.BadZipFile:
        with open(path, "rb") as fh:
            unpickler = _A1111Unpickler(fh)
            for _ in range(5):
                unpickler.load()


def test_stock_a1111_safe_check_accepts_the_files_and_weights_only_opens_them(tmp_path):
    net, opt = _trained_one_step()
    path = save_hypernetwork(net, tmp_path / "hn.pt", optimizer=opt, step=5, sd_checkpoint="0123456789",
                             sd_checkpoint_name="model", optional_info="info")
    a1111_safe_check(path)
    a1111_safe_check(f"{path}.optim")
    for mmap in (False, True):  # ComfyUI's --mmap-torch-files maps the file
        state = torch.load(path, weights_only=True, mmap=mmap)
        assert torch.equal(state[16][0]["linear.0.weight"], net.layers_for(16)[0].linear[0].weight)
    optim = torch.load(f"{path}.optim", weights_only=True)
    assert optim["hash"] == shorthash(path) and optim["optimizer_state_dict"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert read_hypernetwork_file(path)["optimizer_state"] is not None


def test_the_a1111_check_refuses_what_a1111_refuses(tmp_path):
    state = torch.load(save_hypernetwork(_net(), tmp_path / "hn.pt"), weights_only=True)
    torch.save(state, tmp_path / "default.pt")  # today's torch.save: .format_version, byteorder, ... entries
    with pytest.raises(ValueError, match="bad file inside"):
        a1111_safe_check(tmp_path / "default.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    a1111_safe_check(tmp_path / "legacy.pt")  # plain data in torch's legacy format passes
    torch.save(dict(state, path=Path("x")), tmp_path / "class.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(pickle.UnpicklingError, match="forbidden"):
        a1111_safe_check(tmp_path / "class.pt")


# ComfyUI (comfy_extras/nodes_hypernetwork.py) runs its rebuilt Sequential as built: in training mode.
# A1111 (modules/hypernetworks/hypernetwork.py, HypernetworkModule) builds Linear, activation (not
# after the last Linear unless activate_output), LayerNorm, Dropout, and generates in eval mode.

def _a1111_rebuild(pair: dict, state: dict) -> nn.Sequential:
    n = len(state["layer_structure"])
    layers, idx = [], 0
    for i in range(n - 1):
        w = pair[f"linear.{idx}.weight"]
        lin = nn.Linear(w.shape[1], w.shape[0])
        lin.load_state_dict({"weight": w, "bias": pair[f"linear.{idx}.bias"]})
        layers.append(lin)
        idx += 1
        if state["activation_func"] != "linear" and (i < n - 2 or state["activate_output"]):
            layers.append(ACTIVATIONS[state["activation_func"]]())
            idx += 1
        if state["is_layer_norm"]:
            ln = nn.LayerNorm(w.shape[0])
            ln.load_state_dict({"weight": pair[f"linear.{idx}.weight"], "bias": pair[f"linear.{idx}.bias"]})
            layers.append(ln)
            idx += 1
        if state["dropout_structure"][i + 1] > 0:
            layers.append(nn.Dropout(state["dropout_structure"][i + 1]))
            idx += 1
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("layers", [[1, 2, 1], [1, 2, 2, 1]])
@pytest.mark.parametrize("activation", ["linear", "relu", "tanh"])
@pytest.mark.parametrize("layer_norm", [False, True])
@pytest.mark.parametrize("activate_output", [False, True])
@pytest.mark.parametrize("dropout", [False, True])
def test_comfyui_warning_exactly_when_comfyui_computes_differently(tmp_path, layers, activation, layer_norm,
                                                                   activate_output, dropout):
    drop = [0.0] + [0.3] * (len(layers) - 2) + [0.0] if dropout else None
    net = _net(layer_structure=layers, activation=activation, layer_norm=layer_norm, activate_output=activate_output,
               dropout_structure=drop, weight_init="XavierNormal")
    with torch.no_grad():  # LayerNorm weights away from 1/0 so that every layer shows
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    state = torch.load(save_hypernetwork(net, tmp_path / "hn.pt"), weights_only=True)
    differs = False
    for size in (16, 8):
        for which in (0, 1):
            pair = state[size][which]
            comfy = _comfy_rebuild(pair, state["activation_func"], state["is_layer_norm"], state["use_dropout"],
                                   state["activate_output"], state["last_layer_dropout"])  # train mode, as ComfyUI
            a1111 = _a1111_rebuild(pair, state)
            x = torch.randn(4, size)
            with torch.no_grad():
                differs |= not all(torch.allclose(comfy(x), a1111(x), atol=1e-6) for _ in range(3))
    assert bool(comfyui_differences(activation, layer_norm, activate_output, net.dropout_structure)) == differs


@pytest.mark.usefixtures("one_torch_thread")
def test_training_warns_at_the_start_when_comfyui_would_differ(tmp_path):
    from datakit.console import Reporter
    from datakit.train import loop as T
    from datakit.train.config import build_config
    from datakit.testing import save_tiny_model, write_tiny_dataset

    model = save_tiny_model(tmp_path / "model", "sd1")
    ds = write_tiny_dataset(tmp_path / "ds", images=1, size=32)

    def warnings(out, **kw):
        values = {"dataset": ds, "base_model": str(model), "output": tmp_path / out, "device": "cpu", "max_steps": 1,
                  "method": "hypernetwork", **kw}
        return [w for w in T.run_train(build_config(values), Reporter(quiet=True))["warnings"] if "ComfyUI" in w]

    assert warnings("a", layer_norm=True, activation="relu", dropout_structure="0,0.1,0")
    assert not warnings("b", layer_norm=True, activation="relu", activate_output=True)
