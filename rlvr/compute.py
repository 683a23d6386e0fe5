"""Compute accounting: what a run spent, so that regimes can be compared at equal compute.

Every trainer keeps one `Compute` meter, adds to it as it works, logs its cumulative
totals in each `metrics.jsonl` line (keys `compute/...`), snapshots it with every
evaluation (`evals.jsonl`) and checkpoint, and writes it to `summary.json`.

FLOPs are estimated from the parameter count N and token counts (Kaplan et al. 2020):

    forward  = 2 · N · tokens     one multiply and one add per parameter per token
    backward = (2 · N + 2 · N_trained) · tokens
                                  gradients for activations (through every weight) and for
                                  the weights trained: 4 · N in full fine-tuning; under
                                  LoRA the frozen base's weight gradients are never formed
    generation = forward over the prompt (once per prompt, as the engine prefills it
                 once for its n samples) plus one forward per generated token

N counts every parameter once (tied embeddings too: the lm_head matmul costs them, the
lookup does not). Attention's T² term is left out; at the short contexts of the CPU
tasks it is a few percent. Tokens are the useful ones: padding an engine or a batch
happens to compute is not charged, so two implementations of one regime cost the same.
Evaluation is not charged (every run evaluates alike); wall time includes it.

What a run inherits: a run that starts from another run's checkpoint (RL after SFT),
or that trains on another run's data (SFT on distilled solutions), is charged that
run's compute as well, so "distill + RL" carries its teacher's tokens. Pretraining is
the shared starting point of every regime and is not inherited.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

KEYS = ("generated_tokens", "prompt_tokens", "trained_tokens", "teacher_tokens",
        "forward_flops", "backward_flops", "teacher_flops", "wall_seconds")
NOT_INHERITED = {"pretrain"}


@dataclass
class Totals:
    generated_tokens: int = 0   # sampled from the model being trained (rollouts, best-of-N)
    prompt_tokens: int = 0      # prompts those samples were generated from (prefilled once each)
    trained_tokens: int = 0     # tokens through a forward and backward pass (all epochs)
    teacher_tokens: int = 0     # written by a teacher (distillation)
    forward_flops: float = 0.0
    backward_flops: float = 0.0
    teacher_flops: float = 0.0  # 2 · N_teacher · the tokens its forwards computed, when its size is known, else 0
    wall_seconds: float = 0.0

    @property
    def flops(self) -> float:
        return self.forward_flops + self.backward_flops + self.teacher_flops

    def __add__(self, other: "Totals") -> "Totals":
        return Totals(**{k: getattr(self, k) + getattr(other, k) for k in KEYS})

    def as_dict(self) -> dict[str, float]:
        return {**dataclasses.asdict(self), "flops": self.flops}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Totals":
        return cls(**{k: d.get(k, 0) for k in KEYS})


class Compute:
    """A run's meter: its own spending, what it inherited, and the clock."""

    def __init__(self, n_params: int, stage: str, inherited: Totals | None = None,
                 n_trained: int | None = None, reduce: Callable[[list[float]], list[float]] | None = None):
        self.n_params, self.stage = n_params, stage
        # Under torchrun every rank charges its own share and the meter adds them all
        # (`reduce`: sums over ranks), so every rank's meter reads the run's whole spending.
        self.reduce = reduce
        self.n_trained = n_params if n_trained is None else n_trained
        self.own, self.inherited = Totals(), inherited or Totals()
        self._since = time.time()

    # -- what trainers call --------------------------------------------------------
    def generated(self, prompt_tokens: int, completion_tokens: int) -> None:
        prompt_tokens, completion_tokens = self._all(prompt_tokens, completion_tokens)
        self.own.prompt_tokens += prompt_tokens
        self.own.generated_tokens += completion_tokens
        self.own.forward_flops += 2.0 * self.n_params * (prompt_tokens + completion_tokens)

    @property
    def flops_per_trained_token(self) -> float:
        """Forward and backward of one trained token: 4 N + 2 N_trained (6 N in full fine-tuning)."""
        return 4.0 * self.n_params + 2.0 * self.n_trained

    def trained(self, tokens: int) -> None:
        tokens, = self._all(tokens)
        self.own.trained_tokens += tokens
        self.own.forward_flops += 2.0 * self.n_params * tokens
        self.own.backward_flops += 2.0 * (self.n_params + self.n_trained) * tokens

    def forward_only(self, tokens: int, n_params: int | None = None) -> None:
        """A forward without backward, e.g. a frozen reference model's log-probs."""
        tokens, = self._all(tokens)
        self.own.forward_flops += 2.0 * (n_params or self.n_params) * tokens

    def add(self, spent: Totals) -> None:
        """Spending done elsewhere on this run's behalf, e.g. by an SFT sub-run."""
        self.own = self.own + spent

    def teacher(self, tokens: int, flops: float = 0.0) -> None:
        tokens, flops = self._all(tokens, flops)
        self.own.teacher_tokens += tokens
        self.own.teacher_flops += flops

    def _all(self, *counts: float) -> list:
        """These counts summed over ranks (as given in one process)."""
        if self.reduce is None:
            return list(counts)
        return [type(c)(round(v) if isinstance(c, int) else v) for c, v in zip(counts, self.reduce(list(counts)))]

    # -- reading it ----------------------------------------------------------------
    def total(self) -> Totals:
        self.tick()
        return self.own + self.inherited

    def spent(self, budget: float) -> bool:
        """Whether a FLOP budget (0: none) is used up, inherited compute included."""
        return bool(budget) and self.total().flops >= budget

    def tick(self) -> None:
        now = time.time()
        self.own.wall_seconds += now - self._since
        self._since = now

    def metrics(self) -> dict[str, float]:
        """Cumulative totals (inherited included) for a metrics.jsonl line."""
        return {f"compute/{k}": v for k, v in self.total().as_dict().items()}

    def state(self) -> dict[str, Any]:
        """What a checkpoint stores (and what a run started from it inherits)."""
        total = self.total()
        return {"stage": self.stage, "n_params": self.n_params, "own": self.own.as_dict(),
                "inherited": self.inherited.as_dict(), "total": total.as_dict()}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Continue a resumed run's meter where its checkpoint left it (a checkpoint from
        before compute accounting has none: the meter then counts from the resume)."""
        if not state:
            return
        self.own = Totals.from_dict(state["own"])
        self.inherited = Totals.from_dict(state["inherited"])
        self._since = time.time()

    def summary(self) -> dict[str, Any]:
        s = self.state()
        return {"compute": s["own"], "inherited": s["inherited"], "total": s["total"], "n_params": self.n_params}


# -- inheritance ----------------------------------------------------------------------
def inherited_from(*sources: str | Path | None) -> Totals:
    """The compute behind a starting model (a checkpoint, model or run dir) and behind
    training data (a file inside a run dir that wrote summary.json), summed."""
    out = Totals()
    for src in sources:
        if src:
            out = out + _compute_behind(Path(src))
    return out


def _compute_behind(path: Path) -> Totals:
    state_file = _trainer_state(path)
    if state_file is not None:
        small = state_file.parent / "compute.json"  # beside it since compute accounting; no optimizer to load
        state = (json.loads(small.read_text()) if small.exists()
                 else torch.load(state_file, weights_only=False, map_location="cpu").get("compute"))
        if state and state.get("stage") not in NOT_INHERITED:
            return Totals.from_dict(state["total"])
        return Totals()
    summary = (path if path.is_dir() else path.parent) / "summary.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        if data.get("command") not in NOT_INHERITED and "total" in data:
            return Totals.from_dict(data["total"])
    return Totals()


def _trainer_state(path: Path) -> Path | None:
    """trainer_state.pt of the checkpoint a model path belongs to, if it is one."""
    for cand in (path / "trainer_state.pt", path.parent / "trainer_state.pt",
                 path / "checkpoints" / "last" / "trainer_state.pt"):
        if cand.exists():
            return cand
    return None

