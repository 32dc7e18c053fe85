"""Training hypernetworks on a tiny random SD1 model: learning, the loop's files, resume, latent sampling, CLI."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.train import loop as T
from datakit.train.cache import LatentStore
from datakit.train.config import build_config
from datakit.testing import save_tiny_model, write_tiny_dataset
from datakit.train.hypernetwork import read_hypernetwork_file
from datakit.train.hypernetwork_data import fill_template, read_templates
from datakit.train.hypernetwork_format import shorthash


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("hn-sd1") / "model", "sd1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_tiny_dataset(tmp_path_factory.mktemp("hn-ds") / "ds", images=2, size=32)


def _train(model, dataset, out, **kw):
    values = {"dataset": dataset, "base_model": str(model), "output": out, "device": "cpu", "max_steps": 3,
              "method": "hypernetwork", **kw}
    force = values.pop("force", False)
    return T.run_train(build_config(values), Reporter(quiet=True), force=force)


def test_loss_falls_when_overfitting_one_batch(sd1):
    from diffusers import DDPMScheduler

    from datakit.train.hypernetwork import Hypernetwork, sizes_for
    from datakit.train.model import load_base_model

    base = load_base_model(str(sd1))
    unet = base.unet.requires_grad_(False)
    torch.manual_seed(0)
    net = Hypernetwork(sizes_for(base, base.family), [1, 2, 1], "relu", weight_init="XavierNormal")
    net.apply_to(base)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 8, 32, generator=g)
    t = torch.tensor([600])
    noisy = DDPMScheduler().add_noise(latents, noise, t)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.mse_loss(unet(noisy, t, context).sample, noise)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.97 and losses[-1] < min(losses[:3])
    net.remove()


def test_train_writes_a1111_files_and_resumes_exactly(tmp_path, sd1, dataset):
    template = tmp_path / "template.txt"
    template.write_text("a photo of [name], [filewords]\n\n[filewords], art by [name]\n")
    kw = dict(lr="1e-3:2, 5e-4", save_every=2, template=template, latent_sampling="random",
              dropout_structure="0,0.2,0", activation="relu", output_name="myhn", sample_every=3, sample_steps=1)
    info = _train(sd1, dataset, tmp_path / "a", **kw)
    out = tmp_path / "a"
    assert info["steps"] == 3 and info["method"] == "hypernetwork" and info["file"] == str(out / "myhn.pt")
    state = torch.load(out / "myhn.pt", weights_only=True)
    assert state["step"] == 3 and state["name"] == "myhn" and [k for k in state if isinstance(k, int)] == [32, 64]
    assert state["sd_checkpoint_name"] == "model" and state["dropout_structure"] == [0.0, 0.2, 0.0]
    assert torch.load(out / "myhn.pt.optim", weights_only=True)["hash"] == shorthash(out / "myhn.pt")
    assert (out / "checkpoints" / "myhn-2.pt").is_file() and (out / "checkpoints" / "myhn-2.pt.optim").is_file()
    with open(out / "loss.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [float(r["lr"]) for r in rows] == [1e-3, 1e-3, 5e-4]  # the A1111 schedule, step by step
    assert (out / "samples" / "step-000003.png").is_file() and (out / "loss.png").is_file()
    stage = json.loads((out / "datakit.json").read_text())
    # The tiny UNet has 4 transformer blocks at 64 channels: each a self-attention (64 wide) and a cross-attention
    # over the 32-wide text.
    assert stage["hypernetwork"]["hooked_layers"] == {"32": 4, "64": 4} and stage["cache"]["text"] is True
    # Unchanged inputs and settings: nothing to do.
    assert _train(sd1, dataset, out, **kw).get("nothing_to_do")
    # Resuming from the step-2 checkpoint (an A1111 file + .optim) lands on the same weights as the full run.
    resumed = _train(sd1, dataset, tmp_path / "b", resume=str(out / "checkpoints" / "myhn-2.pt"), **kw)
    assert resumed["steps"] == 3 and resumed["resumed_from"].endswith("myhn-2.pt")
    a = read_hypernetwork_file(out / "myhn.pt")["network"].state_dict()
    b = read_hypernetwork_file(tmp_path / "b" / "myhn.pt")["network"].state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    first = read_hypernetwork_file(out / "checkpoints" / "myhn-2.pt")["network"].state_dict()
    assert not all(torch.equal(a[k], first[k]) for k in a)  # the last step did change the weights


def test_cli_options_reach_the_file(tmp_path, sd1, dataset):
    from typer.testing import CliRunner

    from datakit.cli.main import app

    out = tmp_path / "out"
    args = ["train", str(dataset), "--method", "hypernetwork", "--base-model", str(sd1), "-o", str(out), "--device", "cpu",
            "--max-steps", "2", "--layer-structure", "1,2,2,1", "--activation", "swish", "--layer-norm", "--dropout", "0.3",
            "--activate-output", "--weight-init", "KaimingNormal", "--sizes", "32", "--latent-sampling", "deterministic",
            "--max-grad-norm", "0.1:1, 0.05", "--clip-mode", "value", "--lr", "1e-3", "--cycle-steps", "2",
            "--min-lr", "1e-5", "--output-name", "cli", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    state = torch.load(out / "cli.pt", weights_only=True)
    assert [k for k in state if isinstance(k, int)] == [32]
    assert state["layer_structure"] == [1.0, 2.0, 2.0, 1.0] and state["activation_func"] == "swish"
    assert state["is_layer_norm"] and state["activate_output"] and state["weight_initialization"] == "KaimingNormal"
    assert state["dropout_structure"] == [0.0, 0.3, 0.3, 0.0] and state["use_dropout"] and state["last_layer_dropout"]
    with open(out / "loss.csv") as fh:
        lrs = [float(r["lr"]) for r in csv.DictReader(fh)]
    assert lrs == pytest.approx([1e-3, 1e-5 + (1e-3 - 1e-5) * 0.5])  # cosine over a 2-step cycle


@pytest.mark.parametrize("extra, message", [
    (["--activation", "gelu2"], "--activation must be one of"),
    (["--family", "sdxl"], "SDXL"),
    (["--lr", "1e-4:abc"], "--lr: step 'abc'"),
    (["--layer-structure", "2,1"], "start and end with 1"),
    (["--dropout-structure", "0,0.3"], "needs 3 numbers"),
    (["--latent-sampling", "sometimes"], "--latent-sampling"),
    (["--optimizer", "lion"], "AdamW"),
    (["--cycle-steps", "4", "--cycle-warmup", "4"], "--cycle-warmup"),
])
def test_cli_usage_errors(tmp_path, extra, message):
    from typer.testing import CliRunner

    from datakit.cli.main import app

    result = CliRunner().invoke(app, ["train", str(tmp_path), "--method", "hypernetwork", "--base-model", "x",
                                      "-o", str(tmp_path / "o"), *extra])
    assert result.exit_code == 2 and message in result.output


def test_dry_run_plans_without_loading_the_model(tmp_path, dataset):
    info = _train(tmp_path / "no-model", dataset, tmp_path / "o", dry_run=True, lr="1e-3:2, 1e-4:5", max_steps=10)
    assert info["dry_run"] and info["method"] == "hypernetwork" and info["output_name"] == "hypernetwork"
    assert not (tmp_path / "o").exists()


def test_lora_refuses_schedule_strings_and_numbers_still_work(tmp_path):
    base = {"dataset": tmp_path, "base_model": "x", "output": tmp_path / "o"}
    with pytest.raises(UsageError, match="--method hypernetwork"):
        build_config({**base, "lr": "1e-4:10, 1e-5"})
    assert build_config({**base, "lr": "2e-4"}).lr == 2e-4
    cfg = build_config({**base, "method": "hypernetwork", "clip_mode": "disabled"})
    assert cfg.max_grad_norm == 0


def test_latent_sampling_methods():
    mean, std = torch.zeros(4, 2, 2), torch.ones(4, 2, 2)
    stores = {}
    for method in ("once", "deterministic", "random"):
        s = LatentStore(method)
        s.mean[0], s.std[0] = mean, std
        s.draw_once(seed=1)
        stores[method] = s
    gen = lambda n: torch.Generator().manual_seed(n)  # noqa: E731
    assert torch.equal(stores["deterministic"].get(0, False, gen(0))[0], mean)
    once = stores["once"].get(0, False, gen(0))[0]
    assert not torch.equal(once, mean) and torch.equal(once, stores["once"].get(0, False, gen(5))[0])
    again = LatentStore("once")
    again.mean[0], again.std[0] = mean, std
    again.draw_once(seed=1)
    assert torch.equal(again.get(0, False, gen(9))[0], once)  # same seed, same single sample
    r1, r2 = stores["random"].get(0, False, gen(1))[0], stores["random"].get(0, False, gen(2))[0]
    assert not torch.equal(r1, r2) and torch.equal(r1, stores["random"].get(0, False, gen(1))[0])


def test_templates(tmp_path):
    assert read_templates(None) == ["[filewords]"]
    path = tmp_path / "t.txt"
    path.write_text("a [name]\n\n  [filewords], by [name]  \n")
    assert read_templates(path) == ["a [name]", "[filewords], by [name]"]
    assert fill_template("[filewords], by [name]", "1girl, solo", "hn") == "1girl, solo, by hn"
    path.write_text("\n\n")
    with pytest.raises(UsageError, match="no prompt lines"):
        read_templates(path)
