"""Tests of the answer formats (rlvr.verify.formats) and the `prompt:` wrapper (rlvr.envs.prompting).

Each format's extraction on hand-written completions; the wrapper's prompts (the
instruction rewritten, the system message first, few-shot examples from the train
split only), its verdicts, its spec forms and its errors. The hack probes in every
format are in tests/test_audit.py.

Run: ``.venv/bin/python -m pytest tests/test_formats.py -q`` (CPU, a few seconds).
"""

import itertools

import pytest

from rlvr.envs import Arithmetic, Prompted, make_env, make_mixture, with_prompting
from rlvr.envs.prompting import parse_prompt_spec
from rlvr.verify.extract import ANSWER_MARKER, extract_final, format_answer, parse_int
from rlvr.verify.formats import DEFAULT_FORMAT, FORMATS, get_format

PROCEDURAL = ("arithmetic", "countdown", "linear", "lists", "word_problems")
NONE = frozenset()


def ex(fmt, text):
    return FORMATS[fmt].extract(text)


def first(env, split="eval", seed=0, n=1):
    return list(itertools.islice(env.problems(split, seed), n))


# ---- the formats


def test_registry():
    assert set(FORMATS) == {"hashes", "boxed", "answer_is", "think"} and DEFAULT_FORMAT == "hashes"
    assert all(f.name == name for name, f in FORMATS.items())
    with pytest.raises(ValueError, match=r"unknown answer format 'xml' \(key 'answer_format'\).*boxed"):
        get_format("xml")
    # The old names stay importable and mean the hashes format.
    assert format_answer(42) == FORMATS["hashes"].render(42) == f"{ANSWER_MARKER} 42"
    assert extract_final("#### 7") == ex("hashes", "#### 7") and parse_int("7") == 7


def test_hashes():
    assert ex("hashes", "60 + 34 = 94\n#### 94") == ("94", NONE)
    assert ex("hashes", "the answer is 94") == (None, {"no_answer"})
    assert ex("hashes", "#### 94\n#### 94") == (None, {"multiple_answers"})
    assert ex("hashes", "#### ") == (None, {"empty_answer"})
    assert FORMATS["hashes"].instruction("the result") == "End with #### and the result."


def test_boxed():
    assert ex("boxed", "60 + 34 = 94, so $\\boxed{94}$.") == ("94", NONE)
    assert ex("boxed", "so \\boxed{ 94 } ") == ("94", NONE)
    assert ex("boxed", "x = \\boxed{\\frac{1}{2}}") == ("\\frac{1}{2}", NONE)  # nested braces
    assert ex("boxed", "\\boxed{\\boxed{5}}") == ("\\boxed{5}", NONE)  # a box in a box is one answer
    assert ex("boxed", "the answer is 94") == (None, {"no_answer"})
    assert ex("boxed", "\\boxed{94} or maybe \\boxed{95}") == (None, {"multiple_answers"})
    assert ex("boxed", "\\boxed{94}, again: \\boxed{94}") == ("94", NONE)
    assert ex("boxed", "\\boxed{}") == (None, {"empty_answer"})
    assert ex("boxed", "\\boxed{  }") == (None, {"empty_answer"})
    assert ex("boxed", "\\boxed{94") == (None, {"format_error"})  # cut off before the brace closed
    assert ex("boxed", "\\boxed{94} and \\boxed{\\frac{1}{2}") == (None, {"format_error"})
    fmt = FORMATS["boxed"]
    assert fmt.render("1, 2") == "\\boxed{1, 2}" and fmt.extract(fmt.render("\\frac{1}{2}")) == ("\\frac{1}{2}", NONE)
    assert fmt.instruction("the result") == "End with \\boxed{} containing the result."


def test_answer_is():
    assert ex("answer_is", "60 + 34 = 94, so the answer is 94") == ("94", NONE)
    assert ex("answer_is", "The answer is 94.") == ("94", NONE)
    assert ex("answer_is", "THE ANSWER IS 94.\nDone.") == ("94", NONE)  # to the end of its line only
    assert ex("answer_is", "**The answer is 94.**") == ("94", NONE)
    assert ex("answer_is", "The answer is **94**.") == ("94", NONE)
    assert ex("answer_is", "The answer is $94$.") == ("94", NONE)
    assert ex("answer_is", "The final answer is: 94") == ("94", NONE)
    assert ex("answer_is", "The answer is 3.5.") == ("3.5", NONE)  # one closing period, not the decimal point
    assert ex("answer_is", "The answer is 94 because 60 + 34 = 94") == ("94 because 60 + 34 = 94", NONE)
    assert ex("answer_is", "#### 94") == (None, {"no_answer"})
    assert ex("answer_is", "The answer above is 94") == (None, {"no_answer"})
    assert ex("answer_is", "The answer is 94.\nThe answer is 95.") == (None, {"multiple_answers"})
    assert ex("answer_is", "The answer is 94.\nSo the answer is **94**.") == ("94", NONE)
    assert ex("answer_is", "The answer is .") == (None, {"empty_answer"})
    assert ex("answer_is", "The answer is\n94") == (None, {"empty_answer"})  # the answer is on its line
    # Llama-3 instruct's own habit: one box holding the whole answer is opened
    assert ex("answer_is", "The final answer is: $\\boxed{438}$") == ("438", NONE)
    assert ex("answer_is", "The answer is \\boxed{\\frac{1}{2}}.") == ("\\frac{1}{2}", NONE)
    assert ex("answer_is", "The answer is \\boxed{4}\\boxed{5}")[0] == "\\boxed{4}\\boxed{5}"  # not one box
    assert ex("answer_is", "The answer is \\boxed{4} or 5")[0] == "\\boxed{4} or 5"  # then the env says no
    fmt = FORMATS["answer_is"]
    assert fmt.render(94) == "The answer is 94." and fmt.extract(fmt.render("done.")) == ("done.", NONE)
    assert fmt.instruction("the result") == 'End with "The answer is" followed by the result.'


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_render_round_trips(fmt):
    for answer in ("94", "-7", "3, 1, 2", "(3+4)*2", "x = 4", "\\frac{5}{6}", "dcba"):
        assert FORMATS[fmt].extract("Some work first.\n" + FORMATS[fmt].render(answer)) == (answer, NONE)


def test_a_trailing_explanation_is_a_format_error_not_a_pass():
    env = Prompted(Arithmetic(digits=2), "answer_is")
    p = first(env)[0]
    v = env.verify(p, f"The answer is {p.answer} because I added them")
    assert v.reward == 0 and not v.correct and v.flags == {"format_error"}
    assert env.verify(p, f"I added them. The answer is {p.answer}.").correct


# ---- the wrapper: prompts


@pytest.mark.parametrize("name", PROCEDURAL + ("math",))
@pytest.mark.parametrize("fmt", ["boxed", "answer_is"])
def test_instruction_is_rewritten(name, fmt):
    inner, env = make_env(name), make_env(f"prompt:format={fmt}:{name}")
    for p, q in zip(first(inner, n=5), first(env, n=5)):
        assert (q.id, q.answer, q.meta, q.env) == (p.id, p.answer, p.meta, p.env)  # splits unchanged
        assert isinstance(q.prompt, str) and ANSWER_MARKER in p.prompt and ANSWER_MARKER not in q.prompt
        what = {"boxed": "\\boxed{} containing", "answer_is": '"The answer is" followed by'}[fmt]
        assert what in q.prompt
        assert q.prompt.split("End ")[0] == p.prompt.split("End ")[0]  # the question itself is untouched


def test_hashes_without_system_or_shots_changes_nothing():
    inner, env = make_env("countdown"), make_env("prompt::countdown")
    assert first(inner, n=5) == first(env, n=5)
    p = first(env)[0]
    for completion in ("#### " + p.answer["solution"], "#### 1+1", "no answer", f"#### 1\n#### {p.answer['solution']}"):
        assert env.verify(p, completion) == inner.verify(p, completion)


def test_system_message_and_shots():
    env = make_env({"name": "prompt", "format": "boxed", "system": "You are a careful solver.", "shots": 2,
                    "env": "arithmetic:digits=2"})
    for p in first(env, n=3) + first(env, "train", n=3):
        msgs = p.prompt
        assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert msgs[0]["content"] == "You are a careful solver."
        assert msgs[-1]["content"].startswith("Compute ") and "\\boxed{} containing the result" in msgs[-1]["content"]
        assert p.messages() == msgs
    # The examples come from the train split, are the same for every problem, and each gold verifies.
    shots = env.examples(first(env)[0])
    assert len(shots) == 2 and all(s.meta["split"] == "train" for s in shots)
    assert [s.id for s in env.examples(first(env, seed=5)[0])] == [s.id for s in shots]
    p = first(env)[0]
    for shot, (user, assistant) in zip(shots, zip(p.prompt[1::2], p.prompt[2::2])):
        assert user["content"] == env.prompt(shot)[-1]["content"]
        assert assistant["content"] == f"\\boxed{{{shot.answer}}}" and env.verify(shot, assistant["content"]).correct


def test_shots_are_deterministic_and_never_eval_nor_the_problem_itself():
    make = lambda: make_env("prompt:format=answer_is,shots=3:lists")  # noqa: E731
    a, b = make(), make()
    assert first(a, n=4) == first(b, n=4) and first(a, "train", n=4) == first(b, "train", n=4)
    eval_ids = {p.id for p in first(a, n=300)}
    train = first(a, "train", seed=0, n=5)  # seed 0 is the stream the examples come from
    for p in train:
        shots = a.examples(p)
        assert len(shots) == 3 and p.id not in {s.id for s in shots} and not eval_ids & {s.id for s in shots}
        assert a.canonical(p) not in {a.canonical(s) for s in shots}  # nor a twin of it (its list reordered)
    assert train[0].id in {s.id for s in a.examples(first(a)[0])}  # ... which other problems do see


def test_shots_of_a_mixture_come_from_each_problems_own_env():
    env = Prompted(make_mixture(["arithmetic:digits=2", "countdown:count=3"]), "boxed", shots=1)
    seen = set()
    for p in first(env, n=10):
        (shot,) = env.examples(p)
        assert shot.env == p.env and shot.meta["split"] == "train"
        assert env.verify(shot, p.prompt[1]["content"]).correct
        seen.add(p.env)
    assert seen == {"arithmetic", "countdown"}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_validate_passes_in_every_format(fmt):
    for name in PROCEDURAL + ("math",):
        assert make_env({"name": "prompt", "format": fmt, "shots": 1, "env": name}).validate(20) == []


# ---- the wrapper: verdicts and composition


def test_verify_reads_the_format_and_the_inner_env_grades():
    env = make_env("prompt:format=boxed:arithmetic:digits=2")
    p = first(env)[0]
    assert env.verify(p, f"so \\boxed{{{p.answer}}}").correct
    assert env.verify(p, f"#### {p.answer}").flags == {"no_answer"}  # the other format earns nothing
    assert env.verify(p, f"\\boxed{{{p.answer + 1}}}").reward == 0
    assert env.verify(p, "\\boxed{1,234}").flags == {"format_error"}  # the inner env's own check
    assert env.verify(p, f"\\boxed{{#### {p.answer}}}").flags == {"multiple_answers"}  # no marker smuggling


def test_composes_with_noisy_lenient_mixture_and_curriculum():
    noisy = make_env("noisy:fn=0.5,fp=0.5,random=1:prompt:format=answer_is:arithmetic")
    p = first(noisy)[0]
    assert noisy.verify(p, f"The answer is {p.answer}.").truth.correct
    inside = make_env("prompt:format=answer_is:noisy:fn=0.3:arithmetic")
    assert inside.verify(p, f"The answer is {p.answer}.").truth.correct
    assert inside.heldout(p, f"The answer is {p.answer}.").correct  # the inner strict verifier, in the format
    assert not inside.heldout(p, f"#### {p.answer}").correct
    assert not hasattr(make_env("prompt:format=boxed:arithmetic"), "heldout")  # no held-out verifier to offer
    # A lenient hole outside the wrapper: the hole pays, the held-out check reads the format.
    lenient = make_env("lenient:last_number:prompt:format=boxed:arithmetic")
    assert lenient.verify(p, f"1 {p.answer}").correct and not lenient.heldout(p, f"1 {p.answer}").correct
    assert lenient.heldout(p, f"\\boxed{{{p.answer}}}").correct
    # A mixture routes each problem to the wrapped child, which reads its own format.
    mix = make_mixture(["prompt:format=boxed:arithmetic", "countdown"])
    for q in first(mix, n=10):
        gold = f"\\boxed{{{q.answer}}}" if q.env == "arithmetic" else f"#### {q.answer['solution']}"
        assert mix.verify(q, gold).correct
    cur = make_env({"name": "prompt", "format": "boxed", "shots": 1,
                    "env": {"name": "curriculum", "env": "arithmetic", "param": "digits", "levels": [1, 2]}})
    assert cur.state() == {"level": 0, "recent": []} and "curriculum/arithmetic/level" in cur.stats()
    q = first(cur, "train")[0]
    assert q.meta["digits"] == 1 and cur.verify(q, f"\\boxed{{{q.answer}}}").correct


# ---- specs and errors


def test_spec_forms():
    assert parse_prompt_spec("prompt:format=boxed,shots=2:arithmetic:digits=2") == (
        {"format": "boxed", "shots": 2}, "arithmetic:digits=2")
    env = make_env("prompt:format=boxed,shots=2,system=Be brief.:arithmetic:digits=2")
    assert (env.answer_format, env.shots, env.system, env.name) == ("boxed", 2, "Be brief.", "arithmetic")
    assert env.env.digits == 2
    env = make_env({"name": "prompt", "format": "answer_is", "env": {"name": "countdown", "count": 3}})
    assert env.answer_format == "answer_is" and env.env.count == 3


def test_with_prompting():
    assert with_prompting("arithmetic") == "arithmetic"
    assert with_prompting({"name": "countdown"}, "hashes", None, 0) == {"name": "countdown"}
    spec = with_prompting("arithmetic:digits=2", answer_format="boxed", system_prompt="Be brief.", few_shot=2)
    assert spec == {"name": "prompt", "format": "boxed", "system": "Be brief.", "shots": 2,
                    "env": "arithmetic:digits=2"}
    env = make_env(spec)
    assert (env.answer_format, env.system, env.shots, env.env.digits) == ("boxed", "Be brief.", 2, 2)
    assert make_env(with_prompting("arithmetic", few_shot=1)).answer_format == "hashes"
    with pytest.raises(ValueError, match="'answer_format'.*valid"):
        with_prompting("arithmetic", answer_format="xml")
    with pytest.raises(ValueError, match="'few_shot' must be an int >= 0"):
        with_prompting("arithmetic", few_shot=-1)


@pytest.mark.parametrize("spec, message", [
    ("prompt:format=xml:arithmetic", r"unknown answer format 'xml' \(key 'format'\); valid: \['answer_is', 'boxed'"),
    ("prompt:shots=-1:arithmetic", "'shots' must be an int >= 0"),
    ("prompt:shots=two:arithmetic", "bad value 'two' for 'shots'"),
    ("prompt:arithmetic", "expected prompt:format=F"),
    ("prompt:fmt=boxed:arithmetic", "prompt takes format=, system=, shots="),
    ({"name": "prompt", "format": "boxed"}, "needs 'env'"),
    ({"name": "prompt", "fmt": "boxed", "env": "arithmetic"}, r"unknown key\(s\) \['fmt'\]"),
    ("prompt:format=boxed:pyfunc", r"format 'boxed' cannot be used with \['pyfunc'\].*must be 'hashes'"),
    ({"name": "prompt", "format": "answer_is", "env": {"name": "lenient", "hole": "trust_output", "env": "pyfunc"}},
     "cannot be used with"),
    ("prompt:format=boxed:prompt:shots=1:arithmetic", "has a prompt: wrapper already"),
])
def test_bad_specs_fail_naming_the_key(spec, message):
    with pytest.raises(ValueError, match=message):
        make_env(spec)


def test_code_envs_keep_hashes():
    env = make_env("prompt:shots=1:pyfunc")
    p = first(env)[0]
    assert env.answer_format == "hashes" and p.prompt[1]["content"].startswith("#### ```python")


def test_an_unknown_marker_sentence_fails_naming_the_env():
    env = make_env({"name": "prompt", "format": "boxed",
                    "env": {"name": "arithmetic", "template": "Compute {expr}. Put #### before the result."}})
    with pytest.raises(ValueError, match="env 'arithmetic' asks for #### in a sentence the 'boxed' rewrite"):
        first(env)
    with pytest.raises(ValueError, match="already have a system message"):
        first(Prompted(_WithSystem(), "hashes", system="Another."))


class _WithSystem(Arithmetic):
    def make(self, rng):
        p = super().make(rng)
        return type(p)(id=p.id, prompt=[{"role": "system", "content": "Mine."}, {"role": "user", "content": p.prompt}],
                       answer=p.answer, env=p.env, meta=p.meta)


def test_think():
    fmt = get_format("think")
    ok = "<think>\n3 + 4 is 7\n</think>\nSo #### 7"
    assert fmt.extract(ok) == ("7", NONE) and fmt.extract(fmt.render("7")) == ("7", NONE)
    assert fmt.extract("#### 7") == (None, frozenset({"think_missing"}))
    assert fmt.extract("<think>\n#### 7") == (None, frozenset({"think_unclosed"}))
    assert fmt.extract("<think><think>x</think>\n#### 7</think>") == (None, frozenset({"think_nested"}))
    assert fmt.extract("<think>\n#### 7\n</think>") == (None, frozenset({"no_answer", "answer_in_think"}))
    assert fmt.extract("<think>a</think>\n<think>b</think>\n#### 7")[0] is None  # which block was the thinking?
    assert fmt.extract("</think><think>a</think>\n#### 7")[0] is None
    assert fmt.extract("<think>\n#### 7\n</think>\n#### 8") == ("8", NONE)  # only what follows the thinking counts
    assert "<think>" in fmt.instruction("the result") and "####" in fmt.instruction("the result")


def test_think_format_reward():
    env = make_env("prompt:format=think,format_reward=0.1:arithmetic")
    p = first(env)[0]
    assert "<think>" in p.prompt and "####" in p.prompt
    gold = env.verify(p, f"<think>\nwork\n</think>\n#### {p.answer}")
    wrong = env.verify(p, f"<think>\nwork\n</think>\n#### {p.answer + 1}")
    missing = env.verify(p, f"#### {p.answer}")
    assert (gold.reward, gold.correct) == (1.0, True)
    assert (wrong.reward, wrong.correct) == (pytest.approx(0.1), False)
    assert (missing.reward, missing.flags) == (0.0, frozenset({"think_missing"}))
    # --format_reward on its own, in the default format: credit for a readable #### answer.
    hashes = make_env(with_prompting("arithmetic", format_reward=0.25))
    assert hashes.verify(p, f"#### {p.answer + 1}").reward == pytest.approx(0.25)
    assert hashes.verify(p, "no answer").reward == 0.0
    for bad in (1.0, -0.1, "x"):
        with pytest.raises(ValueError, match="format_reward"):
            make_env({"name": "prompt", "format": "think", "format_reward": bad, "env": "arithmetic"})


def test_audit_probes_think_and_allows_the_format_credit():
    from rlvr.verify.probes import run_audit

    for spec in ("prompt:format=think:arithmetic", "prompt:format=think,format_reward=0.2:countdown"):
        rows = {r["probe"]: r for r in run_audit(make_env(spec), n_problems=10)}
        assert {"answer_in_think_only", "think_unclosed", "think_nested", "think_then_wrong"} <= set(rows)
        assert list(rows)[-1] == "gold (control)" and all(r["ok"] for r in rows.values()), rows
