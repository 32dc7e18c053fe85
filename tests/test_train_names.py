"""Names that become paths, outputs that would land in the input, bad trigger words, and Ctrl-C then a plain re-run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.testing import save_tiny_model, write_tiny_dataset
from datakit.train import loop
from datakit.train.config import build_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("names") / "model", "sd1")


def _train(model, dataset, out, **kw):
    values = {"dataset": dataset, "base_model": str(model), "output": out, "device": "cpu", "max_steps": 1, **kw}
    return loop.run_train(build_config(values), Reporter(quiet=True))


def _with_trigger(folder, trigger):
    ds = write_tiny_dataset(folder, images=1, size=16)
    (ds / "datakit.json").write_text(json.dumps({"stage": "emit", "carry": {"trigger": trigger}}))
    return ds


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("trigger", ["/tmp/x", "../../x", "a\\b:c", "con"])
def test_a_trigger_becomes_a_safe_file_name_inside_out(tmp_path, sd1, trigger):
    ds = _with_trigger(tmp_path / "work" / "ds", trigger)
    out = tmp_path / "work" / "run" / "out"
    before = set(_files(tmp_path))
    info = _train(sd1, ds, out, save_every=1, max_steps=2)
    written = set(_files(tmp_path)) - before
    assert written and all(out in p.parents for p in written), sorted(map(str, written))
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "work" / "x.safetensors").exists()
    final = out / info["file"].rsplit("/", 1)[1]
    assert str(final) == info["file"] and final.name.endswith(".safetensors")
    checkpoint = next((out / "checkpoints").glob("step-000001/*.safetensors"))
    assert checkpoint.parent.parent == out / "checkpoints"
    assert json.loads((out / "datakit.json").read_text())["carry"]["trigger"] == trigger


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "a/b", "", "con"])
def test_an_explicit_output_name_that_is_not_a_file_name_is_refused(tmp_path, sd1, name):
    ds = write_tiny_dataset(tmp_path / "ds", images=1, size=16)
    with pytest.raises(UsageError, match="--output-name"):
        _train(sd1, ds, tmp_path / "out", output_name=name)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("trigger", ["sks,\nevil", "a\x00b", "two, tags"])
def test_a_bad_trigger_is_refused_at_the_start(tmp_path, trigger):
    ds = _with_trigger(tmp_path / "ds", trigger)
    with pytest.raises(UsageError, match="trigger word"):
        _train(tmp_path / "no-model-needed", ds, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_output_may_not_be_the_dataset_or_inside_it(tmp_path):
    ds = write_tiny_dataset(tmp_path / "ds", images=1, size=16)
    for out in (ds, ds / "lora", ds / "img" / "2_sks", ds / "img" / "2_sks" / "x"):
        with pytest.raises(UsageError, match="lies inside it"):
            _train(tmp_path / "no-model-needed", ds, out)
    # a TOML dataset: its folder (emit's OUT, with emit's datakit.json) is the input too
    with pytest.raises(UsageError, match="lies inside it"):
        _train(tmp_path / "no-model-needed", ds / "dataset.toml", ds)
    assert sorted(p.name for p in ds.iterdir()) == ["dataset.toml", "img"]


@pytest.mark.parametrize("method", ["lora", "hypernetwork"])
def test_after_ctrl_c_a_plain_re_run_continues_from_the_last_checkpoint(tmp_path, sd1, monkeypatch, method):
    from datakit.train import step as S

    ds = write_tiny_dataset(tmp_path / "ds", images=2, size=16)
    opts = dict(method=method, max_steps=6, save_every=2, lr=1e-3)
    whole = _train(sd1, ds, tmp_path / "whole", **opts)
    real, calls = S.micro_batch_loss, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    out = tmp_path / "out"
    monkeypatch.setattr(S, "micro_batch_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _train(sd1, ds, out, **opts)
    monkeypatch.setattr(S, "micro_batch_loss", real)
    again = _train(sd1, ds, out, **opts)  # the same command, nothing added
    assert again["steps"] == 6 and again["resumed_from"] and ("step-000004" in again["resumed_from"] or
                                                              again["resumed_from"].endswith("-4.pt"))
    if method == "lora":
        a, b = load_file(whole["file"]), load_file(again["file"])
    else:
        from datakit.train.hypernetwork import read_hypernetwork_file

        a, b = (read_hypernetwork_file(i["file"])["network"].state_dict() for i in (whole, again))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    rows = (out / "loss.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2", "3", "4", "5", "6"]
