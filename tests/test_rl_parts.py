"""The RL loop's parts: trainer log-probs reproduce the engine's, the queue bounds staleness."""

import pytest
import torch

from rlvr.algos import compute_advantages
from rlvr.engine import TorchEngine
from rlvr.envs import make_env
from rlvr.models import build_tiny_model
from rlvr.models.forward import parts_of
from rlvr.rollout import generate_rollouts, rollout_stats, token_counts
from rlvr.train import rl_update
from rlvr.train.batch import make_batch, policy_logprobs
from rlvr.train.rollouts.producer import Producer
from rlvr.train.rollouts.queues import make_queue
from rlvr.types import Sample, Sampling, VerifierError

ENV = {"name": "arithmetic", "digits": 2, "ops": ["add", "sub"], "template": "{expr}"}


def _rollouts(model, tok, n_problems=3, n=4, temperature=0.8):
    env = make_env(ENV)
    it = env.problems("train", 0)
    problems = [next(it) for _ in range(n_problems)]
    rollouts = generate_rollouts(TorchEngine(model, tok), env, problems, n,
                                 Sampling(temperature=temperature, max_new_tokens=12, seed=1))
    return compute_advantages(rollouts, "grpo")


def test_trainer_logprobs_equal_engine_logprobs():
    model, tok = build_tiny_model("micro", seed=3)
    rollouts = _rollouts(model, tok)
    batch = make_batch(rollouts, tok.pad_token_id)
    assert batch.prompt_ids.shape[0] == 3 and batch.ids.shape[0] == 12  # one prompt row per group
    with torch.no_grad():
        logp, entropy = policy_logprobs(parts_of(model), batch, temperature=0.8)
    m = batch.mask.bool()
    assert torch.allclose(logp[m], batch.old_logp[m], atol=1e-4)
    assert (entropy[m] > 0).all()


def test_prefix_sharing_matches_unshared_gradients():
    model, tok = build_tiny_model("micro", seed=4)
    rollouts = _rollouts(model, tok, n_problems=2, n=3)
    batch = make_batch(rollouts, tok.pad_token_id)
    parts = parts_of(model)
    logp, _ = policy_logprobs(parts, batch, with_entropy=False)
    (logp * batch.mask).sum().backward()
    shared = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # The same completions, each in a batch of its own with its own copy of the prompt.
    singles = [type(r)(r.problem, [s], [v], [a]) for r in rollouts for s, v, a in zip(r.samples, r.verdicts, r.advantages)]
    total = 0
    for r in singles:
        b = make_batch([r], tok.pad_token_id)
        lp, _ = policy_logprobs(parts, b, with_entropy=False)
        total = total + (lp * b.mask).sum()
    total.backward()
    for g, p in zip(shared, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-5)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_each_pass_accumulates_its_own_gradient(monkeypatch, checkpoint):
    """The completions' gradient reaches `.grad` before the prompt's backward runs, not summed
    with it in autograd's buffer (a second copy of every gradient at the peak); the gradient
    is the same as through one joined graph, checkpointed or not."""
    import rlvr.train.batch as batch_mod

    model, tok = build_tiny_model("micro", seed=5)
    rollouts = _rollouts(model, tok, n_problems=2, n=3)
    batch = make_batch(rollouts, tok.pad_token_id)
    parts = parts_of(model, checkpoint=checkpoint)
    weight = model.model.layers[0].mlp.down_proj.weight
    arrivals = []
    weight.register_post_accumulate_grad_hook(lambda p: arrivals.append(p.grad.clone()))

    def grads() -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        arrivals.clear()
        for _ in range(2):  # two micro-batches' worth: the second accumulates into existing .grad
            logp, _ = policy_logprobs(parts, batch, with_entropy=False)
            (logp * batch.mask).sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    cut = grads()
    assert len(arrivals) == 4  # completions, then prompt, per backward
    assert not torch.equal(arrivals[0], arrivals[1])
    monkeypatch.setattr(batch_mod, "_cut", lambda tensors: tensors)  # one joined graph
    joined = grads()
    assert len(arrivals) == 2  # both passes summed first, then one accumulation
    for a, b in zip(cut, joined):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)


def test_backward_lets_go_of_the_prompt_pass():
    """After backward the boundary holds none of the prompt's outputs (they would live on with
    the loss, through the next micro-batch and the optimizer step); a second backward says why
    it cannot run instead of leaving the prompt's gradient out."""
    model, tok = build_tiny_model("micro", seed=5)
    batch = make_batch(_rollouts(model, tok, n_problems=2, n=3), tok.pad_token_id)
    logp, _ = policy_logprobs(parts_of(model), batch, with_entropy=False)
    loss = (logp * batch.mask).sum()
    seen, todo, boundary = set(), [loss.grad_fn], None
    while todo and boundary is None:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if type(node).__name__ == "_PromptBoundaryBackward":
            boundary = node
        todo.extend(n for n, _ in node.next_functions)
    assert boundary is not None and len(boundary.attached) == 1 + 2 * len(model.model.layers)
    loss.backward(retain_graph=True)
    assert boundary.attached is None
    with pytest.raises(RuntimeError, match="backs up once"):
        loss.backward()


class _CountingEngine:
    """Stands in for an engine: records the version each batch was generated with."""

    def __init__(self, inner):
        self.inner, self.tok, self.version, self.synced = inner, inner.tok, 0, []

    def generate(self, prompts, n, sampling):
        groups = self.inner.generate(prompts, n, sampling)
        for g in groups:
            for s in g:
                s.policy_version = self.version
        return groups

    def sync_weights(self, state, version, partial=False):
        self.version = version
        self.synced.append(version)


@pytest.mark.parametrize("staleness", [0, 1, 2])
def test_queue_bounds_staleness(staleness):
    model, tok = build_tiny_model("micro", seed=5)
    engine = _CountingEngine(TorchEngine(model, tok))
    producer = Producer(engine, make_env(ENV), prompts=2, group_size=2, sampling=Sampling(max_new_tokens=4))
    q = make_queue(producer, max_staleness=staleness)
    try:
        lags = []
        for step in range(5):
            batch = q.get(step)
            assert batch.index == step
            lags.append(step - batch.version)
            q.push_weights(model.state_dict(), step + 1)
        assert max(lags) <= staleness
        if staleness == 0:
            assert lags == [0] * 5
    finally:
        q.close()


@pytest.mark.parametrize("lag", [1, 3])
def test_lagged_queue_gives_every_batch_exactly_its_lag(lag):
    model, tok = build_tiny_model("micro", seed=5)
    engine = _CountingEngine(TorchEngine(model, tok))
    producer = Producer(engine, make_env(ENV), prompts=2, group_size=2, sampling=Sampling(max_new_tokens=4, seed=0))
    q = make_queue(producer, max_staleness=lag, exact=True)
    states = {}
    for step in range(6):
        batch = q.get(step)
        assert batch.index == step and batch.version == max(0, step - lag)
        assert all(s.policy_version == batch.version for r in batch.rollouts for s in r.samples)
        states[step + 1] = {k: v + (step + 1) for k, v in model.state_dict().items()}  # a distinct "update"
        q.push_weights(states[step + 1], step + 1)
        assert len(q.snapshots) <= lag + 1
    assert engine.synced == list(range(1, 6 - lag))  # each older version synced once, in order
    q.close()


def test_dynamic_sampling_drops_uniform_groups():
    model, tok = build_tiny_model("micro", seed=6)
    producer = Producer(TorchEngine(model, tok), make_env(ENV), prompts=4, group_size=3,
                        sampling=Sampling(max_new_tokens=6), drop_uniform=True, max_tries=2)
    batch = producer.produce(0)
    # An untrained model never answers right: every group is uniform (all 0) and dropped.
    assert batch.rollouts == [] and batch.stats["groups_kept"] == 0.0


def test_undecided_samples_are_dropped_not_scored():
    from rlvr.types import VerifierError

    class Flaky:
        name = "arithmetic"

        def __init__(self):
            self.inner, self.calls = make_env(ENV), 0

        def problems(self, split, seed):
            return self.inner.problems(split, seed)

        def verify(self, problem, completion):
            self.calls += 1
            if self.calls % 2:
                raise VerifierError("timed out")
            return self.inner.verify(problem, completion)

    class StubEngine:  # every completion ends cleanly, so every one reaches the verifier
        tok = build_tiny_model("micro")[1]

        def generate(self, prompts, n, sampling):
            return [[Sample(None, p, [1], [0.0], 0, "stop", text="#### 5") for _ in range(n)] for p in prompts]

    env = Flaky()
    it = env.problems("train", 0)
    rollouts = generate_rollouts(StubEngine(), env, [next(it) for _ in range(3)], 4, Sampling())
    assert [r.dropped for r in rollouts] == [2, 2, 2]  # every other verify call raised
    for r in rollouts:
        assert len(r.samples) == len(r.verdicts) == 2
    assert rollout_stats(rollouts)["verifier_errors"] == 0.5
    # Dropped samples were still generated: compute counts all 12 completion tokens.
    assert token_counts(rollouts) == {"prompt_tokens": sum(r.prompt_tokens for r in rollouts), "generated_tokens": 12}
    assert all(r.prompt_tokens == len(r.samples[0].prompt_ids) > 0 for r in rollouts)


def test_groups_with_equal_rewards_are_skipped_and_the_gradient_is_the_whole_batchs():
    import copy

    from conftest import GradCapture
    from rlvr.algos import LOSSES, compute_advantages
    from rlvr.models.forward import parts_of
    from rlvr.train import rl
    from rlvr.train.batch import make_batch, policy_logprobs
    from rlvr.types import Verdict

    model, tok = build_tiny_model("micro", seed=3)
    producer = Producer(TorchEngine(model, tok), make_env(ENV), prompts=6, group_size=4,
                        sampling=Sampling(max_new_tokens=6, seed=1))
    rollouts = producer.produce(0).rollouts
    for i, r in enumerate(rollouts):  # mixed groups and uniform ones
        r.verdicts = [Verdict(float(i % 3 == 0 and j % 2 == 0), i % 3 == 0 and j % 2 == 0) for j in range(4)]
    rollouts[1].verdicts = [Verdict(1.0, True)] * 4
    cfg = rl.RLConfig(model="x", env=ENV, micro_batch=8, loss="ppo_clip", agg="token_mean")

    trained = copy.deepcopy(model).train()
    opt = GradCapture(trained.parameters())
    m = rl_update.train_on(rollouts, trained, parts_of(trained), None, opt, cfg, tok.pad_token_id)
    assert m["skipped_groups"] == pytest.approx(4 / 6) and m["updates"] == 1
    # The same loss over every sample, uniform groups included, in one batch.
    full = copy.deepcopy(model).train()
    compute_advantages(rollouts, cfg.advantage)
    batch = make_batch(rollouts, tok.pad_token_id)
    logp, _ = policy_logprobs(parts_of(full), batch)
    loss, _ = LOSSES["ppo_clip"](logp, batch.old_logp, batch.advantages, batch.mask, rl_update.loss_config(cfg))
    loss.backward()
    for got, p in zip(opt.grads, full.parameters()):
        assert torch.allclose(got, p.grad, atol=1e-6)
    # Micro-batches cut to a few tokens each (groups split across them): the same gradient.
    small = copy.deepcopy(model).train()
    opt_small = GradCapture(small.parameters())
    m = rl_update.train_on(rollouts, small, parts_of(small), None, opt_small, cfg, tok.pad_token_id, max_tokens=12)
    assert m["micro_batches"] > 2
    for got, p in zip(opt_small.grads, full.parameters()):
        assert torch.allclose(got, p.grad, atol=1e-6)
    # Nothing to learn from: no forward, no update.
    for r in rollouts:
        r.verdicts = [Verdict(0.0, False)] * 4
    assert rl_update.train_on(rollouts, trained, parts_of(trained), None, opt, cfg, tok.pad_token_id)["updates"] == 0


def test_lr_by_signal_scales_the_step_by_the_share_of_informative_groups():
    from rlvr.models.forward import parts_of
    from rlvr.train import rl
    from rlvr.types import Verdict

    model, tok = build_tiny_model("micro", seed=3)
    producer = Producer(TorchEngine(model, tok), make_env(ENV), prompts=4, group_size=4,
                        sampling=Sampling(max_new_tokens=6, seed=1))
    rollouts = producer.produce(0).rollouts
    for i, r in enumerate(rollouts):  # group 0 mixed, the others uniform
        r.verdicts = [Verdict(float(i == 0 and j == 0), i == 0 and j == 0) for j in range(4)]
    for on, expected in ((False, 1e-3), (True, 1e-3 / 4)):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        cfg = rl.RLConfig(model="x", env=ENV, lr_by_signal=on)
        m = rl_update.train_on(rollouts, model, parts_of(model), None, opt, cfg, tok.pad_token_id)
        assert m["signal"] == 0.25 and opt.param_groups[0]["lr"] == pytest.approx(expected)


def test_mini_batches_are_as_many_as_asked_and_near_equal():
    from rlvr.train.rl_update import split_groups

    for groups, parts, sizes in ((10, 4, [3, 3, 2, 2]), (6, 4, [2, 2, 1, 1]), (64, 4, [16] * 4), (3, 5, [1, 1, 1]),
                                 (7, 1, [7])):
        split = split_groups(list(range(groups)), parts)
        assert [len(c) for c in split] == sizes and [x for c in split for x in c] == list(range(groups))


def test_a_kl_term_alone_at_a_rate_scaled_to_0_takes_no_step():
    """With --kl_coef and --lr_by_signal, a batch of uniform groups would run a forward, a
    backward and an AdamW step at lr 0 (its moments filled with the KL's gradient)."""
    from rlvr.models.forward import parts_of
    from rlvr.train import rl
    from rlvr.types import Verdict

    model, tok = build_tiny_model("micro", seed=3)
    producer = Producer(TorchEngine(model, tok), make_env(ENV), prompts=4, group_size=4,
                        sampling=Sampling(max_new_tokens=6, seed=1))
    rollouts = producer.produce(0).rollouts
    for r in rollouts:
        r.verdicts = [Verdict(1.0, True)] * 4
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = rl.RLConfig(model="x", env=ENV, kl_coef=0.1)
    reference = lambda batch: batch.old_logp  # noqa: E731  (never called)
    m = rl_update.train_on(rollouts, model, parts_of(model), reference, opt, cfg, tok.pad_token_id)
    assert m["updates"] == 0 and m["signal"] == 0.0 and not opt.state


def test_coldstart_variants_change_one_thing_from_the_old_rate():
    """The ablation's reference is the rate before the fix, pinned (the defaults moved);
    "defaults" is whatever rlvr rl's defaults are; the new defaults are the ablation's winner."""
    from rlvr.experiments import coldstart, grid
    from rlvr.train import rl

    ref = coldstart._settings("reference (lr 2e-4 constant)")
    assert {k: ref[k] for k in grid.RATE_BEFORE} == grid.RATE_BEFORE
    assert coldstart._settings("defaults") == {}
    assert coldstart._settings("SFT 0.7 + defaults") == {"sft_share": 0.7}
    winner = coldstart._settings("lr 5e-4 cosine by signal")
    cfg = rl.RLConfig(model="x", env=ENV)
    assert all(getattr(cfg, k) == winner[k] for k in ("lr", "lr_schedule", "lr_by_signal", "drop_uniform_groups",
                                                       "kl_coef", "group_size", "prompts"))


def test_micro_batches_group_similar_lengths_and_hold_every_sample_once():
    from rlvr.train.batch import plan_micro_batches
    from rlvr.types import Problem, Rollout, Verdict

    def group(g, lengths, prompt=10):
        samples = [Sample(None, [g] * prompt, [1] * n, [0.0] * n, 0, "stop") for n in lengths]
        return Rollout(Problem(f"p{g}", "q", 0, "t"), samples, [Verdict(0.0, False)] * len(lengths),
                       advantages=[float(10 * g + i) for i in range(len(lengths))])

    def padded(plan):
        return sum(sum(len(r.samples) for r in m) * max(len(s.completion_ids) for r in m for s in r.samples)
                   for m in plan)

    # Each group has one completion at the limit and the rest short: whole groups pad to 64.
    rollouts = [group(g, [64] + [4 + g] * 7) for g in range(8)]
    plan = plan_micro_batches(rollouts, max_rows=128)
    assert padded(plan) < 0.4 * padded([rollouts])
    seen = sorted((r.problem.id, a, len(s.completion_ids)) for m in plan for r in m
                  for s, a in zip(r.samples, r.advantages))
    assert seen == sorted((r.problem.id, a, len(s.completion_ids)) for r in rollouts
                          for s, a in zip(r.samples, r.advantages))
    for m in plan:  # a group appears at most once per micro-batch, its samples with their verdicts
        assert len({r.problem.id for r in m}) == len(m)
        assert all(len(r.samples) == len(r.verdicts) == len(r.advantages) for r in m)
    # Equal lengths: nothing to gain from a split but the row cap.
    even = [group(g, [16] * 8) for g in range(8)]
    assert [sum(len(r.samples) for r in m) for m in plan_micro_batches(even, max_rows=128)] == [64]
    assert all(sum(len(r.samples) for r in m) <= 24 for m in plan_micro_batches(even, max_rows=24))
    # A token cap: no micro-batch holds more (but a sample longer than the cap goes alone).
    for m in plan_micro_batches(rollouts, max_rows=128, max_tokens=100):
        rows = [len(s.completion_ids) for r in m for s in r.samples]
        assert len(rows) * max(rows) + 10 * len(m) <= 100 or len(rows) == 1
    # Long shared prompts: splitting a group would recompute its prompt, so it stays whole.
    long_prompt = [group(g, [64] + [4] * 7, prompt=2000) for g in range(4)]
    assert [len(m) for m in plan_micro_batches(long_prompt, max_rows=128)] == [4]


@pytest.mark.parametrize("lora", [0, 4])
def test_activation_bytes_per_token_is_what_autograd_keeps(lora):
    """The micro-batch budget's per-token figure, measured by two small probes, matches the
    bytes autograd really saves on a training batch (weights left out); checkpointing keeps
    a fraction of it."""
    from rlvr.models.lora import add_lora
    from rlvr.train.batch import activation_bytes_per_token, micro_batch_tokens

    model, tok = build_tiny_model("micro", seed=3)
    if lora:
        model = add_lora(model, lora, 2.0 * lora, ["q_proj", "v_proj", "up_proj"], "micro")
    model.train()
    parts = parts_of(model)
    per_token = activation_bytes_per_token(parts)
    batch = make_batch(_rollouts(model, tok, n_problems=4, n=4), tok.pad_token_id)
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        policy_logprobs(parts, batch)
    tokens = batch.prompt_ids.numel() + batch.ids.numel()  # what the forward computed, padding included
    assert sum(kept.values()) / tokens == pytest.approx(per_token, rel=0.25)
    checkpointed = activation_bytes_per_token(parts_of(model, checkpoint=True))
    assert checkpointed < per_token  # (a 2-layer model: a real one keeps ~1/10)
    assert micro_batch_tokens(parts, 1.0) == int(2**30 // per_token)


class _Choking:
    """An environment whose verifier fails on every `every`-th call: out of time (a
    `TimeoutError`) or broken."""

    def __init__(self, every: int, timeout: bool):
        self.env, self.every, self.timeout, self.calls = make_env(ENV), every, timeout, 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def verify(self, problem, text):
        self.calls += 1
        if self.calls % self.every == 0:
            raise (_Timeout if self.timeout else VerifierError)("verifier failed")
        return self.env.verify(problem, text)


class _Timeout(VerifierError, TimeoutError):
    pass


def test_an_answer_the_verifier_runs_out_of_time_on_twice_earns_0_and_a_broken_verifier_drops_it():
    from rlvr.rollout import judge_turn
    from rlvr.types import Turn
    problem = next(make_env(ENV).problems("train", 0))
    turn = Turn(f"#### {problem.answer}", [2], "stop")
    assert judge_turn(_Choking(2, timeout=True), problem, turn).correct  # out of time once: asked again
    late = judge_turn(_Choking(1, timeout=True), problem, turn)  # out of time twice: the answer's doing
    assert late.reward == 0.0 and "timeout" in late.flags
    with pytest.raises(VerifierError):  # the verifier's own failure is never a 0
        judge_turn(_Choking(1, timeout=False), problem, turn)


def test_eval_counts_unjudged_samples_as_not_correct_and_survives_an_unjudged_greedy_one():
    from rlvr.eval import evaluate
    model, tok = build_tiny_model("micro", seed=3)
    env = _Choking(1, timeout=False)  # every sample that reaches the verifier breaks it
    problems = [p for p, _ in zip(env.problems("eval", 0), range(4))]
    m = evaluate(TorchEngine(model, tok), env, problems, 4, [1],
                 Sampling(temperature=1.0, max_new_tokens=48, seed=0))["arithmetic"]
    assert m["n_samples"] == 16 and m["pass@1"]["mean"] == 0.0  # none left out of the denominator
    assert m["flags"]["unjudged"] > 0 and m["flags"]["unjudged"] + m["flags"].get("truncated", 0) == 1.0
    assert m["greedy"]["mean"] == 0.0  # an unjudged greedy sample is not correct (it raised IndexError)
