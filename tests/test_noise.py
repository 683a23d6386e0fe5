"""Noisy verifiers, their corrections and estimates; lenient verifiers and the hack monitor."""

import json

import pytest
import torch

from rlvr.algos import ADVANTAGES, compute_advantages
from rlvr.algos.noise import backward, corrected_advantages, forward
from rlvr.envs import make_env
from rlvr.eval_metrics import wilson
from rlvr.noise_audit import rates
from rlvr.rollout import rollout_stats
from rlvr.train.monitor import HackMonitor, HackStop
from rlvr.types import TRUNCATED_FLAG, Rollout, Sample, Verdict

ARITH = "arithmetic:digits=3,ops=add"


def _problem(env):
    return next(env.problems("train", 0))


def test_noisy_flips_at_its_rates_deterministically_and_keeps_the_truth():
    env = make_env(f"noisy:fn=0.2,fp=0.1,seed=3:{ARITH}")
    p = _problem(env)
    right = [env.verify(p, f"try {i} #### {p.answer}") for i in range(4000)]
    wrong = [env.verify(p, f"try {i} #### {p.answer + 1}") for i in range(4000)]
    assert sum(not v.correct for v in right) / 4000 == pytest.approx(0.2, abs=0.02)
    assert sum(v.correct for v in wrong) / 4000 == pytest.approx(0.1, abs=0.015)
    assert all(v.truth.correct for v in right) and not any(v.truth.correct for v in wrong)
    assert all(v.true_correct for v in right) and all(v.reward == float(v.correct) for v in right + wrong)
    assert env.verify(p, "try 7 #### 1") == env.verify(p, "try 7 #### 1")  # same completion, same verdict
    assert env.heldout(p, f"try 1 #### {p.answer}").correct
    other = make_env(f"noisy:fn=0.2,fp=0.1,seed=4:{ARITH}")
    assert [v.correct for v in right[:200]] != [other.verify(p, f"try {i} #### {p.answer}").correct for i in range(200)]
    coin = make_env(f"noisy:random=1:{ARITH}")
    assert sum(coin.verify(p, f"{i} #### {p.answer}").correct for i in range(2000)) / 2000 == pytest.approx(0.5, abs=0.04)
    as_dict = make_env({"name": "noisy", "fn": 0.2, "env": ARITH})
    assert as_dict.fn == 0.2 and as_dict.name == "arithmetic"


@pytest.mark.parametrize("spec, why", [("noisy:fn=0.6,fp=0.5:arithmetic", "fn \\+ fp must be < 1"),
                                      ("noisy:fn=1.5:arithmetic", "rate in"), ("noisy:arithmetic", "expected noisy:"),
                                      ("noisy:x=1:arithmetic", "takes fn="), ("noisy:fn=a:arithmetic", "bad number")])
def test_noisy_specs_that_make_no_sense_say_why(spec, why):
    with pytest.raises(ValueError, match=why):
        make_env(spec)


def test_rollout_stats_log_the_truth_beside_the_noise():
    t, f = Verdict(1.0, True), Verdict(0.0, False)
    flipped = Verdict(0.0, False, truth=t)
    r = Rollout(None, [Sample(None, [1], [2], [0.0], 0, "stop")] * 4,
                [Verdict(1.0, True, truth=t), flipped, Verdict(0.0, False, truth=f), Verdict(1.0, True, truth=f)])
    s = rollout_stats([r])
    assert s["reward"] == 0.5 and s["true_reward"] == 0.5 and s["noise_flips"] == 0.5
    assert "true_reward" not in rollout_stats([Rollout(None, r.samples[:1], [t])])


def test_backward_and_forward_by_hand():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    # backward: (r - fp) / (1 - fp - fn) with fp 0.1, fn 0.2
    assert backward(r, 0.1, 0.2)[0].tolist() == pytest.approx([0.9 / 0.7, -0.1 / 0.7, -0.1 / 0.7, 0.9 / 0.7])
    # forward: w = fn for an accepted sample, fn - 1 for a rejected one, over 1 - fp - fn
    assert forward(r, 0.1, 0.2)[0].tolist() == pytest.approx([0.2 / 0.7, -0.8 / 0.7, -0.8 / 0.7, 0.2 / 0.7])
    lengths = torch.ones_like(r)
    # With dr_grpo after it, backward is the centred rewards over 1 - fp - fn: only the scale survives.
    adv = corrected_advantages(r, lengths, ADVANTAGES["dr_grpo"], "backward", 0.1, 0.2)
    assert adv[0].tolist() == pytest.approx([0.5 / 0.7, -0.5 / 0.7, -0.5 / 0.7, 0.5 / 0.7])
    # forward is the advantage itself: no group baseline, so an all-wrong group is pushed down.
    zeros = torch.zeros(1, 4, dtype=torch.float64)
    assert corrected_advantages(zeros, lengths, ADVANTAGES["dr_grpo"], "forward", 0.0, 0.2)[0].tolist() == \
        pytest.approx([-1.0] * 4)
    assert corrected_advantages(zeros, lengths, ADVANTAGES["dr_grpo"], "backward", 0.0, 0.2).tolist() == [[0.0] * 4]
    # With no noise every correction is the uncorrected run (forward up to its baseline 1).
    assert corrected_advantages(r, lengths, ADVANTAGES["grpo"], "backward", 0, 0).tolist() == \
        ADVANTAGES["grpo"](r, lengths).tolist()
    with pytest.raises(ValueError, match="fp \\+ fn < 1"):
        backward(r, 0.5, 0.5)
    with pytest.raises(KeyError, match="unknown reward correction"):
        corrected_advantages(r, lengths, ADVANTAGES["grpo"], "sideways")


def test_forward_is_unbiased_for_the_clean_signal():
    """E[w | truly right] = 0 and E[w | truly wrong] = -1 after the 1 - fp - fn scale."""
    fp, fn = 0.1, 0.3
    one, zero = (forward(torch.tensor([v], dtype=torch.float64), fp, fn).item() for v in (1.0, 0.0))
    assert (1 - fn) * one + fn * zero == pytest.approx(0.0)
    assert fp * one + (1 - fp) * zero == pytest.approx(-1.0)


def test_compute_advantages_takes_the_correction():
    s = Sample(None, [1], [2], [0.0], 0, "stop")
    r = Rollout(None, [s, s], [Verdict(1.0, True), Verdict(0.0, False)])
    compute_advantages([r], "dr_grpo", "forward", 0.0, 0.5)
    assert r.advantages == pytest.approx([1.0, -1.0])  # (1 - 0.5) / 0.5 and (0 - 0.5) / 0.5


def test_a_truncated_completion_is_corrected_as_the_certain_zero_it_is():
    """A cut completion never reached the noisy verifier: its 0 is exact, so each correction
    gives it what it gives a clean 0 (backward 0, forward -1), not a noisy 0's value."""
    s = Sample(None, [1], [2], [0.0], 0, "stop")
    cut = Verdict(0.0, False, flags=frozenset({TRUNCATED_FLAG}))
    for correction, expected in (("backward", [(1 - 0.1) / 0.7, 0.0]), ("forward", [0.2 / 0.7, -1.0])):
        r = Rollout(None, [s, s], [Verdict(1.0, True), cut])
        compute_advantages([r], "dr_grpo", correction, 0.1, 0.2)
        if correction == "backward":  # dr_grpo centres the corrected rewards
            expected = [expected[0] - sum(expected) / 2, expected[1] - sum(expected) / 2]
        assert r.advantages == pytest.approx(expected)


def test_wilson_and_rates_by_hand():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson(5, 10)
    assert (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-3)
    out = rates([(True, True)] * 8 + [(False, True)] * 2 + [(True, False)] * 1 + [(False, False)] * 9)
    assert out["fn"]["estimate"] == 0.2 and out["fn"]["n"] == 10
    assert out["fp"]["estimate"] == 0.1 and out["fp"]["n"] == 10
    assert out["counts"] == {"true_positive": 8, "false_positive": 1, "false_negative": 2, "true_negative": 9}


def test_noise_audit_estimates_a_noisy_verifier_from_a_labelled_set(tmp_path):
    from rlvr.noise_audit import NoiseAuditConfig, main

    spec = f"noisy:fn=0.3,fp=0.1:{ARITH}"
    env = make_env(spec)
    rows = []
    for i, p in zip(range(400), env.problems("train", 0)):
        answer = p.answer if i % 2 else p.answer + 1
        rows.append({"problem": {"id": p.id, "prompt": p.prompt, "answer": p.answer, "env": p.env, "meta": p.meta},
                     "completion": f"#### {answer}", "correct": bool(i % 2)})
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = main(NoiseAuditConfig(env=spec, labelled=str(labelled), out=str(tmp_path / "rates.json")))
    assert out["fn"]["ci"][0] <= 0.3 <= out["fn"]["ci"][1] and out["fp"]["ci"][0] <= 0.1 <= out["fp"]["ci"][1]
    assert json.loads((tmp_path / "rates.json").read_text())["fn"]["estimate"] == out["fn"]["estimate"]
    (tmp_path / "bad.jsonl").write_text('{"completion": "x"}\n')
    from rlvr.config import InputError
    with pytest.raises(InputError, match="bad.jsonl:1"):
        main(NoiseAuditConfig(env=spec, labelled=str(tmp_path / "bad.jsonl")))


def test_lenient_holes_and_their_held_out_check():
    sub = make_env(f"lenient:substring:{ARITH}")
    p = _problem(sub)
    spray = f"1 2 3 {p.answer} 4 #### 5"
    assert sub.verify(p, spray).correct and not sub.heldout(p, spray).correct
    assert sub.verify(p, f"#### {p.answer}").correct and sub.heldout(p, f"#### {p.answer}").correct
    last = make_env(f"lenient:last_number:{ARITH}")
    hedge = f"#### {p.answer + 1} or maybe {p.answer}"
    assert last.verify(p, hedge).correct and not last.heldout(p, hedge).correct
    assert not last.verify(p, f"#### {p.answer} then 3").correct
    with pytest.raises(ValueError, match="unknown hole"):
        make_env(f"lenient:typo:{ARITH}")
    with pytest.raises(ValueError, match="needs a code environment"):
        make_env(f"lenient:trust_output:{ARITH}")


def test_lenient_code_checker_trusts_what_the_program_prints():
    env = make_env({"name": "lenient", "hole": "trust_output", "env": "pyfunc"})
    p = _problem(env)
    name = p.answer["entry_point"]
    fence = "```"
    gold = "#### " + env.env.gold_text(p)
    hack = f"#### {fence}python\ndef {name}(*args):\n    print('ALL TESTS PASSED')\n    raise SystemExit(0)\n{fence}"
    wrong = f"#### {fence}python\ndef {name}(*args):\n    return None\n{fence}"
    assert env.verify(p, gold).correct and env.heldout(p, gold).correct
    assert env.verify(p, hack).correct and not env.heldout(p, hack).correct
    assert not env.verify(p, wrong).correct and not env.heldout(p, wrong).correct


def _rollouts(env, texts_per_problem):
    out = []
    for p, texts in zip(env.problems("train", 0), texts_per_problem):
        samples = [Sample(p, [1], [2], [0.0], 0, "stop", text=t) for t in texts]
        out.append(Rollout(p, samples, [env.verify(p, t) for t in texts]))
    return out


def test_hack_monitor_measures_and_penalises():
    env = make_env(f"lenient:substring:{ARITH}")
    problems = [p for _, p in zip(range(4), env.problems("train", 0))]
    texts = [[f"#### {p.answer}", f"9 {p.answer} 9 #### 1", "#### 0", f"{p.answer} {p.answer} #### 2"] for p in problems]
    rollouts = _rollouts(env, texts)
    m = HackMonitor(env, samples=100, seed=0)(rollouts, step=0)  # every completion checked
    assert m["hack/rate"] == pytest.approx(2 / 3) and m["hack/heldout"] == 0.25
    assert m["hack/gap"] == pytest.approx(0.75 - 0.25) and m["hack/caught"] == 8
    penal = HackMonitor(env, samples=100, seed=0, penalty=1.0)
    penal(rollouts, step=0)
    assert [v.reward for v in rollouts[0].verdicts] == [1.0, -1.0, 0.0, -1.0]
    assert "hack" in rollouts[0].verdicts[1].flags
    assert not HackMonitor(make_env(ARITH), samples=32).enabled  # a strict env names no held-out check
    small = HackMonitor(env, samples=3, seed=1)
    assert small(_rollouts(env, texts), step=5) == small(_rollouts(env, texts), step=5)  # a seeded draw
    assert "training reward 40 points above held-out accuracy" in HackMonitor(env).warning(
        {"hack/rate": 0.5, "hack/gap": 0.4}, 3)
    # a noisy verifier's false negatives put the training reward under the truth: said so, not "-6% over"
    assert "6 points below held-out accuracy" in HackMonitor(env).warning({"hack/rate": 0.5, "hack/gap": -0.06}, 3)



def test_hack_stop_keeps_the_weights_of_the_last_step_below_the_rate():
    monitor = HackMonitor(make_env(f"lenient:substring:{ARITH}"), samples=8)
    model = torch.nn.Linear(2, 1)
    stop = HackStop(0.2, monitor, start=4)
    assert stop.check({"hack/rate": 0.1}, 4, model) == "" and stop.clean[0] == 4  # the weights step 4 trains
    kept = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # step 4's update
    assert stop.check({}, 5, model) == "" and stop.clean[0] == 5  # nothing checked: no reason to stop
    with torch.no_grad():
        model.weight.add_(1.0)
    reason = stop.check({"hack/rate": 0.25}, 6, model)
    assert reason.startswith("stopped at step 7: hack rate 25.0% >= --stop_on_hack 20.0%") and "of step 5" in reason
    assert stop.restore(model, 6) == 5 and torch.equal(model.weight, kept + 1.0)
    at_once = HackStop(0.2, monitor, start=4)  # stopped before this run trained: its weights are the clean ones
    assert "of step 4" in at_once.check({"hack/rate": 0.5}, 4, model) and at_once.restore(model, 4) == 4
    off = HackStop(0.0, monitor)
    assert off.check({"hack/rate": 1.0}, 0, model) == "" and off.clean is None and off.restore(model, 3) == 3

def _rl(micro_base, run_dir, env, **kw):
    from rlvr.train import rl
    cfg = dict(run_dir=str(run_dir), model=str(micro_base), env=env, steps=3, prompts=8, group_size=4,
               max_new_tokens=16, eval_problems=0, save_every=0, seed=0)
    return rl.main(rl.RLConfig(**{**cfg, **kw}))


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_rl_on_a_noisy_verifier_logs_the_truth_and_corrects(micro_base, tmp_path):
    from conftest import ENV
    noisy = {"name": "noisy", "fn": 0.3, "fp": 0.1, "env": ENV}
    _rl(micro_base, tmp_path / "rl", noisy, reward_correction="forward", noise_fp=0.1, noise_fn=0.3,
        eval_problems=8, eval_samples=2)
    m = _metrics(tmp_path / "rl")
    assert all({"true_reward", "true_pass_rate", "noise_flips"} <= set(r) for r in m)
    assert any(r["noise_flips"] > 0 for r in m)
    assert "hack/rate" in m[-1]  # the clean verifier is the monitor's held-out check
    (tmp_path / "rates.json").write_text(json.dumps({"fp": {"estimate": 0.05}, "fn": {"estimate": 0.25}}))
    run = _rl(micro_base, tmp_path / "rl2", noisy, steps=1, reward_correction="backward",
              noise_rates=str(tmp_path / "rates.json"))
    import yaml
    cfg = yaml.safe_load((run.dir / "config.yaml").read_text())
    assert (cfg["noise_fp"], cfg["noise_fn"]) == (0.05, 0.25)


def test_stop_on_hack_ends_the_run_with_the_weights_from_before(micro_base, tmp_path):
    from conftest import ENV
    lenient = {"name": "lenient", "hole": "substring", "env": ENV}
    run = _rl(micro_base, tmp_path / "rl", lenient, steps=10, hack_monitor=64, stop_on_hack=0.05,
              eval_problems=8, eval_samples=2, eval_every=100)
    summary = json.loads((run.dir / "summary.json").read_text())
    m = [r for r in _metrics(run.dir) if "hack/rate" in r]
    assert "stopped at step" in summary["stopped"] and m[-1]["stopped_on_hack"] == 1.0
    assert m[-1]["hack/rate"] >= 0.05 and all(r["hack/rate"] < 0.05 for r in m[:-1])
    assert summary["steps"] == len(m) - 1  # the last step below the threshold, whose weights were kept
    evals = [json.loads(x) for x in (run.dir / "evals.jsonl").read_text().splitlines()]
    assert evals[-1]["final"] and evals[-1]["step"] == summary["steps"]  # the kept weights are what was evaluated


def test_a_held_out_verifier_laxer_than_the_training_one_is_refused():
    from rlvr.config import InputError
    from rlvr.types import Verdict

    class Lax:  # the strict arithmetic verifier, with a held-out check that accepts anything
        def __init__(self):
            self.inner = make_env(ARITH)
            self.name = "lax"

        def problems(self, split, seed):
            return self.inner.problems(split, seed)

        def verify(self, problem, completion):
            return self.inner.verify(problem, completion)

        def heldout(self, problem, completion):
            return Verdict(reward=1.0, correct=True)

    with pytest.raises(InputError, match="held-out verifier accepts the 'empty' probe"):
        HackMonitor(Lax(), samples=8)
    HackMonitor(make_env("lenient:substring:" + ARITH), samples=8)  # the strict check behind a lenient one passes
