"""Tests of rlvr.envs.gym: reasoning-gym tasks as rlvr environments ("gym:TASK").

Run: ``.venv/bin/python -m pytest tests/test_gym_env.py -q`` (~10 s, most of it importing reasoning_gym).
"""

import os
from itertools import islice

import pytest

from rlvr.envs import make_env, make_mixture
from rlvr.envs.gym import CHUNK, GYM_UNRELIABLE, ReasoningGymEnv, UnreliableTaskError, _seed
from rlvr.verify.math_equiv import VerifierError


@pytest.fixture(scope="module")
def env():
    return make_env("gym:basic_arithmetic")


def test_builds_by_name_and_validates(env):
    assert isinstance(env, ReasoningGymEnv) and env.name == "gym:basic_arithmetic"
    assert env.validate() == []
    p = next(env.problems("eval", 0))
    assert p.env == env.name and p.id.startswith("gym:basic_arithmetic/") and "####" in p.prompt


def test_right_wrong_partial_and_unformatted_answers(env):
    p = next(env.problems("train", seed=3))
    gold = env.gold_text(p)
    right = env.verify(p, f"I worked it out.\n#### {gold}")
    assert right.correct and right.reward == 1.0 and right.parsed == gold
    wrong = env.verify(p, "#### 999999999")
    assert not wrong.correct and wrong.reward < 1.0
    assert env.verify(p, gold).flags == {"no_answer"}  # the bare answer without the marker does not count
    assert env.verify(p, f"#### {gold}\n#### {gold}").flags == {"multiple_answers"}
    # reasoning-gym's scorer gives partial credit when the gold is inside a longer answer, so a
    # hedge would farm it: by default such an answer earns 0, flagged
    for hedge in (f"{gold} 12345", f"{gold} or 7", f"-{gold}"):
        flat = env.verify(p, f"#### {hedge}")
        assert flat.reward == 0.0 and not flat.correct and "partial_credit" in flat.flags, hedge
    graded = make_env("gym:basic_arithmetic:partial_credit=true,eval_size=20,check=5")
    partial = graded.verify(p, f"#### {gold} 12345")
    assert 0 < partial.reward < 1 and not partial.correct and "partial_credit" in partial.flags
    assert graded.verify(p, f"#### {gold}").reward == 1.0


def test_splits_are_disjoint_by_content(env):
    eval_keys = {env.canonical(p) for p in islice(env.problems("eval", 0), 200)}
    assert eval_keys == env.eval_keys and len(eval_keys) == len(env.eval_set)
    for seed in (0, 1):
        train = [env.canonical(p) for p in islice(env.problems("train", seed), 300)]
        assert eval_keys.isdisjoint(train)
    a, b = ([p.id for p in islice(env.problems("train", s), 20)] for s in (0, 1))
    assert a != b and a == [p.id for p in islice(env.problems("train", 0), 20)]


def test_train_skips_eval_questions_in_a_small_space():
    # 1-digit, 2-term problems: few distinct questions, so train chunks do draw eval ones.
    env = make_env("gym:basic_arithmetic:min_terms=2,max_terms=2,min_digits=1,max_digits=1,eval_size=50")
    raw = env._dataset(size=CHUNK, seed=_seed(env.task, "train", 0, 0))
    n = 400
    collisions = sum(env.canonical(env._problem(raw[i])) in env.eval_keys for i in range(n))
    assert collisions > 0  # the seeds alone do not keep the splits apart here
    train = list(islice(env.problems("train", 0), n))
    assert env.eval_keys.isdisjoint(env.canonical(p) for p in train)


def test_unknown_task_and_parameters_fail_clearly():
    with pytest.raises(ValueError, match=r"unknown reasoning-gym task 'basic_arithmetc'; did you mean basic_arithmetic"):
        make_env("gym:basic_arithmetc")
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['foo'\] for gym:basic_arithmetic.*min_terms"):
        make_env("gym:basic_arithmetic:foo=1")
    with pytest.raises(ValueError, match="'seed' is set by the environment"):
        make_env({"name": "gym:basic_arithmetic", "seed": 3})


def test_known_unreliable_task_is_reported():
    assert {"boxnet", "graph_color", "propositional_logic", "rubiks_cube", "rush_hour"} <= GYM_UNRELIABLE
    with pytest.raises(UnreliableTaskError, match="gym:graph_color"):
        make_env("gym:graph_color:eval_size=5,check=3")
    env = make_env("gym:graph_color:eval_size=5,check=0")  # built anyway, to look at
    failures = env.validate(3)
    assert len(failures) == 6 and all("gym:graph_color/" in f for f in failures)


def test_dict_spec_params_and_mixture():
    env = make_env({"name": "gym:basic_arithmetic", "min_terms": 2, "max_terms": 2, "eval_size": 20, "check": 5})
    assert env.params == {"min_terms": 2, "max_terms": 2} and len(env.eval_set) <= 20
    mix = make_mixture(["arithmetic:digits=1", {"name": "gym:basic_arithmetic", "eval_size": 20, "check": 5}])
    for p in islice(mix.problems("train", 0), 20):
        gold = p.answer["answer"] if p.env.startswith("gym:") else p.answer
        assert mix.verify(p, f"#### {gold}").correct


def test_a_scorer_crash_is_a_verifier_error(env, monkeypatch):
    def boom(answer, entry):
        raise KeyError("metadata")
    monkeypatch.setattr(env.scorer, "score_answer", boom)
    with pytest.raises(VerifierError, match="score_answer raised"):
        env.verify(next(env.problems("eval", 0)), "#### 1")


def test_a_task_that_depends_on_the_hash_seed_needs_it_fixed(monkeypatch):
    """gym:ransom_note's problems change with Python's hash seed (a fresh process each time):
    it is refused unless PYTHONHASHSEED is set, and with it set two processes agree."""
    import subprocess
    import sys

    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    with pytest.raises(ValueError, match="PYTHONHASHSEED"):
        make_env("gym:ransom_note:eval_size=5,check=0")
    code = ("import os; from rlvr.envs.gym import ReasoningGymEnv as E, GYM_HASH_SEEDED as H; "
            "os.environ['PYTHONHASHSEED'] = '0'; "  # the check only; the interpreter's seed is the one it started with
            "print([p.prompt for p in E('ransom_note', eval_size=5, check=0).eval_set])")

    def eval_set(seed: str) -> str:
        env = {**os.environ, "PYTHONHASHSEED": seed}
        return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout

    assert eval_set("1") != eval_set("2")  # why it is refused
    assert eval_set("0") == eval_set("0")
