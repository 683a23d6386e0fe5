"""Tests of rlvr.verify (extract, expr) and rlvr.envs (arithmetic, countdown, mixture, registry).

Run: ``.venv/bin/python -m pytest tests/test_envs.py -q`` (CPU, a few seconds).
"""

import time
from collections import Counter
from fractions import Fraction
from itertools import islice

import pytest

from rlvr.envs import ENVS, Arithmetic, Countdown, Mixture, make_env, make_mixture
from rlvr.types import Environment, Problem
from rlvr.verify import ExprError, evaluate, extract_final, format_answer, parse_int


def take(env, split, seed, n):
    return list(islice(env.problems(split, seed), n))


# --- extraction -------------------------------------------------------------------------

def test_extract_final_and_flags():
    assert extract_final("work...\n#### 42 ") == ("42", frozenset())
    assert extract_final("the answer is 42") == (None, frozenset({"no_answer"}))
    assert extract_final("#### 41\n#### 42") == (None, frozenset({"multiple_answers"}))
    assert extract_final("so:\n####   \n") == (None, frozenset({"empty_answer"}))
    assert extract_final(format_answer(-7)) == ("-7", frozenset())


@pytest.mark.parametrize("s, want", [("42", 42), ("-7", -7), ("+3", 3), ("007", 7), ("12.0", None),
                                     ("1,234", None), ("12 13", None), ("1e3", None), ("", None),
                                     ("- 3", None), ("٣", None), ("9" * 2000, None)])
def test_parse_int_is_strict(s, want):
    assert parse_int(s) == want


# --- expressions ------------------------------------------------------------------------

def test_evaluate_exact():
    assert evaluate("(25-7)*3/2") == (Fraction(27), [25, 7, 3, 2])
    assert evaluate("7/2*2") == (Fraction(7), [7, 2, 2])
    assert evaluate(" 1 + 2 ")[0] == 3


@pytest.mark.parametrize("expr", ["__import__('os').system('touch /tmp/pwned')", "x+1", "abs(3)", "(3).real",
                                  "2**3", "9**9**9**9", "-3+5", "+3", "7//2", "7%2", "1.5*2", "0x10", "1_000",
                                  "True+1", "9999999", "1+", "", "()", "1+1\n+1", "[1]", "1 if 1 else 2",
                                  "1+" * 100 + "1", "+".join(["1"] * 60)])
def test_evaluate_rejects_without_running(expr):
    start = time.perf_counter()
    with pytest.raises(ExprError):
        evaluate(expr)
    assert time.perf_counter() - start < 0.1  # "9**9**9**9" would never finish if evaluated


def test_division_by_zero_is_expr_error():
    with pytest.raises(ExprError, match="division by zero"):
        evaluate("4/(2-2)")


# --- every registered environment -------------------------------------------------------

@pytest.mark.parametrize("name", sorted(ENVS))
def test_gold_answers_verify(name):
    env = make_env(name)
    assert isinstance(env, Environment)
    # Code environments run every gold in the sandboxed interpreter: fewer of them.
    assert env.validate(SANDBOXED.get(name, 200)) == []


SANDBOXED = {"pyfunc": 10, "humaneval": 5}


@pytest.mark.parametrize("env", [Arithmetic(digits=1), Arithmetic(digits=2), Countdown(count=3, max_number=10),
                                 Countdown()], ids=["arith1", "arith2", "countdown-small", "countdown"])
def test_train_and_eval_never_share_content(env):
    train = {p.id for p in take(env, "train", 0, 3000)}
    evals = {p.id for p in take(env, "eval", 0, 3000)}
    assert train and evals and not train & evals
    # Content, not just ids: no eval prompt appears in train.
    assert not {p.prompt for p in take(env, "train", 1, 3000)} & {p.prompt for p in take(env, "eval", 1, 300)}


@pytest.mark.parametrize("name", sorted(ENVS))
def test_streams_are_deterministic_by_seed(name):
    env = make_env(name)
    assert take(env, "train", 3, 50) == take(make_env(name), "train", 3, 50)
    assert [p.id for p in take(env, "train", 3, 50)] != [p.id for p in take(env, "train", 4, 50)]
    assert [p.id for p in take(env, "eval", 3, 50)] != [p.id for p in take(env, "train", 3, 50)]


def test_bad_split_fails_at_once():
    with pytest.raises(ValueError, match="'test'"):
        Arithmetic().problems("test", 0)
    with pytest.raises(ValueError, match="'dev'"):
        Mixture([Arithmetic()]).problems("dev", 0)


# --- arithmetic -------------------------------------------------------------------------

def test_arithmetic_problems():
    for p in take(Arithmetic(digits=2, ops=("sub",)), "train", 0, 200):
        a, b = p.meta["a"], p.meta["b"]
        assert 10 <= a <= 99 and 10 <= b <= 99 and p.answer == a - b
        assert p.id == f"arithmetic/{a}-{b}" and f"{a}-{b}" in p.prompt and p.meta["difficulty"] == 2
    assert any(p.answer < 0 for p in take(Arithmetic(ops=("sub",)), "train", 0, 100))


def test_arithmetic_verdicts():
    env = Arithmetic()
    p = Problem(id="arithmetic/457-386", prompt="", answer=71, env="arithmetic")
    right = env.verify(p, "457-386 = 71\n#### 71")
    assert (right.reward, right.correct, right.parsed, right.flags) == (1.0, True, 71, frozenset())
    wrong = env.verify(p, "#### 72")
    assert (wrong.reward, wrong.correct, wrong.parsed) == (0.0, False, 72)
    for bad in ["#### 71.0", "#### 1,234", "#### 71 72", "#### seventy-one", "#### 71."]:
        v = env.verify(p, bad)
        assert (v.reward, v.correct, v.flags) == (0.0, False, frozenset({"format_error"})), bad
    assert env.verify(p, "71").flags == {"no_answer"}
    assert env.verify(p, "#### 71 #### 71").flags == {"multiple_answers"}
    with pytest.raises(ValueError, match="countdown"):
        env.verify(Problem(id="countdown/x", prompt="", answer=71, env="countdown"), "#### 71")


@pytest.mark.parametrize("kwargs, key", [({"digits": 0}, "digits"), ({"ops": ("add", "div")}, "ops"),
                                         ({"ops": ()}, "ops"), ({"template": "no field"}, "template"),
                                         ({"template": "{expr} {x}"}, "template"), ({"eval_fraction": 1.5}, "eval_fraction")])
def test_arithmetic_bad_params(kwargs, key):
    with pytest.raises(ValueError, match=key):
        Arithmetic(**kwargs)


# --- countdown --------------------------------------------------------------------------

COUNTDOWN = Problem(id="countdown/2,3,4,6=24", prompt="", answer={"target": 24, "numbers": (2, 3, 4, 6), "solution": "4*6"},
                    env="countdown")


def test_countdown_problems_are_solvable_and_well_formed():
    env = Countdown(count=5, max_number=30, max_target=500)
    for p in take(env, "eval", 0, 300):
        value, used = evaluate(p.answer["solution"])
        nums = list(p.answer["numbers"])
        assert value == p.answer["target"] and 1 <= value <= 500 and value not in nums
        assert len(nums) == 5 and nums == sorted(nums) and all(1 <= n <= 30 for n in nums)
        assert len(used) >= 2 and not Counter(used) - Counter(nums)
        assert str(nums) in p.prompt and str(p.answer["target"]) in p.prompt


@pytest.mark.parametrize("completion, reward, flags", [
    ("#### 4*6", 1.0, set()),
    ("#### 2*3*4", 1.0, set()),               # not the gold, still right
    ("#### (6-2)*(3+3)", 0.0, {"bad_numbers"}),  # 3 given once, used twice
    ("#### 4*6*1", 0.0, {"bad_numbers"}),     # 1 not given
    ("#### 4*6+2", 0.0, set()),
    ("#### 6/(3-3)", 0.0, {"format_error"}),  # division by zero: reward 0, no exception
    ("#### 4/(2-2)+24", 0.0, {"format_error"}),
    ("#### 2**3*3", 0.0, {"format_error"}),
    ("#### __import__('os')", 0.0, {"format_error"}),
    ("#### 4*6 = 24", 0.0, {"format_error"}),
    ("4*6", 0.0, {"no_answer"}),
])
def test_countdown_verdicts(completion, reward, flags):
    v = Countdown().verify(COUNTDOWN, completion)
    assert (v.reward, v.correct, set(v.flags)) == (reward, reward == 1.0, flags)


@pytest.mark.parametrize("kwargs, key", [({"count": 1}, "count"), ({"max_number": 0}, "max_number"),
                                         ({"max_target": 1}, "max_target"), ({"template": "{numbers}"}, "template")])
def test_countdown_bad_params(kwargs, key):
    with pytest.raises(ValueError, match=key):
        Countdown(**kwargs)


# --- mixture ----------------------------------------------------------------------------

def test_mixture_routes_and_weights():
    mix = Mixture([Arithmetic(digits=2), Countdown(count=3)], weights=[3, 1])
    problems = take(mix, "train", 0, 4000)
    share = Counter(p.env for p in problems)["arithmetic"] / len(problems)
    assert abs(share - 0.75) < 0.03
    assert take(mix, "train", 0, 100) == problems[:100]
    for p in problems[:200]:
        gold = format_answer(p.answer["solution"] if p.env == "countdown" else p.answer)
        assert mix.verify(p, gold).correct
    with pytest.raises(KeyError, match="gsm8k"):
        mix.verify(Problem(id="gsm8k/1", prompt="", answer=1, env="gsm8k"), "#### 1")
    assert mix.validate(50) == []
    nested = Mixture([mix], name="outer")
    p = next(p for p in take(nested, "eval", 0, 50) if p.env == "arithmetic")
    assert nested.verify(p, format_answer(p.answer)).correct


def test_mixture_validate_prefixes_child_name():
    class Broken(Arithmetic):
        def gold_text(self, problem):
            return "wrong"
    assert all(f.startswith("arithmetic: arithmetic/") for f in Mixture([Broken()]).validate(3))
    assert len(Mixture([Broken()]).validate(3)) == 6


@pytest.mark.parametrize("weights, match", [([1], "1 weights for 2"), ([1, 0], "> 0"), ([1, -2], "> 0"),
                                            ([1, float("nan")], "> 0")])
def test_mixture_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        Mixture([Arithmetic(), Countdown()], weights=weights)


def test_mixture_names_unique():
    with pytest.raises(ValueError, match="'arithmetic' appears twice"):
        Mixture([Arithmetic(digits=1), Arithmetic(digits=2)])


# --- registry ---------------------------------------------------------------------------

def test_make_env_specs():
    env = make_env("arithmetic:digits=2,ops=add+sub")
    assert (type(env), env.digits, env.ops) == (Arithmetic, 2, ("add", "sub"))
    assert make_env("arithmetic:ops=mul").ops == ("mul",)
    assert make_env("arithmetic:eval_fraction=0.2").eval_fraction == 0.2
    env = make_env({"name": "countdown", "count": 3, "template": "From {numbers}, get {target}, x=1."})
    assert (type(env), env.count, env.template) == (Countdown, 3, "From {numbers}, get {target}, x=1.")
    mix = make_mixture(["arithmetic:digits=1", {"name": "countdown"}], weights=[1, 2])
    assert [e.name for e in mix.envs] == ["arithmetic", "countdown"] and mix.weights == [1.0, 2.0]


@pytest.mark.parametrize("spec, match", [
    ("algebra", r"unknown env 'algebra'.*'arithmetic', 'countdown'"),
    ("arithmetic:digit=2", r"unknown parameter\(s\) \['digit'\].*digits"),
    ({"name": "countdown", "cnt": 3}, r"\['cnt'\].*count"),
    ({"count": 3}, "no 'name'"),
    ("arithmetic:digits=two", "'digits'"),
    ("arithmetic:digits", "key=value"),
    ("arithmetic:ops=add+div", "ops"),
])
def test_make_env_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        make_env(spec)
