"""Tests of rlvr.verify.probes: every registered environment resists the hack probes,
and the audit does catch verifiers that are deliberately weak.

The registry is looped over, so an environment added to ENVS is audited with no
change here.

Run: ``.venv/bin/python -m pytest tests/test_audit.py -q`` (CPU, well under a second).
"""

import pytest

from rlvr.envs import ENVS, Arithmetic, make_env, make_mixture
from rlvr.types import Problem, Verdict
from rlvr.verify.probes import GOLD, PROBES, format_audit, probe_completions, run_audit


def by_probe(rows):
    return {r["probe"]: r for r in rows}


@pytest.mark.parametrize("name", sorted(ENVS))
def test_every_probe_scores_zero(name):
    rows = run_audit(make_env(name), n_problems=30, seed=0)
    assert [r["probe"] for r in rows] == [*PROBES, GOLD]
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
