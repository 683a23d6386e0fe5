"""DAPO's length handling: the soft overlong punishment and overlong filtering, by hand."""

import copy

import pytest
import torch

from conftest import GradCapture
from rlvr.algos import compute_advantages, mask_truncated, overlong_penalty
from rlvr.engine import TorchEngine
from rlvr.envs import make_env
from rlvr.models import build_tiny_model
from rlvr.models.forward import parts_of
from rlvr.train import rl, rl_update
from rlvr.train.rollouts.producer import Producer
from rlvr.types import Problem, Rollout, Sample, Sampling, Verdict

ENV = {"name": "arithmetic", "digits": 2, "ops": ["add"], "template": "{expr}"}


def test_overlong_penalty_by_hand():
    lengths = torch.tensor([[10, 12, 13, 14, 16, 20]])
    got = overlong_penalty(lengths, max_len=16, buffer=4)  # the ramp starts after 12 tokens
    assert got.tolist() == [[0.0, 0.0, -0.25, -0.5, -1.0, -1.0]]
    assert overlong_penalty(lengths, 16, 0).tolist() == [[0.0] * 6]
    with pytest.raises(ValueError, match="buffer 17"):
        overlong_penalty(lengths, 16, 17)


def _rollout(lengths, rewards, truncated):
    p = Problem(id="p", prompt="1+1", answer=2, env="arithmetic")
    samples = [Sample(p, [1], [2] * n, [-0.1] * n, 0, "length" if t else "stop") for n, t in zip(lengths, truncated)]
    verdicts = [Verdict(r, r > 0, None, frozenset({"truncated"}) if t else frozenset()) for r, t in zip(rewards, truncated)]
    return Rollout(p, samples, verdicts)


def test_the_penalty_enters_the_advantages_after_the_noise_correction():
    r = _rollout([4, 14, 16], [1.0, 1.0, 0.0], [False, False, True])
    compute_advantages([r], "dr_grpo", max_len=16, overlong_buffer=4)
    shaped = [1.0, 0.5, -1.0]  # rewards plus 0, -0.5, -1
    mean = sum(shaped) / 3
    assert r.advantages == pytest.approx([x - mean for x in shaped])
    plain = _rollout([4, 14, 16], [1.0, 1.0, 0.0], [False, False, True])
    compute_advantages([plain], "dr_grpo", max_len=16, overlong_buffer=0)
    assert plain.advantages == pytest.approx([1 / 3, 1 / 3, -2 / 3])


def test_mask_truncated_zeroes_only_cut_samples():
    r = _rollout([4, 16, 16], [1.0, 0.0, 0.0], [False, True, True])
    assert mask_truncated([r]) == 2
    assert r.samples[0].mask() == [1] * 4 and r.samples[1].mask() == r.samples[2].mask() == [0] * 16


def test_a_truncated_sample_adds_no_gradient():
    """With overlong filtering, the gradient is the one of the batch without the cut
    samples' losses (their rewards still set the group baseline)."""
    model, tok = build_tiny_model("micro", seed=5)
    producer = Producer(TorchEngine(model, tok), make_env(ENV), prompts=2, group_size=4,
                        sampling=Sampling(max_new_tokens=6, seed=2))
    rollouts = producer.produce(0).rollouts
    for r in rollouts:  # sample 0 right, 1 cut, 2-3 wrong
        r.verdicts = [Verdict(1.0, True), Verdict(0.0, False, None, frozenset({"truncated"})),
                      Verdict(0.0, False), Verdict(0.0, False)]
    cfg = rl.RLConfig(model="x", env=ENV, max_new_tokens=6, mask_truncated=True, loss="reinforce", agg="token_mean")

    # Masked: the cut samples' tokens leave the loss; compare with a hand-made mask.
    masked_rollouts = copy.deepcopy(rollouts)
    for r in masked_rollouts:
        r.samples[1].loss_mask = [0] * len(r.samples[1].completion_ids)
    m1 = copy.deepcopy(model).train()
    opt1 = GradCapture(m1.parameters())
    out = rl_update.train_on(copy.deepcopy(rollouts), m1, parts_of(m1), None, opt1, cfg, tok.pad_token_id)
    assert out["masked_truncated"] == pytest.approx(2 / 8)
    m2 = copy.deepcopy(model).train()
    opt2 = GradCapture(m2.parameters())
    rl_update.train_on(masked_rollouts, m2, parts_of(m2), None, opt2, cfg.model_copy(update={"mask_truncated": False}),
                       tok.pad_token_id)
    for a, b in zip(opt1.grads, opt2.grads):
        assert torch.allclose(a, b, atol=1e-7)
    m3 = copy.deepcopy(model).train()
    opt3 = GradCapture(m3.parameters())
    rl_update.train_on(copy.deepcopy(rollouts), m3, parts_of(m3), None, opt3,
                       cfg.model_copy(update={"mask_truncated": False}), tok.pad_token_id)
    assert any(not torch.allclose(a, b) for a, b in zip(opt1.grads, opt3.grads))  # the mask mattered


def test_bad_length_and_noise_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="overlong_buffer 40 is longer than max_new_tokens 32"):
        rl.RLConfig(model="x", env=ENV, max_new_tokens=32, overlong_buffer=40)
    with pytest.raises(ValueError, match="noise_fp \\+ noise_fn"):
        rl.RLConfig(model="x", env=ENV, reward_correction="backward", noise_fp=0.5, noise_fn=0.5)
