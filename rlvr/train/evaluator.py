"""Evaluation during training, the same way in every trainer, with the compute it took to get there.

`TrainerFields` are the keys every trainer shares (evaluation, compute budget,
TensorBoard, torchrun's parallelism); each trainer's config inherits them, so they are documented once.
`Evaluator` evaluates the live model on a fixed held-out set (the first
`eval_problems` of the eval split, the same for every run and every evaluation) and
appends one line to `evals.jsonl`: the step, the run's cumulative compute at that
moment (see rlvr/compute.py) and the full metrics of `rlvr.eval.evaluate`. These lines are
what `rlvr compare` plots accuracy against compute from. The final evaluation may
draw more samples (`final_eval_samples`, e.g. 64 for pass@k curves) and is also
written to `eval.json`.

Under torchrun every rank evaluates alike (rank 0 writes); see rlvr/train/parallel.py.
The evaluator generates from the trainer's own model (no second copy of the weights):
it runs between steps in the trainer's thread, so it never races an update, and a
background rollout producer has an engine of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from rlvr.fields import DistTimeout, ParallelMode, Tensorboard, Wandb, WandbProject
from rlvr.envs.prompting import PromptFields
from rlvr.train.setup import ModelFields
from rlvr.engine import make_engine
from rlvr.envs import make_env
from rlvr.eval import eval_problems, evaluate
from rlvr.compute import Compute
from rlvr.run import Run
from rlvr.train.parallel import SINGLE, Parallel
from rlvr.types import Sampling


class TrainerFields(ModelFields, PromptFields):
    shared_heading: ClassVar[str] = "shared by every trainer"

    eval_env: Any = Field(None, description="Environment to evaluate on (None: the training environment; sft: no evaluation).")
    eval_every: int = Field(0, ge=0, description="Evaluate every N steps (rs: rounds) during training; 0: only at the end.")
    eval_problems: int = Field(200, ge=0, description="Held-out problems per evaluation (0: no evaluation).")
    eval_samples: int = Field(16, ge=1, description="Samples per held-out problem at eval_temperature (pass@1 is their mean).")
    final_eval_samples: int = Field(0, ge=0, description="Samples per problem at the final evaluation (0: eval_samples; 64 draws pass@k curves to k=64).")
    eval_temperature: float = Field(1.0, ge=0, description="Sampling temperature of evaluations (greedy accuracy is always reported beside).")
    eval_max_new_tokens: int = Field(0, ge=0, description="Completion token limit during evaluation (0: the trainer's own limit, or 64).")
    budget_flops: float = Field(0.0, ge=0, description="Stop once the run's total FLOPs (inherited included, see rlvr/compute.py) reach this (0: no budget).")
    tensorboard: Tensorboard
    parallel: ParallelMode
    dist_timeout: DistTimeout
    wandb: Wandb
    wandb_project: WandbProject


def powers_of_two(n: int) -> list[int]:
    return [1 << i for i in range(n.bit_length()) if 1 << i <= n]


class Evaluator:
    def __init__(self, cfg: TrainerFields, run: Run, env_spec: Any, model, tok, max_new_tokens: int = 64,
                 seed: int = 0, par: Parallel = SINGLE):
        spec = cfg.eval_env if cfg.eval_env is not None else env_spec
        self.cfg, self.run, self.model, self.tok = cfg, run, model, tok
        self.enabled = spec is not None and cfg.eval_problems > 0
        self.env = make_env(cfg.prompted(spec)) if self.enabled else None
        # The same problems for every run (seed 0), so runs compare; the run's seed drives sampling.
        self.problems = eval_problems(self.env, cfg.eval_problems) if self.enabled else []
        self.max_new_tokens = cfg.eval_max_new_tokens or max_new_tokens
        self.seed, self.par = seed, par
        self._engine = None
        self.last: dict[str, Any] | None = None

    def due(self, step: int) -> bool:
        return self.enabled and self.cfg.eval_every > 0 and step % self.cfg.eval_every == 0

    def __call__(self, step: int, compute: Compute, final: bool = False) -> dict[str, float]:
        """Evaluate the live model; log to evals.jsonl (and eval.json when final); flat metrics back."""
        if not self.enabled:
            return {}
        if self._engine is None:
            self._engine = self.par.gathering(make_engine(self.model, self.tok, self.cfg.engine, role="trainer",
                                                          version=step, options=self.cfg.engine_options))
        self._engine.sync_weights(self.model.state_dict(), step)
        result = evaluate(self._engine, self.env, self.problems, *self.plan(final))
        snapshot = compute.total().as_dict()
        self.run.append("evals.jsonl", {"step": step, "final": final, "compute": snapshot, "metrics": result})
        if final:
            self.run.write_json("eval.json", {"model": str(self.run.dir / "checkpoints" / "last" / "model"),
                                              "step": step, "compute": snapshot, "metrics": result})
        self.last = result
        return flat(result)


    def plan(self, final: bool) -> tuple[int, list[int], Sampling, bool]:
        """(samples, ks, sampling, greedy) of an evaluation: what `rlvr.eval.evaluate` takes
        after the engine, the environment and the problems (another model, e.g. a teacher,
        is measured with the same)."""
        samples = (self.cfg.final_eval_samples or self.cfg.eval_samples) if final else self.cfg.eval_samples
        sampling = Sampling(temperature=self.cfg.eval_temperature, max_new_tokens=self.max_new_tokens, seed=self.seed)
        greedy = self.cfg.eval_temperature > 0  # else the samples are the greedy answers already
        samples = samples if greedy else 1
        return samples, powers_of_two(samples), sampling, greedy


def flat(result: dict[str, Any]) -> dict[str, float]:
    """`eval/ENV` (pass@1), `eval/ENV/greedy` and `eval/ENV/pass@K` at the largest K, per env."""
    out = {}
    for name, m in result.items():
        out[f"eval/{name}"] = m["pass@1"]["mean"]
        if "greedy" in m:
            out[f"eval/{name}/greedy"] = m["greedy"]["mean"]
        ks = [int(k.split("@")[1]) for k in m if k.startswith("pass@")]
        if max(ks) > 1:
            out[f"eval/{name}/pass@{max(ks)}"] = m[f"pass@{max(ks)}"]["mean"]
    return out


def headline_pass_at_1(result: dict[str, Any]) -> float:
    """pass@1 of one environment, or of "all" for a mixture."""
    return (result["all"] if "all" in result else next(iter(result.values())))["pass@1"]["mean"]
