"""dataset.toml: golden text, and the kohya schema (keys per level, types) it must satisfy."""

from __future__ import annotations

import tomllib

from datakit.emit import kohya_toml

CONFIG = {
    "general": {"caption_extension": ".txt", "shuffle_caption": True, "keep_tokens": 1,
                **kohya_toml.bucket_settings(512)},
    "datasets": [{
        "batch_size": 2,
        "subsets": [
            {"image_dir": "/data/out/img/100_sail_kun", "num_repeats": 100, "class_tokens": "sail_kun", "is_reg": False,
             "caption_extension": ".txt", "keep_tokens": 1, "alpha_mask": True},
            {"image_dir": 'C:\\data\\"quoted"', "num_repeats": 1, "class_tokens": "sail_kun", "is_reg": True},
        ],
    }],
}

GOLDEN = '''# header line
#
# second

[general]
caption_extension = ".txt"
shuffle_caption = true
keep_tokens = 1
enable_bucket = true
resolution = 512
min_bucket_reso = 256
max_bucket_reso = 1024
bucket_reso_steps = 64
bucket_no_upscale = false

[[datasets]]
batch_size = 2

  [[datasets.subsets]]
  image_dir = "/data/out/img/100_sail_kun"
  num_repeats = 100
  class_tokens = "sail_kun"
  is_reg = false
  caption_extension = ".txt"
  keep_tokens = 1
  alpha_mask = true

  [[datasets.subsets]]
  image_dir = "C:\\\\data\\\\\\"quoted\\""
  num_repeats = 1
  class_tokens = "sail_kun"
  is_reg = true
'''


def test_golden_text_and_round_trip():
    text = kohya_toml.dumps(CONFIG, "header line\n\nsecond")
    assert text == GOLDEN
    assert tomllib.loads(text) == CONFIG  # what kohya's TOML reader gets back is what we meant
    assert kohya_toml.validate(tomllib.loads(text)) == []


def test_bucket_settings_follow_resolution():
    s = kohya_toml.bucket_settings(1024, no_upscale=True)
    assert (s["min_bucket_reso"], s["max_bucket_reso"], s["bucket_no_upscale"]) == (512, 2048, True)


def _with(path_fn):
    import copy

    cfg = copy.deepcopy(CONFIG)
    path_fn(cfg)
    return kohya_toml.validate(cfg)


def test_schema_rejects_what_kohya_rejects():
    # subset-only keys at dataset or general level
    assert any("is_reg" in e for e in _with(lambda c: c["general"].update(is_reg=True)))
    assert any("alpha_mask" in e for e in _with(lambda c: c["datasets"][0].update(alpha_mask=True)))
    assert any("image_dir" in e for e in _with(lambda c: c["general"].update(image_dir="x")))
    # dataset-only keys inside a subset
    assert any("resolution" in e for e in _with(lambda c: c["datasets"][0]["subsets"][0].update(resolution=512)))
    assert any("batch_size" in e for e in _with(lambda c: c["datasets"][0]["subsets"][0].update(batch_size=1)))
    # unknown keys and wrong types
    assert any("repeats" in e for e in _with(lambda c: c["datasets"][0]["subsets"][0].update(repeats=3)))
    assert any("num_repeats" in e for e in _with(lambda c: c["datasets"][0]["subsets"][0].update(num_repeats="3")))
    assert any("keep_tokens" in e for e in _with(lambda c: c["general"].update(keep_tokens=1.5)))
    assert any("top level" in e for e in _with(lambda c: c.update(train={})))
    # a subset needs its image_dir; a dataset needs subsets
    assert any("image_dir" in e for e in _with(lambda c: c["datasets"][0]["subsets"][0].pop("image_dir")))
    assert any("subsets" in e for e in _with(lambda c: c["datasets"][0].pop("subsets")))


def test_schema_accepts_legal_variants():
    assert _with(lambda c: c["general"].update(resolution=[768, 512])) == []
    assert _with(lambda c: c["datasets"][0].update(keep_tokens=2, shuffle_caption=False)) == []
    assert _with(lambda c: c["datasets"][0]["subsets"][0].update(caption_dropout_rate=0.1, flip_aug=True)) == []
