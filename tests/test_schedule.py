"""The learning-rate schedule: warm-up, cosine, and the horizon a FLOP budget sets."""

import pytest

from rlvr.train.schedule import Horizon, lr_at


def test_warm_up_then_cosine_to_the_floor():
    assert lr_at(0, 1.0, 4) == 0.25 and lr_at(3, 1.0, 4) == 1.0
    assert lr_at(4, 1.0, 4, total=14) == 1.0 and lr_at(14, 1.0, 4, total=14) == pytest.approx(0.1)
    assert lr_at(100, 1.0, 4) == 1.0  # no total: constant after warm-up


def test_horizon_without_a_budget_is_the_steps_and_a_constant_schedule_has_none():
    assert Horizon(cosine=True, steps=50).total == 50
    constant = Horizon(cosine=False, steps=50)
    constant.fit(1, spent=10.0, step_cost=10.0)
    assert constant.total is None and constant.rate(30, 1.0, 0) == 1.0


def test_horizon_under_a_budget_is_fitted_once_from_a_steps_cost():
    h = Horizon(cosine=True, steps=100, budget_flops=1000.0)
    assert h.total is None and h.rate(0, 1.0, 0) == 1.0  # the first step runs at the peak
    h.fit(1, spent=130.0, step_cost=100.0)  # 30 inherited + 100 for step 1: 870 left, 9 more steps
    assert h.total == 10
    h.fit(2, spent=400.0, step_cost=270.0)
    assert h.total == 10  # fitted once
    assert h.rate(9, 1.0, 0) == pytest.approx(lr_at(9, 1.0, 0, 10))


def test_horizon_is_bounded_by_the_steps_and_by_one():
    rich = Horizon(cosine=True, steps=20, budget_flops=1e9)
    rich.fit(1, spent=10.0, step_cost=10.0)
    assert rich.total == 20
    spent = Horizon(cosine=True, steps=20, budget_flops=100.0)
    spent.fit(0, spent=500.0, step_cost=10.0)  # inherited compute already over the budget
    assert spent.total == 1


def test_a_resumed_horizon_is_kept_and_a_budgetless_cosine_ignores_it():
    assert Horizon(cosine=True, steps=100, budget_flops=1e3, saved=37).total == 37
    assert Horizon(cosine=True, steps=100, saved=37).total == 100
