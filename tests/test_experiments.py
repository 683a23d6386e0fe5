"""The comparison experiments end to end (slow: `make test-slow`, kept out of CI)."""

import json

import pytest

from rlvr.experiments import ceiling


@pytest.mark.slow
def test_ceiling_experiment_runs_every_stage(tmp_path):
    out = ceiling.main(ceiling.CeilingConfig(run_dir=str(tmp_path / "c"), teacher_max_steps=5, distill_problems=40,
                                             k=2, sft_epochs=1, rl_steps=2, eval_problems=20, eval_samples=2))
    names = {"base", "teacher", "student (none)", "student (correct)", "student (none) + RL", "student (correct) + RL"}
    assert set(out["results"]) == names
    assert json.loads((tmp_path / "c" / "results.json").read_text())["results"].keys() == names
    assert out["results"]["student (none)"]["generated_tokens"] > 0
