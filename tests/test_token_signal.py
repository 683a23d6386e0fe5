"""Per-token learning signals: a sequence's advantage is broadcast over its tokens, and a
per-token signal (a teacher's reverse KL) rides on each sample and reaches the loss,
the skipping of groups with nothing to learn, and --lr_by_signal."""

import copy

import pytest
import torch

from conftest import GradCapture
from rlvr.algos import LOSSES, LossConfig, compute_advantages
from rlvr.engine import TorchEngine
from rlvr.envs import make_env
from rlvr.models import build_tiny_model
from rlvr.models.forward import parts_of
from rlvr.train import rl, rl_update
from rlvr.train.batch import make_batch, policy_logprobs
from rlvr.train.rollouts.producer import Producer
from rlvr.types import Problem, Rollout, Sample, Sampling, Verdict

ENV = {"name": "arithmetic", "digits": 2, "ops": ["add", "sub"], "template": "{expr}"}


def _sample(comp, token_adv=None):
    return Sample(problem=None, prompt_ids=[5, 6], completion_ids=comp, logprobs=[-1.0] * len(comp),
                  policy_version=0, finish_reason="stop", token_advantages=token_adv)


def test_batch_broadcasts_the_sequence_advantage_and_adds_the_per_token_signal():
    problem = Problem("p", "q", 1, "arithmetic")
    r = Rollout(problem, [_sample([7, 8, 9]), _sample([7], [0.5])], [Verdict(1.0, True), Verdict(0.0, False)],
                advantages=[0.5, -0.5])
    batch = make_batch([r], pad_id=0)
    assert batch.advantages.tolist() == [[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]  # -0.5 + 0.5; padding 0
    assert batch.mask.tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_losses_take_per_token_advantages_and_a_broadcast_one_is_the_per_sequence_loss(loss):
    torch.manual_seed(0)
    logp = torch.randn(3, 4).clamp(max=-0.1).requires_grad_()
    old = logp.detach() + 0.05 * torch.randn(3, 4)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float)
    seq = torch.tensor([1.0, -0.5, 0.25])
    cfg = LossConfig(agg="token_mean")
    a, _ = LOSSES[loss](logp, old, seq, mask, cfg)
    b, _ = LOSSES[loss](logp, old, seq[:, None].expand(3, 4), mask, cfg)
    assert torch.equal(a, b)
    if loss == "reinforce":  # by hand: -sum(A_t * logp_t) over the mask / its count
        adv = torch.arange(12, dtype=torch.float).view(3, 4) / 10
        c, _ = LOSSES[loss](logp, old, adv, mask, cfg)
        assert torch.allclose(c, -(adv * logp * mask).sum() / mask.sum())


def _uniform_rollouts(model, tok):
    producer = Producer(TorchEngine(model, tok), make_env(ENV), prompts=4, group_size=4,
                        sampling=Sampling(max_new_tokens=6, seed=1))
    rollouts = producer.produce(0).rollouts
    for r in rollouts:  # every group all wrong: no reward signal at all
        r.verdicts = [Verdict(0.0, False)] * len(r.samples)
    return rollouts


def test_a_batch_with_equal_rewards_but_a_per_token_signal_trains_on_it():
    model, tok = build_tiny_model("micro", seed=3)
    rollouts = _uniform_rollouts(model, tok)
    cfg = rl.RLConfig(model="x", env=ENV, micro_batch=8, loss="reinforce", agg="token_mean")
    trained = copy.deepcopy(model).train()
    assert rl_update.train_on(rollouts, trained, parts_of(trained), None, GradCapture(trained.parameters()), cfg,
                              tok.pad_token_id)["updates"] == 0
    # A signal on the first group's tokens only: that group trains, the rest are skipped,
    # and --lr_by_signal counts it as a group with a signal.
    for s in rollouts[0].samples:
        s.token_advantages = [-0.1 * (t + 1) for t in range(len(s.completion_ids))]
    opt = GradCapture(trained.parameters())
    m = rl_update.train_on(rollouts, trained, parts_of(trained), None, opt, cfg, tok.pad_token_id)
    assert m["updates"] == 1 and m["signal"] == 0.25 and m["skipped_groups"] == 0.75
    # The gradient is the loss's over the whole batch with those per-token advantages.
    full = copy.deepcopy(model).train()
    compute_advantages(rollouts, cfg.advantage)
    batch = make_batch(rollouts, tok.pad_token_id)
    logp, _ = policy_logprobs(parts_of(full), batch)
    loss, _ = LOSSES["reinforce"](logp, batch.old_logp, batch.advantages, batch.mask, rl_update.loss_config(cfg))
    loss.backward()
    assert any(g.abs().sum() > 0 for g in opt.grads)
    for got, p in zip(opt.grads, full.parameters()):
        assert torch.allclose(got, p.grad, atol=1e-6)


def test_a_lone_sample_with_a_per_token_signal_is_not_dropped_for_want_of_a_baseline():
    model, tok = build_tiny_model("micro", seed=3)
    rollouts = _uniform_rollouts(model, tok)
    for r in rollouts:
        r.samples, r.verdicts = r.samples[:1], r.verdicts[:1]
        r.samples[0].token_advantages = [0.3] * len(r.samples[0].completion_ids)
    cfg = rl.RLConfig(model="x", env=ENV, advantage="rloo", loss="reinforce")
    trained = copy.deepcopy(model).train()
    m = rl_update.train_on(rollouts, trained, parts_of(trained), None, GradCapture(trained.parameters()), cfg,
                           tok.pad_token_id)
    assert m["updates"] == 1 and m["signal"] == 1.0
    assert all(r.advantages == [0.0] for r in rollouts)


def test_a_regime_with_a_per_token_signal_is_rl_with_its_own_learn(micro_base, tmp_path):
    """The seam on-policy distillation takes: RL's loop, each sample's tokens scored before the update."""
    import json

    from conftest import ENV as BASE_ENV

    class Scored(rl.RL):
        command = "scored"

        def learn(self, rollouts):
            for r in rollouts:
                for s in r.samples:  # where a teacher's log-prob minus the sample's would go
                    s.token_advantages = [-0.1] * len(s.completion_ids)
            return super().learn(rollouts)

    cfg = rl.RLConfig(run_dir=str(tmp_path / "scored"), model=str(micro_base), env=BASE_ENV, steps=2, prompts=4,
                      group_size=2, max_new_tokens=8, eval_problems=0, save_every=0)
    run = Scored(cfg).train()
    summary = json.loads((run.dir / "summary.json").read_text())
    assert summary["command"] == "scored" and summary["steps"] == 2
    rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["updates"] for r in rows] == [1, 1] and all(r["signal"] == 1.0 for r in rows)
    samples = [json.loads(line) for line in (run.dir / "samples.jsonl").read_text().splitlines()]
    assert samples and all(s["token_advantage_mean"] == pytest.approx(-0.1) for s in samples)
