"""Episodes of a multi-turn environment played against an OpenAI-compatible chat endpoint.

rlvr/rollout.py plays episodes in token space on a local engine; an endpoint speaks chat
messages, so here an episode is a conversation. The problem's messages are the first
observation (a tools environment's tools offered in the tag format, exactly as
`offer_ids` offers them to a model whose chat template has no tool format); each reply
is an assistant message, the environment's `step` reads its text, and its observation
is the next message (a tool result ``<result>...</result>`` as a user message; a result
of a call the model wrote in the JSON format, ``<tool_call>{...}</tool_call>``, as a
``role: tool`` message, as the local rollout sends it), until the episode ends. The
verdict, how the episode ended (answer, turns, length, void, forged, error) and its
counts are the local rollout's (`rollout.next_step` decides both).

- Every episode is its own conversation: one request a turn (`n=1`), a seed per sample,
  all live episodes' requests of a turn sent together through the client's bounded
  concurrency, retries, cache and budget (rlvr/distill/teacher.py). The cache key holds
  the whole conversation so far, so a rerun replays every episode without asking again.
- The environment's stop strings (a tool call's closing tag) are sent as `stop`; the
  client puts back the one a server cut from the text (`teacher.with_stop`).
- `max_turns` holds as it does locally. `max_episode_tokens` is kept in the endpoint's
  own counts (`usage`): the stream after the prompt before a turn is that request's
  prompt tokens less the first's, and a turn is its completion tokens. A request may
  ask up to what is left; a reply that overflows it, or a conversation whose last
  observation already filled it, ends the episode as the local limit would
  ("length", reward 0). An endpoint that reports no usage is refused.
- A tool's result is cut to `max_result_tokens` characters (the tokenizer the endpoint's
  model uses is not known here; a token of ASCII text holds at least one character, so
  a result is cut no later than it would be locally); a local teacher's in its own tokens.
- Not supported: asking with the chat API's `tools=` and reading `tool_calls` (the tools
  are offered in the prompt; a reply carrying `tool_calls` is refused in one line), and
  observations given as token ids (refused).

    episodes = play(client, env, problems, n=4, sampling=Sampling(temperature=1.0, max_new_tokens=256))

Run its tests: ``.venv/bin/python -m pytest tests/test_chat_rollout.py -q``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from rlvr.rollout import TRUNCATED, next_step
from rlvr.types import (Counting, Environment, MultiTurn, Problem, Sample, Sampling, Step, StopsOn, Turn, UsesTokenizer,
                        Verdict)

UNFINISHED = "unfinished"  # the client's token budget ran out before the episode ended


class ChatRolloutError(ValueError):
    """The endpoint or the environment cannot play an episode as messages."""


@dataclass
class ChatEpisode:
    """One episode as a conversation: `messages` (the first observation, then the model's
    turns and the observations after them), the verdict (None: the verifier could not
    judge, or the episode did not finish), how it ended, its model turns and counts, and
    the tokens the endpoint reported (prompt and completion, every request)."""

    problem: Problem
    messages: list[dict[str, Any]]
    seed: int | None = None
    verdict: Verdict | None = None
    finish: str = "stop"
    ended: str = ""
    turns: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    tokens: int = 0  # prompt and completion tokens of every request, as the endpoint reported them
    completion_tokens: int = 0
    requests: int = 0  # answers this episode read, and how many of them came from the cache
    cached: int = 0
    prompt_tokens: int = 0  # the first request's: the prompt's own length
    stream: int = 0  # tokens after the prompt so far, as the endpoint counts them
    prompt_len: int = field(init=False)  # how many of `messages` are the first observation

    def __post_init__(self):
        self.prompt_len = len(self.messages)

    def sample(self) -> Sample:
        """The episode as evaluation reads a sample: no token ids (the endpoint's are not
        known), the model's turns as text, turns, how it ended and the counts."""
        text = "".join(m["content"] for m in self.messages[self.prompt_len:] if m["role"] == "assistant")
        return Sample(self.problem, [], [], [], 0, self.finish, text=text, source=[], turns=self.turns,
                      ended=self.ended, counts=dict(self.counts))


def first_messages(problem: Problem) -> list[dict[str, str]]:
    """The first observation as messages: the problem's, with the tools it offers in the tag format."""
    if problem.meta.get("tools"):
        from rlvr.envs.tool_calls import tag_messages

        return tag_messages(problem.messages(), problem.meta["tools"], problem.meta.get("tool_offer", "full"))
    return problem.messages()


def play(client, env: Environment, problems: list[Problem], n: int, sampling: Sampling) -> list[list[ChatEpisode]]:
    """`n` episodes of each problem against `client` (HTTPTeacher or LocalTeacher), in order.
    Where the client's budget runs out, the episodes it left unanswered end `UNFINISHED`
    (verdict None) and the rest go on from what is cached; `BudgetExceeded` is not raised."""
    from rlvr.distill.teacher import BudgetExceeded
    from rlvr.distill.teacher_cache import ChatRequest

    if not isinstance(env, MultiTurn):
        raise ChatRolloutError(f"env {env.name!r} is single-turn: ask it one answer a problem")
    if isinstance(env, UsesTokenizer):
        from rlvr.models.tokenizer import build_char_tokenizer

        # A local teacher's own tokenizer; an endpoint's is not known: characters (see the module docstring).
        env.use_tokenizer(getattr(client, "tok", None) or build_char_tokenizer())
    from rlvr.rollout import episode_of

    stop = tuple(env.stop_strings) if isinstance(env, StopsOn) else ()
    budget = env.max_episode_tokens
    groups = [[ChatEpisode(p, first_messages(p), seed=_seed(sampling.seed, i)) for i in range(n)] for p in problems]
    live = [(e, episode_of(env, e.problem)) for group in groups for e in group]
    for k in range(1, env.max_turns + 1):
        if not live:
            break
        requests = [ChatRequest(messages=list(e.messages), n=1, temperature=sampling.temperature,
                                top_p=sampling.top_p, max_tokens=min(sampling.max_new_tokens, budget - e.stream),
                                seed=e.seed, stop=stop) for e, _ in live]
        try:
            results = client.complete(requests)
        except BudgetExceeded as e:
            results = e.results
        going = []
        for (e, episode), result in zip(live, results):
            if result is None:
                _end(e, (None, "stop", UNFINISHED))
            elif _turn(e, episode, result, k, env.max_turns, budget):
                going.append((e, episode))
        live = going
    return groups


def _seed(seed: int | None, i: int) -> int:
    """Sample `i`'s seed: each sample of a problem is its own conversation, so its own draw
    (and its own cache entry, also without a seed)."""
    return random.Random(f"{seed}/sample/{i}").getrandbits(31)


def _turn(e: ChatEpisode, episode, result, k: int, max_turns: int, budget: int) -> bool:
    """Hand the episode its `k`-th reply; whether it goes on (its observation appended)."""
    usage = result.usage
    if "prompt_tokens" not in usage or "completion_tokens" not in usage:
        raise ChatRolloutError("the endpoint reports no usage (prompt_tokens, completion_tokens): an episode's "
                               "token limit cannot be kept")
    if k == 1:
        e.prompt_tokens = usage["prompt_tokens"]
    e.tokens += result.total_tokens
    e.completion_tokens += usage["completion_tokens"]
    e.requests += 1
    e.cached += int(result.cached)
    before = usage["prompt_tokens"] - e.prompt_tokens
    if before >= budget:  # the last observation left no room for this turn: the local rollout stops before it
        e.messages.pop()
        return _end(e, (TRUNCATED, "length", "length"))
    text, finish = result.texts[0], result.finish_reasons[0]
    finish = "length" if finish == "length" else "stop"
    e.messages.append({"role": "assistant", "content": text})
    e.turns += 1
    e.stream = before + usage["completion_tokens"]
    if e.stream > budget:  # the episode's token limit cuts this turn: its verdict is the cut's
        return _end(e, (TRUNCATED, "length", "length"))
    step = next_step(episode, Turn(text, [], finish), k, max_turns, e.stream >= budget)
    if isinstance(episode, Counting):
        e.counts = dict(episode.counts)
    if not isinstance(step, Step):
        return _end(e, step)
    if not isinstance(step.observation, str):
        raise ChatRolloutError("the environment answers with token ids, which an endpoint cannot be sent")
    if e.stream >= budget:  # no room for the observation and another turn
        return _end(e, (TRUNCATED, "length", "length"))
    e.messages.append({"role": step.role, "content": step.observation})
    return True


def _end(e: ChatEpisode, outcome: tuple) -> bool:
    e.verdict, e.finish, e.ended = outcome
    return False
