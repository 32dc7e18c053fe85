"""evaluate() with a loaded pipeline: adapters switched on and off, the trainer's in-memory network, batching, reuse."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import eval_models as M
from datakit.evaluate.adapters import NetworkAdapter, open_adapter
from datakit.evaluate.core import evaluate
from datakit.evaluate.sampling import SampleRequest, SamplingOptions, generate
from datakit.evaluate.scenes import EvalScene, with_plain
from datakit.models.diffusion import load_diffusion_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENES = with_plain([EvalScene("beach", "on a beach"), EvalScene("forest", "in a forest")])
OPTIONS = SamplingOptions(steps=2, guidance=3.0, batch_size=3)


@pytest.fixture(scope="module")
def sd1(tmp_path_factory) -> Path:
    return M.save_pipeline(tmp_path_factory.mktemp("core") / "sd1", "sd1", seed=7)


def _images(pipe, adapters, **kw) -> dict[str, np.ndarray]:
    got = {}
    evaluate(pipe, adapters, SCENES, [0, 1], options=kw.pop("options", OPTIONS),
             on_sample=lambda model, scene, req, image, fresh: got.__setitem__(req.key, image.astype(np.int16)), **kw)
    return got


def test_the_trainers_network_and_its_saved_file_draw_the_same_images(sd1, tmp_path):
    """Two independent ways of applying one LoRA agree: datakit's hooks (in memory) and diffusers' loader (the file)."""
    pipe = load_diffusion_pipeline(str(sd1))
    net = M.lora_network(pipe, "sd1", seed=2)
    path = tmp_path / "step.safetensors"
    net.save(path, {"modelspec.trigger_phrase": "sks"}, torch.float32)
    net.train()
    in_memory = _images(pipe, [NetworkAdapter(net, "step", "sks", strength=0.7)])
    # The network is left as training needs it: multiplier 1, train mode.
    assert net.training and all(m.multiplier == 1.0 for m in net.modules_list())
    net.remove()
    from_file = _images(pipe, [open_adapter(path, "step", lora_strength=0.7)])
    assert in_memory.keys() == from_file.keys() and len(in_memory) == 2 * 3 * 2
    for key in in_memory:
        assert np.abs(in_memory[key] - from_file[key]).max() <= 2, key
    # ... the adapter did change the samples, and the reference drawn with the network at multiplier 0 is
    # the base model's own (the file adapter is not even loaded while the base samples are drawn).
    steps = [k for k in in_memory if k.startswith("step/")]
    assert len(steps) == 6 and all(np.abs(in_memory[k] - in_memory[k.replace("step/", "base/")]).mean() > 2 for k in steps)


def test_a_reference_result_is_not_drawn_again(sd1, tmp_path):
    pipe = load_diffusion_pipeline(str(sd1))
    net = M.lora_network(pipe, "sd1", seed=3)
    adapter = NetworkAdapter(net, "step-100", "sks")
    first = evaluate(pipe, [adapter], SCENES, [0], options=OPTIONS)
    drawn = []
    later = evaluate(pipe, [NetworkAdapter(net, "step-200", "sks")], SCENES, [0], options=OPTIONS, reference=first,
                     on_sample=lambda m, s, r, i, fresh: drawn.append(r.key))
    assert drawn == [f"step-200/{s.name}/s0" for s in SCENES]  # the base samples came from `first`
    assert [r.model for r in later.overall] == ["base", "step-200"]
    assert [s.white for s in later.samples if s.model == "base"] == [s.white for s in first.samples if s.model == "base"]


def test_batch_size_and_neighbours_do_not_change_an_image(sd1):
    pipe = load_diffusion_pipeline(str(sd1))
    requests = [SampleRequest(f"k{i}", p, seed) for i, (p, seed) in
                enumerate([("sks, on a beach", 0), ("sks, in a forest", 5), ("sks", 1), ("sks, on a beach", 9)])]
    one = dict((r.key, img.astype(np.int16)) for r, img in generate(pipe, requests, SamplingOptions(steps=2, batch_size=1)))
    four = dict((r.key, img.astype(np.int16)) for r, img in generate(pipe, requests, SamplingOptions(steps=2, batch_size=4)))
    shuffled = dict((r.key, img.astype(np.int16)) for r, img in generate(pipe, requests[::-1], SamplingOptions(steps=2, batch_size=3)))
    for key in one:
        assert np.abs(one[key] - four[key]).max() <= 1 and np.abs(one[key] - shuffled[key]).max() <= 1
    assert np.abs(one["k0"] - one["k3"]).mean() > 1  # another seed is another image


def test_hypernetwork_strength_zero_is_the_base_model(sd1, tmp_path):
    pipe = load_diffusion_pipeline(str(sd1))
    path = M.write_hypernetwork(tmp_path / "hn.pt", sd1)
    off = _images(pipe, [open_adapter(path, "hn", hypernetwork_strength=0.0)])
    on = _images(pipe, [open_adapter(path, "hn", hypernetwork_strength=1.0)])
    for key in off:
        if key.startswith("hn/"):
            base_key = key.replace("hn/", "base/")
            assert np.abs(off[key] - off[base_key]).max() <= 1
            assert np.abs(on[key] - on[base_key]).mean() > 1
    # Unhooked afterwards: a LoRA run on the same pipeline draws the same base samples as before.
    lora = M.write_lora(tmp_path / "l.safetensors", sd1, "sd1")
    again = _images(pipe, [open_adapter(lora, "l")])
    assert all(np.abs(again[k] - off[k]).max() <= 1 for k in again if k.startswith("base/"))


def test_trainer_hypernetwork_as_a_network_adapter(sd1, tmp_path):
    from datakit.train.hypernetwork import read_hypernetwork_file

    pipe = load_diffusion_pipeline(str(sd1))
    path = M.write_hypernetwork(tmp_path / "hn.pt", sd1)
    from_file = _images(pipe, [open_adapter(path, "hn")])
    net = read_hypernetwork_file(path)["network"]
    net.apply_to(SimpleNamespace(unet=pipe.unet))
    in_memory = _images(pipe, [NetworkAdapter(net, "hn", "sks")])
    for key in from_file:
        assert np.abs(from_file[key] - in_memory[key]).max() <= 1, key
