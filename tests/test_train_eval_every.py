"""`datakit train --eval-every N`: the eval measurement on each checkpoint, the curve, the best checkpoint named and kept."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.errors import UsageError
from datakit.testing import save_tiny_model, write_tiny_dataset
from datakit.train import loop as T
from datakit.train.checkpoint_eval import CurvePoint, choose_best
from datakit.train.config import build_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("sd1") / "model", "sd1", seed=4)


def _dataset(folder, trigger="zubi"):
    ds = write_tiny_dataset(folder, images=2, name=trigger)
    (ds / "datakit.json").write_text(json.dumps({"stage": "emit", "carry": {"trigger": trigger, "keep_tokens": 1}}))
    return ds


def _cutouts(folder):
    """Two RGBA cut-outs of different sizes and shapes, and one damaged file that must be skipped by name."""
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name, (h, w) in (("front.png", (40, 24)), ("side.png", (20, 36))):
        arr = np.zeros((h, w, 4), np.uint8)
        arr[..., :3] = rng.integers(0, 255, 3)
        arr[h // 4:3 * h // 4, w // 4:3 * w // 4, 3] = 255
        Image.fromarray(arr, "RGBA").save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return folder


def _scenes(path):
    path.write_text("[trigger], on a beach | beach\n[trigger] in a snowy forest | snow\n")
    return path


def _train(model, dataset, out, **kw):
    values = {"dataset": dataset, "base_model": str(model), "output": out, "device": "cpu", "max_steps": 4,
              "eval_seeds": 1, "eval_steps": 2, "eval_batch_size": 3, "resolution": "32", **kw}
    return T.run_train(build_config(values), Reporter(quiet=True))


def test_every_measured_step_gets_a_checkpoint_a_curve_point_and_a_grid(tmp_path, sd1):
    ds = _dataset(tmp_path / "ds")
    out = tmp_path / "out"
    info = _train(sd1, ds, out, eval_every=2, eval_subject=_cutouts(tmp_path / "cut"), eval_prompts=_scenes(tmp_path / "p.txt"))
    ev = info["eval"]
    assert [p["step"] for p in ev["curve"]] == [0, 2, 4]  # the base model, the step-2 checkpoint, the final file
    assert (out / "checkpoints" / "step-000002").is_dir()  # written because it was measured (no --save-every)
    assert ev["curve"][1]["checkpoint"].endswith("-step000002.safetensors")
    assert ev["curve"][2]["checkpoint"] == info["file"]
    assert [s["source"] for s in ev["skipped"]] == ["--eval-subject broken.png"]
    assert ev["subject"] == ["front.png", "side.png"]
    for name in ("curve.csv", "curve.json", "curve.png", "base.png", "step-000002.png", "step-000004.png"):
        assert (out / "eval" / name).is_file(), name
    # The curve's leakage re-derived from the per-sample booleans `datakit eval` recorded for that step:
    # the share of scene samples (the plain prompt left out) with a white or a plain background.
    for point in ev["curve"][1:]:
        detail = json.loads((out / "eval" / f"step-{point['step']:06d}.json").read_text())
        mine = [s for s in detail["samples"] if s["model"] == f"step-{point['step']:06d}" and s["scene"] != "plain"]
        assert len(mine) == 2 == point["samples"]  # 2 scenes x 1 seed
        assert point["leak_rate"] == pytest.approx(np.mean([s["white"] or s["plain"] for s in mine]))
        overall = next(r for r in detail["overall"] if r["model"] == f"step-{point['step']:06d}")
        assert point["white_rate"] == overall["white_rate"] and point["plain_rate"] == overall["plain_rate"]
    frame = pd.read_csv(out / "eval" / "curve.csv")
    assert list(frame["step"]) == [0, 2, 4] and "leak_rate" in frame.columns
    best = ev["best"]
    if best["checkpoint"] is not None:
        from pathlib import Path

        assert Path(best["checkpoint"]).is_file()


def test_keep_last_never_deletes_the_best_checkpoint(tmp_path, sd1):
    ds = _dataset(tmp_path / "ds")
    out = tmp_path / "out"
    info = _train(sd1, ds, out, max_steps=3, eval_every=1, keep_last=1, eval_prompts=_scenes(tmp_path / "p.txt"))
    kept = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    best = info["eval"]["best"]
    assert [p["step"] for p in info["eval"]["curve"]] == [0, 1, 2, 3]
    assert best["step"] is not None  # without --eval-subject every checkpoint is a candidate
    assert "step-000002" in kept and len(kept) <= 2  # --keep-last 1: the newest, and at most the best besides
    if best["step"] < 3:  # the final file is not a checkpoint folder
        assert f"step-{best['step']:06d}" in kept
    assert "subject presence not measured" in best["reason"]


def test_eval_every_needs_a_trigger_and_fails_before_training(tmp_path, sd1):
    ds = write_tiny_dataset(tmp_path / "ds", images=1)  # no datakit.json: no trigger carried
    with pytest.raises(UsageError, match="--eval-every .* names none"):
        _train(sd1, ds, tmp_path / "out", eval_every=2)
    assert not (tmp_path / "out" / "checkpoints").exists()
    with pytest.raises(UsageError, match="--eval-subject .* no readable cut-out"):
        empty = tmp_path / "empty"
        empty.mkdir()
        _train(sd1, _dataset(tmp_path / "ds2"), tmp_path / "out2", eval_every=2, eval_subject=empty)
    with pytest.raises(UsageError, match="--eval-every must be at least 1"):
        _train(sd1, _dataset(tmp_path / "ds3"), tmp_path / "out3", eval_every=0)


def _p(step, leak, presence, checkpoint="x"):
    return CurvePoint(step, None if step == 0 else f"{checkpoint}{step}", 10, leak, leak, 0.0, None, presence)


def test_best_is_the_lowest_leakage_that_still_shows_the_subject():
    # Hand-worked cases of the rule in datakit/train/checkpoint_eval.py's docstring.
    base = _p(0, 0.0, 0.0)
    points = [base, _p(100, 0.1, 0.2), _p(200, 0.3, 0.6), _p(300, 0.2, 0.9), _p(400, 0.8, 1.0)]
    assert choose_best(points).step == 300  # 100 leaks least but has lost... never had the subject
    assert choose_best([base, _p(100, 0.2, 0.7), _p(200, 0.2, 0.8)]).step == 200  # a tie: the later step
    none = choose_best([base, _p(100, 0.0, 0.1), _p(200, 0.1, 0.3)])
    assert none.step is None and "no checkpoint shows the subject" in none.reason
    unmeasured = choose_best([base, _p(100, 0.5, None), _p(200, 0.25, None), _p(300, 0.75, None)])
    assert unmeasured.step == 200 and "not measured" in unmeasured.reason
    assert choose_best([base]).step is None  # the base model alone is never "the best checkpoint"


def test_hypernetwork_runs_are_measured_and_carry_their_trigger_for_datakit_eval(tmp_path, sd1):
    import torch

    from datakit.evaluate.adapters import open_adapter

    ds = _dataset(tmp_path / "ds", trigger="mika")
    out = tmp_path / "out"
    info = _train(sd1, ds, out, method="hypernetwork", max_steps=2, eval_every=2, eval_prompts=_scenes(tmp_path / "p.txt"))
    assert [p["step"] for p in info["eval"]["curve"]] == [0, 2]
    assert info["eval"]["best"]["checkpoint"] == info["file"]
    state = torch.load(info["file"], weights_only=True)
    assert state["optional_info"].endswith("; trigger: mika")
    assert open_adapter(out / "mika.pt", "hn").trigger == "mika"  # eval needs no --trigger for datakit's files
