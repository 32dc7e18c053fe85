"""Unit tests of the compositing pieces: framing, placement, blending, captions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from datakit.compositing import blending as bl
from datakit.compositing.captions import composite_tags, is_old_background_tag
from datakit.compositing.placement import (
    CROP_FILL,
    assign_framings,
    choose_placement,
    parse_framing,
    parse_range,
    shape_from_alpha,
)
from datakit.errors import UsageError


def _figure_alpha(h: int = 300, w: int = 120) -> np.ndarray:
    a = np.zeros((h, w), np.uint8)
    cv2.circle(a, (w // 2, h // 6), h // 7, 255, -1)
    cv2.rectangle(a, (w // 4, h // 4), (3 * w // 4, h - 1), 255, -1)
    ys, xs = np.nonzero(a)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def test_parse_framing_normalises_and_rejects_bad_input():
    assert parse_framing("full=3,upper=1") == {"full": 0.75, "upper": 0.25, "close": 0.0}
    assert parse_framing("full_body=1,close-up=1")["close"] == 0.5
    for bad in ("full=x", "side=1", "full", "full=0", "full=-1"):
        with pytest.raises(UsageError):
            parse_framing(bad)


def test_parse_range():
    assert parse_range("0.35-0.9", name="r") == (0.35, 0.9)
    assert parse_range("0.9:0.5", name="r") == (0.5, 0.9)
    for bad in ("a-b", "0-0.5", "0.5-1.5", "1-2-3"):
        with pytest.raises(UsageError):
            parse_range(bad, name="r")


def test_assign_framings_is_exactly_proportional():
    out = assign_framings({"full": 0.6, "upper": 0.3, "close": 0.1}, 100, np.random.default_rng(0))
    assert (out.count("full"), out.count("upper"), out.count("close")) == (60, 30, 10)
    out = assign_framings({"full": 0.5, "upper": 0.5, "close": 0.0}, 3, np.random.default_rng(0))
    assert len(out) == 3 and "close" not in out


@pytest.mark.parametrize("ground", [0.6, None])
def test_full_body_inside_frame_on_ground_and_in_range(ground):
    shape = shape_from_alpha(_figure_alpha())
    for seed in range(200):
        p = choose_placement(np.random.default_rng(seed), "full", shape, 512, 384, ground_y=ground, ground_known=True, full_range=(0.35, 0.9))
        x0, y0, x1, y1 = p.box(shape)
        assert x0 >= 0 and y0 >= 0 and x1 <= 512 and y1 <= 384, (seed, p)
        assert 0.35 - 1e-6 <= p.height_fraction <= 0.9 + 1e-6
        if ground is not None:
            # Feet on the ground line or in front of it (lower in the frame), never above it.
            assert p.feet_y >= ground * 384 - 1e-6 or p.feet_y >= 384 * (1 - 0.02)
            assert p.on_ground
        else:
            assert not p.on_ground


@pytest.mark.parametrize("framing", ["upper", "close"])
def test_crops_fill_their_range_and_are_cut_by_the_bottom_edge(framing):
    shape = shape_from_alpha(_figure_alpha())
    lo, hi = CROP_FILL[framing]
    for seed in range(100):
        p = choose_placement(np.random.default_rng(seed), framing, shape, 512, 512, ground_y=0.7, ground_known=True)
        x0, y0, x1, y1 = p.box(shape)
        visible_bottom = y0 + p.visible_fraction * shape.height * p.scale
        assert visible_bottom == pytest.approx(512, abs=1e-3)
        assert lo - 1e-6 <= p.height_fraction <= hi + 1e-6
        assert y0 >= 0 and y1 > 512  # head in frame, the rest below it


def test_neck_estimate_follows_head_size():
    # A big-headed (chibi) figure and a small-headed one: the neck line follows the head.
    def figure(head_r, h=400, w=160):
        a = np.zeros((h, w), np.uint8)
        cv2.circle(a, (w // 2, head_r), head_r, 255, -1)
        cv2.rectangle(a, (w // 2 - 10, 2 * head_r - 5), (w // 2 + 10, 2 * head_r + 15), 255, -1)  # neck
        cv2.rectangle(a, (w // 2 - 50, 2 * head_r + 15), (w // 2 + 50, h - 1), 255, -1)
        return a
    chibi = shape_from_alpha(figure(80)).neck
    adult = shape_from_alpha(figure(28)).neck
    assert 0.38 <= chibi <= 0.47 and 0.12 <= adult <= 0.2, (chibi, adult)
    # No narrowing (a box): the default.
    assert shape_from_alpha(np.full((100, 50), 255, np.uint8)).neck == pytest.approx(0.2)


def test_flip_probability_zero_never_flips_and_half_flips_some():
    shape = shape_from_alpha(_figure_alpha())
    flips = [choose_placement(np.random.default_rng(s), "full", shape, 256, 256, ground_y=None, ground_known=False).flip for s in range(50)]
    assert not any(flips)
    flips = [choose_placement(np.random.default_rng(s), "full", shape, 256, 256, ground_y=None, ground_known=False, flip_probability=0.5).flip for s in range(50)]
    assert 10 < sum(flips) < 40


def test_premultiplied_resize_has_no_light_fringe():
    # A grey disc whose transparent pixels are white (as cut-outs of white-background drawings often are).
    rgba = np.full((200, 200, 4), 255, np.uint8)
    a = np.zeros((200, 200), np.uint8)
    cv2.circle(a, (100, 100), 70, 255, -1)
    rgba[..., 3] = a
    rgba[a > 0, :3] = 90
    p2, a2 = bl.resize_layer(bl.premultiply(rgba), 57, 57)
    straight = p2 / np.maximum(a2, 1e-6)[..., None]
    edge = (a2 > 0.05) & (a2 < 0.95)
    assert edge.any()
    assert straight[edge].max() <= 90 / 255 + 0.02
    # Upsampling (bicubic) keeps premultiplied colour within its alpha too.
    p3, a3 = bl.resize_layer(bl.premultiply(rgba), 450, 450)
    assert (p3 <= a3[..., None] + 1e-6).all()
    # The naive straight-alpha resize does show the white fringe this guards against.
    naive = cv2.resize(rgba, (57, 57), interpolation=cv2.INTER_AREA)
    assert naive[..., :3][edge].max() > 120


def test_feather_softens_edges_without_dark_rim():
    a = np.zeros((64, 64), np.float32)
    a[16:48, 16:48] = 1.0
    p = np.zeros((64, 64, 3), np.float32)
    p[a > 0] = 0.8
    colour, a_f = bl.feather(p, a, 1.2)
    row = a_f[32, 8:24]
    assert ((row > 0.05) & (row < 0.95)).sum() >= 2  # soft, not binary
    # The colour under the softened rim is the subject's own, not black.
    rim = (a_f > 0.05) & (a < 0.5)
    assert np.allclose(colour[rim], 0.8, atol=0.02)


def test_sharpness_and_noise_estimates_order_images():
    rng = np.random.default_rng(0)
    crisp = np.zeros((128, 128), np.float32)
    crisp[:, ::8] = 1.0
    soft = cv2.GaussianBlur(crisp, (0, 0), 4.0)
    assert bl.sharpness(crisp) > bl.sharpness(soft) + 0.3
    noisy = np.full((128, 128), 0.5, np.float32) + rng.normal(0, 0.03, (128, 128)).astype(np.float32)
    assert bl.noise_level(noisy) == pytest.approx(0.03, rel=0.35)
    assert bl.noise_level(np.full((64, 64), 0.5, np.float32)) < 1e-4


def test_shared_artefacts_keep_size_and_channels():
    img = (np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8)
    for kind, value in (("resample", 0.8), ("jpeg", 85), ("none", None)):
        out = bl.shared_artefacts(img, kind, value)
        assert out.shape == img.shape and out.dtype == np.uint8
    # The JPEG round trip keeps the channel order (a red image stays red).
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 220
    assert bl.shared_artefacts(red, "jpeg", 90)[..., 0].mean() > 200


def test_old_background_tags_are_recognised_in_any_spelling():
    for tag in ("white background", "white_background", "simple_background", "Transparent Background", "grey_background", "gradient background", "two-tone background"):
        assert is_old_background_tag(tag), tag
    for tag in ("outdoors", "background characters", "sky", "backlighting"):
        assert not is_old_background_tag(tag), tag


def test_composite_tags_drop_old_and_add_scene_and_framing():
    subject = ["sail kun", "1girl", "white_background", "simple background", "full body", "shoes", "smile"]
    tags, dropped = composite_tags(subject, ["outdoors", "street"], "full body", "full")
    assert tags == ["sail kun", "1girl", "shoes", "smile", "full body", "outdoors", "street"]
    assert set(dropped) == {"white_background", "simple background", "full body"}
    tags, dropped = composite_tags(subject, ["outdoors"], "upper body", "upper")
    assert "shoes" not in tags and "full body" not in tags and tags[-2:] == ["upper body", "outdoors"]
    tags, dropped = composite_tags(["1girl", "smile"], ["beach", "no_humans"], "portrait", "close", trigger="sail kun")
    assert "no_humans" in dropped and "no_humans" not in tags
    assert tags[0] == "sail kun" and "portrait" in tags


def test_light_wrap_brightens_the_rim_from_a_bright_scene_only():
    a = np.zeros((64, 64), np.float32)
    a[16:48, 16:48] = 1.0
    comp = np.full((64, 64, 3), 0.4, np.float32)
    bright = np.full((64, 64, 3), 0.95, np.float32)
    dark = np.zeros((64, 64, 3), np.float32)
    lit = bl.light_wrap(comp, bright, a, 4.0, 0.5)
    assert lit[17, 32, 0] > 0.45 and abs(lit[32, 32, 0] - 0.4) < 0.02  # rim glows, centre unchanged
    assert np.allclose(bl.light_wrap(comp, dark, a, 4.0, 0.5), comp)  # no dark outline from a dark scene
