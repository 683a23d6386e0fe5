"""Guards users can see: held-out accuracy falling while training reward does not rise
(`DeclineGuard`), and a run with nothing to learn from (`DeadRun`).

RL that hurts a model rarely looks like it from the training reward: after a strong
cold start the reward sits near its ceiling while held-out pass@1 drifts down (the
policy moves on noise). `DeclineGuard` watches each evaluation: when held-out pass@1
has fallen at `patience` evaluations in a row and the mean training reward over that
stretch did not rise by more than `tolerance`, it raises its flag. The RL trainer logs
`guard/declines` (consecutive falls) and `guard/warning` (0 or 1) with every
evaluation and prints the warning on the progress bar; the flag clears when held-out
accuracy rises again.

    guard = DeclineGuard(patience=3)
    for step ...: guard.reward(r); if evaluated: warning = guard.evaluation(pass_at_1)

An RL step whose batch has no group whose rewards differ makes no update. One such step
is common; several in a row mean the run cannot learn, and `DeadRun` says why from the
batch: the policy never earns reward (the verifier cannot read its answers, or the task
is too hard) or always earns the same (the task is solved). It logs `dead_steps`.

    dead = DeadRun(patience=3)
    for step ...: warning = dead.step(metrics)    # metrics: updates, pass_rate, flag_*
"""

from __future__ import annotations


class DeclineGuard:
    def __init__(self, patience: int = 3, tolerance: float = 0.01):
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.patience, self.tolerance = patience, tolerance
        self.evals: list[float] = []  # held-out pass@1 at each evaluation
        self.rewards: list[float] = []  # mean training reward between consecutive evaluations
        self._since: list[float] = []

    def reward(self, value: float) -> None:
        """One training step's mean reward."""
        self._since.append(value)

    def evaluation(self, pass_at_1: float) -> str | None:
        """Record an evaluation; the warning when the guard trips, else None."""
        if self._since:
            self.rewards.append(sum(self._since) / len(self._since))
            self._since = []
        self.evals.append(pass_at_1)
        return self.warning()

    @property
    def declines(self) -> int:
        """Evaluations in a row at which held-out pass@1 fell."""
        n = 0
        for before, after in zip(self.evals[-2::-1], self.evals[::-1]):
            if after >= before:
                break
            n += 1
        return n

    def warning(self) -> str | None:
        n = self.declines
        if n < self.patience or len(self.rewards) < n:
            return None
        window = self.rewards[-n:]
        if window[-1] > window[0] + self.tolerance:
            return None  # the policy is learning something the held-out set does not reward: not this guard's case
        start, end = self.evals[-n - 1], self.evals[-1]
        return (f"held-out pass@1 fell at {n} evaluations in a row ({start:.1%} -> {end:.1%}) while the training "
                f"reward did not rise ({window[0]:.1%} -> {window[-1]:.1%}): RL is not helping this model; try a "
                "lower --lr, --drop_uniform_groups, or --kl_coef")

    def replay(self, rows) -> None:
        """Rebuild the guard from a resumed run's metrics.jsonl rows (the flat `eval/ENV` keys)."""
        for row in rows:
            if "reward" in row:
                self.reward(row["reward"])
            heads = {k: v for k, v in row.items() if k.startswith("eval/") and k.count("/") == 1}
            if heads:
                self.evaluation(heads.get("eval/all", next(iter(heads.values()))))

    def metrics(self) -> dict[str, float]:
        return {"guard/declines": float(self.declines), "guard/warning": float(self.warning() is not None)}


class DeadRun:
    def __init__(self, patience: int = 3):
        self.patience = patience
        self.steps = 0  # in a row without an update

    def step(self, metrics: dict[str, float]) -> str | None:
        """Count one step from its metrics; the warning when it is the `patience`-th in a row."""
        self.steps = self.steps + 1 if metrics["updates"] == 0 else 0
        return self.why(metrics) if self.steps == self.patience else None

    def why(self, metrics: dict[str, float]) -> str:
        """Why a run has no learning signal, from the batch it just drew."""
        rate = metrics.get("pass_rate", 0.0)
        if rate == 0.0:
            flags = {k[5:]: v for k, v in metrics.items() if k.startswith("flag_") and v > 0}
            why = (f"the policy never earns reward (flags: {', '.join(f'{k} {v:.0%}' for k, v in flags.items())}): "
                   "the model may not write the answer format the verifier reads, or the task is too hard for it")
        else:
            why = "every completion earns the same reward: the task is solved at this difficulty"
        return f"{self.patience} steps in a row with no group whose rewards differ, so nothing to learn from: {why}"

    def metrics(self) -> dict[str, float]:
        return {"dead_steps": float(self.steps)}
