"""Training and inference agree: a LoRA trained by `datakit train` helps most under the conditioning inference uses.

A tiny v-prediction SD2-layout model, whose CLIP has a final layer norm that reshapes its output
(datakit.testing.trained_text_norm: a stand-in for a trained CLIP's non-trivial norm), learns two flat
images of different colours with different captions. The LoRA file is then loaded as users load it
(diffusers' `load_lora_weights`) and measured with the pipeline's own prompt encoding
(`StableDiffusionPipeline.encode_prompt`: the normed last hidden state, what diffusers, A1111 and
ComfyUI feed the UNet) and, for contrast, with CLIP's pre-norm last hidden state:

- the loss the LoRA removes on each image is larger under the inference conditioning;
- under it, the right caption beats the swapped one;
- and the part of the gain that depends on the caption (right minus swapped) is larger under it.

At high noise (v-prediction, t >= 700) the noisy latent shows little of the image, so only the
caption tells the two apart; a batch of both images per step makes that lesson quick to learn.
A trainer that conditions on the pre-norm state (datakit before issue 12) fails all three.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from datakit.testing import build_tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPTIONS = ("sks, a red circle in the middle of a blue sky, bright, round, warm, centred, flat",
            "zkz, a dark blue square lying on yellow sand, cold, angular, boxy, still, matte, plain")
TIMESTEPS = (700, 800, 850, 900, 950)
SIZE = 16  # px: 8x8 latents through the tiny VAE


def _dataset(folder):
    """Two flat images far apart in colour, so that at high noise only the caption tells them apart."""
    sub = folder / "1_pair"
    sub.mkdir(parents=True)
    for name, colour, caption in (("a", (230, 40, 30), CAPTIONS[0]), ("b", (20, 60, 230), CAPTIONS[1])):
        Image.new("RGB", (SIZE, SIZE), colour).save(sub / f"{name}.png")
        (sub / f"{name}.txt").write_text(caption)
    return folder


def _model(folder, data, family: str, prediction_type: str):
    """The tiny model, its VAE scaling factor set as SD's is: so the training latents have unit variance."""
    pipe = build_tiny_pipeline(family, seed=3, prediction_type=prediction_type, trained_text=True)
    with torch.no_grad():
        latents = torch.cat([pipe.vae.encode(_pixels(data, n)).latent_dist.mode() for n in "ab"])
    pipe.vae.register_to_config(scaling_factor=float(1 / latents.std()))
    pipe.save_pretrained(str(folder), safe_serialization=True)
    return folder


def _pixels(data, name):
    im = np.asarray(Image.open(data / "1_pair" / f"{name}.png"), np.float32) / 127.5 - 1
    return torch.from_numpy(im).permute(2, 0, 1)[None]


def _losses(pipe, latents, conds):
    """Mean denoising loss of each image (rows) under each conditioning (columns), fixed noise and timesteps."""
    g = torch.Generator().manual_seed(7)
    t = torch.tensor(TIMESTEPS)
    out = np.zeros((len(latents), len(conds)))
    with torch.no_grad():
        for i, lat in enumerate(latents):
            x0 = lat.expand(len(t), -1, -1, -1)
            noise = torch.randn(x0.shape, generator=g)
            noisy = pipe.scheduler_ddpm.add_noise(x0, noise, t)
            v_model = pipe.scheduler_ddpm.config.prediction_type == "v_prediction"
            target = pipe.scheduler_ddpm.get_velocity(x0, noise, t) if v_model else noise
            for j, cond in enumerate(conds):
                pred = pipe.unet(noisy, t, cond.expand(len(t), -1, -1)).sample
                out[i, j] = float(torch.nn.functional.mse_loss(pred, target))
    return out


def test_lora_gains_most_under_the_inference_conditioning(tmp_path):
    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from datakit.cli.main import main

    data = _dataset(tmp_path / "data")
    model = _model(tmp_path / "model", data, "sd2", "v_prediction")
    with pytest.raises(SystemExit) as done:
        main(["train", str(data), "--base-model", str(model), "--output", str(tmp_path / "out"), "--device", "cpu",
              "--rank", "8", "--alpha", "8", "--lr", "3e-3", "--max-steps", "400", "--batch-size", "2",
              "--max-grad-norm", "0", "--save-precision", "fp32", "--latent-cache", "ram", "--resolution", str(SIZE), "--quiet"])
    assert done.value.code == 0

    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None)
    pipe.scheduler_ddpm = DDPMScheduler.from_config(pipe.scheduler.config)
    with torch.no_grad():
        latents = [pipe.vae.encode(_pixels(data, n)).latent_dist.mode() * pipe.vae.config.scaling_factor for n in "ab"]
        inference = [pipe.encode_prompt(c, "cpu", 1, False)[0] for c in CAPTIONS]  # diffusers' own encoding
        ids = [pipe.tokenizer(c, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
               for c in CAPTIONS]
        pre_norm = [pipe.text_encoder(i, output_hidden_states=True).hidden_states[-1] for i in ids]
    # The final layer norm matters in this model: the two conditionings differ clearly, at the same scale.
    assert float((inference[0] - pre_norm[0]).abs().mean()) > 0.5
    assert 0.5 < float(inference[0].std() / pre_norm[0].std()) < 2

    conds = [*inference, *pre_norm]  # columns: inference a, inference b, pre-norm a, pre-norm b
    before = _losses(pipe, latents, conds)
    pipe.load_lora_weights(str(tmp_path / "out" / "lora.safetensors"))
    after = _losses(pipe, latents, conds)
    gain = before - after
    for i, other in ((0, 1), (1, 0)):
        assert gain[i, i] > 0, (gain, before)
        # the LoRA learned the conditioning inference feeds, not the pre-norm state ...
        assert gain[i, i] > gain[i, 2 + i], (i, gain)
        # ... and the caption, not only the pictures: the right caption beats the swapped one
        assert after[i, i] < after[i, other], (i, after)
        caption_gain_inference = gain[i, i] - gain[i, other]
        caption_gain_pre_norm = gain[i, 2 + i] - gain[i, 2 + other]
        assert caption_gain_inference > caption_gain_pre_norm, (i, gain)
