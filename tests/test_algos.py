"""Advantage estimators and losses against numbers worked out by hand (arithmetic in comments)."""

import math

import pytest
import torch

from rlvr.algos import ADVANTAGES, AGGREGATIONS, LOSSES, LossConfig, compute_advantages
from rlvr.types import Problem, Rollout, Sample, Verdict


def close(x, expected, atol=1e-6):
    assert torch.allclose(torch.as_tensor(x, dtype=torch.float64),
                          torch.tensor(expected, dtype=torch.float64), atol=atol), (x, expected)


# ---------------------------------------------------------------- advantages

R = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
L = torch.tensor([[5, 3, 4, 6]])


def test_dr_grpo_is_reward_minus_mean():
    # mean 0.5
    close(ADVANTAGES["dr_grpo"](R, L), [[0.5, -0.5, -0.5, 0.5]])


def test_grpo_divides_by_unbiased_std():
    # deviations ±0.5, sum of squares 1, / (n-1)=3 -> std sqrt(1/3) = 0.577350
    # 0.5 / (0.577350 + 1e-4) = 0.865875
    close(ADVANTAGES["grpo"](R, L), [[0.865875, -0.865875, -0.865875, 0.865875]], atol=1e-5)
    # [3, 1, 2]: mean 2, deviations [1, -1, 0], var (1+1)/2 = 1 -> 1 / 1.0001 = 0.99990001
    close(ADVANTAGES["grpo"](torch.tensor([[3.0, 1.0, 2.0]]), L[:, :3]), [[0.99990001, -0.99990001, 0.0]])


def test_rloo_leaves_one_out():
    # r0=1: others {0,0,1} mean 1/3 -> 2/3; r1=0: others {1,0,1} mean 2/3 -> -2/3
    close(ADVANTAGES["rloo"](R, L), [[2 / 3, -2 / 3, -2 / 3, 2 / 3]])
    # [3, 1, 2]: 3-(1+2)/2 = 1.5, 1-(3+2)/2 = -1.5, 2-(3+1)/2 = 0
    close(ADVANTAGES["rloo"](torch.tensor([[3.0, 1.0, 2.0]]), L[:, :3]), [[1.5, -1.5, 0.0]])


def test_rloo_needs_two_samples_and_grpo_single_sample_is_zero():
    with pytest.raises(ValueError, match="rloo"):
        ADVANTAGES["rloo"](torch.tensor([[1.0]]), torch.tensor([[3]]))
    assert ADVANTAGES["grpo"](torch.tensor([[1.0]]), torch.tensor([[3]])).tolist() == [[0.0]]


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_constant_group_gets_exactly_zero(name):
    # 0.1 and 0.3 are not exact in binary: a naive r - mean could leave a residue
    rewards = torch.tensor([[0.1] * 7, [0.3] * 7, [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]])
    adv = ADVANTAGES[name](rewards, torch.ones(3, 7))
    assert (adv[:2] == 0).all()
    assert (adv[2] != 0).all()


def _rollout(pid, rewards):
    prob = Problem(id=pid, prompt="q", answer=None, env="t")
    samples = [Sample(prob, [1], [2] * (i + 1), [-0.1] * (i + 1), 0, "stop") for i in range(len(rewards))]
    return Rollout(prob, samples, [Verdict(reward=r, correct=r > 0) for r in rewards])


def test_compute_advantages_mixed_group_sizes():
    rs = [_rollout("a", [1.0, 0.0]), _rollout("b", [3.0, 1.0, 2.0]), _rollout("c", [1.0, 1.0])]
    out = compute_advantages(rs, "dr_grpo")
    assert out is rs
    close(rs[0].advantages, [0.5, -0.5])  # mean 0.5
    close(rs[1].advantages, [1.0, -1.0, 0.0])  # mean 2
    assert rs[2].advantages == [0.0, 0.0]
    assert all(isinstance(a, float) for a in rs[1].advantages)


def test_compute_advantages_unknown_name_lists_valid():
    with pytest.raises(KeyError, match="dr_grpo.*grpo.*rloo"):
        compute_advantages([_rollout("a", [1.0, 0.0])], "ppo")


# ---------------------------------------------------------------- losses


def _leaf(values):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def test_ppo_gradient_at_ratio_one_equals_reinforce():
    # d/dlogp of -ratio*A is -A*ratio = -A at ratio 1; token_mean over 4 tokens divides by 4:
    # A=1.5 -> -0.375, A=-0.5 -> 0.125, the REINFORCE gradient of -A*logp / 4
    expected = [[-0.375, -0.375], [0.125, 0.125]]
    adv, mask = torch.tensor([1.5, -0.5]), torch.ones(2, 2)
    for name in ["ppo_clip", "reinforce"]:
        logp = _leaf([[-1.0, -2.0], [-0.5, -3.0]])
        loss, _ = LOSSES[name](logp, logp.detach().clone(), adv, mask, LossConfig())
        loss.backward()
        close(logp.grad, expected)


def test_ppo_clipping_values_gradients_and_metrics():
    # ratios [1.5, 0.5, 0.5, 1.5], A [1, -1, 1, -1], one token each, clip 0.2:
    #  t0 A>0 ratio 1.5: min(1.5, 1.2) = 1.2 clipped  -> loss -1.2, grad 0
    #  t1 A<0 ratio 0.5: min(-0.5, -0.8) = -0.8 clipped -> loss 0.8, grad 0
    #  t2 A>0 ratio 0.5: min(0.5, 0.8) = 0.5 unclipped -> loss -0.5, grad -A*ratio/4 = -0.125
    #  t3 A<0 ratio 1.5: min(-1.5, -1.2) = -1.5       -> loss 1.5,  grad -A*ratio/4 = 0.375
    # token_mean: (-1.2 + 0.8 - 0.5 + 1.5) / 4 = 0.15
    old = torch.zeros(4, 1, dtype=torch.float64)
    logp = _leaf([[math.log(1.5)], [math.log(0.5)], [math.log(0.5)], [math.log(1.5)]])
    loss, m = LOSSES["ppo_clip"](logp, old, torch.tensor([1.0, -1.0, 1.0, -1.0]), torch.ones(4, 1), LossConfig())
    loss.backward()
    close(loss, 0.15)
    close(logp.grad, [[0.0], [0.0], [-0.125], [0.375]])
    assert (m["clip_frac_high"], m["clip_frac_low"], m["clip_frac"]) == (0.25, 0.25, 0.5)
    assert m["ratio_mean"] == pytest.approx(1.0) and m["ratio_max"] == pytest.approx(1.5)
    # k3(old||new) = 1/ratio + ln(ratio) - 1: ratio 1.5 -> 0.6666667 + 0.4054651 - 1 = 0.0721318,
    # ratio 0.5 -> 2 - 0.6931472 - 1 = 0.3068528; mean of two each = 0.1894923
    assert m["approx_kl"] == pytest.approx(0.1894923, abs=1e-6)
    assert m["pg_loss"] == pytest.approx(0.15) and m["loss"] == pytest.approx(0.15)
    assert "kl" not in m


def test_clip_higher_asymmetry():
    # ratio 1.25, A = 1: clip_high 0.2 caps at 1.2 (grad 0); 0.28 caps at 1.28, so 1.25 passes
    for clip_high, loss_val, grad, frac in [(0.2, -1.2, 0.0, 1.0), (0.28, -1.25, -1.25, 0.0)]:
        logp = _leaf([[math.log(1.25)]])
        loss, m = LOSSES["ppo_clip"](logp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0]),
                                     torch.ones(1, 1), LossConfig(clip_low=0.2, clip_high=clip_high))
        loss.backward()
        close(loss, loss_val)
        close(logp.grad, [[grad]])
        assert m["clip_frac_high"] == frac


@pytest.mark.parametrize("name", ["ppo_clip", "reinforce"])
def test_kl_penalty_value_and_gradient(name):
    # ref - logp = [ln 2, -ln 2]: k3 = e^d - d - 1 -> 2 - ln2 - 1 and 0.5 + ln2 - 1, mean exactly 0.25
    # A = 0 so the policy-gradient term is 0: loss = 0.1 * 0.25 = 0.025
    # d k3 / d logp = 1 - e^d -> [-1, 0.5]; * 0.1 / 2 tokens -> [-0.05, 0.025]
    logp = _leaf([[-1.0, -1.0]])
    ref = _leaf([[-1.0 + math.log(2), -1.0 - math.log(2)]])
    loss, m = LOSSES[name](logp, logp.detach().clone(), torch.tensor([0.0]), torch.ones(1, 2),
                           LossConfig(kl_coef=0.1), ref_logp=ref)
    loss.backward()
    close(loss, 0.025)
    assert m["kl"] == pytest.approx(0.25) and m["pg_loss"] == pytest.approx(0.0)
    close(logp.grad, [[-0.05, 0.025]])
    assert ref.grad is None


def test_kl_zero_when_ref_equals_policy_and_missing_ref_raises():
    logp = _leaf([[-1.0, -2.0]])
    cfg = LossConfig(kl_coef=0.5)
    loss, m = LOSSES["ppo_clip"](logp, logp.detach(), torch.tensor([2.0]), torch.ones(1, 2), cfg,
                                 ref_logp=logp.detach().clone())
    assert m["kl"] == 0.0
    close(loss, -2.0)  # -ratio*A = -2 per token, no KL added
    with pytest.raises(ValueError, match="ref_logp"):
        LOSSES["reinforce"](logp, logp.detach(), torch.tensor([1.0]), torch.ones(1, 2), cfg)


def test_gradient_flows_only_through_logp():
    logp, old, adv = _leaf([[-1.0, -2.0]]), _leaf([[-1.2, -1.9]]), _leaf([0.7])
    loss, _ = LOSSES["ppo_clip"](logp, old, adv, torch.ones(1, 2), LossConfig())
    loss.backward()
    assert logp.grad is not None and old.grad is None and adv.grad is None


def test_padding_with_inf_and_nan_stays_finite():
    logp = _leaf([[-1.0, float("-inf")]])
    old = torch.tensor([[-1.0, float("nan")]], dtype=torch.float64)
    for name in LOSSES:
        logp.grad = None
        loss, m = LOSSES[name](logp, old, torch.tensor([1.0]), torch.tensor([[1, 0]]), LossConfig())
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
        close(logp.grad, [[-1.0, 0.0]])  # only the real token, -A * ratio / 1
        assert all(math.isfinite(v) for v in m.values())


# ---------------------------------------------------------------- aggregations

LOSS_2x3 = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK_2x3 = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def test_aggregations_hand_example():
    cfg = LossConfig(max_tokens=4)
    # masked tokens 1, 2 | 4: three tokens summing to 7
    close(AGGREGATIONS["token_mean"](LOSS_2x3, MASK_2x3, cfg), 7 / 3)
    # per sequence (1+2)/2 = 1.5 and 4/1 = 4; mean 2.75
    close(AGGREGATIONS["seq_mean_token_mean"](LOSS_2x3, MASK_2x3, cfg), 2.75)
    # 7 / (B=2 * max_tokens=4) = 0.875
    close(AGGREGATIONS["seq_mean_token_sum_norm"](LOSS_2x3, MASK_2x3, cfg), 0.875)


def test_aggregations_empty_sequence_no_nan():
    loss = torch.tensor([[1.0, 2.0, 3.0], [float("nan"), 5.0, 6.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    cfg = LossConfig(max_tokens=3)
    close(AGGREGATIONS["token_mean"](loss, mask, cfg), 1.5)  # (1+2)/2
    close(AGGREGATIONS["seq_mean_token_mean"](loss, mask, cfg), 0.75)  # (1.5 + 0) / 2
    close(AGGREGATIONS["seq_mean_token_sum_norm"](loss, mask, cfg), 0.5)  # 3 / (2*3)
    for fn in AGGREGATIONS.values():
        assert fn(loss, torch.zeros(2, 3), cfg) == 0.0


def test_aggregation_choice_reaches_the_loss_and_errors():
    # reinforce at A=1 gives per-token loss -logp = LOSS_2x3, so each aggregation reappears
    logp = -LOSS_2x3.double()
    for agg, expected in [("token_mean", 7 / 3), ("seq_mean_token_mean", 2.75), ("seq_mean_token_sum_norm", 0.875)]:
        loss, _ = LOSSES["reinforce"](logp, logp, torch.ones(2), MASK_2x3, LossConfig(agg=agg, max_tokens=4))
        close(loss, expected)
    with pytest.raises(ValueError, match="max_tokens"):
        LOSSES["reinforce"](logp, logp, torch.ones(2), MASK_2x3, LossConfig(agg="seq_mean_token_sum_norm"))
    with pytest.raises(KeyError, match="token_mean"):
        LOSSES["ppo_clip"](logp, logp, torch.ones(2), MASK_2x3, LossConfig(agg="mean"))
