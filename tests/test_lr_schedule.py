"""A1111 learning-rate schedule strings and cosine annealing with warm restarts."""

from __future__ import annotations

import math

import pytest
import torch

from datakit.errors import UsageError
from datakit.train.lr_schedule import CosineRestarts, FunctionScheduler, is_number, parse_schedule, rate_function


@pytest.mark.parametrize("text, pieces", [
    ("1e-4", ((1e-4, None),)),
    (1e-4, ((1e-4, None),)),
    ("5e-5:100, 5e-6:1500", ((5e-5, 100), (5e-6, 1500))),
    ("0.005:100,1e-5:1000, 1e-5:10000", ((0.005, 100), (1e-5, 1000), (1e-5, 10000))),
    ("1e-3:10, 1e-4:-1", ((1e-3, 10), (1e-4, None))),
    (" 2e-5 : 50 , 1e-5 ", ((2e-5, 50), (1e-5, None))),
    ("3e-4:-1", ((3e-4, None),)),
])
def test_valid_schedules(text, pieces):
    assert parse_schedule(text).pieces == pieces


@pytest.mark.parametrize("text, message", [
    ("", "empty value"),
    ("   ", "empty value"),
    ("fast", "'fast' is not a number"),
    ("1e-4:ten", "step 'ten' is not a whole number"),
    ("1e-4:1.5", "step '1.5' is not a whole number"),
    ("1e-4:100:2", "more than one ':'"),
    ("1e-4:100,", "empty piece"),
    ("1e-4:100,,1e-5", "empty piece"),
    ("1e-4, 1e-5:100", "already runs to the end"),
    ("1e-4:-1, 1e-5", "already runs to the end"),
    ("1e-4:100, 1e-5:50", "steps must increase"),
    ("1e-4:100, 1e-5:100", "steps must increase"),
    ("1e-4:0", "at least 1"),
    ("1e-4:-2", "at least 1"),
    ("-1e-4", "must be a positive number"),
    ("0", "must be a positive number"),
    ("nan", "must be a positive number"),
    ("inf:10", "must be a positive number"),
])
def test_invalid_schedules_name_the_problem(text, message):
    with pytest.raises(UsageError) as err:
        parse_schedule(text, what="--lr")
    assert message in str(err.value) and str(err.value).startswith("--lr")


def test_value_follows_a1111_step_rule():
    s = parse_schedule("5e-5:100, 5e-6:1500")
    # The rate holds while fewer than END steps are done (A1111: step_number < end_step).
    assert [s.value(n) for n in (0, 99, 100, 1499)] == [5e-5, 5e-5, 5e-6, 5e-6]
    assert s.end == 1500 and s.boundaries() == [100] and not s.is_constant
    assert parse_schedule("1e-4").is_constant and parse_schedule("1e-4").end is None
    assert parse_schedule("1e-3:10, 1e-4:-1").value(10**6) == 1e-4


def test_is_number():
    assert is_number(1e-4) and is_number("1e-4") and is_number(" 2 ")
    assert not is_number("1e-4:100") and not is_number("x") and not is_number(True)


def test_cosine_restarts_values_at_known_steps():
    c = CosineRestarts(cycle_steps=10)
    assert c.rate(0, 1.0) == pytest.approx(1.0)
    assert c.rate(5, 1.0) == pytest.approx(0.5)
    assert c.rate(9, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.9)))
    assert c.rate(10, 1.0) == pytest.approx(1.0)  # warm restart
    assert c.rate(25, 1.0) == pytest.approx(0.5)
    # Minimum LR and decay per cycle.
    c = CosineRestarts(cycle_steps=10, min_lr=0.1, decay=0.5)
    assert c.rate(5, 1.0) == pytest.approx(0.55)
    assert c.rate(10, 1.0) == pytest.approx(0.5) and c.rate(20, 1.0) == pytest.approx(0.25)
    assert c.rate(15, 1.0) == pytest.approx(0.1 + 0.4 * 0.5)


def test_cosine_restarts_warmup_and_longer_cycles():
    c = CosineRestarts(cycle_steps=10, warmup_steps=2, min_lr=0.0)
    assert [c.rate(n, 1.0) for n in (0, 1, 2)] == pytest.approx([0.0, 0.5, 1.0])
    assert c.rate(6, 1.0) == pytest.approx(0.5)  # half-way through the 8 cosine steps
    assert c.rate(10, 1.0) == pytest.approx(0.0) and c.rate(12, 1.0) == pytest.approx(1.0)  # each cycle warms up
    c = CosineRestarts(cycle_steps=10, cycle_mult=2)
    assert [c.position(n) for n in (0, 9, 10, 29, 30, 69, 70)] == [
        (0, 0, 10), (0, 9, 10), (1, 0, 20), (1, 19, 20), (2, 0, 40), (2, 39, 40), (3, 0, 80)]
    assert c.rate(20, 1.0) == pytest.approx(0.5)  # the middle of the 20-step second cycle


@pytest.mark.parametrize("kw, message", [
    ({"cycle_steps": 0}, "--cycle-steps"),
    ({"cycle_steps": 10, "cycle_mult": 0.5}, "--cycle-mult"),
    ({"cycle_steps": 10, "warmup_steps": 10}, "--cycle-warmup"),
    ({"cycle_steps": 10, "min_lr": -1}, "--min-lr"),
    ({"cycle_steps": 10, "decay": 0}, "--cycle-decay"),
    ({"cycle_steps": 10, "decay": 1.5}, "--cycle-decay"),
])
def test_cosine_restarts_invalid(kw, message):
    with pytest.raises(UsageError, match=message):
        CosineRestarts(**kw).validate()


def test_schedule_string_peaks_the_cosine():
    f = rate_function(parse_schedule("1.0:10, 0.5"), CosineRestarts(cycle_steps=10))
    assert f(0) == pytest.approx(1.0) and f(10) == pytest.approx(0.5) and f(15) == pytest.approx(0.25)


def test_function_scheduler_sets_lr_and_resumes():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=123.0)
    sched = FunctionScheduler(opt, parse_schedule("1e-3:2, 1e-4").value)
    seen = []
    for _ in range(3):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == [1e-3, 1e-3, 1e-4] and sched.get_last_lr() == [1e-4]
    again = FunctionScheduler(torch.optim.AdamW([p], lr=1.0), parse_schedule("1e-3:2, 1e-4").value)
    again.load_state_dict(sched.state_dict())
    assert again.step_count == 3 and again.get_last_lr() == [1e-4]
