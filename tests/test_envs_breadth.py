"""Tests of the breadth environments: linear equations, word problems, list ops.

For each: gold answers verify, train/eval never share content, streams are
deterministic by seed, hand-written right/wrong/format-error verdicts, the
difficulty knob changes the problems, bad parameters fail naming the parameter.

Run: ``.venv/bin/python -m pytest tests/test_envs_breadth.py -q`` (CPU, about a second).
"""

import re
from itertools import islice

import pytest

from rlvr.envs import ENVS, make_env
from rlvr.envs.linear import LinearEquation
from rlvr.envs.lists import ListOps
from rlvr.envs.word_problems import TEMPLATES, WordProblems
from rlvr.types import Problem

ENVS_UNDER_TEST = {
    "linear": LinearEquation(), "linear2": LinearEquation(max_coef=12, steps=2),
    "word_problems": WordProblems(), "word4": WordProblems(steps=(4,)),
    "lists": ListOps(), "lists-short": ListOps(length=3, max_value=5),
}


def take(env, split, seed, n):
    return list(islice(env.problems(split, seed), n))


def verdict(env, problem, completion):
    v = env.verify(problem, completion)
    return v.reward, v.correct, set(v.flags)


RIGHT, WRONG, FORMAT = (1.0, True, set()), (0.0, False, set()), (0.0, False, {"format_error"})


# --- every new environment --------------------------------------------------------------

def test_registered():
    assert (ENVS["linear"], ENVS["word_problems"], ENVS["lists"]) == (LinearEquation, WordProblems, ListOps)
    assert make_env("word_problems:steps=2+3").steps == (2, 3)
    assert make_env("lists:ops=sort+sum,length=4").ops == ("sort", "sum")
    assert make_env("linear:steps=2").steps == 2


@pytest.mark.parametrize("key", sorted(ENVS_UNDER_TEST))
def test_gold_answers_verify(key):
    assert ENVS_UNDER_TEST[key].validate(100) == []


@pytest.mark.parametrize("key", sorted(ENVS_UNDER_TEST))
def test_train_and_eval_never_share_content(key):
    env = ENVS_UNDER_TEST[key]
    train, evals = take(env, "train", 0, 2000), take(env, "eval", 0, 200)
    assert not {p.id for p in train} & {p.id for p in evals}
    assert not {p.prompt for p in train} & {p.prompt for p in evals}
    assert all(p.id.startswith(f"{env.name}/") for p in train + evals)


@pytest.mark.parametrize("key", sorted(ENVS_UNDER_TEST))
def test_deterministic_by_seed(key):
    env = ENVS_UNDER_TEST[key]
    assert take(env, "train", 5, 30) == take(env, "train", 5, 30)
    assert [p.id for p in take(env, "train", 5, 30)] != [p.id for p in take(env, "train", 6, 30)]


# --- linear -----------------------------------------------------------------------------

def _residuals(equation: str, x: int) -> tuple[int, int]:
    """lhs - rhs at x and at x + 1 (our own generated text only, checked against a whitelist)."""
    assert re.fullmatch(r"[-+*() 0-9x=]+", equation)
    lhs, rhs = equation.replace("x", "(X)").split("=")
    f = lambda v: eval(lhs, {"__builtins__": {}}, {"X": v}) - eval(rhs, {"__builtins__": {}}, {"X": v})  # noqa: E731
    return f(x), f(x + 1)


@pytest.mark.parametrize("steps", [1, 2])
def test_linear_gold_solves_the_equation(steps):
    env = LinearEquation(max_coef=7, steps=steps)
    problems = take(env, "train", 0, 300)
    for p in problems:
        equation = p.id.removeprefix("linear/")
        assert equation in p.prompt and abs(p.answer) <= 7 and p.meta["difficulty"] == steps
        at_x, at_next = _residuals(equation, p.answer)
        assert at_x == 0 and at_next != 0  # a solution, and the only one
    if steps == 2:
        assert any("(" in p.id for p in problems) and any(p.id.count("x") == 2 for p in problems)
    else:
        assert not any("(" in p.id or p.id.count("x") == 2 for p in problems)


@pytest.mark.parametrize("completion, want", [
    ("#### 5", RIGHT), ("3*5 + 4 = 19\n#### x = 5", RIGHT), ("#### x=5", RIGHT), ("#### x =  +5", RIGHT),
    ("#### 6", WRONG), ("#### x = -5", WRONG),
    ("#### 5.0", FORMAT), ("#### x = 5.", FORMAT), ("#### X = 5", FORMAT), ("#### y = 5", FORMAT),
    ("#### 5 (x = 5)", FORMAT), ("#### x = x = 5", FORMAT), ("#### x == 5", FORMAT), ("#### five", FORMAT),
    ("#### x = ", FORMAT),
])
def test_linear_verdicts(completion, want):
    p = Problem(id="linear/3*x + 4 = 19", prompt="", answer=5, env="linear")
    assert verdict(LinearEquation(), p, completion) == want


def test_linear_difficulty_changes_problems():
    small = take(LinearEquation(max_coef=3), "train", 0, 200)
    big = take(LinearEquation(max_coef=50), "train", 0, 200)
    assert max(abs(p.answer) for p in small) <= 3 < max(abs(p.answer) for p in big)


@pytest.mark.parametrize("kwargs, key", [({"max_coef": 1}, "max_coef"), ({"max_coef": 2.5}, "max_coef"),
                                         ({"steps": 3}, "steps"), ({"steps": True}, "steps"),
                                         ({"template": "no field"}, "template"),
                                         ({"template": "{equation} {x}"}, "template"),
                                         ({"eval_fraction": 0}, "eval_fraction")])
def test_linear_bad_params(kwargs, key):
    with pytest.raises(ValueError, match=key):
        LinearEquation(**kwargs)


# --- word problems ----------------------------------------------------------------------

# The answer of each template from its quantities, written independently of the env.
FORMULAS = {
    "change": lambda q: q["bill"] - q["n"] * q["p"],
    "share": lambda q: (q["a"] + q["b"]) / q["k"],
    "percent_left": lambda q: q["m"] * (100 - q["pct"]) / 100,
    "profit": lambda q: q["n"] * q["s"] - q["n"] * q["c"] - q["e"],
    "store": lambda q: q["n"] * (100 - q["pct"]) / 100 - q["t"],
    "factory": lambda q: q["r"] * q["h"] * q["d"] - q["b"],
    "packs": lambda q: (q["a"] * q["b"] + q["c"] - q["d"]) / q["k"],
    "discount": lambda q: q["n"] * q["p"] * (100 - q["pct"]) / 100 + q["f"],
    "trip": lambda q: q["v"] * q["h"] + q["v2"] * q["h2"] - q["w"],
}


def test_word_problem_answers_follow_from_quantities():
    problems = take(WordProblems(), "train", 0, 600)
    assert {p.meta["template"] for p in problems} == set(TEMPLATES) == set(FORMULAS)
    for p in problems:
        tid, _, body = p.id.removeprefix("word_problems/").partition(":")
        q = {k: int(v) for k, v in (item.split("=") for item in body.split(","))}
        assert type(p.answer) is int and p.answer >= 1 and FORMULAS[tid](q) == p.answer, p.id
        assert all(re.search(rf"\b{v}\b", p.prompt) for v in q.values()), p.id
        assert p.meta["difficulty"] == TEMPLATES[tid][0]


def test_word_problem_wording_is_fixed_by_content():
    # Same key, same prompt: the names cannot move an equation between splits.
    env = WordProblems()
    by_id = {}
    for p in take(env, "train", 0, 2000) + take(env, "train", 1, 2000):
        assert by_id.setdefault(p.id, p.prompt) == p.prompt


@pytest.mark.parametrize("completion, want", [
    ("3 packs of 4 is 12\n#### 12", RIGHT), ("#### 13", WRONG), ("#### $12", FORMAT), ("#### 12 dollars", FORMAT),
    ("#### 12.0", FORMAT), ("#### 1,2", FORMAT), ("#### twelve", FORMAT)])
def test_word_problem_verdicts(completion, want):
    p = Problem(id="word_problems/x", prompt="", answer=12, env="word_problems")
    assert verdict(WordProblems(), p, completion) == want


def test_word_problem_steps_choose_templates():
    two = take(WordProblems(steps=(2,)), "train", 0, 100)
    four = take(WordProblems(steps=4), "train", 0, 100)
    assert {p.meta["difficulty"] for p in two} == {2} and {p.meta["difficulty"] for p in four} == {4}
    assert {p.meta["template"] for p in two}.isdisjoint({p.meta["template"] for p in four})


@pytest.mark.parametrize("kwargs", [{"steps": (5,)}, {"steps": ()}, {"steps": (1, 2)}, {"steps": ("2",)}])
def test_word_problem_bad_params(kwargs):
    with pytest.raises(ValueError, match="steps"):
        WordProblems(**kwargs)


# --- lists ------------------------------------------------------------------------------

def _expected(op, target, content):
    if op in ("reverse_word", "count_letter"):
        return content[::-1] if op == "reverse_word" else content.count(target)
    xs = [int(v) for v in content.split(",")]
    return {"sort": tuple(sorted(xs)), "reverse": tuple(xs[::-1]), "count": xs.count(int(target or -1)),
            "max": max(xs), "min": min(xs), "sum": sum(xs)}[op]


def test_list_answers_follow_from_content():
    problems = take(ListOps(length=6, max_value=20), "train", 0, 500)
    assert {p.meta["op"] for p in problems} == {"sort", "reverse", "count", "max", "min", "sum",
                                                "reverse_word", "count_letter"}
    for p in problems:
        op, target, content = re.fullmatch(r"lists/(\w+?)(?:\((\w+)\))?:(.+)", p.id).groups()
        assert p.answer == _expected(op, target, content) and p.meta["difficulty"] == 6


SORTED, COUNT, WORD = ((Problem(id="lists/x", prompt="", answer=a, env="lists")) for a in ((1, 2, 3), 2, "dcba"))


@pytest.mark.parametrize("problem, completion, want", [
    (SORTED, "#### 1, 2, 3", RIGHT), (SORTED, "#### [1,2,3]", RIGHT), (SORTED, "####  1 ,2,   3 ", RIGHT),
    (SORTED, "#### [ 1, 2, 3 ]", RIGHT),
    (SORTED, "#### 3, 2, 1", WRONG), (SORTED, "#### 1, 2", WRONG), (SORTED, "#### 1, 2, 3, 3", WRONG),
    (SORTED, "#### 1 2 3", FORMAT), (SORTED, "#### 1, 2, 3,", FORMAT), (SORTED, "#### [1, 2, 3", FORMAT),
    (SORTED, "#### 1; 2; 3", FORMAT), (SORTED, "#### (1, 2, 3)", FORMAT), (SORTED, "#### [[1, 2, 3]]", FORMAT),
    (SORTED, "#### 1,, 2, 3", FORMAT), (SORTED, "#### [1, 2, 3] ok", FORMAT),
    (COUNT, "#### 2", RIGHT), (COUNT, "#### 3", WRONG), (COUNT, "#### 2, 2", FORMAT), (COUNT, "#### [2]", FORMAT),
    (WORD, "#### dcba", RIGHT), (WORD, "#### 'dcba'", RIGHT), (WORD, '#### "dcba"', RIGHT), (WORD, "#### dcb", WRONG),
    (WORD, "#### DCBA", FORMAT), (WORD, "#### d c b a", FORMAT), (WORD, "#### 'dcba\"", FORMAT),
    (WORD, "#### d, c, b, a", FORMAT), (WORD, "#### ''", FORMAT),
])
def test_list_verdicts(problem, completion, want):
    assert verdict(ListOps(), problem, completion) == want


def test_list_gold_text_is_canonical():
    assert ListOps().gold_text(SORTED) == "1, 2, 3" and ListOps().gold_text(WORD) == "dcba"


def test_list_length_is_difficulty():
    for n in (3, 9):
        for p in take(ListOps(length=n, ops=("reverse", "reverse_word")), "train", 0, 50):
            assert len(p.answer) == n and p.meta["difficulty"] == n


@pytest.mark.parametrize("kwargs, key", [({"length": 1}, "length"), ({"max_value": 0}, "max_value"),
                                         ({"ops": ("sort", "shuffle")}, "ops"), ({"ops": ()}, "ops"),
                                         ({"eval_fraction": 1}, "eval_fraction")])
def test_list_bad_params(kwargs, key):
    with pytest.raises(ValueError, match=key):
        ListOps(**kwargs)
