"""LoRA metadata as kohya writes it: every expectation re-derived here from kohya's own code.

References (kohya-ss/sd-scripts at 48d368f): library/train_util.py `model_hash`, `calculate_sha256`,
`BucketManager.select_bucket`, `BaseDataset.make_buckets` (bucket_info), `DreamBoothDataset.__init__`
(num_train_images / num_reg_images), `get_optimizer` (optimizer_name + optimizer_args);
library/model_util.py `make_bucket_resolutions`; train_network.py (the metadata dict, ss_text_encoder_lr,
ss_sd_model_hash / ss_new_sd_model_hash). A1111's reader: extensions-builtin/Lora/ui_edit_user_metadata.py
(`get_metadata_table`, which reads bucket["resolution"] and bucket["count"]).
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from datakit.console import Reporter
from datakit.train import loop as T
from datakit.train.config import build_config
from datakit.train.formats import base_model_hashes, kohya_optimizer_name
from datakit.testing import save_tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---- kohya's code, re-derived -------------------------------------------------------------------

def kohya_model_hash(path) -> str:
    """train_util.model_hash: sha256 of the 64 KiB at offset 1 MiB, first 8 hex digits; folders: IsADirectory."""
    try:
        with open(path, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[0:8]
    except IsADirectoryError:
        return "IsADirectory"


def kohya_calculate_sha256(path) -> str:
    """train_util.calculate_sha256: sha256 of the whole file; folders: IsADirectory."""
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except IsADirectoryError:
        return "IsADirectory"


def kohya_bucket_resolutions(max_reso, min_size, max_size, divisible):
    """model_util.make_bucket_resolutions."""
    max_area = max_reso[0] * max_reso[1]
    resos = set()
    side = int(math.sqrt(max_area) // divisible) * divisible
    resos.add((side, side))
    width = min_size
    while width <= max_size:
        height = min(max_size, int((max_area // width) // divisible) * divisible)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
        width += divisible
    return sorted(resos)


def kohya_bucket_info(images, resolution, min_size, max_size, steps):
    """select_bucket (upscaling allowed) for each (width, height, repeats), then make_buckets' bucket_info."""
    predefined = kohya_bucket_resolutions(resolution, min_size, max_size, steps)
    ratios = np.array([w / h for w, h in predefined])
    resos, buckets, errors = [], {}, []
    for w, h, repeats in images:
        aspect = w / h
        reso = (w, h) if (w, h) in predefined else predefined[np.abs(ratios - aspect).argmin()]
        if reso not in buckets:
            resos.append(reso)
            buckets[reso] = 0
        errors.append(abs(reso[0] / reso[1] - aspect))
        buckets[reso] += repeats
    info = {"buckets": {}}
    for i, reso in enumerate(sorted(resos)):
        info["buckets"][i] = {"resolution": reso, "count": buckets[reso]}
    info["mean_img_ar_error"] = np.mean(np.abs(np.array(errors))) if errors else 0
    return json.loads(json.dumps(info))  # what json.dumps in train_network.py writes, read back


def a1111_resolutions(bucket_info: dict) -> dict[str, int]:
    """ui_edit_user_metadata.py: resolution "HxW" -> count, as A1111's metadata editor tabulates it."""
    resolutions = {}
    for _, bucket in bucket_info["buckets"].items():
        resolution = bucket["resolution"]
        resolution = f"{resolution[1]}x{resolution[0]}"
        resolutions[resolution] = resolutions.get(resolution, 0) + int(bucket["count"])
    return resolutions


def kohya_optimizer(optimizer_class, optimizer_kwargs: dict) -> str:
    """get_optimizer's optimizer_name + train_network.py's "(args)" suffix."""
    name = optimizer_class.__module__ + "." + optimizer_class.__name__
    args = ",".join([f"{k}={v}" for k, v in optimizer_kwargs.items()])
    return name + (f"({args})" if len(args) > 0 else "")


# ---- unit checks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1000, 0x100000 + 10, 0x100000 + 0x10000 + 12345])
def test_base_model_hashes_are_kohyas(tmp_path, size):
    path = tmp_path / "model.safetensors"
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    got = base_model_hashes(str(path))
    assert got == {"ss_sd_model_name": "model.safetensors", "ss_sd_model_hash": kohya_model_hash(path),
                   "ss_new_sd_model_hash": kohya_calculate_sha256(path)}
    path.write_bytes(b"changed")  # a new file at the same path is hashed again
    assert base_model_hashes(str(path))["ss_new_sd_model_hash"] == kohya_calculate_sha256(path)


def test_base_model_hashes_of_folders_and_hub_ids(tmp_path):
    assert base_model_hashes(str(tmp_path)) == {"ss_sd_model_name": tmp_path.name,
                                                "ss_sd_model_hash": kohya_model_hash(tmp_path),
                                                "ss_new_sd_model_hash": kohya_calculate_sha256(tmp_path)}
    # not a local path: kohya writes the name as given and no hash
    assert base_model_hashes("stabilityai/stable-diffusion-xl-base-1.0") == {
        "ss_sd_model_name": "stabilityai/stable-diffusion-xl-base-1.0"}


def test_optimizer_names_are_kohyas():
    from transformers.optimization import Adafactor

    from datakit.train.config import build_config
    from datakit.train.optim import make_optimizer

    p = [torch.nn.Parameter(torch.zeros(2))]
    assert kohya_optimizer_name(torch.optim.AdamW(p, lr=1e-4)) == kohya_optimizer(torch.optim.AdamW, {})
    assert kohya_optimizer_name(torch.optim.AdamW(p, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.1, foreach=True)) == \
        kohya_optimizer(torch.optim.AdamW, {"betas": (0.9, 0.99), "weight_decay": 0.1})
    # datakit's defaults: what a kohya user passes as --optimizer_type / --optimizer_args for the same optimizer
    cfg = build_config({"dataset": "x", "base_model": "m", "output": "o"})
    adamw = make_optimizer("adamw", [{"params": p, "lr": 1e-4}], cfg, device_type="cpu")
    assert kohya_optimizer_name(adamw) == "torch.optim.adamw.AdamW"
    ada = kohya_optimizer_name(make_optimizer("adafactor", [{"params": p, "lr": 1e-4}], cfg, device_type="cpu"))
    head = kohya_optimizer(Adafactor, {})
    assert ada.startswith(head + "(") and set(ada[len(head) + 1:-1].split(",")) == {
        "scale_parameter=False", "relative_step=False", f"weight_decay={cfg.weight_decay}"}


# ---- the files a run writes ---------------------------------------------------------------------------

SIZES = [(100, 40), (40, 100), (64, 64), (50, 100), (96, 32)]  # aspect ratios off and on the bucket grid


def _image(path, w, h, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB").save(path)


def _dataset(tmp_path, *, bucket: bool, reg: bool):
    root = tmp_path / "ds"
    (root / "img").mkdir(parents=True)
    for i, (w, h) in enumerate(SIZES):
        _image(root / "img" / f"a{i}.png", w, h, i)
        (root / "img" / f"a{i}.txt").write_text(f"sks, pose {i}")
    subsets = '[[datasets.subsets]]\nimage_dir = "img"\nnum_repeats = 3\n'
    if reg:
        (root / "reg").mkdir()
        for i in range(2):
            _image(root / "reg" / f"r{i}.png", 64, 64, 10 + i)
        subsets += '\n[[datasets.subsets]]\nimage_dir = "reg"\nnum_repeats = 2\nis_reg = true\nclass_tokens = "person"\n'
    (root / "dataset.toml").write_text(
        '[general]\ncaption_extension = ".txt"\n\n[[datasets]]\nresolution = 64\nbatch_size = 1\n'
        f'enable_bucket = {str(bucket).lower()}\nmin_bucket_reso = 32\nmax_bucket_reso = 128\nbucket_reso_steps = 32\n\n'
        + subsets)
    return root / "dataset.toml"


@pytest.fixture(scope="module")
def sd1(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("fmt-sd1") / "model", "sd1")


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def test_unet_only_run_with_buckets_writes_kohyas_metadata(tmp_path, sd1):
    toml = _dataset(tmp_path, bucket=True, reg=False)
    info = T.run_train(build_config({"dataset": toml, "base_model": str(sd1), "output": tmp_path / "out",
                                     "device": "cpu", "max_steps": 2, "rank": 2, "save_every": 1,
                                     "weight_decay": 0.05}), Reporter(quiet=True))
    checkpoint = next((tmp_path / "out" / "checkpoints").glob("*/*-step*.safetensors"))
    for path in (info["file"], checkpoint):  # the final file and every checkpoint's
        meta = _metadata(path)
        expected = kohya_bucket_info([(w, h, 3) for w, h in SIZES], (64, 64), 32, 128, 32)
        assert json.loads(meta["ss_bucket_info"]) == expected
        assert a1111_resolutions(json.loads(meta["ss_bucket_info"])) == a1111_resolutions(expected)
        assert meta["ss_num_train_images"] == str(len(SIZES) * 3) and meta["ss_num_reg_images"] == "0"
        assert "ss_text_encoder_lr" not in meta
        assert meta["ss_optimizer"] == kohya_optimizer(torch.optim.AdamW, {"weight_decay": 0.05})
        assert meta["ss_sd_model_name"] == sd1.name
        assert meta["ss_sd_model_hash"] == kohya_model_hash(sd1) and \
            meta["ss_new_sd_model_hash"] == kohya_calculate_sha256(sd1)


def test_text_encoder_run_with_reg_images_writes_kohyas_metadata(tmp_path, sd1):
    toml = _dataset(tmp_path, bucket=False, reg=True)
    info = T.run_train(build_config({"dataset": toml, "base_model": str(sd1), "output": tmp_path / "out",
                                     "device": "cpu", "max_steps": 1, "rank": 2, "train_text_encoder": True,
                                     "lr": 1e-4, "text_encoder_lr": 5e-5}), Reporter(quiet=True))
    meta = _metadata(info["file"])
    assert meta["ss_text_encoder_lr"] == "5e-05" and meta["ss_optimizer"] == "torch.optim.adamw.AdamW"
    assert meta["ss_num_train_images"] == str(len(SIZES) * 3) and meta["ss_num_reg_images"] == str(2 * 2)
    assert "ss_bucket_info" not in meta  # kohya's TOML path keeps bucket info of unbucketed datasets out too
