"""Problems -> n episodes each -> verdicts -> `Rollout`s. Used by eval, rs and rl.

The environment drives each episode (rlvr/types.py): the problem's prompt is the first
observation; every model turn goes to the episode's `step`, which answers with the next
observation or the end and a verdict. A single-turn environment (only `verify`) is an
episode of one turn. All live episodes of a batch advance together, one engine call per
turn: the first samples n completions of each prompt (the prompt prefilled once for its
group), each later one continues every live episode from its whole token stream, in the
engine's `TurnBatch` (rlvr/engine/turns.py): the torch engine keeps each live episode's
KV cache between turns and prefills only the tokens added since.
Observations enter the stream as token ids appended to the sampled ones: a model's
tokens are never decoded and re-encoded, so what trains is exactly what was sampled.

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

import random
from collections import Counter
from dataclasses import dataclass, field, replace

from rlvr.engine.turns import Reprefill
from rlvr.types import (TRUNCATED_FLAG, Counting, Environment, Episode, KeepsCache, MultiTurn, Problem, Rollout, Sample,
                        Sampling, Step, StopsOn, Turn, UsesTokenizer, Verdict, VerifierError)

TRUNCATED = Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({TRUNCATED_FLAG}))
TIMED_OUT = Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({"timeout"}))
OUT_OF_TURNS = Verdict(reward=0.0, correct=False, parsed=None, flags=frozenset({"max_turns"}))


def encode_prompt(tok, problem: Problem) -> list[int]:
    """Chat-template a problem's prompt into token ids, ready for the assistant's turn, with
    the tools it offers (``meta["tools"]``) in the model's format (rlvr/envs/tool_calls.py)."""
    if problem.meta.get("tools"):
        from rlvr.envs.tool_calls import offer_ids

        return offer_ids(tok, problem.messages(), problem.meta["tools"], problem.meta.get("tool_offer", "full"))
    if isinstance(problem.prompt, str) and getattr(tok, "chat_template", None) is None:
        return tok(problem.prompt, add_special_tokens=False)["input_ids"]
    text = tok.apply_chat_template(problem.messages(), add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def judge_turn(env: Environment, problem: Problem, turn: Turn) -> Verdict:
    """A single-turn environment's verdict on a completion (see the module docstring)."""
    if turn.finish_reason == "length":
        return TRUNCATED
    for attempt in range(2):
        try:
            return env.verify(problem, turn.text)
        except VerifierError as e:
            if not isinstance(e, TimeoutError):
                raise
    return TIMED_OUT


class SingleTurn:
    """The episode of an environment that only verifies: the first turn is judged and ends it."""

    def __init__(self, env: Environment, problem: Problem):
        self.env, self.problem = env, problem

    def step(self, turn: Turn) -> Step:
        return Step(verdict=judge_turn(self.env, self.problem, turn))


def episode_of(env: Environment, problem: Problem) -> Episode:
    return env.episode(problem) if isinstance(env, MultiTurn) else SingleTurn(env, problem)


def observation_ids(tok, step: Step, last_ids: list[int]) -> list[int]:
    """An observation's token ids, to append after a model turn that ended with `last_ids`.

    Text becomes a message of `step.role` in the tokenizer's chat template: what the
    template writes after an assistant turn (its end-of-turn marker, less what the
    model's own stop token already wrote), the message, and the next assistant header.
    Without a chat template the text is encoded as it is. Ids pass through untouched."""
    if isinstance(step.observation, list):
        return list(step.observation)
    if getattr(tok, "chat_template", None) is None:
        return tok(step.observation, add_special_tokens=False)["input_ids"]
    closing, suffix = _template_pieces(tok, step.role, step.observation)
    said = tok.decode(last_ids[-1:]) if last_ids else ""
    if said and closing.startswith(said):  # the model closed its turn itself (its EOS is the marker)
        closing = closing[len(said):]
    return tok(closing + suffix, add_special_tokens=False)["input_ids"]


_PLACEHOLDER = "\x00rlvr-turn\x00"


def _template_pieces(tok, role: str, content: str) -> tuple[str, str]:
    """(what the chat template writes after an assistant message's content, what it writes
    for a `role` message with `content` and the next assistant header)."""
    turns = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _PLACEHOLDER}]
    before = tok.apply_chat_template(turns, tokenize=False)
    after = tok.apply_chat_template(turns + [{"role": role, "content": content}], add_generation_prompt=True,
                                    tokenize=False)
    if not after.startswith(before) or _PLACEHOLDER not in before:
        raise ValueError("the tokenizer's chat template rewrites earlier turns when a message is added, so an "
                         "observation cannot be appended as token ids; pass the observation as ids")
    return before[before.index(_PLACEHOLDER) + len(_PLACEHOLDER):], after[len(before):]


@dataclass
class _Live:
    """An episode in progress: its stream so far, per token who wrote it and the log-probs."""

    problem: Problem
    first: Sample
    episode: Episode
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    source: list[int] = field(default_factory=list)
    turns: int = 0
    prefilled: int = 0  # tokens later turns' engine calls prefilled (compute accounting)

    def add_turn(self, sample: Sample) -> Turn:
        self.ids += sample.completion_ids
        self.logprobs += sample.logprobs
        self.source += [1] * len(sample.completion_ids)
        self.turns += 1
        return Turn(sample.text, list(sample.completion_ids), sample.finish_reason)

    def add_observation(self, ids: list[int]) -> None:
        self.ids += ids
        self.logprobs += [0.0] * len(ids)
        self.source += [0] * len(ids)

    def sample(self, tok, finish_reason: str, ended: str, multi: bool) -> Sample:
        if not multi:  # a single-turn episode: the engine's sample as it is
            return self.first
        return replace(self.first, completion_ids=self.ids, logprobs=self.logprobs, source=self.source,
                       finish_reason=finish_reason, text=tok.decode(self.ids, skip_special_tokens=True),
                       turns=self.turns, ended=ended,
                       counts=dict(self.episode.counts) if isinstance(self.episode, Counting) else {})


def generate_rollouts(engine, env: Environment, problems: list[Problem], n: int,
                      sampling: Sampling) -> list[Rollout]:
    if isinstance(env, UsesTokenizer):
        env.use_tokenizer(engine.tok)
    prompts = [encode_prompt(engine.tok, p) for p in problems]
    max_turns = env.max_turns if isinstance(env, MultiTurn) else 1
    budget = env.max_episode_tokens if isinstance(env, MultiTurn) else sampling.max_new_tokens
    if isinstance(env, StopsOn):  # a tool call's closing tag ends a turn
        sampling = replace(sampling, stop=tuple(dict.fromkeys(sampling.stop + tuple(env.stop_strings))))
    # Later turns go on in the engine's TurnBatch: each live episode keeps its KV cache between
    # turns where the engine can (KeepsCache), else its whole stream is prefilled again.
    turns = engine.turn_batch() if max_turns > 1 and isinstance(engine, KeepsCache) else Reprefill(engine)
    try:
        groups = turns.start(prompts, n, replace(sampling, max_new_tokens=min(sampling.max_new_tokens, budget)))
        lives: list[list[_Live]] = []
        for problem, samples in zip(problems, groups):
            for s in samples:
                s.problem = problem
            lives.append([_Live(problem, s, episode_of(env, problem)) for s in samples])
        seq = {id(live): i for i, live in enumerate(x for group in lives for x in group)}  # the TurnBatch's ids
        turns_of = {id(live): live.add_turn(live.first) for group in lives for live in group}
        ended: dict[int, tuple[Verdict | None, str, str]] = {}  # id -> (verdict or None: dropped, finish, why)
        for k in range(1, max_turns + 1):
            going = []
            for live in (x for group in lives for x in group if id(x) not in ended):
                outcome = _advance(engine.tok, live, turns_of[id(live)], k, max_turns, budget)
                if outcome is None:
                    going.append(live)
                else:
                    ended[id(live)] = outcome
            if not going:
                break
            context = [live.first.prompt_ids + live.ids for live in going]
            room = max(budget - len(live.ids) for live in going)
            turn_sampling = replace(sampling, max_new_tokens=min(sampling.max_new_tokens, room),
                                    seed=None if sampling.seed is None else random.Random(f"{sampling.seed}/turn/{k}").getrandbits(31))
            samples, prefilled = turns.extend([seq[id(live)] for live in going], context, turn_sampling,
                                              last=k + 1 >= max_turns)  # nothing goes on after: keep no cache
            for live, sample, count in zip(going, samples, prefilled):
                live.prefilled += count
                over = len(live.ids) + len(sample.completion_ids) - budget
                if over > 0:  # the episode's token budget cuts this turn
                    keep = len(sample.completion_ids) - over
                    sample = replace(sample, completion_ids=sample.completion_ids[:keep], logprobs=sample.logprobs[:keep],
                                     finish_reason="length", text=engine.tok.decode(sample.completion_ids[:keep],
                                                                                    skip_special_tokens=True))
                turns_of[id(live)] = live.add_turn(sample)
    finally:
        turns.close()
    multi = isinstance(env, MultiTurn)
    return [_rollout(engine.tok, problem, group, ended, multi) for problem, group in zip(problems, lives)]


def next_step(episode: Episode, turn: Turn, k: int, max_turns: int, full: bool) -> Step | tuple:
    """An episode's answer to its `k`-th model turn: the `Step` whose observation goes on,
    or how the episode ended (verdict, finish reason, why; verdict None: the verifier could
    not judge). `full`: the stream after the prompt has reached the episode's token limit.
    Shared by the local rollout and the endpoint's (rlvr/chat_rollout.py)."""
    try:
        step = episode.step(turn)
    except VerifierError:
        return None, turn.finish_reason, "error"
    if step.verdict is not None:  # a verdict on a cut turn is the cut's: 0 (see the module docstring)
        return (TRUNCATED, "length", "length") if turn.finish_reason == "length" else (step.verdict, "stop", step.ended)
    if turn.finish_reason == "length" and full:
        return TRUNCATED, "length", "length"
    if k >= max_turns:
        return OUT_OF_TURNS, "stop", "turns"
    return step


def _advance(tok, live: _Live, turn: Turn, k: int, max_turns: int, budget: int) -> tuple | None:
    """Hand the episode its latest turn: None while it goes on (its observation appended),
    else (verdict, finish reason, why it ended); verdict None: the verifier could not judge."""
    step = next_step(live.episode, turn, k, max_turns, len(live.ids) >= budget)
    if not isinstance(step, Step):
        return step
    observation = observation_ids(tok, step, turn.ids)
    if len(live.ids) + len(observation) >= budget:  # no room for it and another model turn: the stream ends here
        return TRUNCATED, "length", "length"
    live.add_observation(observation)
    return None


def _rollout(tok, problem: Problem, group: list[_Live], ended: dict, multi: bool) -> Rollout:
    judged, verdicts, dropped, dropped_tokens, prefilled = [], [], 0, 0, 0
    for live in group:
        verdict, finish, why = ended[id(live)]
        sample = live.sample(tok, finish, why, multi)
        prefilled += live.prefilled
        if verdict is None:
            dropped += 1
            dropped_tokens += sample.generated_tokens
            continue
        judged.append(sample)
        verdicts.append(verdict)
    return Rollout(problem, judged, verdicts, dropped=dropped, dropped_tokens=dropped_tokens,
                   prompt_tokens=len(group[0].first.prompt_ids) if group else 0, prefilled_tokens=prefilled)


def token_counts(rollouts: list[Rollout]) -> dict[str, int]:
    """Prompt tokens (once per problem: the engine prefills a prompt once for its group;
    in a multi-turn episode each later turn prefills what the engine's cache lacks: the
    new tokens with a kept cache, the whole context without) and generated
    tokens (the model's; an environment's are prefilled): what generating these rollouts
    cost (rlvr/compute.py)."""
    return {"prompt_tokens": sum((r.prompt_tokens or (len(r.samples[0].prompt_ids) if r.samples else 0))
                                 + r.prefilled_tokens for r in rollouts),
            "generated_tokens": sum(s.generated_tokens for r in rollouts for s in r.samples)
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
        **episode_stats(samples),
        **true_stats(verdicts),
    }


def ending(sample: Sample) -> str:
    """Why an episode ended: a multi-turn one says (answer, turns, length, void, forged,
    error); a single-turn one ended on its answer or on the token limit."""
    return sample.ended or ("length" if sample.finish_reason == "length" else "answer")


def episode_stats(samples: list[Sample]) -> dict[str, float]:
    """Of multi-turn episodes: model turns and each count of theirs (tool calls, tool
    errors, truncated results, void turns) per episode, the share that called a tool at
    least once (`tool_call_rate`), and the share that ended each way."""
    episodes = [s for s in samples if s.source is not None]
    if not episodes:
        return {}
    n = len(episodes)
    names = sorted({k for s in episodes for k in s.counts})
    endings = Counter(ending(s) for s in episodes)
    return {"turns": sum(s.turns for s in episodes) / n,
            **{k: sum(s.counts.get(k, 0) for s in episodes) / n for k in names},
            **({"tool_call_rate": sum(s.counts.get("tool_calls", 0) > 0 for s in episodes) / n}
               if "tool_calls" in names else {}),
            **{f"ended_{k}": c / n for k, c in sorted(endings.items())}}


def true_stats(verdicts: list[Verdict]) -> dict[str, float]:
    """Behind a noisy verifier (rlvr.envs.noisy): the true reward and pass rate, and
    how often the verdict trained on was wrong, beside the noisy ones."""
    if not verdicts or all(v.truth is None for v in verdicts):
        return {}
    truths = [v.truth or v for v in verdicts]
    n = len(verdicts)
    return {"true_reward": sum(t.reward for t in truths) / n, "true_pass_rate": sum(t.correct for t in truths) / n,
            "noise_flips": sum(v.correct != t.correct for v, t in zip(verdicts, truths)) / n}
