"""The cut-out says why a border is not a flat backdrop."""

from __future__ import annotations

import numpy as np

from datakit.cutout.background import fit_background


def test_a_noisy_border_is_called_noisy():
    rng = np.random.default_rng(0)
    rgb = np.clip(235 + rng.normal(0, 30, (128, 128, 3)), 0, 255).astype(np.uint8)
    model = fit_background(rgb)
    assert not model.is_flat()
    assert "noisy" in model.flatness_problem()


def test_a_flat_border_has_no_problem():
    rgb = np.full((128, 128, 3), 250, np.uint8)
    rgb[40:90, 40:90] = (30, 60, 200)
    model = fit_background(rgb)
    assert model.is_flat() and model.flatness_problem() is None


def test_a_busy_border_says_how_little_matches():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)
    problem = fit_background(rgb).flatness_problem()
    assert problem is not None and ("matches" in problem or "noisy" in problem)
