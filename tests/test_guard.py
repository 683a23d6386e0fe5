"""The guards: held-out accuracy falling while training reward does not rise; a run with nothing to learn."""

import pytest

from rlvr.train.guard import DeadRun, DeclineGuard


def _run(guard, evals, rewards):
    """evals[0] before training; rewards[i] the steps between evals[i] and evals[i+1]."""
    out = [guard.evaluation(evals[0])]
    for ev, rs in zip(evals[1:], rewards):
        for r in rs:
            guard.reward(r)
        out.append(guard.evaluation(ev))
    return out


def test_trips_after_patience_falls_with_flat_reward():
    g = DeclineGuard(patience=3)
    out = _run(g, [0.885, 0.826, 0.861, 0.818, 0.812, 0.805], [[0.86, 0.88]] * 5)
    assert out[:5] == [None] * 5  # 0.826 -> 0.861 rose: the count restarted there
    assert out[5] is not None and "3 evaluations in a row" in out[5] and "86.1% -> 80.5%" in out[5]
    assert g.metrics() == {"guard/declines": 3.0, "guard/warning": 1.0}
    g.reward(0.9)
    assert g.evaluation(0.83) is None and g.metrics()["guard/warning"] == 0.0  # a rise clears it


def test_silent_when_reward_rises_or_accuracy_holds():
    rising = DeclineGuard(patience=2)
    assert _run(rising, [0.9, 0.8, 0.7], [[0.5], [0.7]])[-1] is None  # reward rose: another story
    holding = DeclineGuard(patience=2)
    assert _run(holding, [0.9, 0.9, 0.9, 0.9], [[0.5]] * 3) == [None] * 4  # equal is not a fall
    assert holding.declines == 0


def test_replay_rebuilds_a_resumed_run():
    rows = [{"step": 0, "eval/arithmetic": 0.9}, {"step": 1, "reward": 0.8}, {"step": 2, "reward": 0.8, "eval/arithmetic": 0.85},
            {"step": 3, "reward": 0.8, "eval/arithmetic": 0.8, "eval/arithmetic/greedy": 0.99}]
    g = DeclineGuard(patience=2)
    g.replay(rows)
    assert g.declines == 2 and g.warning() is not None
    mixture = DeclineGuard(patience=1)
    mixture.replay([{"eval/a": 0.1, "eval/b": 0.9, "eval/all": 0.5}, {"reward": 0.1, "eval/a": 0.0, "eval/all": 0.4}])
    assert mixture.evals == [0.5, 0.4]
    with pytest.raises(ValueError):
        DeclineGuard(patience=0)


def test_dead_run_warns_once_at_patience_steps_in_a_row_and_says_why():
    dead = DeadRun(patience=3)
    never = {"updates": 0, "pass_rate": 0.0, "flag_no_answer": 1.0, "flag_truncated": 0.0}
    assert [dead.step(never) for _ in range(2)] == [None, None] and dead.metrics() == {"dead_steps": 2.0}
    assert dead.step({"updates": 1}) is None and dead.metrics() == {"dead_steps": 0.0}  # an update resets it
    out = [dead.step(never) for _ in range(4)]
    assert out[:2] == [None, None] and out[3] is None  # once, at the third in a row
    assert out[2].startswith("3 steps in a row") and "never earns reward (flags: no_answer 100%)" in out[2]
    solved = DeadRun(patience=1).step({"updates": 0, "pass_rate": 1.0})
    assert "the task is solved" in solved
