"""`rlvr opd`: on-policy distillation, RL's loop with a teacher scoring every sampled token.

The student samples its own completions (episodes, multi-turn included) exactly as in
`rlvr rl`; before each update a teacher scores every token the student sampled, and
each token's advantage becomes the teacher's signal (rlvr/algos/teacher.py):

    A_t = teacher_coef * (log p_teacher(x_t) - log p_student(x_t))  +  reward_weight * A_group

So the student moves towards what the teacher would have said, token by token, on the
student's own text: dense where a verifier's reward is one bit per episode, and on-policy
where SFT on the teacher's traces is not. `--reward_weight` adds the verifier's group
advantage (0 by default: distillation alone). Everything else is RL's: losses,
off-policy corrections, LoRA, Ray workers, resume, evaluation and compute accounting,
where the teacher's forward passes are charged as teacher FLOPs.

The teacher is a local checkpoint that shares the student's tokenizer (refused at start
otherwise): one forward pass over prompt and completion, no gradient, on
`--teacher_device` (the student's by default).

    rlvr opd --model runs/base --teacher runs/rl --env arithmetic:digits=3,ops=add --steps 50

Tested by tests/test_opd.py.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from rlvr.distill.scorer import LocalScorer, annotate
from rlvr.run import Run, last_model
from rlvr.train.rl import RL, RLConfig
from rlvr.train.setup import resolve_device, resolve_dtype
from rlvr.types import Rollout


class OPDConfig(RLConfig):
    run_dir: str = Field("runs/opd", description="Run directory (config, metrics, samples, checkpoints, eval).")
    teacher: str = Field(..., description="The teacher: HF dir, checkpoint, run dir or .gguf, with the student's tokenizer.")
    teacher_device: str = Field("", description="Where the teacher's forward passes run (auto | cpu | cuda | cuda:N); empty: --device, the student's.")
    teacher_coef: float = Field(1.0, gt=0, description="Weight of the teacher's signal, log p_teacher - log p_student, in each token's advantage.")
    reward_weight: float = Field(0.0, ge=0, description="Weight of the verifier's group advantage beside the teacher's signal (0: distillation alone; 1: RL's advantage added).")


class OPD(RL):
    command = "opd"

    def prepare(self) -> None:
        super().prepare()
        cfg = self.cfg  # a teacher that is not there fails before the run directory is touched
        device = resolve_device(cfg.teacher_device or cfg.device)
        self.teacher = LocalScorer(last_model(cfg.teacher), device=device, dtype=resolve_dtype(cfg.dtype, device),
                                   engine=cfg.engine, engine_options=cfg.engine_options)

    def setup(self, state: dict[str, Any]) -> None:
        self.teacher.check(self.tok, str(self.cfg.model))
        self.reward_weight = self.cfg.reward_weight
        super().setup(state)

    def learn(self, rollouts: list[Rollout]) -> dict[str, float]:
        signal = annotate(rollouts, self.teacher, self.cfg.teacher_coef)
        self.compute.teacher(signal["teacher_tokens"], self.teacher.flops(signal["teacher_tokens"]))
        return {**super().learn(rollouts), **signal}

    def progress(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"rkl": metrics.get("reverse_kl", 0.0), **super().progress(metrics)}


def main(cfg: OPDConfig) -> Run:
    return OPD(cfg).train()
