"""Repeat arithmetic: shares within rounding, at least one repeat each, epochs from target steps."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datakit.emit.balance import balance_repeats, epochs_for, make_plan, reg_repeats


def balance_error(counts, weights, max_scale):
    return make_plan(counts, weights, max_scale=max_scale).max_share_error


def test_one_original_against_a_hundred_composites():
    assert balance_repeats({"sail_kun": 1, "sail_kun_with_background": 100}) == {"sail_kun": 100, "sail_kun_with_background": 1}


def test_weights_shift_the_shares():
    plan = make_plan({"a": 10, "b": 10}, {"a": 3, "b": 1})
    assert {c.name: c.repeats for c in plan.concepts} == {"a": 3, "b": 1}
    assert [round(c.share, 2) for c in plan.concepts] == [0.75, 0.25]


def test_rounding_error_is_reported():
    plan = make_plan({"a": 3, "b": 100})
    a = plan.concepts[0]
    assert a.repeats == 33 and a.steps == 99
    assert plan.max_share_error > 0
    plan2 = make_plan({"a": 7, "b": 100}, tolerance=0.0, max_scale=1)  # 100/7 = 14.3 -> 14 repeats: 98 vs 100
    assert any("rounding" in n for n in plan2.notes)


def test_a_longer_epoch_is_used_when_it_rounds_much_better():
    assert balance_repeats({"a": 2, "b": 5}) == {"a": 5, "b": 2}  # 10 vs 10 steps, not 6 vs 5
    assert balance_repeats({"a": 2, "b": 5}, max_scale=1) == {"a": 3, "b": 1}


def test_target_steps_derive_epochs_with_batch_size():
    plan = make_plan({"a": 1, "b": 100}, batch_size=4, target_steps=1000)
    assert plan.images_per_epoch == 200 and plan.steps_per_epoch == 50
    assert plan.epochs == 20 and plan.total_steps == 1000
    assert epochs_for(1001, 50) == 21


def test_regularisation_matches_training_images():
    plan = make_plan({"a": 5}, reg=("person", 3))
    assert plan.concepts[0].repeats == 1
    assert plan.reg.repeats == 2 and plan.reg.steps >= plan.images_per_epoch
    assert plan.steps_per_epoch == 10  # kohya pairs each training image with a regularisation image
    assert reg_repeats(100, 1000) == 1


def test_bad_arguments():
    with pytest.raises(ValueError):
        balance_repeats({"a": 0})
    with pytest.raises(ValueError):
        balance_repeats({"a": 1}, {"a": -1})


counts_st = st.dictionaries(st.text("abcdef", min_size=1, max_size=4), st.integers(1, 500), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(counts_st, st.data())
def test_properties(counts, data):
    weights = {n: data.draw(st.floats(0.1, 10.0)) for n in counts}
    repeats = balance_repeats(counts, weights)
    assert set(repeats) == set(counts)
    assert all(isinstance(r, int) and r >= 1 for r in repeats.values())
    # the concept that sets the epoch length gets `scale` repeats: the epoch is `scale` x the smallest one
    scale = min(repeats.values())
    assert 1 <= scale <= 8
    unit = max(counts[n] / weights[n] for n in counts)
    for n in counts:
        target = scale * weights[n] * unit  # steps this concept should get
        # whole repeats move a concept's steps by at most half its image count
        assert abs(repeats[n] * counts[n] - target) <= counts[n] / 2 + 1e-6
    if scale > 1:  # a longer epoch is only taken because the smallest one rounded badly
        assert make_plan(counts, weights).max_share_error <= balance_error(counts, weights, 1) + 1e-12
    plan = make_plan(counts, weights)
    assert math.isclose(sum(c.share for c in plan.concepts), 1.0)
    assert math.isclose(sum(c.target_share for c in plan.concepts), 1.0)


@settings(max_examples=100, deadline=None)
@given(counts_st)
def test_equal_weights_give_equal_steps_when_divisible(counts):
    biggest = max(counts.values())
    if all(biggest % n == 0 for n in counts.values()):
        plan = make_plan(counts)
        assert len({c.steps for c in plan.concepts}) == 1
        assert plan.max_share_error < 1e-9
