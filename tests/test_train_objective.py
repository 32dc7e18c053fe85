"""Golden tests for the denoising objective: schedules, noise offset, targets, min-SNR-gamma weights, SDXL time_ids.

Every expectation is re-derived here from the reference's formula (kohya = sd-scripts at 48d368f):
- zero terminal SNR: kohya library/custom_train_functions.py, fix_noise_scheduler_betas_for_zero_terminal_snr
  (Lin et al. 2023, algorithm 1);
- SNR: custom_train_functions.prepare_scheduler_for_custom_training (all_snr = (sqrt(a) / sqrt(1 - a))^2);
- min-SNR-gamma: custom_train_functions.apply_snr_weight, with the limit SNR -> 0 where it divides 0 by 0;
- noise offset: library/train_util.py, apply_noise_offset (without the adaptive part);
- v target: diffusers DDPMScheduler.get_velocity's formula sqrt(a) * noise - sqrt(1 - a) * x0;
- time_ids: library/train_util.py, BucketManager.get_crop_ltrb and BaseDataset.__getitem__'s
  original_sizes_hw / crop_top_lefts / target_sizes_hw (with the flipped crop).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from datakit.train import objective
from datakit.train.buckets import assign_buckets, load_for_bucket
from datakit.train.conditioning import sdxl_time_ids
from datakit.train.data import DatasetSpec, Entry, Subset

SD_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def sd_betas() -> torch.Tensor:
    """SD's scaled_linear betas: linspace of sqrt(beta), squared (the LDM / diffusers definition)."""
    return torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2


def kohya_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """kohya's enforce_zero_terminal_snr: shift sqrt(alphas_cumprod) so the last is 0, rescale the first back."""
    alphas_bar_sqrt = (1 - betas).cumprod(0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * first / (first - last)
    alphas_bar = alphas_bar_sqrt ** 2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def test_schedules_match_kohya():
    plain = objective.make_noise_scheduler(SD_CONFIG, "epsilon", zero_terminal_snr=False)
    torch.testing.assert_close(plain.alphas_cumprod, (1 - sd_betas()).cumprod(0), rtol=1e-6, atol=1e-7)
    zts = objective.make_noise_scheduler(SD_CONFIG, "v_prediction", zero_terminal_snr=True)
    expected = (1 - kohya_zero_terminal_snr(sd_betas())).cumprod(0)
    torch.testing.assert_close(zts.alphas_cumprod, expected, rtol=1e-5, atol=1e-7)
    assert float(zts.alphas_cumprod[-1]) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("gamma", [1.0, 5.0, 20.0])
@pytest.mark.parametrize("zero_terminal_snr", [False, True])
def test_min_snr_weights_are_kohya_s_and_never_nan(prediction, gamma, zero_terminal_snr):
    sched = objective.make_noise_scheduler(SD_CONFIG, prediction, zero_terminal_snr=zero_terminal_snr)
    t = torch.arange(1000)
    a = sched.alphas_cumprod.double()
    all_snr = (a.sqrt() / (1 - a).sqrt()) ** 2  # prepare_scheduler_for_custom_training
    ours = objective.min_snr_weight(objective.snr(sched.alphas_cumprod, t), gamma, prediction)
    assert torch.isfinite(ours).all()
    for step in (0, 1, 10, 100, 500, 900, 998, 999):
        s = float(all_snr[step])
        if s == 0.0:  # zero terminal SNR: the limit of min(s, g)/s (1) and of min(s, g)/(s + 1) (0)
            expected = 0.0 if prediction == "v_prediction" else 1.0
        else:  # apply_snr_weight
            expected = min(s, gamma) / (s + 1 if prediction == "v_prediction" else s)
        assert float(ours[step]) == pytest.approx(expected, rel=1e-5, abs=1e-7), (step, s)
    if zero_terminal_snr:
        assert float(all_snr[999]) == 0.0  # the case kohya turns into NaN (0/0) for epsilon


def test_noise_offset_is_kohya_s():
    shape = (3, 4, 8, 6)
    ours = objective.draw_noise(shape, 0.1, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(shape, generator=g)  # then apply_noise_offset: one value per sample and channel
    expected = noise + 0.1 * torch.randn((shape[0], shape[1], 1, 1), generator=g)
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)
    torch.testing.assert_close(objective.draw_noise(shape, 0.0, torch.Generator().manual_seed(5)),
                               torch.randn(shape, generator=torch.Generator().manual_seed(5)), rtol=0, atol=0)


@pytest.mark.parametrize("zero_terminal_snr", [False, True])
def test_targets(zero_terminal_snr):
    sched = objective.make_noise_scheduler(SD_CONFIG, "v_prediction", zero_terminal_snr=zero_terminal_snr)
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(4, 4, 8, 8, generator=g), torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 250, 700, 999])
    a = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(objective.target(sched, x0, noise, t, "v_prediction"),
                               a.sqrt() * noise - (1 - a).sqrt() * x0, rtol=1e-5, atol=1e-6)
    assert objective.target(sched, x0, noise, t, "epsilon") is noise


# ---- SDXL micro-conditioning through bucketing --------------------------------------------------

def kohya_crop_ltrb(bucket, image_size):
    """train_util.BucketManager.get_crop_ltrb."""
    bucket_ar = bucket[0] / bucket[1]
    image_ar = image_size[0] / image_size[1]
    if bucket_ar > image_ar:
        resized_width, resized_height = bucket[1] * image_ar, bucket[1]
    else:
        resized_width, resized_height = bucket[0], bucket[0] / image_ar
    crop_left = (bucket[0] - resized_width) // 2
    crop_top = (bucket[1] - resized_height) // 2
    return crop_left, crop_top, crop_left + resized_width, crop_top + resized_height


def kohya_time_ids(image_size, bucket, flipped):
    """BaseDataset.__getitem__: original_sizes_hw, crop_top_lefts, target_sizes_hw, concatenated as SDXL reads them."""
    crop_ltrb = kohya_crop_ltrb(bucket, image_size)
    target_size = bucket
    crop_left_top = (crop_ltrb[0], crop_ltrb[1]) if not flipped else (target_size[0] - crop_ltrb[2], crop_ltrb[1])
    return [int(image_size[1]), int(image_size[0]), int(crop_left_top[1]), int(crop_left_top[0]),
            int(target_size[1]), int(target_size[0])]


@pytest.mark.parametrize("size", [(1000, 1000), (600, 1000), (2000, 500), (1024, 768), (333, 777), (1920, 1080)])
@pytest.mark.parametrize("flipped", [False, True])
def test_sdxl_time_ids_through_bucketing(tmp_path, size, flipped):
    spec = DatasetSpec(source=tmp_path, kind="toml", subsets=[Subset(image_dir=tmp_path)], resolution=(1024, 1024),
                       enable_bucket=True)
    entry = Entry(path=tmp_path / "x.png", caption="", subset=0, size=size)
    assign_buckets([entry], spec)
    assert entry.bucket != size or size == (1024, 768)  # a real resize into a bucket (or an exact bucket)
    assert sdxl_time_ids(entry.size, entry.bucket, flipped) == kohya_time_ids(size, entry.bucket, flipped)


def test_the_training_step_feeds_those_time_ids(tmp_path):
    """A real SDXL micro-batch: the UNet receives each image's original size, crop and bucket (not the bucket twice)."""
    from PIL import Image

    from datakit.testing import build_tiny_pipeline
    from datakit.train.cache import build_latents
    from datakit.train.model import base_from_pipeline
    from datakit.train.step import StepContext, micro_batch_loss

    pipe = build_tiny_pipeline("sdxl", seed=2)
    base = base_from_pipeline(pipe, name="tiny", family="sdxl")
    for m in (base.unet, base.vae, *base.text_encoders):
        m.requires_grad_(False)
    folder = tmp_path / "img"
    folder.mkdir()
    Image.new("RGB", (48, 20), (200, 30, 30)).save(folder / "wide.png")
    spec = DatasetSpec(source=folder, kind="folder", subsets=[Subset(image_dir=folder, flip_aug=True)],
                       resolution=(32, 32), enable_bucket=True, min_bucket_reso=16, max_bucket_reso=64,
                       bucket_reso_steps=16)
    entries = [Entry(path=folder / "wide.png", caption="sks", subset=0, size=(48, 20))]
    assign_buckets(entries, spec)
    bucket = entries[0].bucket
    assert bucket == (48, 16)  # the nearest aspect ratio (3 against the image's 2.4) on the 16-px grid of area <= 32²
    store = build_latents(entries, spec, base, sampling="deterministic", mode="ram", folder=None, device="cpu")
    seen = []
    hook = base.unet.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["added_cond_kwargs"]["time_ids"]),
                                               with_kwargs=True)
    sched = objective.make_noise_scheduler(SD_CONFIG, "epsilon", zero_terminal_snr=False)
    from datakit.train.conditioning import encode_prompts

    ctx = StepContext(base=base, spec=spec, entries=entries, store=store, text_cache=None,
                      encode=lambda t: encode_prompts(base, t), prompt=lambda c, rng: c, scheduler=sched,
                      alphas_cumprod=sched.alphas_cumprod, is_reg=torch.zeros(1, dtype=torch.bool), device="cpu",
                      autocast=lambda: torch.autocast("cpu", enabled=False), trains_text_encoder=False,
                      noise_offset=0.0, min_snr_gamma=None, prior_loss_weight=1.0, max_steps=1)
    flips = set()
    for seed in range(8):
        gen = torch.Generator().manual_seed(seed)
        flipped = bool(torch.rand((), generator=torch.Generator().manual_seed(seed)) < 0.5)  # the step's first draw
        micro_batch_loss(ctx, [0], gen, epoch=0, step=0)
        assert seen[-1][0].tolist() == kohya_time_ids((48, 20), bucket, flipped)
        flips.add(flipped)
    hook.remove()
    assert flips == {False, True}
    # the pixels trained on are the resize the time_ids describe: cover the bucket, centre crop
    rgb, _ = load_for_bucket(folder / "wide.png", bucket, alpha_mask=False)
    assert rgb.shape == (16, 48, 3)
    assert math.isclose(float(np.abs(rgb[..., 0] - (200 / 127.5 - 1)).max()), 0.0, abs_tol=0.02)
