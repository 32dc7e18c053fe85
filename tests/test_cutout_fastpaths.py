"""The speed-ups of the flat cut-out give the same answers as the plain full-frame computations.

The cut works inside the box that can hold subject pixels, on lists of edge pixels and with 8-bit
shortcuts; each test here checks one of those against a straightforward version of the same rule.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_cutout_synth import backdrop, compose, draw_subject

from datakit.cutout import alpha as A
from datakit.cutout import edges as E
from datakit.cutout.backdrop import estimate_backdrop
from datakit.cutout.holes import enclosed_components
from datakit.cutout.background import colour_distance, distance_region, fit_background
from datakit.cutout.colour import bleed
from datakit.cutout.cut import CutOptions, cut_flat
from datakit.cutout.memory import keep_freed_buffers


def _image(kind: str = "white", size: int = 128, variant: int = 0, jpeg: int | None = None, shift: int = 0):
    colour, alpha = draw_subject(size, variant)
    if shift:  # push the subject against the left edge of the frame
        colour, alpha = np.roll(colour, -shift, axis=1), np.roll(alpha, -shift, axis=1)
    return compose(colour, alpha, backdrop(kind, size), jpeg)


@pytest.mark.parametrize("size", [24, 100, 131])
@pytest.mark.parametrize("estimate", [fit_background, estimate_backdrop])
def test_render_of_a_box_equals_the_frame_render_there(size, estimate):
    # A per-pixel estimate belongs to the frame it was made from: make it from one of this size.
    model = estimate(cv2.resize(_image("vignette", 128), (size + 7, size), interpolation=cv2.INTER_AREA))
    full = model.render(size, size + 7)
    for box in [(0, 0, 5, 5), (3, 9, 40, 17), (size - 1, size - 9, 8, 9), (0, 0, size + 7, size)]:
        x, y, w, h = box
        w, h = min(w, size + 7 - x), min(h, size - y)
        part = model.render(size, size + 7, (x, y, w, h))
        np.testing.assert_array_equal(part, full[y : y + h, x : x + w])


@pytest.mark.parametrize("estimate", [fit_background, estimate_backdrop])
def test_render8_stays_within_its_bound(estimate):
    for kind in ("white", "gradient", "vignette"):
        model = estimate(_image(kind, 200))
        diff = np.abs(model.render8(200, 200).astype(np.float32) - model.render(200, 200))
        assert diff.max() <= 1.5


@pytest.mark.parametrize("kind,jpeg", [("white", None), ("gradient", 85), ("vignette", None), ("grey", 85)])
def test_distance_region_holds_every_pixel_above_threshold(kind, jpeg):
    img = _image(kind, 160, jpeg=jpeg)
    model = estimate_backdrop(img)
    full = colour_distance(img, model.render(160, 160))
    for threshold in (2.0, 6.0, 10.0, 25.0):  # 2: too low to screen in 8 bits, the whole frame
        d, bg, (x, y, w, h) = distance_region(img, model, threshold, pad=3)
        assert w and h
        # Equal up to float rounding (OpenCV's vector and scalar loops may round the last bit apart).
        np.testing.assert_allclose(d, full[y : y + h, x : x + w], rtol=1e-6, atol=1e-5)
        outside = np.ones(full.shape, bool)
        outside[y : y + h, x : x + w] = False
        assert (full[outside] < threshold).all()
        inner = full[y + 3 : y + h - 3, x + 3 : x + w - 3] if h > 6 and w > 6 else full
        assert (inner >= threshold).any()


def _chessboard_layers(background: np.ndarray, band: int) -> np.ndarray:
    """Layer of every pixel written plainly: chessboard distance to the backdrop minus 1 (-1 on it)."""
    dist = cv2.distanceTransform((~background).astype(np.uint8), cv2.DIST_C, 3)
    return np.where(background, -1, dist.astype(int) - 1)


@pytest.mark.parametrize("kind,jpeg,shift", [("white", None, 0), ("offwhite", 85, 0), ("vignette", None, 60)])
def test_layers_are_the_chessboard_distance_to_the_backdrop(kind, jpeg, shift):
    img = _image(kind, 128, jpeg=jpeg, shift=shift)
    model = estimate_backdrop(img)
    d = colour_distance(img, model.render(128, 128))
    background = A.border_fill(d < A.background_threshold(model.sigma))
    rows, cols, layer, _ = E.edge_layers(background, 3, None)
    ref = _chessboard_layers(background, 3)
    assert len(rows) == int(((ref >= 0) & (ref < 3)).sum())
    np.testing.assert_array_equal(layer, ref[rows, cols])


def test_argmax5_finds_the_largest_distance_in_the_window(rng):
    d = (rng.random((30, 41)) * 400).astype(np.float32)
    d[10, 10] = d[11, 12] = 500.0  # a tie: either is right
    rows, cols = np.array([0, 5, 29, 12, 17, 10, 29]), np.array([0, 40, 3, 20, 8, 11, 40])
    fy, fx = E.window_argmax(d, rows, cols)
    for r, c, y, x in zip(rows, cols, fy, fx):
        win = d[max(0, r - 2) : r + 3, max(0, c - 2) : c + 3]  # the window written plainly
        assert abs(y - r) <= 2 and abs(x - c) <= 2 and 0 <= y < 30 and 0 <= x < 41
        assert d[y, x] == win.max()


@pytest.mark.parametrize("seed", range(5))
def test_line_fill_is_linear_interpolation_along_rows(seed):
    from datakit.cutout.backdrop import line_fill

    r = np.random.default_rng(seed)
    gh, gw = int(r.integers(1, 9)), int(r.integers(1, 14))
    seen = r.random((gh, gw)) < 0.4
    vals = r.random((gh, gw, 3)).astype(np.float32) * 255
    out, dist = line_fill(vals, seen)
    for i in range(gh):
        idx = np.flatnonzero(seen[i])
        if not len(idx):
            assert np.isinf(dist[i]).all()
            continue
        for ch in range(3):  # numpy's own 1-D interpolation, the reference
            np.testing.assert_allclose(out[i, :, ch], np.interp(np.arange(gw), idx, vals[i, idx, ch]), atol=1e-3)
        np.testing.assert_array_equal(dist[i], np.abs(np.arange(gw)[:, None] - idx[None, :]).min(axis=1))


def test_enclosed_components_match_opencv_statistics(rng):
    mask = np.zeros((90, 120), bool)
    mask[10:30, 10:50] = True  # big
    mask[40:43, 60:62] = True  # small
    mask[50:80, 90:118] = True  # big
    mask[60:70, 5:9] = rng.random((10, 4)) > 0.5
    labels, big, stats = enclosed_components(mask, min_area=100)
    n, ref_labels, ref_stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=4)
    np.testing.assert_array_equal(labels, ref_labels)
    assert list(big) == [k for k in range(1, n) if ref_stats[k, cv2.CC_STAT_AREA] >= 100]
    for k in big:
        np.testing.assert_array_equal(stats[k], ref_stats[k])
    np.testing.assert_array_equal(stats[1:, cv2.CC_STAT_AREA], ref_stats[1:, cv2.CC_STAT_AREA])


@pytest.mark.parametrize("kind,jpeg,shift", [("white", None, 0), ("gradient", 85, 0), ("white", None, 60)])
def test_matte_of_the_region_equals_the_matte_of_the_frame(kind, jpeg, shift):
    img = _image(kind, 160, jpeg=jpeg, shift=shift)
    model = estimate_backdrop(img)
    t = A.background_threshold(model.sigma)
    bg_full = model.render(160, 160)
    whole = A.flat_alpha(colour_distance(img, bg_full), img, bg_full, model.sigma, threshold=t)
    d, bg, (x, y, w, h) = distance_region(img, model, t, pad=8)
    part = A.flat_alpha(d, img[y : y + h, x : x + w], bg, model.sigma, threshold=t, frame=(160, 160))

    def placed(res, ox, oy):
        out = np.zeros((160, 160), np.float32)
        x0, y0, x1, y1 = res.box
        out[oy + y0 : oy + y1, ox + x0 : ox + x1] = res.alpha
        return out

    np.testing.assert_array_equal(placed(part, x, y), placed(whole, 0, 0))
    shifted = [[b[0] + x, b[1] + y, b[2] + x, b[3] + y] for b in (r["bbox"] for r in part.holes)]
    assert shifted == [r["bbox"] for r in whole.holes]
    assert [r["action"] for r in part.holes] == [r["action"] for r in whole.holes]
    assert part.specks_removed == whole.specks_removed


def test_leak_check_of_a_region_equals_the_frame():
    """An outline with a gap: the leak measured on the subject's region (odd offsets) is the frame's."""
    img = np.full((300, 300, 3), 255, np.uint8)
    cv2.circle(img, (151, 149), 90, (40, 30, 50), 5, cv2.LINE_AA)
    img[55:65, 148:152] = 255  # a 4 px gap in the outline
    model = fit_background(img)
    d_full = colour_distance(img, model.render(300, 300))
    d, _, (x, y, w, h) = distance_region(img, model, 10.0, pad=7)
    assert x % 2 == 1 or y % 2 == 1 or (x + w) % 2 == 1
    area = 3000
    assert A.leak_check(d, 10.0, area, frame=(300, 300), origin=(x, y)) == A.leak_check(d_full, 10.0, area)
    assert A.leak_check(d_full, 10.0, area) > 0.25


@pytest.mark.parametrize("shape", [(64, 64), (65, 47), (3, 130)])
def test_bleed_keeps_visible_pixels_and_fills_from_the_edge(shape):
    h, w = shape
    rgb = np.full((h, w, 3), 255, np.uint8)  # backdrop white under the transparent part
    a8 = np.zeros((h, w), np.uint8)
    a8[: max(1, h // 2), : max(1, w // 3)] = 255
    rgb[: max(1, h // 2), : max(1, w // 3)] = (200, 40, 30)
    a8[h - 1, w - 1] = 128
    rgb[h - 1, w - 1] = (20, 200, 40)
    out = bleed(rgb, a8)
    assert out.shape == (h, w, 4) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :, 3], a8)
    vis = a8 > 0
    np.testing.assert_array_equal(out[:, :, :3][vis], rgb[vis])
    hidden = out[:, :, :3][~vis].astype(int)
    assert (hidden.max(axis=1) < 250).all()  # no backdrop white left under the transparent pixels
    # Next to the red block the fill is red.
    ny, nx = min(h - 1, max(1, h // 2)), min(w - 1, max(1, w // 3))
    if not vis[0, nx]:
        assert abs(int(out[0, nx, 0]) - 200) < 40 and out[0, nx, 1] < 120


def test_cut_flat_on_a_frame_without_subject_and_tiny_frames():
    with pytest.raises(ValueError):
        cut_flat(np.full((64, 64, 3), 250, np.uint8), CutOptions())
    small = _image("white", 24)
    cut = cut_flat(small, CutOptions())
    assert cut.rgba.shape[2] == 4 and cut.info["alpha_coverage"] > 0.1


def test_wide_margin_reaches_past_the_worked_region():
    """A trim margin wider than the region margin: the crop still holds the whole matte, bled."""
    img = _image("offwhite", 128)
    narrow = cut_flat(img, CutOptions(margin=2))
    wide = cut_flat(img, CutOptions(margin=40))
    x0, y0, x1, y1 = narrow.info["crop_box"]
    X0, Y0, X1, Y1 = wide.info["crop_box"]
    inner = wide.rgba[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0]
    np.testing.assert_array_equal(inner[:, :, 3], narrow.rgba[:, :, 3])
    vis = narrow.rgba[:, :, 3] > 0
    np.testing.assert_array_equal(inner[:, :, :3][vis], narrow.rgba[:, :, :3][vis])
    assert wide.info["alpha_coverage"] == narrow.info["alpha_coverage"]


def test_keep_freed_buffers_is_harmless_and_once():
    first = keep_freed_buffers()
    assert isinstance(first, bool)
    assert keep_freed_buffers() is first
    big = np.ones((512, 512, 3), np.float32)  # allocation still works afterwards
    assert float(big.sum()) == 512 * 512 * 3


def test_stage_restores_opencv_threads(tmp_path):
    from PIL import Image

    from datakit.console import Reporter
    from datakit.stages.cutout import CutoutConfig, run_cutout

    inp = tmp_path / "in"
    inp.mkdir()
    Image.fromarray(_image("white", 96)).save(inp / "a.png")
    before = cv2.getNumThreads()
    info = run_cutout(CutoutConfig(input_dir=inp, out_dir=tmp_path / "out", workers=1), Reporter(quiet=True))
    assert info.counts.failed == 0
    assert cv2.getNumThreads() == before
