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
    """One completion of one prompt, as the behaviour policy produced it."""

    problem: Problem | None
    prompt_ids: list[int]
    completion_ids: list[int]
    logprobs: list[float]  # behaviour policy log-prob of each completion token
    policy_version: int
    finish_reason: FinishReason
    text: str = ""  # decoded completion (special tokens stripped), for the verifier
    loss_mask: list[int] | None = None  # 1 = train on this token; None = all ones

    def mask(self) -> list[int]:
        return self.loss_mask if self.loss_mask is not None else [1] * len(self.completion_ids)


@dataclass
class Rollout:
    """A group of samples of one problem with their verdicts; `advantages` come from `algos`."""

    problem: Problem
    samples: list[Sample]
    verdicts: list[Verdict]
    advantages: list[float] | None = None
    dropped: int = 0  # samples the verifier could not judge (VerifierError), left out
    dropped_tokens: int = 0  # their completion tokens: generated all the same (compute accounting)
    prompt_tokens: int = 0  # the prompt's length, kept even when every sample was dropped

    @property
    def rewards(self) -> list[float]:
        return [v.reward for v in self.verdicts]

    @property
    def min_version(self) -> int:
        return min(s.policy_version for s in self.samples)


@dataclass(frozen=True)
class Sampling:
    """How to sample. temperature 0 means greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int | None = None
    ignore_eos: bool = False  # keep generating past EOS (benchmarks that need fixed lengths)


@runtime_checkable
class Environment(Protocol):
    """Makes problems and judges completions. "train" and "eval" problems never overlap."""

    name: str

    def problems(self, split: str, seed: int) -> Any:  # Iterator[Problem]
        ...

    def verify(self, problem: Problem, completion: str) -> Verdict:
        ...

    def validate(self, n: int = 100) -> list[str]:
        """Gold answers that fail the verifier (must be [])."""
        ...


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
