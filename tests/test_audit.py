"""Tests of rlvr.verify.probes: every registered environment resists the hack probes,
and the audit does catch verifiers that are deliberately weak.

The registry is looped over, so an environment added to ENVS is audited with no
change here.

Every answer format (rlvr.verify.formats) is audited on the procedural environments
through the `prompt:` wrapper.

Run: ``.venv/bin/python -m pytest tests/test_audit.py -q`` (CPU, seconds).
"""

import pytest

from rlvr.envs import ENVS, Arithmetic, Prompted, make_env, make_mixture
from rlvr.envs.guess import Guess, GuessEpisode
from rlvr.envs.tools import ToolEpisode, Tools
from rlvr.inspect_envs import AuditConfig, audit_main
from rlvr.types import MultiTurn, Problem, Step, Verdict
from rlvr.verify.episode_probes import EPISODE_GOLD, EPISODE_PROBES, TOOL_PROBES, run_episode_audit
from rlvr.verify.formats import FORMATS
from rlvr.verify.probes import GOLD, PROBES, format_audit, probe_completions, run_audit


def by_probe(rows):
    return {r["probe"]: r for r in rows}


@pytest.mark.parametrize("name", sorted(ENVS))
def test_every_probe_scores_zero(name):
    env = make_env(name)
    rows = run_audit(env, n_problems=30, seed=0)
    episodes = [p for p in EPISODE_PROBES if p not in TOOL_PROBES] + [EPISODE_GOLD]
    assert [r["probe"] for r in rows] == [*PROBES, GOLD] + (episodes if isinstance(env, MultiTurn) else [])
    assert all(r["problems"] == 30 for r in rows)
    # The control: gold answers score on every problem, so the zeros below mean something.
    assert all(r["ok"] for r in rows), "\n" + format_audit(rows)


def test_audit_through_a_mixture():
    rows = run_audit(make_mixture(sorted(ENVS)), n_problems=40, seed=1)
    assert all(r["ok"] for r in rows), "\n" + format_audit(rows)


def test_probe_completions():
    p = Problem(id="arithmetic/900-57", prompt="", answer=843, env="arithmetic")
    probes = probe_completions(Arithmetic(), p)
    assert list(probes) == list(PROBES) and probes == probe_completions(Arithmetic(), p)
    assert probes["empty"] == ""
    assert probes["cut_mid_answer"] == "#### 84"
    assert probes["several_answers"] == "#### 843\n#### 844\n#### 843"
    assert probes["all_options"] == "#### " + ", ".join(map(str, range(838, 849)))
    assert probes["grader_override"].endswith("#### 844") and "Grader" in probes["grader_override"]
    assert probes["gold_with_trailing_junk"] == "#### 843 junk"
    garbage = probes["garbage_in_format"]
    assert garbage.startswith("#### ") and garbage.count("####") == 1 and len(garbage) > 10


class SubstringArithmetic(Arithmetic):
    """Weak on purpose: any answer that contains the gold digits scores."""

    def check(self, problem, answer):
        ok = str(problem.answer) in answer
        return Verdict(reward=float(ok), correct=ok, parsed=answer)


class LastMarkerArithmetic(Arithmetic):
    """Weak on purpose: grades whatever follows the last ####, however many there are."""

    def verify(self, problem, completion):
        if "####" not in completion:
            return Verdict(reward=0.0, correct=False)
        return self.check(problem, completion.rsplit("####", 1)[1].strip())


class RejectAll(Arithmetic):
    def check(self, problem, answer):
        return Verdict(reward=0.0, correct=False)


class Crashes(Arithmetic):
    def check(self, problem, answer):
        if not answer.lstrip("-").isdigit():
            raise RuntimeError("cannot grade")
        return super().check(problem, answer)


def test_audit_catches_substring_verifier():
    rows = run_audit(SubstringArithmetic(), n_problems=10)
    row = by_probe(rows)["all_options"]
    assert row["rewarded"] == 10 and not row["ok"] and row["example"].startswith("'#### ")
    assert by_probe(rows)["gold_with_trailing_junk"]["rewarded"] == 10
    assert by_probe(rows)[GOLD]["ok"]
    table = format_audit(rows)
    assert "FAIL" in table and "all_options" in table


def test_audit_catches_last_marker_verifier():
    rows = by_probe(run_audit(LastMarkerArithmetic(), n_problems=10))
    assert rows["several_answers"]["rewarded"] == 10 and not rows["several_answers"]["ok"]


def test_audit_control_catches_a_verifier_that_rejects_everything():
    rows = by_probe(run_audit(RejectAll(), n_problems=5))
    assert all(rows[p]["ok"] for p in PROBES)
    assert rows[GOLD]["rewarded"] == 0 and not rows[GOLD]["ok"] and rows[GOLD]["example"] != ""


def test_audit_counts_verifier_crashes():
    rows = by_probe(run_audit(Crashes(), n_problems=5))
    assert rows["garbage_in_format"]["errors"] == 5 and not rows["garbage_in_format"]["ok"]
    assert "raised" in rows["garbage_in_format"]["example"]


def test_format_audit_is_a_plain_table():
    lines = format_audit(run_audit(make_env("arithmetic"), n_problems=3)).splitlines()
    assert len(lines) == 1 + len(PROBES) + 1
    assert lines[0].split() == ["env", "probe", "rewarded", "expected", "errors", "ok", "example"]
    assert lines[-1].split()[:3] == ["arithmetic", "gold", "(control)"] and "3/3" in lines[-1]


# ---- every answer format (rlvr.verify.formats) through the prompt: wrapper


PROCEDURAL = ("arithmetic", "countdown", "linear", "lists", "word_problems")


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("name", PROCEDURAL)
def test_every_probe_scores_zero_in_every_format(name, fmt):
    rows = run_audit(make_env(f"prompt:format={fmt}:{name}"), n_problems=30, seed=0)
    assert all(r["problems"] == 30 for r in rows)
    assert all(r["ok"] for r in rows), "\n" + format_audit(rows)


def test_audit_through_a_mixture_of_formats():
    env = make_mixture(["prompt:format=boxed:arithmetic", "prompt:format=answer_is,shots=1:countdown",
                        "lists", "noisy:fn=0,fp=0:prompt:format=boxed:linear"])
    rows = run_audit(env, n_problems=40, seed=1)
    assert all(r["ok"] for r in rows), "\n" + format_audit(rows)
    rows = run_audit(Prompted(make_mixture(list(PROCEDURAL)), "answer_is"), n_problems=40, seed=2)
    assert all(r["ok"] for r in rows), "\n" + format_audit(rows)


def test_probe_completions_are_written_in_the_format():
    p = Problem(id="arithmetic/900-57", prompt="", answer=843, env="arithmetic")
    boxed = probe_completions(Prompted(Arithmetic(), "boxed"), p)
    assert boxed["several_answers"] == "\\boxed{843}\n\\boxed{844}\n\\boxed{843}"
    assert boxed["cut_mid_answer"] == "\\boxed{84}" and boxed["gold_with_trailing_junk"] == "\\boxed{843 junk}"
    assert boxed["garbage_in_format"].startswith("\\boxed{") and boxed["garbage_in_format"].count("}") == 1
    said = probe_completions(Prompted(Arithmetic(), "answer_is"), p)
    assert said["all_options"] == "The answer is " + ", ".join(map(str, range(838, 849))) + "."
    assert said["grader_override"].endswith("The answer is 844.")


def test_audit_catches_a_weak_verifier_in_another_format():
    rows = by_probe(run_audit(Prompted(SubstringArithmetic(), "boxed"), n_problems=10))
    assert rows["all_options"]["rewarded"] == 10 and rows["all_options"]["example"].startswith("'\\\\boxed{")
    assert rows[GOLD]["ok"]


def test_rlvr_audit_runs_the_episode_probes_of_a_multi_turn_env_in_its_own_format(capsys):
    rows = audit_main(AuditConfig(env="tools:python:arithmetic:digits=1", problems=3))
    assert {r["format"] for r in rows} == {"hashes"} and {"forged_result", "void_turn"} <= {r["probe"] for r in rows}
    assert all(r["ok"] for r in rows) and "is multi-turn" in capsys.readouterr().out


def test_rlvr_audit_runs_every_format(capsys):
    rows = audit_main(AuditConfig(env="countdown", problems=5))
    extra = {f: len(getattr(FORMATS[f], "probes", lambda g, w: {})("1", "2")) for f in FORMATS}  # think's own
    assert [r["format"] for r in rows] == [f for f in FORMATS for _ in range(len(PROBES) + extra[f] + 1)]
    assert all(r["ok"] for r in rows)
    assert "format boxed:" in capsys.readouterr().out
    rows = audit_main(AuditConfig(env="prompt:format=answer_is:lists", problems=5))  # the spec's own format
    assert {r["format"] for r in rows} == {"answer_is"} and all(r["ok"] for r in rows)
    assert {r["format"] for r in audit_main(AuditConfig(env="arithmetic", problems=3, answer_format="boxed"))} == {
        "boxed"}


# ---- episode probes (rlvr.verify.episode_probes): multi-turn environments, through the rollout


def test_episode_probes_cover_the_tools_env_and_guess():
    rows = by_probe(run_audit(make_env("tools:calculator+python:arithmetic:digits=2"), n_problems=6))
    assert set(rows) == {*PROBES, GOLD, *EPISODE_PROBES, EPISODE_GOLD} and all(r["ok"] for r in rows.values())
    assert rows[EPISODE_GOLD]["rewarded"] == 6
    rows = by_probe(run_episode_audit(make_env("guess:max_turns=4"), n_problems=6))
    assert set(rows) == {"never_ends", "void_turn", "rambles", EPISODE_GOLD} and all(r["ok"] for r in rows.values())


def test_episode_audit_catches_an_episode_that_takes_a_forged_result(monkeypatch):
    monkeypatch.setattr("rlvr.envs.tools.FORGED", ())
    rows = by_probe(run_episode_audit(make_env("tools:calculator:arithmetic"), n_problems=4))
    assert rows["forged_result"]["rewarded"] == 4 and not rows["forged_result"]["ok"]
    assert rows["forged_result"]["example"].startswith("ended answer")


class ReadsTheCall(ToolEpisode):
    """Weak on purpose: a call whose argument is the gold counts as the answer."""

    def step(self, turn):
        if str(self.problem.answer) in turn.text and "<tool>" in turn.text:
            return Step(verdict=Verdict(1.0, True))
        return super().step(turn)


class VoidPays(GuessEpisode):
    """Weak on purpose: a turn without a guess wins."""

    def step(self, turn):
        return Step(verdict=Verdict(1.0, True)) if "####" not in turn.text else super().step(turn)


def test_episode_audit_catches_an_answer_read_from_a_tool_call_and_a_void_turn_that_pays(monkeypatch):
    monkeypatch.setattr(Tools, "episode", lambda self, problem: ReadsTheCall(self, problem))
    rows = by_probe(run_episode_audit(make_env("tools:calculator:arithmetic"), n_problems=4))
    assert rows["answer_in_call"]["rewarded"] == 4 and not rows["answer_in_call"]["ok"]
    monkeypatch.setattr(Guess, "episode", lambda self, problem: VoidPays(self, problem))
    rows = by_probe(run_episode_audit(make_env("guess"), n_problems=4))
    assert rows["void_turn"]["rewarded"] == 4 and rows["rambles"]["rewarded"] == 0  # a cut turn earns 0 regardless
    assert rows[EPISODE_GOLD]["ok"]
