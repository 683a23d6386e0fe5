"""Smoke tests of the trainers on a tiny task: training moves the parameters and the reward.

A micro model is pretrained for a few seconds on worked 1-digit additions (70% of
them with a slip), then RL runs on held-in problems of the same task.
"""

import json
import shutil

import pytest
import torch

from rlvr.models import load_model
from rlvr.envs import make_env
from rlvr.train import pretrain, rl
from rlvr.run import last_model

from conftest import ENV, MICRO_BASE


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def base(micro_base):
    return micro_base


@pytest.mark.learning
def test_pretrain_learns_the_corpus(base):
    m = _metrics(base)
    summary = json.loads((base / "summary.json").read_text())
    assert summary["steps"] == m[-1]["step"] == MICRO_BASE["steps"] and summary["in_band"] is None  # no check
    assert m[-1]["loss"] < 0.1 * m[0]["loss"]
    model, tok = load_model(last_model(base))
    check = pretrain.Check(make_env(ENV), pretrain.PretrainConfig(run_dir="unused", **{**MICRO_BASE, "check_every": 50}))
    c = check(model, tok)
    # Seeds 0-4 on the native (AVX2) and ATEN_CPU_CAPABILITY=default paths: pass@16 0.875-1.0,
    # pass@1 0.26-0.40, greedy 0.0-0.41; loss 4.5 -> 0.27. A weak but real signal, not a solved task.
    assert c["check/pass@16"] >= 0.75 and 0.15 <= c["check/pass@1"] <= 0.6 and c["check/greedy"] <= 0.6, c
    assert (base / "checkpoints" / "last" / "trainer_state.pt").exists()


def _rl_cfg(base, run_dir, **kw):
    cfg = dict(run_dir=str(run_dir), model=str(base), env=ENV, steps=30, prompts=32, group_size=8,
               max_new_tokens=16, lr=5e-4, warmup=3, eval_problems=0, save_every=0, seed=0)
    return rl.RLConfig(**{**cfg, **kw})


def rl_gain(run_dir) -> tuple[float, float]:
    m = _metrics(run_dir)
    return sum(r["reward"] for r in m[:3]) / 3, sum(r["reward"] for r in m[-5:]) / 5


@pytest.mark.learning
def test_rl_raises_reward_and_moves_parameters(base, tmp_path):
    before = {k: v.clone() for k, v in load_model(last_model(base))[0].state_dict().items()}
    rl.main(_rl_cfg(base, tmp_path / "rl"))
    m = _metrics(tmp_path / "rl")
    first, last = rl_gain(tmp_path / "rl")
    # scripts/learning_margins.py, 5 base seeds x 2 RL seeds on each kernel path (native = AVX2
    # on the machine measured, and ATEN_CPU_CAPABILITY=default): +0.38 to +0.56; 20 of 20 pass at +0.25.
    # Measured before RL skipped the groups without a signal (the same gradient, summed in
    # another order, so runs land elsewhere); this seed passes on all three paths since.
    assert last > first + 0.25, (first, last)
    after = load_model(last_model(tmp_path / "rl"))[0].state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for key in ("reward", "pass_rate", "entropy", "approx_kl", "clip_frac", "response_len", "tokens_per_s", "step_time"):
        assert key in m[-1]


def test_rl_resumes_a_killed_run(base, tmp_path):
    run_dir = tmp_path / "rl"
    rl.main(_rl_cfg(base, run_dir, steps=4, save_every=2))
    # A kill after step 3 was logged but before step 4's checkpoint: only step_2 survives.
    shutil.rmtree(run_dir / "checkpoints" / "step_4")
    (run_dir / "checkpoints" / "last").unlink()
    with pytest.raises(FileExistsError):
        rl.main(_rl_cfg(base, run_dir, steps=6))
    rl.main(_rl_cfg(base, run_dir, steps=6, save_every=2, resume=True))
    steps = [r["step"] for r in _metrics(run_dir)]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "checkpoints" / "last" / "model" / "config.json").exists()


def test_rl_with_staleness_and_dynamic_sampling_runs(base, tmp_path):
    rl.main(_rl_cfg(base, tmp_path / "rl", steps=4, max_staleness=1, drop_uniform_groups=True,
                    advantage="grpo", mini_batches=2, kl_coef=0.05))
    m = _metrics(tmp_path / "rl")
    assert len(m) == 4 and all(r["staleness"] <= 1 for r in m)
    assert all("kl" in r for r in m if r["updates"])
