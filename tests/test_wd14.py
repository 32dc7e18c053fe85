"""WD14 tagger model side: a tiny WD14-format ONNX model, reference-parity preprocessing, tag selection.

`build_tagger` is also used by tests/test_tag_stage.py: a torch module exported to ONNX whose outputs
are known functions of the mean B, G, R of the (preprocessed) input, over a small selected_tags.csv.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit.errors import ImageError, ModelNotFoundError
from datakit.models import taggers

# name, category, weights on the (B, G, R) channel means (0..1), bias; probability = clip(w . m + b, 0, 1)
TAGS = [
    ("general", 9, (1, 0, 0), 0.0),  # blue images are "general"
    ("sensitive", 9, (0, 0, 1), 0.0),  # red ones "sensitive"
    ("questionable", 9, (0, 0, 0), 0.1),
    ("explicit", 9, (0, 0, 0), 0.05),
    ("1girl", 0, (0, 0, 0), 0.5),
    ("solo", 0, (0, 0, 0), 0.9),
    ("red_background", 0, (0, 0, 1), 0.0),
    ("green_background", 0, (0, 1, 0), 0.0),
    ("blue_background", 0, (1, 0, 0), 0.0),
    ("^_^", 0, (0, 0, 0), 0.4),  # a kaomoji: its `_` stays
    ("long_hair", 0, (0, 0, 0), 0.34),  # just under the default 0.35
    ("white_background", 0, (1 / 3, 1 / 3, 1 / 3), 0.0),
    ("hatsune_miku", 4, (0, 1, 0), 0.0),
    ("kaname_madoka", 4, (0, 0, 0.9), 0.0),
    ("some_artist", 1, (0, 0, 0), 0.99),  # a category datakit does not caption
]
SIZE = 64


def write_labels(folder: Path, tags=TAGS) -> Path:
    path = folder / taggers.LABELS_FILE
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["tag_id", "name", "category", "count"])
        for i, (name, cat, _w, _b) in enumerate(tags):
            w.writerow([1000 + i, name, cat, 10 * (len(tags) - i)])
    return path


def build_tagger(folder: Path, *, size: int = SIZE, batch: int | None = None, nchw: bool = False, tags=TAGS) -> Path:
    """Export the tiny tagger to folder/model.onnx (+ selected_tags.csv); batch=None: dynamic batch."""
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("w", torch.tensor([t[2] for t in tags], dtype=torch.float32).T.contiguous())
            self.register_buffer("b", torch.tensor([t[3] for t in tags], dtype=torch.float32))

        def forward(self, x):
            means = x.mean(dim=(2, 3) if nchw else (1, 2)) / 255.0
            return torch.clamp(means @ self.w + self.b, 0.0, 1.0)

    folder.mkdir(parents=True, exist_ok=True)
    shape = (batch or 2, 3, size, size) if nchw else (batch or 2, size, size, 3)
    dynamic = None if batch else {"input_1": {0: "batch"}, "predictions_sigmoid": {0: "batch"}}
    torch.onnx.export(
        Tiny().eval(), (torch.zeros(shape),), str(folder / taggers.MODEL_FILE), input_names=["input_1"],
        output_names=["predictions_sigmoid"], dynamic_axes=dynamic, dynamo=False, opset_version=17,
    )
    write_labels(folder, tags)
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tagger(tmp_path_factory.mktemp("wd14") / "tiny")


# ---------------------------------------------------------------------------------------------
# Reference-parity preprocessing
# ---------------------------------------------------------------------------------------------


def reference_preprocess(image: Image.Image, size: int) -> np.ndarray:
    """The reference steps (kohya sd-scripts 48d368f), written out independently for comparison."""
    import cv2

    if image.mode in ("RGBA", "LA") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode != "RGB":
        image = image.convert("RGB")
    if image.mode == "RGBA":
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=image.split()[3])
        image = white
    arr = np.array(image)[:, :, ::-1]  # BGR
    side = max(arr.shape[:2])
    px, py = side - arr.shape[1], side - arr.shape[0]
    arr = np.pad(arr, ((py // 2, py - py // 2), (px // 2, px - px // 2), (0, 0)), mode="constant", constant_values=255)
    if side >= size:
        arr = cv2.resize(arr, (size, size), interpolation=cv2.INTER_AREA)
    else:  # PIL LANCZOS through an RGB round trip, as the reference's pil_resize does
        pil = Image.fromarray(cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)).resize((size, size), resample=Image.Resampling.LANCZOS)
        arr = cv2.cvtColor(np.array(pil), cv2.COLOR_RGB2BGR)
    return arr.astype(np.float32)


def _noise(rng, h, w, c):
    return rng.integers(0, 256, size=(h, w, c), dtype=np.uint8)


def _cases(rng) -> dict[str, Image.Image]:
    rgba = _noise(rng, 157, 301, 4)
    rgba[..., 3] = rng.choice([0, 80, 255], size=(157, 301))
    la = _noise(rng, 90, 45, 2)
    pal = Image.fromarray(_noise(rng, 33, 71, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 3
    return {
        "odd_rgb": Image.fromarray(_noise(rng, 157, 301, 3)),
        "tall_odd": Image.fromarray(_noise(rng, 503, 99, 3)),
        "rgba": Image.fromarray(rgba, "RGBA"),
        "gray": Image.fromarray(_noise(rng, 123, 77, 1)[..., 0], "L"),
        "gray_alpha": Image.fromarray(la, "LA"),
        "palette_transparent": pal,
        "small_enlarged": Image.fromarray(_noise(rng, 21, 37, 3)),
        "small_rgba_enlarged": Image.fromarray(_noise(rng, 40, 13, 4), "RGBA"),
        "exact_size": Image.fromarray(_noise(rng, 64, 64, 3)),
    }


@pytest.mark.parametrize("size", [64, 448])
def test_preprocess_matches_reference_pixel_for_pixel(rng, size):
    for name, image in _cases(rng).items():
        ours = taggers.preprocess(image.copy(), size)
        ref = reference_preprocess(image.copy(), size)
        assert ours.shape == (size, size, 3) and ours.dtype == np.uint8, name
        assert np.array_equal(ours.astype(np.float32), ref), f"{name}: differs from the reference at {size}px"


def test_preprocess_from_files_matches_reference(tmp_path, rng):
    """Through datakit's safe loader (PNG files of each mode), still identical to the reference on the file."""
    for name, image in _cases(rng).items():
        path = tmp_path / f"{name}.png"
        image.save(path)
        ours, _notes = taggers.load_for_tagger(path, SIZE)
        with Image.open(path) as raw:
            ref = reference_preprocess(raw, SIZE)
        assert np.array_equal(ours.astype(np.float32), ref), name


def test_preprocess_flattens_alpha_onto_white_and_pads_white():
    clear = Image.new("RGBA", (40, 20), (0, 0, 0, 0))  # fully transparent black, wide
    out = taggers.preprocess(clear, 40)
    assert (out == 255).all()
    red = Image.new("RGB", (40, 20), (255, 0, 0))
    out = taggers.preprocess(red, 40)
    assert (out[0, 0] == 255).all()  # top padding is white
    assert out[20, 20].tolist() == [0, 0, 255]  # BGR: red is in the last channel


def test_load_for_tagger_rejects_bad_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    for name in ("empty.png", "text.png"):
        with pytest.raises(ImageError):
            taggers.load_for_tagger(tmp_path / name, SIZE)


# ---------------------------------------------------------------------------------------------
# Labels, resolution, session
# ---------------------------------------------------------------------------------------------


def test_read_labels_categories(tmp_path):
    labels = taggers.read_labels(write_labels(tmp_path))
    assert labels.names[:4] == ["general", "sensitive", "questionable", "explicit"]
    assert labels.rating.tolist() == [0, 1, 2, 3]
    assert labels.character.tolist() == [12, 13]
    assert 14 not in labels.general  # unknown categories are not captioned


def test_read_labels_rejects_other_csv(tmp_path):
    bad = tmp_path / "selected_tags.csv"
    bad.write_text("id,tag\n1,foo\n")
    with pytest.raises(ModelNotFoundError, match="tag_id,name,category"):
        taggers.read_labels(bad)


def test_resolve_folder_and_onnx_path(tiny):
    files = taggers.resolve_tagger(str(tiny))
    assert files.model == tiny / "model.onnx" and files.labels == tiny / "selected_tags.csv"
    assert taggers.resolve_tagger(str(tiny / "model.onnx")).labels == files.labels


def test_missing_model_is_one_clear_error_naming_the_files(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.onnx").write_bytes(b"x")
    with pytest.raises(ModelNotFoundError) as err:
        taggers.resolve_tagger(str(tmp_path / "half"))
    msg = str(err.value)
    assert "selected_tags.csv missing" in msg and "model.onnx" in msg and "--model" in msg
    with pytest.raises(ModelNotFoundError, match="no such folder"):
        taggers.resolve_tagger(str(tmp_path / "nowhere"))


def test_hub_repo_id_resolves_from_the_local_cache_only(tmp_path, tiny, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        taggers.resolve_tagger("SmilingWolf/wd-vit-tagger-v3")
    # The documented cache layout: refs/main names a snapshot holding the files.
    repo = tmp_path / "models--SmilingWolf--wd-vit-tagger-v3"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in ("model.onnx", "selected_tags.csv"):
        (snap / f).write_bytes((tiny / f).read_bytes())
    files = taggers.resolve_tagger("SmilingWolf/wd-vit-tagger-v3")
    assert files.model.parent == snap and files.labels.name == "selected_tags.csv"


def test_requested_model_env_and_default(monkeypatch):
    monkeypatch.delenv(taggers.ENV_MODEL, raising=False)
    assert taggers.requested_model(None) == "none"
    monkeypatch.setenv(taggers.ENV_MODEL, "/models/wd14")
    assert taggers.requested_model(None) == "/models/wd14"
    assert taggers.requested_model("other") == "other"


def test_session_reads_size_and_batch_from_the_graph(tiny, tmp_path):
    labels = taggers.read_labels(tiny / "selected_tags.csv")
    s = taggers.open_session(taggers.resolve_tagger(str(tiny)), labels, device="cpu")
    assert s.size == SIZE and s.fixed_batch is None and s.provider == "CPUExecutionProvider"
    red = np.zeros((3, SIZE, SIZE, 3), np.float32)
    red[..., 2] = 255
    probs = s.run(red)
    assert probs.shape == (3, len(TAGS))
    assert probs[0, 6] == pytest.approx(1.0) and probs[0, 5] == pytest.approx(0.9)

    fixed = build_tagger(tmp_path / "fixed2", batch=2, size=32)
    s2 = taggers.open_session(taggers.resolve_tagger(str(fixed)), labels, device="cpu")
    assert s2.fixed_batch == 2 and s2.size == 32
    assert s2.run(np.zeros((1, 32, 32, 3), np.float32)).shape == (1, len(TAGS))  # padded, then cut


def test_session_refuses_non_wd14_graphs(tmp_path):
    nchw = build_tagger(tmp_path / "nchw", nchw=True, size=32)
    labels = taggers.read_labels(nchw / "selected_tags.csv")
    with pytest.raises(ModelNotFoundError, match="NHWC"):
        taggers.open_session(taggers.resolve_tagger(str(nchw)), labels, device="cpu")
    wrong = build_tagger(tmp_path / "wrong", batch=1, size=32)
    write_labels(wrong, TAGS[:5])
    with pytest.raises(ModelNotFoundError, match="lists 5 tags"):
        taggers.open_session(taggers.resolve_tagger(str(wrong)), taggers.read_labels(wrong / "selected_tags.csv"), device="cpu")


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


def _labels(tmp_path):
    return taggers.read_labels(write_labels(tmp_path))


def _probs(**values):
    p = np.zeros(len(TAGS), np.float32)
    names = [t[0] for t in TAGS]
    for k, v in values.items():
        p[names.index({"kaomoji": "^_^"}.get(k, k))] = v
    return p


def test_select_orders_characters_then_general_by_confidence_then_rating(tmp_path):
    labels = _labels(tmp_path)
    p = _probs(sensitive=0.7, general=0.2, solo=0.9, long_hair=0.6, red_background=0.95, kaomoji=0.35,
               hatsune_miku=0.86, kaname_madoka=0.99, some_artist=1.0)
    sel = taggers.select_tags(p, labels)
    assert sel.tags() == ["kaname_madoka", "hatsune_miku", "red_background", "solo", "long_hair", "^_^", "sensitive"]
    assert sel.scores()["solo"] == pytest.approx(0.9)


def test_select_thresholds_are_inclusive_and_per_category(tmp_path):
    labels = _labels(tmp_path)
    p = _probs(solo=0.5, long_hair=0.49, hatsune_miku=0.5)
    sel = taggers.select_tags(p, labels, general_threshold=0.5, character_threshold=0.5, rating=False)
    assert sel.tags() == ["hatsune_miku", "solo"]
    sel = taggers.select_tags(p, labels, general_threshold=0.5, character_threshold=1.01, rating=False)
    assert sel.tags() == ["solo"]  # a character threshold above 1 disables characters


def test_select_undesired_and_no_rating(tmp_path):
    labels = _labels(tmp_path)
    p = _probs(solo=0.9, red_background=0.9, explicit=0.8)
    sel = taggers.select_tags(p, labels, undesired=frozenset({"red background", "explicit"}))
    # As the reference: the rating is the argmax, and an undesired argmax means no rating at all.
    assert sel.tags() == ["solo"]
    # A tie is broken by name (red_background < solo), never by the CSV's order.
    assert taggers.select_tags(p, labels, rating=False).tags() == ["red_background", "solo"]


def test_mcut(tmp_path):
    assert taggers.mcut_threshold(np.array([0.9, 0.1, 0.85, 0.05])) == pytest.approx(0.475)
    labels = _labels(tmp_path)
    p = _probs(solo=0.9, red_background=1.0, kaomoji=0.4, long_hair=0.34, hatsune_miku=0.2, kaname_madoka=0.1)
    sel = taggers.select_tags(p, labels, mcut=True, rating=False)
    # general gaps: 1.0, 0.9 | 0.4 ... -> threshold 0.65; characters 0.2 | 0.1 -> 0.15 floor -> 0.15
    assert sel.tags() == ["hatsune_miku", "red_background", "solo"]


@pytest.mark.gpu
def test_cuda_provider_is_used_when_a_gpu_is_present(tiny):
    labels = taggers.read_labels(tiny / "selected_tags.csv")
    s = taggers.open_session(taggers.resolve_tagger(str(tiny)), labels, device="cuda")
    assert s.provider == "CUDAExecutionProvider" and s.on_gpu
    red = np.zeros((2, SIZE, SIZE, 3), np.float32)
    red[..., 2] = 255
    assert s.run(red)[0, 6] == pytest.approx(1.0)
