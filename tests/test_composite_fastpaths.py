"""The fast paths of the compositing code give the results of the plain formulas they replace."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from datakit.compositing import blending as bl
from datakit.compositing.placement import choose_placement, shape_from_alpha
from datakit.compositing.render import render


def test_premultiply_and_layer_resize_match_the_exact_integer_formulas():
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (61, 47, 4), dtype=np.uint8)
    expected = (rgba[..., :3].astype(np.uint32) * rgba[..., 3:4] + 127) // 255
    pm = bl.premultiply(rgba)
    assert np.array_equal(pm[..., :3], expected.astype(np.uint8))
    assert np.array_equal(pm[..., 3], rgba[..., 3])
    # The 8-bit clamp of colour to alpha, then the conversion, equals clamping in float.
    p, a = bl.resize_layer(rgba, 90, 120)  # not premultiplied: bicubic overshoot gives colour > alpha
    up = cv2.resize(rgba, (90, 120), interpolation=cv2.INTER_CUBIC).astype(np.float64) / 255.0
    assert np.allclose(a, up[..., 3], atol=1e-6)
    assert np.allclose(p, np.minimum(up[..., :3], up[..., 3:4]), atol=1e-6)
    f = bl.to_float(np.array([[0, 128, 255]], np.uint8))
    assert f.dtype == np.float32 and f[0].tolist() == pytest.approx([0.0, 128 / 255, 1.0])


@pytest.mark.parametrize("mono", [True, False])
def test_grain_is_gaussian_of_the_requested_sigma_and_seeded(mono):
    colour = np.full((300, 300, 3), 0.5, np.float32)
    out = bl.add_grain(colour, 0.02, np.random.default_rng(7), mono=mono)
    assert np.array_equal(out, bl.add_grain(colour, 0.02, np.random.default_rng(7), mono=mono))
    assert np.all(colour == 0.5)  # the input is left alone
    noise = (out - 0.5).astype(np.float64)
    assert abs(noise.mean()) < 5e-4
    assert noise.std() == pytest.approx(0.02, rel=0.03)
    kurtosis = (noise**4).mean() / noise.var() ** 2
    assert 2.85 < kurtosis < 3.15  # Gaussian (3), not uniform (1.8) or a sum of two uniforms (2.4)
    same = np.allclose(out[..., 0], out[..., 1]) and np.allclose(out[..., 1], out[..., 2])
    assert same is mono


def test_sampled_statistics_agree_with_the_full_ones():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:600, 0:640].astype(np.float32)
    gray = 0.3 + 0.3 * np.sin(xx / 40.0) * np.cos(yy / 55.0) + rng.normal(0, 0.02, (600, 640)).astype(np.float32)
    hp = gray - cv2.GaussianBlur(gray, (0, 0), 1.0)
    full = float(np.median(np.abs(hp)) * 1.4826 / 0.75)
    assert bl.noise_level(gray) == pytest.approx(full, rel=0.03)
    assert bl.noise_level(gray) == pytest.approx(0.02, rel=0.2)

    # Harmonisation: gain and shift from the sample equal those of every pixel.
    colour = np.dstack([gray, gray * 0.8, gray * 0.6]).clip(0, 1).astype(np.float32)
    bg = np.dstack([gray * 0.5 + 0.4, gray * 0.5 + 0.3, gray * 0.2 + 0.2]).clip(0, 1).astype(np.float32)
    weight = np.zeros((600, 640), np.float32)
    cv2.ellipse(weight, (320, 300), (150, 260), 0, 0, 360, 1.0, -1)
    out, stats = bl.harmonise(colour, weight, bg, 1.0 - weight, 0.25, 0.05)
    ys, yb = _luma(colour), _luma(bg)
    mu_s, mu_b = (ys * weight).sum() / weight.sum(), (yb * (1 - weight)).sum() / (1 - weight).sum()
    sd_s = np.sqrt((((ys - mu_s) ** 2) * weight).sum() / weight.sum())
    sd_b = np.sqrt((((yb - mu_b) ** 2) * (1 - weight)).sum() / (1 - weight).sum())
    gain = np.clip(1 + 0.25 * (sd_b / sd_s - 1), 0.85, 1.15)
    assert stats["gain"] == pytest.approx(gain, abs=0.005)
    assert stats["shift"] == pytest.approx(np.clip(0.25 * (mu_b - mu_s), -0.08, 0.08), abs=0.002)
    # The change itself reaches every pixel: (colour - mu) * gain + mu + shift + cast.
    expect = (colour - mu_s) * stats["gain"] + mu_s + stats["shift"] + np.array(stats["cast"])
    assert np.allclose(out, np.clip(expect, 0, 1), atol=0.01)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_a_cast_shadow_beyond_the_subject_region_still_darkens_the_ground():
    """Colour effects work on the subject's own region; the shadows' larger region must still be drawn."""
    h, w = 520, 200
    alpha = np.zeros((h, w), np.uint8)
    cv2.circle(alpha, (w // 2, h // 6), h // 7, 255, -1, cv2.LINE_AA)
    cv2.rectangle(alpha, (w // 4, h // 4), (3 * w // 4, h - 1), 255, -1)
    rgba = np.dstack([np.full((h, w, 3), 60, np.uint8), alpha])
    shape = shape_from_alpha(alpha)
    bg = np.full((512, 512, 3), 170, np.uint8)
    for seed in range(200):
        placement = choose_placement(np.random.default_rng(seed), "full", shape, 512, 512, ground_y=0.9, ground_known=True)
        out, plan = render(bg, rgba, shape, placement, seed=seed, disabled={"artefacts"})
        cast = plan["cast_shadow"]
        x0, y0, x1, y1 = placement.box(shape)
        room = 512 - x1 if cast["shear"] > 0 else x0  # frame left on the side the shadow leans to
        if cast["on"] and cast["squash"] > 0.2 and abs(cast["shear"]) > 0.7 and room > 80:
            break
    else:  # pragma: no cover - the effect draws make such a seed common
        pytest.fail("no seed gave a long sheared cast shadow")
    # Untouched far from the subject and its shadow (above the subject: the shadow goes up less than its height).
    assert np.array_equal(out[: max(0, int(y0) - 30)], bg[: max(0, int(y0) - 30)])
    # The sheared shadow reaches well to the side of the subject's box (+ its feather margin), on the ground.
    rows = slice(int(placement.feet_y - cast["squash"] * (placement.feet_y - y0) * 0.8), int(placement.feet_y))
    side = slice(int(x1) + 25, 512) if cast["shear"] > 0 else slice(0, max(0, int(x0) - 25))
    assert out[rows, side].size and out[rows, side].min() < 170 - 5
    # The subject itself is drawn in its own colour.
    cx, cy = int((x0 + x1) / 2), int(y0 + 0.6 * (y1 - y0))
    assert abs(int(out[cy, cx, 0]) - 60) < 20
