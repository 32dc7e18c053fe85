"""kohya dataset TOML read as kohya reads it (library/config_util.py at 48d368f): strict keys, every option used or refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from datakit.errors import UsageError
from datakit.train import data as D
from datakit.train.buckets import load_for_bucket


def _images(folder, n=2, size=(40, 24)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (40 * i, 120, 200)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"sks, pose {i}\n{{red|blue}} dress, pose {i}\n\nthird line\n")
    return folder


def _toml(tmp_path, general="", dataset="", subset=""):
    _images(tmp_path / "img")
    path = tmp_path / "ds.toml"
    path.write_text(f'[general]\ncaption_extension = ".txt"\n{general}\n[[datasets]]\nresolution = 32\n{dataset}\n'
                    f'[[datasets.subsets]]\nimage_dir = "img"\n{subset}\n')
    return path


@pytest.mark.parametrize("where,line,key,hint", [
    ("subset", 'caption_extention = ".txt"', "caption_extention", "caption_extension"),
    ("general", "keep_token = 1", "keep_token", "keep_tokens"),
    ("dataset", "shufle_caption = true", "shufle_caption", "shuffle_caption"),
    ("subset", "resolution = 64", "resolution", None),  # a dataset key in a subset: kohya refuses it too
    ("general", "is_reg = true", "is_reg", None),
    ("subset", 'num_repeats = "3"', "num_repeats", None),  # wrong type
])
def test_unknown_keys_typos_and_misplaced_keys_are_refused(tmp_path, where, line, key, hint):
    path = _toml(tmp_path, **{where: line})
    with pytest.raises(UsageError) as err:
        D.read_dataset(path)
    message = str(err.value)
    assert str(path) in message and f"'{key}'" in message
    if hint:
        assert f"did you mean '{hint}'" in message


def test_a_typo_is_an_error_line_and_exit_2_on_the_command_line(tmp_path):
    path = _toml(tmp_path, subset='caption_extention = ".txt"')
    res = subprocess.run([sys.executable, "-m", "datakit", "train", str(path), "--base-model", "x", "-o", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.startswith("error:")
    assert "caption_extention" in res.stderr and str(path) in res.stderr


@pytest.mark.parametrize("line,name", [
    ("random_crop = true", "random_crop"),
    ("color_aug = true", "color_aug"),
    ("face_crop_aug_range = [2.0, 4.0]", "face_crop_aug_range"),
    ('resize_interpolation = "sinc"', "resize_interpolation"),
])
def test_options_datakit_cannot_honour_are_refused_by_name(tmp_path, line, name):
    with pytest.raises(UsageError, match=name):
        D.read_dataset(_toml(tmp_path, subset=line))


@pytest.mark.parametrize("line,name", [("validation_split = 0.1", "validation_split"),
                                       ("network_multiplier = 0.5", "network_multiplier")])
def test_dataset_options_datakit_cannot_honour_are_refused_by_name(tmp_path, line, name):
    with pytest.raises(UsageError, match=name):
        D.read_dataset(_toml(tmp_path, dataset=line))


def test_fine_tuning_subsets_are_refused_by_name(tmp_path):
    _images(tmp_path / "img")
    path = tmp_path / "ds.toml"
    path.write_text('[[datasets]]\n[[datasets.subsets]]\nimage_dir = "img"\nmetadata_file = "meta.json"\n')
    with pytest.raises(UsageError, match="metadata_file"):
        D.read_dataset(path)


def test_every_caption_option_reaches_the_subset(tmp_path):
    path = _toml(tmp_path, general="shuffle_caption = true\nkeep_tokens = 1\n", subset=(
        'caption_separator = ";"\nsecondary_separator = "::"\nenable_wildcard = true\ntoken_warmup_min = 2\n'
        'token_warmup_step = 0.25\ncaption_dropout_every_n_epochs = 4\ncaption_prefix = "pre"\ncaption_suffix = "post"\n'
        'keep_tokens_separator = "|||"\ncaption_tag_dropout_rate = 0.1\ncaption_dropout_rate = 0.05\n'
        'resize_interpolation = "bicubic"\ncache_info = true\nflip_aug = true\nalpha_mask = true\n'))
    spec = D.read_dataset(path)
    sub = spec.subsets[0]
    c = sub.captions
    assert (c.caption_separator, c.secondary_separator, c.enable_wildcard, c.token_warmup_min, c.token_warmup_step) == \
        (";", "::", True, 2, 0.25)
    assert (c.caption_dropout_every_n_epochs, c.caption_prefix, c.caption_suffix, c.keep_tokens_separator) == \
        (4, "pre", "post", "|||")
    assert (c.shuffle_caption, c.keep_tokens, c.caption_tag_dropout_rate, c.caption_dropout_rate) == (True, 1, 0.1, 0.05)
    assert (sub.resize_interpolation, sub.flip_aug, sub.alpha_mask) == ("bicubic", True, True)
    # enable_wildcard reads every non-empty line of a caption file (kohya's read_caption); otherwise the first
    entries, _ = D.collect_entries(spec)
    assert entries[0].caption == "sks, pose 0\n{red|blue} dress, pose 0\nthird line"
    plain = D.read_dataset(_toml(tmp_path / "plain"))
    assert D.collect_entries(plain)[0][0].caption == "sks, pose 0"


def test_custom_attributes_are_named_in_a_note(tmp_path):
    spec = D.read_dataset(_toml(tmp_path, subset="custom_attributes = { weight = 2 }"))
    assert any("custom_attributes" in n for n in spec.notes)


def test_resize_interpolation_is_used(tmp_path):
    arr = (np.indices((24, 40)).sum(0) % 2 * 255).astype(np.uint8)  # a checkerboard: every filter treats it differently
    Image.fromarray(np.stack([arr] * 3, -1)).save(tmp_path / "c.png")
    results = {name: load_for_bucket(tmp_path / "c.png", (16, 16), alpha_mask=False, interpolation=name)[0]
               for name in ("nearest", "bilinear", "area", "lanczos")}
    default = load_for_bucket(tmp_path / "c.png", (16, 16), alpha_mask=False)[0]
    assert np.array_equal(default, results["area"])  # shrinking: kohya's default is area
    assert not np.array_equal(results["nearest"], results["area"])
    assert not np.array_equal(results["bilinear"], results["lanczos"])


def test_emit_s_dataset_toml_reads_back(tmp_path):
    """The schema is one: what emit writes, train reads."""
    from datakit.emit import kohya_toml

    _images(tmp_path / "img" / "2_sks")
    config = {"general": {"caption_extension": ".txt", "shuffle_caption": True, "keep_tokens": 1,
                          **kohya_toml.bucket_settings(64)},
              "datasets": [{"batch_size": 1, "subsets": [{"image_dir": "img/2_sks", "num_repeats": 2,
                                                          "class_tokens": "sks", "alpha_mask": False}]}]}
    assert kohya_toml.validate(config) == []
    (tmp_path / "dataset.toml").write_text(kohya_toml.dumps(config))
    spec = D.read_dataset(tmp_path / "dataset.toml")
    assert spec.enable_bucket and spec.subsets[0].num_repeats == 2 and spec.subsets[0].captions.keep_tokens == 1
