"""The comparison experiments end to end (slow: `make test-slow`, kept out of CI)."""

import json

import pytest

from rlvr.experiments import ceiling, regimes


@pytest.mark.slow
def test_ceiling_experiment_runs_every_stage(tmp_path):
    out = ceiling.main(ceiling.CeilingConfig(run_dir=str(tmp_path / "c"), teacher_max_steps=5, distill_problems=40,
                                             k=2, sft_epochs=1, rl_steps=2, eval_problems=20, eval_samples=2))
    names = {"base", "teacher", "student (none)", "student (correct)", "student (none) + RL", "student (correct) + RL"}
    assert set(out["results"]) == names
    assert json.loads((tmp_path / "c" / "results.json").read_text())["results"].keys() == names
    assert out["results"]["student (none)"]["generated_tokens"] > 0


@pytest.mark.slow
def test_regimes_experiment_runs_every_regime_to_the_budget(tmp_path):
    budget = 3e11
    out = regimes.main(regimes.RegimesConfig(run_dir=str(tmp_path / "r"), budget_flops=budget, teacher_steps=3,
                                             distill_problems=100, eval_problems=30, final_eval_samples=8,
                                             rs_problems=64, sft_eval_every=5, rl_eval_every=1))
    assert set(out["regimes"]) == {"zero RL", "best-of-N self-SFT", "distill (all)", "distill (correct)",
                                   "distill (correct) + RL"}
    for name, row in out["regimes"].items():
        assert budget <= row["flops"] < 1.5 * budget, name  # each stops at the budget (rs: at a round's end)
    assert (tmp_path / "r" / "report" / "report.html").exists()
    # A second call finds every stage done and only remakes the report.
    again = regimes.main(regimes.RegimesConfig(run_dir=str(tmp_path / "r"), budget_flops=budget, teacher_steps=3,
                                               distill_problems=100, eval_problems=30, final_eval_samples=8,
                                               rs_problems=64, sft_eval_every=5, rl_eval_every=1))
    assert again["regimes"] == out["regimes"]
