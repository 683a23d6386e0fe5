"""Off-policy corrections: hand-computed weights and dropped tokens, the on-policy identity,
zero gradients, and a batch cut into micro-batches getting the whole batch's gradient."""

import math

import pytest
import torch

from rlvr.algos.losses import AGG_WEIGHT, AGGREGATIONS, LOSSES, LossConfig
from rlvr.algos.offpolicy import OFFPOLICY


def _case():
    # Two sequences of three tokens; the last token of the second is padding.
    behaviour = torch.log(torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.5, 0.9]]))
    current = torch.log(torch.tensor([[0.5, 0.4, 0.1], [0.3, 0.5, 0.3]]))
    proximal = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]))
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    return current, behaviour, proximal, mask


def test_weights_and_masks_by_hand():
    cur, beh, prox, mask = _case()
    tis = OFFPOLICY["tis"](cur, beh, prox, mask, 1.5)
    # pi/pi_b = 1, 2, 0.25 | 3, 1, (pad) -> capped at 1.5
    assert tis.weights[0].tolist() == pytest.approx([1.0, 1.5, 0.25])
    assert tis.weights[1, :2].tolist() == pytest.approx([1.5, 1.0])
    assert torch.equal(tis.anchor, cur) and tis.metrics["is_clipped"] == pytest.approx(2 / 5)
    seq = OFFPOLICY["seq_tis"](cur, beh, prox, mask, 4.0)
    # products over trained tokens: 1 * 2 * 0.25 = 0.5 and 3 * 1 = 3 (the padding ignored)
    assert seq.weights[0].tolist() == pytest.approx([0.5] * 3) and seq.weights[1].tolist() == pytest.approx([3.0] * 3)
    m = OFFPOLICY["mask"](cur, beh, prox, mask, 1.6)
    # pi_prox/pi_b = 1, 1.5, 0.5 | 1, 1.2 -> 0.5 < 1/1.6 is dropped (weight 0)
    assert m.weights[0].tolist() == [1.0, 1.0, 0.0] and m.weights[1, :2].tolist() == [1.0, 1.0]
    assert torch.equal(m.anchor, beh) and m.metrics["is_masked"] == pytest.approx(1 / 5)
    dec = OFFPOLICY["decoupled"](cur, beh, prox, mask, 1.4)
    # the same ratios as weights; 1.5 > 1.4 is dropped, not capped (AReaL's behav_imp_weight_cap)
    assert dec.weights[0].tolist() == pytest.approx([1.0, 0.0, 0.5]) and torch.equal(dec.anchor, prox)
    assert dec.weights[1, :2].tolist() == pytest.approx([1.0, 1.2]) and dec.metrics["is_masked"] == pytest.approx(1 / 5)
    none = OFFPOLICY["none"](cur, beh, prox, mask, 2.0)
    assert torch.equal(none.anchor, beh) and none.weights.eq(1).all() and none.metrics["is_ess"] == 1.0
    # ESS of tis's trained weights (1, 1.5, 0.25, 1.5, 1): (sum w)^2 / (n * sum w^2)
    w = [1.0, 1.5, 0.25, 1.5, 1.0]
    assert tis.metrics["is_ess"] == pytest.approx(sum(w) ** 2 / (5 * sum(x * x for x in w)))
    # k3 of KL(pi_b || pi): mean of r - 1 - log r over trained tokens, r = pi / pi_b
    r = [1.0, 2.0, 0.25, 3.0, 1.0]
    assert none.metrics["behaviour_kl"] == pytest.approx(sum(x - 1 - math.log(x) for x in r) / 5, rel=1e-5)


@pytest.mark.parametrize("name", sorted(OFFPOLICY))
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_on_policy_each_correction_is_the_on_policy_loss(name, loss):
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    ids = torch.randint(0, 5, (3, 4))
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    adv = torch.tensor([0.7, -0.3, 1.2])
    cfg = LossConfig(clip_low=0.2, clip_high=0.28)

    def run(correction):
        leaf = logits.clone().requires_grad_(True)
        logp = torch.log_softmax(leaf, -1).gather(-1, ids[..., None]).squeeze(-1)
        same = logp.detach().clone()
        off = correction(logp, same, same, mask, 2.0)
        value, _ = LOSSES[loss](logp, off.anchor, adv, mask, cfg, None, off.weights)
        value.backward()
        return float(value.detach()), leaf.grad

    plain_leaf = logits.clone().requires_grad_(True)
    logp = torch.log_softmax(plain_leaf, -1).gather(-1, ids[..., None]).squeeze(-1)
    expected, _ = LOSSES[loss](logp, logp.detach(), adv, mask, cfg)
    expected.backward()
    value, grad = run(OFFPOLICY[name])
    assert value == pytest.approx(float(expected.detach()), abs=1e-6)
    assert torch.allclose(grad, plain_leaf.grad, atol=1e-6)


def test_masked_tokens_get_no_gradient():
    cur, beh, prox, mask = _case()
    leaf = cur.clone().requires_grad_(True)
    off = OFFPOLICY["mask"](leaf, beh, prox, mask, 1.6)
    loss, _ = LOSSES["ppo_clip"](leaf, off.anchor, torch.tensor([1.0, -1.0]), mask, LossConfig(), None, off.weights)
    loss.backward()
    assert leaf.grad[0, 2] == 0 and leaf.grad[1, 2] == 0  # masked by the correction, and padding
    assert leaf.grad[0, 0] != 0 and leaf.grad[1, 1] != 0


def test_bad_caps_and_a_missing_proximal_say_so():
    cur, beh, _, mask = _case()
    with pytest.raises(ValueError, match="cap must be > 1"):
        OFFPOLICY["tis"](cur, beh, None, mask, 1.0)
    with pytest.raises(ValueError, match="proximal"):
        OFFPOLICY["decoupled"](cur, beh, None, mask, 2.0)


def test_decoupled_with_one_update_per_step_is_token_is_without_the_far_tokens():
    # With one optimizer update per step the proximal policy is the current one (the
    # trainer passes the current log-probs), so PPO's ratio against it is 1, its clip
    # never acts, and decoupled PPO is token-level importance sampling with the tokens
    # whose weight exceeds the cap dropped, where `tis` caps them.
    cur, beh, _, mask = _case()
    dec = OFFPOLICY["decoupled"](cur, beh, cur.detach(), mask, 2.0)
    tis = OFFPOLICY["tis"](cur, beh, None, mask, 2.0)
    far = torch.exp(cur - beh) > 2.0
    assert torch.equal(dec.anchor, tis.anchor) and far.any() and (~far).any()
    assert torch.equal(dec.weights[~far], tis.weights[~far]) and dec.weights[far].eq(0).all()


def test_gspo_one_clipped_ratio_per_sequence_by_hand():
    cur, beh, prox, mask = _case()
    g = OFFPOLICY["gspo"](cur, beh, prox, mask, 2.0)
    # pi/pi_b = 1, 2, 0.25 -> s = (1 * 2 * 0.25) ** (1/3) = 2 ** (-1/3); 3, 1 (padding ignored) -> s = sqrt(3)
    s = torch.exp(cur - g.anchor)
    assert s[0].tolist() == pytest.approx([2 ** (-1 / 3)] * 3) and s[1].tolist() == pytest.approx([3 ** 0.5] * 3)
    assert g.weights.eq(1).all()
    # PPO's clip (0.2) on s, advantages +1: sqrt(3) > 1.2 clips the whole second sequence; the
    # first (s < 1, pushed up) is not clipped, each token's gradient s * A / (|y| * B) = s / 6.
    leaf = cur.clone().requires_grad_(True)
    g = OFFPOLICY["gspo"](leaf, beh, prox, mask, 2.0)
    loss, metrics = LOSSES["ppo_clip"](leaf, g.anchor, torch.tensor([1.0, 1.0]), mask,
                                       LossConfig(agg="seq_mean_token_mean"), None, g.weights)
    loss.backward()
    assert leaf.grad[0].tolist() == pytest.approx([-(2 ** (-1 / 3)) / 6] * 3)
    assert leaf.grad[1].eq(0).all() and metrics["clip_frac"] == pytest.approx(2 / 5)


def test_m2po_drops_the_largest_squared_log_ratios_until_the_mean_is_under_the_threshold():
    cur, beh, prox, mask = _case()
    # log(pi_prox/pi_b)^2: 0, log(1.5)^2 = 0.164, log(0.5)^2 = 0.480 | 0, log(1.2)^2 = 0.0332.
    # Means of the smallest m: 0, 0, 0.0111, 0.0494, 0.136.
    keep_all = OFFPOLICY["m2po"](cur, beh, prox, mask, 2.0)  # (log 2)^2 = 0.48 > 0.136
    assert keep_all.weights.eq(1).all() and keep_all.metrics["is_masked"] == 0 and torch.equal(keep_all.anchor, beh)
    one = OFFPOLICY["m2po"](cur, beh, prox, mask, 1.3)  # (log 1.3)^2 = 0.0688: drop the 0.480
    assert one.weights[0].tolist() == [1.0, 1.0, 0.0] and one.weights[1, :2].tolist() == [1.0, 1.0]
    two = OFFPOLICY["m2po"](cur, beh, prox, mask, 1.2)  # 0.0332: drop 0.480, then 0.164 (0.0494 still over)
    assert two.weights[0].tolist() == [1.0, 0.0, 0.0] and two.weights[1, :2].tolist() == [1.0, 1.0]
    assert two.metrics["is_masked"] == pytest.approx(2 / 5)
    # Without a proximal the current policy is read: pi/pi_b = 1, 2, 0.25 | 3, 1; (log 1.3)^2 keeps the two 1s.
    alone = OFFPOLICY["m2po"](cur, beh, None, mask, 1.3)
    assert alone.weights[0].tolist() == [1.0, 0.0, 0.0] and alone.weights[1, :2].tolist() == [0.0, 1.0]


# M2PO's trust region is a mean over the tokens it sees: a micro-batch's, not the batch's.
@pytest.mark.parametrize("name", sorted(set(OFFPOLICY) - {"m2po"}))
@pytest.mark.parametrize("agg", sorted(AGGREGATIONS))
def test_micro_batches_get_the_whole_batch_gradient(name, agg):
    """The trainer weighs each micro-batch's loss by its share of what the aggregation
    divides by, counted on the batch's own mask before any correction (rl_update.train_on): a
    correction that drops tokens must not change that count, or a micro-batch with many
    dropped tokens would weigh its survivors up."""
    torch.manual_seed(1)
    logits = torch.randn(4, 6, 5)
    ids = torch.randint(0, 5, (4, 6))
    mask = torch.tensor([[1.0] * 6, [1.0] * 6, [1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]])
    beh = torch.log_softmax(logits + 2.0 * torch.randn(4, 6, 5), -1).gather(-1, ids[..., None]).squeeze(-1)
    adv = torch.tensor([0.5, -1.0, 1.5, -0.25])
    cfg = LossConfig(agg=agg, max_tokens=6)

    def grad(rows_per_micro):
        leaf = logits.clone().requires_grad_(True)
        logp = torch.log_softmax(leaf, -1).gather(-1, ids[..., None]).squeeze(-1)
        total = AGG_WEIGHT[agg](mask)
        for rows in rows_per_micro:
            lp, m = logp[rows], mask[rows]
            off = OFFPOLICY[name](lp, beh[rows], lp.detach(), m, 1.5)
            loss, _ = LOSSES["ppo_clip"](lp, off.anchor, adv[rows], m, cfg, None, off.weights)
            (loss * AGG_WEIGHT[agg](m) / total).backward(retain_graph=True)
        return leaf.grad

    whole = grad([[0, 1, 2, 3]])
    assert whole.abs().sum() > 0
    assert torch.allclose(grad([[0, 1], [2, 3]]), whole, atol=1e-6)
    assert torch.allclose(grad([[0], [1, 2], [3]]), whole, atol=1e-6)
