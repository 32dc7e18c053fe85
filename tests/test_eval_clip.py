"""CLIP through datakit's loader: a tiny CLIP trained here on drawn scenes must classify new drawings of them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import eval_drawings as D
import eval_models as M
from datakit.errors import ModelNotFoundError
from datakit.evaluate.agreement import scene_agreement
from datakit.evaluate.clip import CLIP_ENV, clip_model_name, load_clip

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCENES = {"on a beach": D.beach, "in a forest": D.forest, "in the snow": D.snow_field, "on a city street": D.city}


@pytest.fixture(scope="module")
def trained_clip(tmp_path_factory):
    """A tiny CLIP trained for a few contrastive steps on 32 px drawings of four scenes, saved with save_pretrained.

    Training feeds pixels through the processor saved beside the model, so if datakit's loader prepared
    images differently from how the model was trained, the classification below would fall apart.
    """
    from transformers import CLIPModel, CLIPTokenizer

    from datakit.evaluate.clip import image_processor_class

    folder = M.save_tiny_clip(tmp_path_factory.mktemp("clip") / "clip", seed=0)
    model, tok = CLIPModel.from_pretrained(str(folder)), CLIPTokenizer.from_pretrained(str(folder))
    processor_cls = image_processor_class()
    proc = processor_cls.from_pretrained(str(folder))
    texts = list(SCENES)
    ids = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    for _ in range(60):
        labels = rng.integers(0, len(texts), 16)
        px = proc(images=[SCENES[texts[i]](32, rng) for i in labels], return_tensors="pt")["pixel_values"]
        img = model.get_image_features(pixel_values=px)
        txt = model.get_text_features(**ids)
        img, txt = getattr(img, "pooler_output", img), getattr(txt, "pooler_output", txt)
        logits = model.logit_scale.exp() * (img / img.norm(dim=-1, keepdim=True)) @ (txt / txt.norm(dim=-1, keepdim=True)).T
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(str(folder))
    return folder


@pytest.mark.parametrize("size", [32, 64])
def test_scene_agreement_with_a_clip_that_knows_the_scenes(trained_clip, size):
    clip = load_clip(str(trained_clip))
    texts = list(SCENES)
    rng = np.random.default_rng(100 + size)  # drawings never seen in training
    own = np.repeat(np.arange(len(texts)), 5)
    emb = clip.embed_images([SCENES[texts[i]](size, rng) for i in own])
    scenes = clip.embed_texts(texts)
    right = scene_agreement(emb, scenes, own, clip.logit_scale)
    wrong = scene_agreement(emb, scenes, (own + 1) % len(texts), clip.logit_scale)
    assert right.agrees.mean() >= 0.9 and wrong.agrees.mean() <= 0.1  # chance is 0.25
    assert np.all(np.abs(np.linalg.norm(emb, axis=1) - 1) < 1e-5)


def test_clip_model_is_named_by_flag_or_environment(monkeypatch):
    monkeypatch.delenv(CLIP_ENV, raising=False)
    assert clip_model_name(None) is None and clip_model_name("  ") is None
    monkeypatch.setenv(CLIP_ENV, "/models/clip")
    assert clip_model_name(None) == "/models/clip" and clip_model_name("other") == "other"


def test_clip_folders_that_are_not_usable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="not a CLIP model folder"):
        load_clip(str(tmp_path / "empty"))
    folder = M.save_tiny_clip(tmp_path / "clip")
    for name in ("vocab.json", "merges.txt"):
        (folder / name).unlink()
    with pytest.raises(ModelNotFoundError, match="tokenizer"):
        load_clip(str(folder))
    with pytest.raises(ModelNotFoundError, match="not in the Hugging Face cache"):
        load_clip("nobody/no-such-clip")


def test_a_folder_without_preprocessor_config_gets_clips_own_preprocessing(tmp_path):
    folder = M.save_tiny_clip(tmp_path / "clip", image_size=32)
    (folder / "preprocessor_config.json").unlink()
    clip = load_clip(str(folder))
    assert clip.processor.crop_size == {"height": 32, "width": 32}
    emb = clip.embed_images([D.beach(64, np.random.default_rng(0)), D.forest(20, np.random.default_rng(0))])
    assert emb.shape == (2, 16)
