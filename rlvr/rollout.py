"""Problems -> n samples each -> verdicts -> `Rollout`s. Used by eval, rs and rl.

A completion cut off by the token limit earns nothing (flag `truncated`) whatever it
says: a cut answer can look right ("#### 84" from "#### 843"), and rewarding it would
teach the policy to ramble into the limit. A completion the verifier could not judge
(it raised `VerifierError`: a crashed worker, a broken sandbox) is dropped from its group
rather than given a reward it did not earn; `Rollout.dropped` counts them. A verifier
that runs out of time on an answer is asked once more; out of time again, the answer
earns 0 with flag `timeout`: a completion must not buy its way out of its group (and out
of its negative advantage) by writing something the verifier chokes on, such as
`9^{9^{9^{9}}}` for math-verify.

    rollouts = generate_rollouts(engine, env, problems, n=8, sampling=Sampling())
"""

from __future__ import annotations

from rlvr.types import TRUNCATED_FLAG, Environment, Problem, Rollout, Sample, Sampling, Verdict, VerifierError

TRUNCATED = Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({TRUNCATED_FLAG}))
TIMED_OUT = Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({"timeout"}))


def encode_prompt(tok, problem: Problem) -> list[int]:
    """Chat-template a problem's prompt into token ids, ready for the assistant's turn."""
    if isinstance(problem.prompt, str) and getattr(tok, "chat_template", None) is None:
        return tok(problem.prompt, add_special_tokens=False)["input_ids"]
    text = tok.apply_chat_template(problem.messages(), add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def judge(env: Environment, sample: Sample) -> Verdict:
    if sample.finish_reason == "length":
        return TRUNCATED
    for attempt in range(2):
        try:
            return env.verify(sample.problem, sample.text)
        except VerifierError as e:
            if not isinstance(e, TimeoutError):
                raise
    return TIMED_OUT


def generate_rollouts(engine, env: Environment, problems: list[Problem], n: int,
                      sampling: Sampling) -> list[Rollout]:
    prompts = [encode_prompt(engine.tok, p) for p in problems]
    groups = engine.generate(prompts, n, sampling)
    rollouts = []
    for problem, samples in zip(problems, groups):
        judged, verdicts, dropped, dropped_tokens = [], [], 0, 0
        for s in samples:
            s.problem = problem
            try:
                verdicts.append(judge(env, s))
                judged.append(s)
            except VerifierError:
                dropped += 1
                dropped_tokens += len(s.completion_ids)
        rollouts.append(Rollout(problem, judged, verdicts, dropped=dropped, dropped_tokens=dropped_tokens,
                                prompt_tokens=len(samples[0].prompt_ids) if samples else 0))
    return rollouts


def token_counts(rollouts: list[Rollout]) -> dict[str, int]:
    """Prompt tokens (once per problem: the engine prefills a prompt once for its group)
    and generated tokens: what generating these rollouts cost (rlvr/compute.py)."""
    return {"prompt_tokens": sum(r.prompt_tokens or (len(r.samples[0].prompt_ids) if r.samples else 0)
                                 for r in rollouts),
            "generated_tokens": sum(len(s.completion_ids) for r in rollouts for s in r.samples)
            + sum(r.dropped_tokens for r in rollouts)}


def rollout_stats(rollouts: list[Rollout]) -> dict[str, float]:
    """Reward, pass rate, lengths and flag rates of a batch of rollouts."""
    samples = [s for r in rollouts for s in r.samples]
    verdicts = [v for r in rollouts for v in r.verdicts]
    if not samples:
        return {}
    flags: dict[str, int] = {}
    for v in verdicts:
        for f in v.flags:
            flags[f] = flags.get(f, 0) + 1
    n = len(samples)
    return {
        "reward": sum(v.reward for v in verdicts) / n,
        "pass_rate": sum(v.correct for v in verdicts) / n,
        "response_len": sum(len(s.completion_ids) for s in samples) / n,
        "solved_groups": sum(any(v.correct for v in r.verdicts) for r in rollouts) / len(rollouts),
        "verifier_errors": sum(r.dropped for r in rollouts) / (n + sum(r.dropped for r in rollouts)),
        **{f"flag_{k}": c / n for k, c in sorted(flags.items())},
        **true_stats(verdicts),
    }


def true_stats(verdicts: list[Verdict]) -> dict[str, float]:
    """Behind a noisy verifier (rlvr.envs.noisy): the true reward and pass rate, and
    how often the verdict trained on was wrong, beside the noisy ones."""
    if not verdicts or all(v.truth is None for v in verdicts):
        return {}
    truths = [v.truth or v for v in verdicts]
    n = len(verdicts)
    return {"true_reward": sum(t.reward for t in truths) / n, "true_pass_rate": sum(t.correct for t in truths) / n,
            "noise_flips": sum(v.correct != t.correct for v, t in zip(verdicts, truths)) / n}
