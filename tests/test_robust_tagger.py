"""Red team (issue 16): an image's tag probabilities never depend on how many images run beside it.

Real taggers pick kernels, blocking and summation order by batch shape, so an image tagged alone (an
incremental re-run of one changed image) came out up to 1.7e-3 off its batched value and 4 of 600
captions changed tag order. The tiny ONNX graph below, exported from torch, does what such kernels do:
its float rounding depends on the batch size it runs at (`(z * s) / s` with `s` a function of the
batch size), so only a fixed batch shape gives bit-identical probabilities."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.models import taggers
from datakit.stages import tag as tag_stage
from datakit.stages.tag import TagConfig, run_tag

N_TAGS = 64


def _build_batch_sensitive_tagger(folder: Path, size: int = 32) -> Path:
    import torch

    g = torch.Generator().manual_seed(3)

    class BatchSensitive(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.randn(3, N_TAGS, generator=g) * 3)
            self.register_buffer("b", torch.randn(N_TAGS, generator=g))

        def forward(self, x):
            z = (x.mean(dim=(1, 2)) / 255.0) @ self.w + self.b
            # The batch size, as a float the graph computes at run time (Shape -> ConstantOfShape -> sum).
            n = x.new_ones(x.shape[0]).sum()
            s = 1.0 + n / 10.0
            return torch.sigmoid((z * s) / s)

    folder.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        BatchSensitive().eval(), (torch.zeros(2, size, size, 3),), str(folder / taggers.MODEL_FILE),
        input_names=["input_1"], output_names=["predictions_sigmoid"],
        dynamic_axes={"input_1": {0: "batch"}, "predictions_sigmoid": {0: "batch"}}, dynamo=False, opset_version=17,
    )
    with open(folder / taggers.LABELS_FILE, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i in range(N_TAGS):
            w.writerow([i, ["general", "sensitive", "questionable", "explicit"][i] if i < 4 else f"tag_{i:02d}",
                        9 if i < 4 else 0, 100])
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return _build_batch_sensitive_tagger(tmp_path_factory.mktemp("batchy") / "wd14")


def _images(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8), "RGB").save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def fed_shapes(monkeypatch) -> list:
    """Every input shape the onnxruntime session is called with."""
    shapes: list = []
    real_open = taggers.open_session

    class Recording:
        def __init__(self, session):
            self._session = session

        def run(self, names, feeds):
            shapes.extend(np.asarray(v).shape for v in feeds.values())
            return self._session.run(names, feeds)

        def __getattr__(self, name):
            return getattr(self._session, name)

    def open_recording(*args, **kwargs):
        session = real_open(*args, **kwargs)
        session.session = Recording(session.session)
        return session

    monkeypatch.setattr(taggers, "open_session", open_recording)
    return shapes


def test_the_graph_really_is_batch_sensitive(model):
    """Guard: without a fixed shape this graph gives different bits for one image alone and in a batch."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model / taggers.MODEL_FILE), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(0, 255, (7, 32, 32, 3)).astype(np.float32)
    alone = sess.run(None, {"input_1": x[:1]})[0][0]
    batched = sess.run(None, {"input_1": x})[0][0]
    assert not np.array_equal(alone, batched)


def test_one_image_alone_and_in_a_batch_of_7_get_bit_identical_probabilities(model, fed_shapes, tmp_path):
    seven = _images(tmp_path / "seven", 7)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "img3.png").write_bytes((seven / "img3.png").read_bytes())
    cfg = dict(model=str(model), batch_size=8, workers=1)
    run_tag(TagConfig(input_dir=seven, out_dir=tmp_path / "o7", **cfg), Reporter(quiet=True))
    run_tag(TagConfig(input_dir=alone, out_dir=tmp_path / "o1", **cfg), Reporter(quiet=True))
    p7 = tag_stage.read_probabilities(tmp_path / "o7").loc["img3.png"].to_numpy()
    p1 = tag_stage.read_probabilities(tmp_path / "o1").loc["img3.png"].to_numpy()
    assert np.array_equal(p1, p7)
    assert fed_shapes and set(fed_shapes) == {(8, 32, 32, 3)}  # one batch shape for every call
    assert (tmp_path / "o7" / "img3.txt").read_text() == (tmp_path / "o1" / "img3.txt").read_text()


def test_an_incremental_rerun_of_one_changed_image_matches_a_full_run(model, fed_shapes, tmp_path):
    src = _images(tmp_path / "in", 7)
    cfg = dict(model=str(model), batch_size=4, workers=1)
    run_tag(TagConfig(input_dir=src, out_dir=tmp_path / "inc", **cfg), Reporter(quiet=True))
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8), "RGB").save(src / "img5.png")  # one image changes
    info = run_tag(TagConfig(input_dir=src, out_dir=tmp_path / "inc", **cfg), Reporter(quiet=True))
    assert info["counts"]["processed"] == 1  # the changed image, tagged alone
    run_tag(TagConfig(input_dir=src, out_dir=tmp_path / "full", **cfg), Reporter(quiet=True))
    inc = tag_stage.read_probabilities(tmp_path / "inc").sort_index()
    full = tag_stage.read_probabilities(tmp_path / "full").sort_index()
    assert np.array_equal(inc.to_numpy(), full.to_numpy())
    assert set(fed_shapes) == {(4, 32, 32, 3)}


def test_equal_confidences_are_ordered_by_name(tmp_path):
    labels = taggers.Labels(["rating_a", "zebra", "apple", "mango", "kiwi"], np.array([9, 0, 0, 0, 0]))
    probs = np.array([0.9, 0.5, 0.5, 0.7, 0.5], np.float32)
    assert taggers.select_tags(probs, labels, rating=False).tags() == ["mango", "apple", "kiwi", "zebra"]
