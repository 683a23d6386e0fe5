"""The data contracts that join rlvr's parts.

Every component speaks in these plain types and nothing else: an environment makes
`Problem`s and turns a completion into a `Verdict`; an engine turns prompt token ids
into `Sample`s; `rollout` groups samples of one problem into a `Rollout`; `algos`
fills in advantages. Token ids travel from the engine to the loss untouched: text is
never re-tokenized between generation and training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Union, runtime_checkable

Message = dict[str, str]  # {"role": "user" | "assistant" | "system", "content": str}
Prompt = Union[str, list[Message]]


@dataclass(frozen=True)
class Problem:
    """One task instance. `answer` is the gold, opaque to all but its environment."""

    id: str
    prompt: Prompt
    answer: Any
    env: str
    meta: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[Message]:
        """The prompt as chat messages (a bare string becomes one user turn)."""
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return list(self.prompt)


TRUNCATED_FLAG = "truncated"  # cut off by the token limit: judged by the rollout, never by a verifier


@dataclass
class Verdict:
    """A verifier's judgement of one completion.

    A verifier that cannot decide raises; it never turns its own failure into a
    reward of 0. `flags` say why a completion lost reward (e.g. ``no_answer``,
    ``multiple_answers``, ``format_error``, ``truncated``, ``timeout``).
    """

    reward: float
    correct: bool
    parsed: Any = None
    flags: frozenset[str] = frozenset()
    # A noisy verifier's (rlvr.envs.noisy) true verdict, kept aside: the trainer learns
    # from the noisy reward, runs log both. None when the verdict is the truth.
    truth: "Verdict | None" = None

    @property
    def true_correct(self) -> bool:
        return (self.truth or self).correct


class VerifierError(RuntimeError):
    """A verifier could not decide (timeout, crashed worker, broken sandbox).

    Raised, never turned into a reward: the caller decides what an undecided sample
    means (rollouts drop it from its group and count it)."""


FinishReason = Literal["stop", "length"]


@dataclass
class Sample:
    """One episode of one prompt, as the behaviour policy produced it: the prompt's ids,
    then the token stream that followed it (`completion_ids`). In a single-turn episode
    every completion token is the model's; in a multi-turn one the model's turns
    alternate with what the environment wrote (observations, tool results), which
    `source` marks 0: those tokens were prefilled, not sampled, so they have no behaviour
    log-prob (0.0 in `logprobs`) and carry loss mask 0."""

    problem: Problem | None
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]  # behaviour policy log-prob of each completion token
    policy_version: int
    finish_reason: FinishReason
    text: str = ""  # decoded completion (special tokens stripped), for the verifier
    loss_mask: list[int] | None = None  # 1 = train on this token; None = all ones
    # A per-token learning signal added to the group's advantage (a teacher's reverse KL,
    # rlvr/algos): one float per completion token, None for none.
    token_advantages: list[float] | None = None
    # Per completion token: 1 the model sampled it, 0 the environment wrote it; None: all
    # the model's (a single-turn episode).
    source: list[int] | None = None
    turns: int = 1  # model turns in the episode
    ended: str = ""  # why a multi-turn episode ended: answer | turns | length | void | forged | error
    # What the episode counted (`Counting`): tool calls, tool errors, truncated results, void turns.
    counts: dict[str, int] = field(default_factory=dict)

    def mask(self) -> list[int]:
        if self.loss_mask is not None:
            return self.loss_mask
        return list(self.source) if self.source is not None else [1] * len(self.completion_ids)

    @property
    def generated_tokens(self) -> int:
        """Tokens the model sampled (the environment's were prefilled)."""
        return len(self.completion_ids) if self.source is None else sum(self.source)

    def advantages(self, sequence: float) -> list[float]:
        """The learning signal of each completion token: the sequence's advantage,
        broadcast, plus the per-token signal where there is one."""
        if self.token_advantages is None:
            return [sequence] * len(self.completion_ids)
        return [sequence + a for a in self.token_advantages]


@dataclass
class Rollout:
    """A group of samples of one problem with their verdicts; `advantages` (one per sample,
    broadcast over its tokens) come from `algos`; per-token signals ride on the samples."""

    problem: Problem
    samples: list[Sample]
    verdicts: list[Verdict]
    advantages: list[float] | None = None
    dropped: int = 0  # samples the verifier could not judge (VerifierError), left out
    dropped_tokens: int = 0  # their completion tokens: generated all the same (compute accounting)
    prompt_tokens: int = 0  # the prompt's length, kept even when every sample was dropped
    prefilled_tokens: int = 0  # contexts later turns of multi-turn episodes prefilled again

    @property
    def rewards(self) -> list[float]:
        return [v.reward for v in self.verdicts]

    def has_signal(self) -> bool:
        """Whether any token of this group would move the policy: a non-zero advantage, or
        a non-zero per-token signal (a group with equal rewards may still have one)."""
        return (any(a != 0 for a in self.advantages or ())
                or any(x != 0 for s in self.samples for x in (s.token_advantages or ())))

    @property
    def min_version(self) -> int:
        return min(s.policy_version for s in self.samples)


@dataclass
class Turn:
    """A model turn, as an episode reads it: the text (special tokens stripped), the token
    ids as sampled, and whether the turn stopped or was cut by its token limit."""

    text: str
    ids: list[int]
    finish_reason: FinishReason


@dataclass
class Step:
    """An environment's answer to a model turn: the next observation, or the end.

    `observation` is text (sent as a message of `role` in the model's chat template, or
    as plain text without one) or token ids (used as they are). An episode ends when
    `verdict` is set; `ended` says why (``answer`` by default)."""

    observation: str | list[int] | None = None
    role: str = "user"
    verdict: Verdict | None = None
    ended: str = "answer"


@runtime_checkable
class Episode(Protocol):
    """One conversation between the model and an environment about one problem. The
    problem's prompt is the first observation; `step` reads each model turn."""

    def step(self, turn: Turn) -> Step:
        ...


@runtime_checkable
class MultiTurn(Protocol):
    """An environment that drives a conversation: `episode(problem)` starts one.
    `max_turns` (model turns) and `max_episode_tokens` (the whole token stream after the
    prompt, model and environment tokens alike) bound every episode; past either it ends
    with reward 0 (flags ``max_turns``, ``truncated``). A single-turn environment, one
    with only `verify`, is an episode of one turn (rlvr/rollout.py)."""

    max_turns: int
    max_episode_tokens: int

    def episode(self, problem: Problem) -> Episode:
        ...


@runtime_checkable
class Counting(Protocol):
    """An episode that counts what happened in it (tool calls, errors, void turns), by name;
    the rollout copies the counts onto the episode's `Sample`."""

    counts: dict[str, int]


@runtime_checkable
class UsesTokenizer(Protocol):
    """Needs the model's tokenizer (a tool's result is cut in its tokens): the rollout binds
    the engine's before the first episode."""

    def use_tokenizer(self, tok: Any) -> None:
        ...


@runtime_checkable
class StopsOn(Protocol):
    """Text that ends a model turn in this environment's episodes (a tool call's closing
    tag), beside the model's own end-of-sequence ids."""

    stop_strings: tuple[str, ...]


@dataclass(frozen=True)
class Sampling:
    """How to sample. temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    ignore_eos: bool = False  # keep generating past EOS (benchmarks that need fixed lengths)
    # Further ways a completion ends, beside the model's end-of-sequence ids: a token id in
    # `stop_ids`, or text ending in one of `stop` (a tool call's closing tag). The stopping
    # token stays in the completion, so the token stream is what was sampled.
    stop: tuple[str, ...] = ()
    stop_ids: tuple[int, ...] = ()


@runtime_checkable
class Environment(Protocol):
    """Makes problems and judges completions. "train" and "eval" problems never overlap."""

    name: str

    def problems(self, split: str, seed: int) -> Any:  # Iterator[Problem]
        ...

    def verify(self, problem: Problem, completion: str) -> Verdict:
        ...

    def canonical(self, problem: Problem) -> str:
        """The problem's form up to what the environment treats as the same (3+4 and 4+3):
        it decides the split, so that twins are never on both sides."""
        ...

    def validate(self, n: int = 100) -> list[str]:
        """Gold answers that fail the verifier (must be [])."""
        ...


# Optional capabilities of an environment, each a Protocol that code checks with
# isinstance (never by probing names): what an environment declares is what it has.

@runtime_checkable
class HeldOut(Protocol):
    """A second, strict verifier kept apart from the one trained on (noisy:, lenient:):
    the hack monitor re-scores rollouts with it."""

    def heldout(self, problem: Problem, completion: str) -> Verdict:
        ...


@runtime_checkable
class Stateful(Protocol):
    """State that must survive a resume and reach rollout workers (a curriculum's level)."""

    def state(self) -> Any:
        ...

    def load_state(self, state: Any) -> None:
        ...


@runtime_checkable
class Observer(Protocol):
    """Learns from every batch of rollouts the trainer draws (a curriculum moves its level)."""

    def observe(self, rollouts: list[Rollout]) -> None:
        ...


@runtime_checkable
class Reporting(Protocol):
    """Metrics of its own, logged with each step (a curriculum's level and window)."""

    def stats(self) -> dict[str, float]:
        ...


@runtime_checkable
class GoldText(Protocol):
    """The text a perfect answer writes (probes, gold validation, worked solutions)."""

    def gold_text(self, problem: Problem) -> str:
        ...


@runtime_checkable
class CodeEnv(Protocol):
    """Answers are programs: the code a completion carries, and the tests that grade it."""

    def code_from(self, completion: str) -> str | None:
        ...

    def code_tests(self, problem: Problem) -> tuple[list[str], str]:
        ...


@runtime_checkable
class Routing(Protocol):
    """Made of other environments (a mixture, a wrapper): `routes` maps each problem's
    `env` name to the environment that answers for it."""

    routes: dict[str, Any]


@runtime_checkable
class Engine(Protocol):
    """Turns prompts into samples; takes new weights with a version number.

    What a backend provides (rlvr/engine/__init__.py says how to add one):

    - `tok`: the model's tokenizer; the producer and evaluation encode prompts with it,
      and the verifier reads completions it decoded.
    - `version`: the version of the weights it holds, stamped on every sample as
      `policy_version` (staleness and off-policy corrections are counted in it).
    - `generate(prompts, n, sampling)`: prompts as token ids, never re-tokenized; back
      come, per prompt and in order, `n` `Sample`s with the completion's token ids, each
      token's behaviour log-prob (log-softmax of the logits over `sampling.temperature`,
      before `top_p` truncation, as rlvr/engine/sampling.py computes it: the quantity the
      trainer recomputes for its importance ratios), `finish_reason` "stop" (an end-of-sequence token,
      kept as the last id) or "length" (`max_new_tokens` reached), and the decoded text
      without special tokens. Temperature 0 is greedy; a `seed` makes a call repeatable.
    - `sync_weights(state, version, partial)`: new weights by name (`partial`: only those
      named, e.g. LoRA adapters; the rest stay), after which samples carry `version`. An
      engine that generates from the trainer's own weights only records the version.
    """

    tok: Any
    version: int

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[list[Sample]]:
        ...

    def sync_weights(self, state: dict[str, Any], version: int, partial: bool = False) -> None:
        """Take new weights (`partial`: only some tensors, e.g. LoRA adapters; the rest stay)."""
        ...


@runtime_checkable
class TurnBatch(Protocol):
    """A batch of episodes an engine carries from turn to turn (rlvr/engine/turns.py).

    - `start(prompts, n, sampling)`: the first turn, as `Engine.generate`; its samples are
      sequences 0, 1, ... in order (prompt g's i-th sample is sequence g * n + i).
    - `extend(seqs, streams, sampling)`: the next turn of sequences `seqs`, each given
      its whole token stream so far (prompt, its turns, the observations after them);
      one sample each, as `generate(streams, 1, sampling)` would give, and how many
      tokens of each stream were prefilled. Sequences a call does not name have ended:
      whatever was kept for them is freed. `last=True`: no episode goes on after this
      turn (the turn limit), so nothing is kept for another.
    - `close()`: frees the rest.
    """

    def start(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[list[Sample]]:
        ...

    def extend(self, seqs: list[int], streams: list[list[int]],
               sampling: Sampling, last: bool = False) -> tuple[list[Sample], list[int]]:
        ...

    def close(self) -> None:
        ...


@runtime_checkable
class KeepsCache(Protocol):
    """An engine's optional capability: it keeps each live episode's KV cache between
    turns, so a later turn prefills only the tokens its cache lacks (the observation,
    the last sampled token) instead of the whole stream."""

    def turn_batch(self) -> TurnBatch:
        ...
