"""The eval metrics on images with a known answer, drawn at the sizes samples come in (32-64 px worlds, 256 px).

Each expectation is what a viewer would say of the drawing (see tests/eval_drawings.py), never a
value read back from the code: a white or off-white studio background is white; a snow field, an
overcast sky and a light grey backdrop are not; flat backdrops and gradients are plain; scenes are not.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import eval_drawings as D
from datakit.evaluate import agreement, border, palette, subject_clip, subject_colour
from datakit.evaluate.plain import plain_background
from datakit.evaluate.white import white_background

SIZES = (32, 48, 64, 256)

# name -> (drawing, white?, plain?)
CASES = {
    "white": (lambda s, r: D.white(s, r), True, True),
    "off-white with vignette": (lambda s, r: D.off_white(s, r), True, True),
    "light grey": (lambda s, r: D.light_grey(s, r), False, True),
    "gradient": (lambda s, r: D.gradient(s, r), False, True),
    "snow field": (lambda s, r: D.snow_field(s, r), False, False),
    "snow under overcast sky": (lambda s, r: D.snow_overcast(s, r), False, False),
    "overcast sky": (lambda s, r: D.overcast_sky(s, r), False, None),  # a cloud-filled frame is flat-ish: plain either way
    "beach": (lambda s, r: D.beach(s, r), False, False),
    "forest": (lambda s, r: D.forest(s, r), False, False),
    "city": (lambda s, r: D.city(s, r), False, False),
    "subject standing on white": (lambda s, r: D.place(D.white(s, r), D.mascot_rgba(s), bottom=True), True, True),
    "subject on off-white": (lambda s, r: D.place(D.off_white(s, r), D.mascot_rgba(s)), True, True),
    "subject on a beach": (lambda s, r: D.place(D.beach(s, r), D.mascot_rgba(s)), False, False),
    "subject in a forest": (lambda s, r: D.place(D.forest(s, r), D.mascot_rgba(s), bottom=True), False, False),
    "subject on a snow field": (lambda s, r: D.place(D.snow_field(s, r), D.mascot_rgba(s)), False, False),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("name", list(CASES))
def test_white_and_plain_backgrounds_have_the_known_answer(name, size):
    draw, is_white, is_plain = CASES[name]
    for seed in range(2):
        img = draw(size, np.random.default_rng(seed))
        assert white_background(img).white is is_white, (name, size)
        if is_plain is not None:
            assert plain_background(img).plain is is_plain, (name, size)


def test_snow_is_bright_but_not_white():
    """The hard case the metric exists for: most of a snow field is lighter than sRGB 226, yet it is a scene."""
    img = D.snow_field(64, np.random.default_rng(0))
    lab = border.to_lab(border.as_rgb01(img))
    assert (lab[32:, :, 0] >= 85).mean() > 0.5  # the snow itself is bright ...
    verdict = white_background(img)
    assert not verdict.white and verdict.side_shares["top"] == 0.0  # ... but the sky above it is not white


def test_white_vote_tolerates_one_side_covered_by_the_subject():
    img = D.white(64, np.random.default_rng(0))
    img[40:, :] = (200, 40, 45)  # the subject fills the whole bottom edge (cut at the waist)
    assert white_background(img).white
    img[:, :24] = (200, 40, 45)  # ... and the whole left edge too: two sides are not a background
    assert not white_background(img).white


def test_pil_images_float_arrays_and_alpha_are_accepted():
    arr = D.white(48, np.random.default_rng(0))
    assert white_background(Image.fromarray(arr)).white
    assert white_background(arr.astype(np.float32) / 255.0).white
    rgba = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    assert white_background(rgba).white and plain_background(rgba).plain


def test_large_images_are_judged_on_the_same_scale():
    """A 1024 px studio shot with fine paper grain is still plain; the reduction to 64 px averages grain out."""
    rng = np.random.default_rng(0)
    img = np.clip(244 + rng.normal(0, 6, (1024, 1024, 3)), 0, 255).astype(np.uint8)
    assert border.work_image(img).shape == (64, 64, 3)
    assert white_background(img).white and plain_background(img).plain


# ---- subject colour ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mascot_signature():
    return subject_colour.signature([D.mascot_rgba(64), D.mascot_rgba(120)])


@pytest.mark.parametrize("size", SIZES)
def test_colour_presence_finds_the_subject_on_any_background(mascot_signature, size):
    rng = np.random.default_rng(size)
    m = D.mascot_rgba(size)
    present = [D.place(D.white(size, rng), m, bottom=True), D.place(D.beach(size, rng), m),
               D.place(D.forest(size, rng), m, bottom=True), D.place(D.snow_field(size, rng), m)]
    absent = [D.white(size, rng), D.off_white(size, rng), D.beach(size, rng), D.forest(size, rng), D.city(size, rng),
              D.snow_field(size, rng), D.place(D.white(size, rng), D.recoloured_mascot(size))]
    assert all(subject_colour.colour_present(img, mascot_signature) for img in present)
    assert not any(subject_colour.colour_present(img, mascot_signature) for img in absent)


def test_subject_given_as_a_drawing_on_white(mascot_signature):
    """Without alpha, the subject is what differs from the drawing's own background: the white is not in the palette."""
    drawing = D.place(D.white(96, np.random.default_rng(0)), D.mascot_rgba(96), scale=0.8)
    sig = subject_colour.signature([drawing])
    chroma = np.hypot(sig.palette[:, 1], sig.palette[:, 2])
    heavy = sig.weights > 0.1
    assert (chroma[heavy] > 30).sum() >= 2  # red and yellow dominate ...
    assert sig.weights[(sig.palette[:, 0] > 95) & (chroma < 5)].sum() < 0.2  # ... the paper does not
    on_beach = D.place(D.beach(64, np.random.default_rng(1)), D.mascot_rgba(64))
    assert subject_colour.colour_present(on_beach, sig)
    assert not subject_colour.colour_present(D.white(64, np.random.default_rng(1)), sig)


def test_kmeans_is_deterministic_and_weights_sum_to_one():
    pts = np.concatenate([np.full((30, 3), 10.0), np.full((70, 3), 80.0)])
    centres, shares = palette.kmeans(pts, 4)
    assert sorted(np.round(shares, 2)) == [0.3, 0.7]
    assert sorted(centres[:, 0].round()) == [10.0, 80.0]
    again = palette.kmeans(pts, 4)
    np.testing.assert_array_equal(again[0], centres)


def test_empty_images_have_no_foreground():
    rng = np.random.default_rng(0)
    assert not palette.has_foreground(D.white(64, rng)) and not palette.has_foreground(D.gradient(64, rng))
    assert palette.has_foreground(D.place(D.white(64, rng), D.mascot_rgba(64)))


# ---- CLIP-side arithmetic --------------------------------------------------------------------------


def test_scene_agreement_is_zero_shot_classification():
    # Three scenes along the axes; samples leaning towards known scenes.
    scenes = np.eye(3)
    samples = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.97], [0.6, 0.8, 0.0], [0.5, 0.5, 0.0]])
    samples /= np.linalg.norm(samples, axis=1, keepdims=True)
    own = np.array([0, 2, 0, 0])
    got = agreement.scene_agreement(samples, scenes, own, logit_scale=100.0)
    # Expected: argmax of the cosine is the own scene for samples 0 and 1; sample 2 is nearer scene 1; sample 3 ties.
    assert got.agrees.tolist() == [True, True, False, False]
    logits = 100.0 * samples[0] @ scenes.T
    expected_p = np.exp(logits[0]) / np.exp(logits).sum()  # softmax over the scenes (CLIP zero-shot)
    assert got.probability[0] == pytest.approx(expected_p)
    with pytest.raises(ValueError):
        agreement.scene_agreement(samples, scenes[:1], own * 0, 100.0)


def test_subject_presence_is_judged_against_the_base_sample():
    sim = np.array([0.8, 0.5, 0.9, 0.7])
    ref = np.array([0.6, 0.6, 0.9, 0.2])
    fg = np.array([True, True, True, False])
    # more similar than the base sample (strictly), and not an empty image
    assert subject_clip.present_against_reference(sim, ref, fg).tolist() == [True, False, False, False]


def test_cutout_for_clip_crops_to_the_subject_and_flattens_on_grey():
    cut = np.zeros((40, 60, 4), np.uint8)
    cut[10:20, 5:25] = (255, 0, 0, 255)
    cut[12, 30] = (0, 0, 255, 128)
    flat = subject_clip.cutout_for_clip(cut)
    assert flat.shape == (10, 26, 3)  # rows 10..19, columns 5..30
    assert tuple(flat[0, 0]) == (255, 0, 0)
    # alpha a = 128/255 over grey 0.5: R = 0.5 * (1 - a) * 255 = 63.5; B = (a + 0.5 * (1 - a)) * 255 = 191.5
    np.testing.assert_allclose(flat[2, 25].astype(float), (63.5, 63.5, 191.5), atol=1.0)
    assert tuple(flat[-1, -1]) == (128, 128, 128)


# ---- the scorer's wiring, with a CLIP stand-in whose answers are chosen by the test -------------------


class _ChosenClip:
    """Embeds each image and text as the test says (looked up by the image's bytes / the text)."""

    logit_scale = 100.0

    def __init__(self, images: dict[bytes, np.ndarray], texts: dict[str, np.ndarray]):
        self.images, self.texts = images, texts

    def embed_images(self, images):
        return np.stack([self.images[np.asarray(im).tobytes()] for im in images])

    def embed_texts(self, texts):
        return np.stack([self.texts[t] for t in texts])


def test_scorer_compares_each_sample_with_its_own_scene_and_its_own_reference():
    from datakit.evaluate.scenes import EvalScene, with_plain
    from datakit.evaluate.scoring import Scorer, pair_with_reference

    scenes = with_plain([EvalScene("beach", "on a beach"), EvalScene("forest", "in a forest"), EvalScene("snow", "in the snow")])
    axis = np.eye(4)
    rng = np.random.default_rng(0)
    cut = D.mascot_rgba(32)
    # Sample images (distinct bytes) and the embedding the stand-in gives each.
    base_beach, base_forest = D.beach(32, rng), D.forest(32, rng)
    lora_beach, lora_forest = D.place(D.beach(32, rng), cut), D.place(D.white(32, rng), cut)
    plain_img = D.place(D.white(32, rng), cut)
    images = {
        base_beach.tobytes(): axis[0], base_forest.tobytes(): axis[1],
        lora_beach.tobytes(): (axis[0] + axis[3]) / np.sqrt(2),  # the beach, with the subject
        lora_forest.tobytes(): axis[3],  # the subject on white: no forest at all
        plain_img.tobytes(): axis[3],
        subject_clip.cutout_for_clip(cut).tobytes(): axis[3],
    }
    texts = {"on a beach": axis[0], "in a forest": axis[1], "in the snow": axis[2]}
    scorer = Scorer(scenes, clip=_ChosenClip(images, texts), cutouts=[cut])
    fields = lambda model, scene, seed=0: dict(key=f"{model}/{scene}/s{seed}", model=model, scene=scene, seed=seed, prompt="sks")
    scores = [scorer.add(fields("base", "beach"), base_beach), scorer.add(fields("base", "forest"), base_forest),
              scorer.add(fields("lora", "beach"), lora_beach), scorer.add(fields("lora", "forest"), lora_forest),
              scorer.add(fields("lora", "plain"), plain_img)]
    scorer.flush()
    pair_with_reference(scores, {"lora": "base"})
    got = {s.key: s for s in scores}
    assert got["base/beach/s0"].scene_agrees and got["base/forest/s0"].scene_agrees
    assert got["lora/beach/s0"].scene_agrees  # the beach still wins among the three scenes
    assert got["lora/forest/s0"].scene_agrees is False  # CLIP sees no forest
    assert got["lora/plain/s0"].scene_agrees is None  # the plain prompt asks for no scene
    # Subject similarity is the cosine with the cut-out's embedding: known here.
    assert got["lora/beach/s0"].subject_similarity == pytest.approx(1 / np.sqrt(2))
    assert got["base/beach/s0"].subject_similarity == pytest.approx(0.0)
    assert got["lora/beach/s0"].subject_present and got["lora/forest/s0"].subject_present
    assert got["base/beach/s0"].subject_present is None  # the reference itself
    assert got["lora/plain/s0"].subject_present is None  # no base sample of the plain prompt in this run
    # The pixel metrics ran too: the subject on white is white, the beach is not.
    assert got["lora/forest/s0"].white and not got["lora/beach/s0"].white
    assert got["lora/beach/s0"].colour_present and not got["base/beach/s0"].colour_present
