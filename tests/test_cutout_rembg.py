"""--method rembg / auto with a tiny ONNX segmenter the test exports, loaded through rembg's session code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.console import Reporter
from datakit.errors import ModelNotFoundError, UsageError
from datakit.models import segmenters
from datakit.stages.cutout import CutoutConfig, run_cutout


def _disc(size: int = 128, bg=(255, 255, 255)) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size * 0.3) ** 2
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    img[inside] = (30, 40, 120)
    return img, inside


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 1x3xHxW -> 1x1xHxW 'segmenter': dark pixels are foreground (sigmoid of a 1x1 conv)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")

    class Dark(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 1, 1)
            with torch.no_grad():
                self.conv.weight.fill_(-4.0)
                self.conv.bias.fill_(8.0)  # ImageNet-normalised white sums to ~6.2, dark blue to ~-2.6

        def forward(self, x):
            return torch.sigmoid(self.conv(x))

    path = tmp_path_factory.mktemp("model") / "tiny_seg.onnx"
    torch.onnx.export(Dark().eval(), torch.zeros(1, 3, 320, 320), str(path), input_names=["input"],
                      output_names=["mask"], opset_version=17, dynamo=False)
    return path


def test_resolve_named_model_missing_says_where(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2"))
    with pytest.raises(ModelNotFoundError) as exc:
        segmenters.resolve_segmenter("u2net")
    msg = str(exc.value)
    assert "u2net.onnx" in msg and str(tmp_path / "u2") in msg and "rembg d u2net" in msg
    with pytest.raises(UsageError, match="unknown rembg model"):
        segmenters.resolve_segmenter("no-such-model")


def test_named_model_found_in_u2net_home(tmp_path: Path, monkeypatch, tiny_model: Path):
    home = tmp_path / "u2"
    home.mkdir()
    (home / "u2net.onnx").write_bytes(tiny_model.read_bytes())
    monkeypatch.setenv("U2NET_HOME", str(home))
    spec = segmenters.resolve_segmenter("u2net", "cpu")
    seg = segmenters.load_segmenter(spec)
    assert seg.providers[0] == "CPUExecutionProvider"
    img, inside = _disc()
    mask = seg.predict(img)
    assert mask.shape == inside.shape
    assert mask[inside].mean() > 0.9 and mask[~inside].mean() < 0.1


def test_providers_are_explicit():
    assert segmenters.choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert segmenters.choose_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert segmenters.choose_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_stage_with_custom_onnx(tmp_path: Path, tiny_model: Path):
    inp = tmp_path / "in"
    inp.mkdir()
    img, inside = _disc(bg=(250, 250, 250))
    Image.fromarray(img).save(inp / "disc.png")
    out = tmp_path / "out"
    info = run_cutout(CutoutConfig(inp, out, method="rembg", model=str(tiny_model), device="cpu"), Reporter(quiet=True))
    assert info.counts.out == 1
    assert info.segmenter.model == str(tiny_model.resolve())
    assert info.segmenter.providers[0] == "CPUExecutionProvider"
    row = json.loads((out / "manifest.jsonl").read_text().splitlines()[0])
    assert row["method"] == "rembg:u2net_custom"
    assert row["background"]["colour"] == [250, 250, 250]
    rgba = np.asarray(Image.open(out / "disc.png"))
    x0, y0, x1, y1 = row["crop_box"]
    full = np.zeros((128, 128), np.uint8)
    full[y0:y1, x0:x1] = rgba[:, :, 3]
    pred = full > 127
    assert (pred & inside).sum() / (pred | inside).sum() > 0.9
    # Edge pixels are decontaminated against the backdrop: no light rim on the dark disc.
    edge = (full > 20) & (full < 235)
    assert edge.any() and rgba[:, :, :3].reshape(-1, 3).mean() < 160
    # The model file is part of the fingerprint: the same run again does nothing.
    again = run_cutout(CutoutConfig(inp, out, method="rembg", model=str(tiny_model), device="cpu"), Reporter(quiet=True))
    assert again.nothing_to_do


def test_auto_uses_flat_or_the_model(tmp_path: Path, tiny_model: Path, monkeypatch):
    inp = tmp_path / "in"
    inp.mkdir()
    img, _ = _disc()
    Image.fromarray(img).save(inp / "flat.png")
    busy = np.random.default_rng(0).integers(180, 256, (128, 128, 3), dtype=np.uint8)
    busy[_disc()[1]] = (30, 40, 120)
    Image.fromarray(busy).save(inp / "busy.png")
    monkeypatch.setenv("DATAKIT_REMBG_MODEL", str(tiny_model))  # the documented variable names the model
    out = tmp_path / "out"
    info = run_cutout(CutoutConfig(inp, out, method="auto", device="cpu"), Reporter(quiet=True))
    assert info.counts.out == 2, info
    methods = {r["source"]: r["method"] for r in map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}
    # A flat backdrop keeps the flat matte, the named model deciding its enclosed regions (a hybrid).
    assert methods == {"flat.png": "flat+rembg:u2net_custom", "busy.png": "rembg:u2net_custom"}


def _oracle_model(path: Path, subject: np.ndarray) -> Path:
    """A tiny 'segmenter' that has learnt one picture: its output is a fixed mask (plus 0 x the input)."""
    import cv2

    torch = pytest.importorskip("torch")

    class Oracle(torch.nn.Module):
        def __init__(self, mask: np.ndarray):
            super().__init__()
            logits = np.where(cv2.resize(mask.astype(np.float32), (320, 320), interpolation=cv2.INTER_AREA) > 0.5, 8.0, -8.0)
            self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32)[None, None])

        def forward(self, x):
            return torch.sigmoid(self.logits + 0.0 * x[:, :1])

    torch.onnx.export(Oracle(subject).eval(), torch.zeros(1, 3, 320, 320), str(path), input_names=["input"],
                      output_names=["mask"], opset_version=17, dynamo=False)
    return path


def test_hybrid_the_segmenter_decides_enclosed_regions_the_flat_matte_keeps_the_edge(tmp_path: Path):
    from drawings import labelled, numbers_of, place, region_mask, scene

    s = scene("wave", "white", "png", 192)
    model = _oracle_model(tmp_path / "oracle.onnx", s.alpha > 0.5)  # it sees the gaps as backdrop, the shirt as subject
    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(s.image).save(inp / "wave.png")
    flat_info = run_cutout(CutoutConfig(inp, tmp_path / "flat", device="cpu"), Reporter(quiet=True))
    hybrid_info = run_cutout(CutoutConfig(inp, tmp_path / "hyb", method="flat", model=str(model), device="cpu"), Reporter(quiet=True))
    assert flat_info.counts.out == hybrid_info.counts.out == 1
    assert hybrid_info.segmenter.providers[0] == "CPUExecutionProvider"
    row = json.loads((tmp_path / "hyb" / "manifest.jsonl").read_text().splitlines()[0])
    assert row["method"] == "flat+rembg:u2net_custom"
    gaps = numbers_of(row["holes"], labelled(s, "gap"))
    shirt = numbers_of(row["holes"], labelled(s, "garment"))
    assert len(gaps) == 2 and len(shirt) == 1
    by_number = {h["number"]: h for h in row["holes"]}
    assert all(by_number[n]["action"] == "cut" and by_number[n]["by"] == "segmenter" for n in gaps)
    assert by_number[shirt[0]]["action"] == "kept" and by_number[shirt[0]]["by"] == "segmenter"

    def alpha(folder: str) -> np.ndarray:
        r = json.loads((tmp_path / folder / "manifest.jsonl").read_text().splitlines()[0])
        return place(np.asarray(Image.open(tmp_path / folder / "wave.png")), r["crop_box"], s.alpha.shape)[:, :, 3]

    a_flat, a_hyb = alpha("flat"), alpha("hyb")
    gap_area = np.zeros(s.alpha.shape, bool)
    for reg in labelled(s, "gap"):
        gap_area |= region_mask(s, reg)
    assert (a_hyb[gap_area] == 0).mean() > 0.95 and (a_flat[gap_area] == 255).mean() > 0.95
    # Away from the gaps the matte is the flat method's, to the pixel: the outer edge is exact.
    import cv2

    near = cv2.dilate(gap_area.astype(np.uint8), np.ones((7, 7), np.uint8)) > 0
    np.testing.assert_array_equal(a_hyb[~near], a_flat[~near])
