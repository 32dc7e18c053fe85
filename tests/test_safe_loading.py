"""Nothing datakit opens runs pickled code: a crafted pickle at every place that loads a file is refused cleanly.

Each crafted file would write a marker file when unpickled (the first test proves the payload works
with a plain unpickler); every loader must refuse it with one `error:` line and the documented exit
code, and the marker must never appear.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from datakit.cli.main import main
from datakit.testing import save_tiny_model, write_tiny_dataset

PACKAGE = Path(__file__).resolve().parent.parent / "datakit"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Payload:
    """Unpickling this runs exec: it writes `marker` (what an attacker's file would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _evil(obj_with_payload, dest: Path, *, legacy: bool = False) -> Path:
    """torch.save a structure holding the payload (zip format, or torch's older non-zip format)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj_with_payload, dest, _use_new_zipfile_serialization=not legacy)
    return dest


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "MARKER-pwned"


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("safe-sd1") / "model", "sd1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("safe-ds") / "ds", images=1, size=32)


def _run(capsys, *args) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    return exc.value.code, err


def _refused(code, err, marker, *, exit_code=2, match="refusing to load"):
    assert not marker.exists(), "the pickled payload ran"
    assert code == exit_code, err
    assert "Traceback" not in err and "error:" in err and match in err, err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err  # no unsafe advice


def test_the_payload_is_live(tmp_path, marker):
    """The crafted files really run code under a plain unpickler; the tests below would fail if a loader did."""
    path = _evil({"x": _Payload(marker)}, tmp_path / "evil.pt")
    torch.load(path, weights_only=False)
    assert marker.read_text() == "pwned"
    marker.unlink()
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.exists()


def _lora_args(sd1, dataset, out, *extra):
    return ["train", dataset, "--base-model", sd1, "--output", out, "--device", "cpu", "--max-steps", "2",
            "--rank", "2", "--quiet", *extra]


def test_resume_refuses_an_old_pickled_checkpoint(tmp_path, sd1, dataset, marker, capsys):
    folder = tmp_path / "shared-checkpoint"
    _evil({"step": 1, "network": _Payload(marker)}, folder / "state.pt")
    code, err = _run(capsys, *_lora_args(sd1, dataset, tmp_path / "out", "--resume", folder))
    _refused(code, err, marker, match="older datakit")


def test_resume_auto_refuses_an_old_pickled_checkpoint(tmp_path, sd1, dataset, marker, capsys):
    out = tmp_path / "out"
    _evil({"step": 1, "network": _Payload(marker)}, out / "checkpoints" / "step-000001" / "state.pt", legacy=True)
    code, err = _run(capsys, *_lora_args(sd1, dataset, out, "--resume", "auto"))
    _refused(code, err, marker, match="older datakit")


def test_resume_refuses_a_pickle_posing_as_the_tensor_file(tmp_path, sd1, dataset, marker, capsys):
    out = tmp_path / "out"
    code, _ = _run(capsys, *_lora_args(sd1, dataset, out, "--save-every", "1", "--max-steps", "2"))
    assert code == 0
    folder = out / "checkpoints" / "step-000001"
    bad = io.BytesIO()
    torch.save({"x": _Payload(marker)}, bad)
    (folder / "state.safetensors").write_bytes(bad.getvalue())
    body = json.loads((folder / "state.json").read_text())
    body["tensors_sha256"] = hashlib.sha256(bad.getvalue()).hexdigest()  # a consistent forgery, not a stale file
    (folder / "state.json").write_text(json.dumps(body))
    code, err = _run(capsys, *_lora_args(sd1, dataset, out, "--resume", folder, "--max-steps", "3"))
    _refused(code, err, marker, match="not a valid safetensors file")


@pytest.mark.parametrize("kind", ["pickle-named-safetensors", "bad-header-length", "bad-header-json", "pt-file"])
def test_network_weights_refuses_pickles_and_broken_files(tmp_path, sd1, dataset, marker, capsys, kind):
    path = tmp_path / "weights.safetensors"
    if kind == "pickle-named-safetensors":
        _evil({"x": _Payload(marker)}, path)
        match = "not a readable .safetensors file"
    elif kind == "bad-header-length":
        path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
        match = "not a readable .safetensors file"
    elif kind == "bad-header-json":
        path.write_bytes((9).to_bytes(8, "little") + b"{not json")
        match = "not a readable .safetensors file"
    else:
        path = _evil({"x": _Payload(marker)}, tmp_path / "weights.pt")
        match = ".safetensors file, not weights.pt"
    code, err = _run(capsys, *_lora_args(sd1, dataset, tmp_path / "out", "--network-weights", path))
    _refused(code, err, marker, match=match)


def _hn_args(sd1, dataset, out, *extra):
    return ["train", dataset, "--method", "hypernetwork", "--base-model", sd1, "--output", out, "--device", "cpu",
            "--max-steps", "2", "--quiet", *extra]


@pytest.mark.parametrize("legacy", [False, True])
def test_hypernetwork_resume_refuses_a_pickle_with_code(tmp_path, sd1, dataset, marker, capsys, legacy):
    evil = _evil({768: ({}, {}), "step": 1, "name": _Payload(marker)}, tmp_path / "hn.pt", legacy=legacy)
    code, err = _run(capsys, *_hn_args(sd1, dataset, tmp_path / "out", "--resume", evil))
    _refused(code, err, marker)


def test_hypernetwork_resume_refuses_an_optim_file_with_code(tmp_path, sd1, dataset, marker, capsys):
    out = tmp_path / "out"
    code, _ = _run(capsys, *_hn_args(sd1, dataset, out, "--save-every", "1", "--output-name", "hn"))
    assert code == 0
    good = out / "checkpoints" / "hn-1.pt"
    assert Path(f"{good}.optim").is_file()
    _evil({"optimizer_name": "AdamW", "hash": "x", "optimizer_state_dict": _Payload(marker)}, Path(f"{good}.optim"))
    code, err = _run(capsys, *_hn_args(sd1, dataset, tmp_path / "out2", "--resume", good))
    _refused(code, err, marker)
    assert ".optim" in err
    # --resume auto finds the same checkpoint in OUT and refuses it the same way
    code, err = _run(capsys, *_hn_args(sd1, dataset, out, "--resume", "auto", "--output-name", "hn", "--max-steps", "3"))
    _refused(code, err, marker)


@pytest.mark.parametrize("legacy", [False, True])
def test_base_model_ckpt_with_code_is_refused(tmp_path, dataset, marker, capsys, legacy):
    ckpt = _evil({"state_dict": {"model.diffusion_model.x": torch.zeros(1), "evil": _Payload(marker)}},
                 tmp_path / "model.ckpt", legacy=legacy)
    code, err = _run(capsys, "train", dataset, "--base-model", ckpt, "--output", tmp_path / "out", "--device", "cpu",
                     "--max-steps", "1", "--quiet")
    _refused(code, err, marker)


def test_base_model_folder_with_pickled_weights_is_refused(tmp_path, sd1, dataset, marker, capsys):
    model = tmp_path / "model"
    shutil.copytree(sd1, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.unlink()
    _evil({"conv_in.weight": _Payload(marker)}, model / "unet" / "diffusion_pytorch_model.bin")
    code, err = _run(capsys, "train", dataset, "--base-model", model, "--output", tmp_path / "out", "--device", "cpu",
                     "--max-steps", "1", "--quiet")
    _refused(code, err, marker, exit_code=4, match="could run code")


@pytest.mark.parametrize("form", ["file", "folder"])
def test_backgrounds_vae_with_code_is_refused(tmp_path, sd1, marker, capsys, form):
    if form == "file":
        vae = _evil({"state_dict": {"encoder.conv_in.weight": _Payload(marker)}}, tmp_path / "vae.pt")
    else:
        vae = tmp_path / "vae"
        vae.mkdir()
        shutil.copy(sd1 / "vae" / "config.json", vae / "config.json")
        _evil({"encoder.conv_in.weight": _Payload(marker)}, vae / "diffusion_pytorch_model.bin")
    code, err = _run(capsys, "backgrounds", tmp_path / "bg", "--engine", "sdxl", "--model", sd1, "--vae", vae,
                     "--count", "1", "--width", "32", "--height", "32", "--steps", "1", "--device", "cpu", "--quiet")
    _refused(code, err, marker)


# ---- no unsafe loader anywhere in the package ------------------------------------------------------

def _call_name(node: ast.Call) -> str:
    parts = []
    f = node.func
    while isinstance(f, ast.Attribute):
        parts.append(f.attr)
        f = f.value
    if isinstance(f, ast.Name):
        parts.append(f.id)
    return ".".join(reversed(parts))


def _keyword(node: ast.Call, name: str):
    for kw in node.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unsafe_loads(source: str) -> list[str]:
    """Calls that could unpickle arbitrary objects: torch.load without weights_only=True, pickle/joblib/
    pandas pickle readers, numpy with allow_pickle, torch.jit.load."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _call_name(node)
        if name == "torch.load" and _keyword(node, "weights_only") is not True:
            found.append(f"{node.lineno}: torch.load without weights_only=True")
        elif name.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib") and name.endswith(("load", "loads")):
            found.append(f"{node.lineno}: {name}")
        elif name.endswith(("read_pickle", "jit.load", "Unpickler")):
            found.append(f"{node.lineno}: {name}")
        elif name.endswith("load") and _keyword(node, "allow_pickle") not in (None, False):
            found.append(f"{node.lineno}: {name} with allow_pickle")
    return found


def test_the_audit_finds_what_it_should():
    bad = ("import torch, pickle, numpy as np\ntorch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
           "np.load(p, allow_pickle=True)\npd.read_pickle(p)\ntorch.load(p, weights_only=True)\n")
    assert [x.split(":")[0] for x in unsafe_loads(bad)] == ["2", "3", "4", "5", "6"]


def test_no_module_of_the_package_unpickles_arbitrary_objects():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found = unsafe_loads(path.read_text(encoding="utf-8"))
        if found:
            offenders[str(path.relative_to(PACKAGE.parent))] = found
    assert not offenders, offenders


def test_plain_files_load_and_damaged_ones_are_named(tmp_path):
    from datakit.errors import ModelNotFoundError, UsageError
    from datakit.torchfile import load_plain_torch

    for legacy in (False, True):  # torch's zip format is mapped, its older format read whole
        path = _evil({"w": torch.arange(4.0)}, tmp_path / f"ok-{legacy}.ckpt", legacy=legacy)
        assert torch.equal(load_plain_torch(path, what="checkpoint", mmap=True)["w"], torch.arange(4.0))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelNotFoundError, match="cannot read checkpoint .*junk.pt"):
        load_plain_torch(tmp_path / "junk.pt", what="checkpoint", damaged=ModelNotFoundError)
    ok = (tmp_path / "ok-False.ckpt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(ok[: len(ok) // 2])
    with pytest.raises(UsageError, match="cannot read .*cut.pt"):
        load_plain_torch(tmp_path / "cut.pt", what="x")
    with pytest.raises(UsageError, match="x not found"):
        load_plain_torch(tmp_path / "missing.pt", what="x")
