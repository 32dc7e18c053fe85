"""Dataset reading (emit output, kohya TOML, folder mode), buckets, captions, epochs, config files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from datakit.errors import UsageError
from datakit.train import data as D
from datakit.train.config import DatasetOverrides, TrainConfig, build_config, parse_resolution
from datakit.train.samples import parse_prompt_line, read_prompts
from datakit.testing import write_tiny_dataset
from datakit.train.buckets import assign_buckets, batches_per_epoch, epoch_batches, load_for_bucket, make_buckets
from datakit.train.plan import make_plan


def _img(path, w=32, h=32, color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), color).save(path)
    return path


def test_toml_settings_inherit_general_dataset_subset(tmp_path):
    _img(tmp_path / "a" / "x.png")
    (tmp_path / "a" / "x.txt").write_text("sks, solo, smile")
    _img(tmp_path / "b" / "y.png", 64, 32)
    (tmp_path / "b" / "y.caption").write_text("sks, outdoors")
    (tmp_path / "ds.toml").write_text(
        '[general]\nshuffle_caption = true\nkeep_tokens = 1\ncaption_extension = ".txt"\n\n'
        '[[datasets]]\nresolution = [64, 48]\nbatch_size = 2\nenable_bucket = true\nbucket_reso_steps = 16\n\n'
        '[[datasets.subsets]]\nimage_dir = "a"\nnum_repeats = 10\n\n'
        '[[datasets.subsets]]\nimage_dir = "b"\nnum_repeats = 3\ncaption_extension = ".caption"\nis_reg = true\nkeep_tokens = 0\n')
    spec = D.read_dataset(tmp_path / "ds.toml")
    assert spec.kind == "toml" and spec.resolution == (64, 48) and spec.batch_size == 2 and spec.enable_bucket
    a, b = spec.subsets
    assert (a.num_repeats, a.captions.keep_tokens, a.captions.shuffle_caption, a.is_reg) == (10, 1, True, False)
    assert (b.num_repeats, b.captions.keep_tokens, b.caption_extension, b.is_reg) == (3, 0, ".caption", True)
    entries, skipped = D.collect_entries(spec)
    assert [e.caption for e in entries] == ["sks, solo, smile", "sks, outdoors"] and not skipped
    plan = make_plan(TrainConfig(epochs=2), spec, entries, 1)
    assert plan.samples_per_epoch == 13 and plan.num_reg_images == 1
    assert plan.steps_per_epoch == 5 + 2  # per bucket: ceil(10/2) + ceil(3/2)
    assert plan.max_steps == 14


def test_emit_output_carries_trigger_and_keep_tokens(tmp_path):
    write_tiny_dataset(tmp_path, images=1)
    (tmp_path / "datakit.json").write_text(json.dumps({"stage": "emit", "carry": {"trigger": "sail kun", "keep_tokens": 2}}))
    toml = (tmp_path / "dataset.toml").read_text().replace("keep_tokens = 1\n", "")
    (tmp_path / "dataset.toml").write_text(toml)
    spec = D.read_dataset(tmp_path)
    assert spec.kind == "emit" and spec.trigger == "sail kun" and spec.carry_keep_tokens == 2
    spec2, changes = D.with_overrides(spec, DatasetOverrides())
    assert spec2.subsets[0].captions.keep_tokens == 2 and not changes
    spec3, changes = D.with_overrides(spec, DatasetOverrides(keep_tokens=3, batch_size=4))
    assert spec3.subsets[0].captions.keep_tokens == 3 and spec3.batch_size == 4
    assert any(c.startswith("batch_size: 1 (dataset) -> 4") for c in changes)
    assert spec.batch_size == 1  # the original spec is untouched


def test_folder_mode_and_caption_fallbacks(tmp_path):
    _img(tmp_path / "20_sail kun" / "a.png")
    _img(tmp_path / "20_sail kun" / "b.png")
    (tmp_path / "20_sail kun" / "a.txt").write_text("sail kun, smile")
    _img(tmp_path / "1_sail_kun_with_background" / "c.png")
    (tmp_path / "notes").mkdir()
    spec = D.read_dataset(tmp_path)
    assert spec.kind == "folder"
    assert [(s.num_repeats, s.class_tokens) for s in spec.subsets] == [(1, "sail kun with background"), (20, "sail kun")]
    entries, _ = D.collect_entries(spec)
    caps = {e.path.name: e.caption for e in entries}
    # no caption_extension given and no .caption files: the .txt captions are used (with a note), else class tokens
    assert caps == {"c.png": "sail kun with background", "a.png": "sail kun, smile", "b.png": "sail kun"}
    assert any("using the .txt captions" in n for n in spec.notes)


def test_bad_inputs_are_named_not_fatal(tmp_path):
    write_tiny_dataset(tmp_path, images=2)
    sub = tmp_path / "img" / "2_sks"
    (sub / "broken.png").write_bytes(b"not a png at all")
    (sub / "empty.png").write_bytes(b"")
    entries, skipped = D.collect_entries(D.read_dataset(tmp_path))
    assert len(entries) == 2
    assert sorted(s["source"].rsplit("/", 1)[1] for s in skipped) == ["broken.png", "empty.png"]


@pytest.mark.parametrize("bad,match", [
    ("nothing", "dataset not found"),
])
def test_dataset_usage_errors(tmp_path, bad, match):
    with pytest.raises(UsageError, match=match):
        D.read_dataset(tmp_path / bad)


def test_toml_errors_are_usage_errors(tmp_path):
    (tmp_path / "a.toml").write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'missing'\n")
    with pytest.raises(UsageError, match="image_dir not found"):
        D.read_dataset(tmp_path / "a.toml")
    (tmp_path / "b.toml").write_text("[general\n")
    with pytest.raises(UsageError, match="not a valid dataset TOML"):
        D.read_dataset(tmp_path / "b.toml")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="is this a dataset"):
        D.read_dataset(tmp_path / "empty")


def test_buckets_match_kohya_arithmetic():
    buckets = make_buckets((512, 512), 256, 1024, 64)
    assert (512, 512) in buckets and (384, 640) in buckets and (640, 384) in buckets and (256, 1024) in buckets
    assert all(w * h <= 512 * 512 and w % 64 == 0 and h % 64 == 0 for w, h in buckets)
    assert all((h, w) in buckets for w, h in buckets)
    sdxl = make_buckets((1024, 1024), 256, 2048, 64)
    assert (832, 1216) in sdxl and (1024, 1024) in sdxl


def test_images_go_to_the_nearest_aspect_bucket(tmp_path):
    spec = D.DatasetSpec(source=tmp_path, kind="toml", subsets=[D.Subset(image_dir=tmp_path)], resolution=(512, 512),
                         enable_bucket=True)
    entries = [D.Entry(path=tmp_path / f"{i}.png", caption="", subset=0, size=s)
               for i, s in enumerate([(1000, 1000), (600, 1000), (2000, 500)])]
    counts = assign_buckets(entries, spec)
    assert [e.bucket for e in entries] == [(512, 512), (384, 640), (1024, 256)]
    assert sum(counts.values()) == 3


def test_load_for_bucket_covers_and_centre_crops(tmp_path):
    arr = np.zeros((40, 80, 4), np.uint8)
    arr[:, :40] = (255, 0, 0, 255)
    arr[:, 40:] = (0, 0, 255, 0)  # transparent blue: RGB stays blue (kohya's convert("RGB")), alpha 0
    Image.fromarray(arr, "RGBA").save(tmp_path / "a.png")
    rgb, mask = load_for_bucket(tmp_path / "a.png", (32, 32), alpha_mask=True)
    assert rgb.shape == (32, 32, 3) and mask.shape == (32, 32)
    assert rgb[:, :10, 0].mean() > 0.9 and rgb[:, -10:, 2].mean() > 0.9
    assert mask[:, :10].mean() == 1.0 and mask[:, -10:].mean() == 0.0


def test_epoch_batches_are_single_bucket_and_seeded(tmp_path):
    spec = D.DatasetSpec(source=tmp_path, kind="toml", subsets=[D.Subset(image_dir=tmp_path, num_repeats=3)])
    entries = [D.Entry(path=tmp_path / f"{i}", caption="", subset=0, size=(1, 1), bucket=(64, 64) if i < 3 else (32, 96))
               for i in range(5)]
    batches = epoch_batches(entries, spec, 2, seed=1, epoch=0)
    assert sorted(i for b in batches for i in b) == sorted(list(range(5)) * 3)
    assert all(len({entries[i].bucket for i in b}) == 1 for b in batches)
    assert batches == epoch_batches(entries, spec, 2, seed=1, epoch=0)
    assert batches != epoch_batches(entries, spec, 2, seed=1, epoch=1)
    assert len(batches) == batches_per_epoch(entries, spec, 2) == 5 + 3


def test_config_file_and_flags(tmp_path):
    (tmp_path / "train.toml").write_text('rank = 8\nlr = 5e-4\nresolution = "768,512"\nmax-steps = 10\n')
    cfg = build_config({"dataset": tmp_path, "base_model": "m", "output": tmp_path / "o", "lr": 1e-3},
                       tmp_path / "train.toml")
    assert (cfg.lora.rank, cfg.lr, cfg.dataset_overrides.resolution, cfg.max_steps) == (8, 1e-3, (768, 512), 10)
    assert cfg.hypernetwork is None and cfg.lora.alpha == 1.0 and cfg.lora.save_precision == "fp32"  # kohya's defaults
    with pytest.raises(UsageError, match="--layer-structure is an option of --method hypernetwork"):
        build_config({"dataset": tmp_path, "base_model": "m", "output": tmp_path, "layer_structure": "1,2,1"})
    with pytest.raises(UsageError, match="--rank is an option of --method lora"):
        build_config({"dataset": tmp_path, "base_model": "m", "output": tmp_path, "method": "hypernetwork", "rank": 4})
    (tmp_path / "bad.toml").write_text("rnak = 8\n")
    with pytest.raises(UsageError, match="unknown option 'rnak'"):
        build_config({}, tmp_path / "bad.toml")
    with pytest.raises(UsageError, match="--optimizer"):
        build_config({"dataset": tmp_path, "base_model": "m", "output": tmp_path, "optimizer": "adamx"})
    with pytest.raises(UsageError, match="--max-token-length"):
        build_config({"dataset": tmp_path, "base_model": "m", "output": tmp_path, "max_token_length": 100})
    assert parse_resolution("512") == (512, 512) and parse_resolution([640, 384]) == (640, 384)


def test_sample_prompt_syntax(tmp_path):
    sp = parse_prompt_line("sks, beach --n lowres, bad hands --w 640 --h 384 --d 7 --s 12 --l 5.5")
    assert (sp.prompt, sp.negative, sp.width, sp.height, sp.seed, sp.steps, sp.cfg) == \
        ("sks, beach", "lowres, bad hands", 640, 384, 7, 12, 5.5)
    assert parse_prompt_line("# a comment") is None
    with pytest.raises(UsageError):
        parse_prompt_line("x --w wide")
    defaults = read_prompts(None, "sail kun")
    assert len(defaults) >= 3 and all(p.prompt.startswith("sail kun, ") for p in defaults)
    assert len({p.seed for p in defaults}) == len(defaults)
