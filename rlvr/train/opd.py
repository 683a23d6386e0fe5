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
where the teacher's forward passes are charged as teacher FLOPs. The teacher's own
accuracy, on the same held-out problems, is measured once at the end (teacher_eval.json)
and stands in summary.json beside the student's.

The teacher is a local checkpoint that shares the student's tokenizer (refused at start
otherwise): one forward pass over prompt and completion, no gradient, on
`--teacher_device` (the student's by default). Or it is a model behind an
OpenAI-compatible endpoint that returns prompt log-probs (`--teacher_base_url`: `rlvr
serve`, vLLM, SGLang), asked with the teacher client's concurrency, retries, token
budget and on-disk cache in the run directory (a resumed run asks nothing twice); such a
teacher must share the student's tokenizer too, checked at start by the ids of a probe
text (the server's `/tokenize`, else the prompt tokens it echoes).

    rlvr opd --model runs/base --teacher runs/rl --env arithmetic:digits=3,ops=add --steps 50
    rlvr opd --model runs/base --teacher rl --teacher_base_url http://127.0.0.1:8000/v1 --env arithmetic:digits=3,ops=add

Tested by tests/test_opd.py.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
from pydantic import Field

from rlvr.distill.scorer import HTTPScorer, LocalScorer, annotate
from rlvr.config import InputError
from rlvr.distill.teacher import BudgetExceeded, HTTPTeacher, TeacherConfig, TeacherError
from rlvr.eval import evaluate, evaluate_api
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
    teacher_base_url: str = Field("", description="An OpenAI-compatible endpoint serving the teacher (its model name: --teacher) that returns prompt log-probs; empty: --teacher is a local checkpoint.")
    teacher_form: Literal["echo", "prompt_logprobs"] = Field("echo", description="How the endpoint is asked for prompt log-probs: echo (OpenAI's echo with logprobs; rlvr serve, vLLM, SGLang) | prompt_logprobs (vLLM's).")
    teacher_params: int = Field(0, ge=0, description="The endpoint's teacher's parameter count, to charge its forward passes as FLOPs (0: tokens only).")
    api_key_env: str = Field("", description="Environment variable holding the endpoint's API key (never written anywhere); empty: none.")
    max_concurrency: int = Field(8, ge=1, description="Requests to the endpoint in flight at once.")
    budget_tokens: int = Field(0, ge=0, description="Tokens the teacher may score in this run, prompts included (0: no cap); past it the run stops with its last checkpoint (a local teacher: after the step that crosses it).")


class OPD(RL):
    command = "opd"

    def prepare(self) -> None:
        super().prepare()
        cfg = self.cfg  # a teacher that is not there fails before the run directory is touched
        if cfg.teacher_base_url:
            self.remote(cache_dir=None).probe()
            return
        device = resolve_device(cfg.teacher_device or cfg.device)
        self.teacher = LocalScorer(last_model(cfg.teacher), device=device, dtype=resolve_dtype(cfg.dtype, device),
                                   engine=cfg.engine, engine_options=cfg.engine_options)

    def remote(self, cache_dir: str | None) -> HTTPScorer:
        cfg = self.cfg
        return HTTPScorer(TeacherConfig(base_url=cfg.teacher_base_url, model=cfg.teacher,
                                        api_key_env=cfg.api_key_env or None, max_concurrency=cfg.max_concurrency,
                                        budget_tokens=cfg.budget_tokens or None, cache_dir=cache_dir),
                          cfg.teacher_form, cfg.teacher_params)

    def setup(self, state: dict[str, Any]) -> None:
        if self.cfg.teacher_base_url:
            self.teacher = self.remote(cache_dir=str(self.run.dir / "teacher_cache"))
        self.teacher.check(self.tok, str(self.cfg.model))
        if not self.cfg.teacher_base_url:
            self.check_context()
        self.reward_weight = self.cfg.reward_weight
        super().setup(state)

    def check_context(self) -> None:
        """A teacher whose context cannot hold the student's longest sequence (the longest of
        64 training prompts, plus every token an episode may add) is refused before training."""
        import itertools

        from rlvr.rollout import encode_prompt
        from rlvr.types import MultiTurn

        context = getattr(self.teacher.engine.model.config, "max_position_embeddings", None)
        added = self.env.max_episode_tokens if isinstance(self.env, MultiTurn) else self.cfg.max_new_tokens
        prompts = itertools.islice(self.env.problems("train", self.cfg.seed), 64)
        longest = max(len(encode_prompt(self.tok, p)) for p in prompts) + added
        if context and longest > context:
            raise InputError(f"teacher {self.teacher.name} holds {context} tokens, but the student's sequences run "
                             f"to {longest} (prompt and completion); lower --max_new_tokens or use a teacher with a "
                             "longer context")

    def finished(self, step: int) -> bool:
        spent = self.cfg.budget_tokens and self.compute.own.teacher_tokens >= self.cfg.budget_tokens
        return super().finished(step) or bool(spent)  # an endpoint's client stops itself mid-batch

    def train_step(self, step: int) -> dict[str, float] | None:
        try:
            return super().train_step(step)
        except BudgetExceeded as e:  # what was scored is cached; the run ends with the weights it has
            self.warn(f"step {step + 1}: the teacher's {e}")
            return None

    def learn(self, rollouts: list[Rollout]) -> dict[str, float]:
        signal = annotate(rollouts, self.teacher, self.cfg.teacher_coef)
        self.compute.teacher(signal["teacher_tokens"], signal.pop("teacher_flops"))
        return {**super().learn(rollouts), **signal}

    def summary(self) -> dict[str, Any]:
        """The teacher's own accuracy beside the student's, on the same held-out problems and
        samples as the final evaluation: measured once, kept in teacher_eval.json."""
        if self.evaluator is None or not self.evaluator.enabled:
            return {}
        if not (self.run.dir / "teacher_eval.json").exists():
            metrics = self.teacher_accuracy()
            if metrics is None:
                return {}
            self.run.write_json("teacher_eval.json", {"teacher": self.teacher.name, "metrics": metrics})
        return {"teacher": json.loads((self.run.dir / "teacher_eval.json").read_text())}

    def teacher_accuracy(self) -> dict[str, Any] | None:
        """A local teacher generates as the student does; an endpoint is asked through its chat
        API (`rlvr eval --base_url`'s path), outside the scoring budget; None, with a warning,
        where it cannot answer."""
        ev = self.evaluator
        if not self.cfg.teacher_base_url:
            return evaluate(self.teacher.engine, ev.env, ev.problems, *ev.plan(final=True))
        cfg = self.cfg
        client = HTTPTeacher(TeacherConfig(base_url=cfg.teacher_base_url, model=cfg.teacher,
                                           api_key_env=cfg.api_key_env or None, max_concurrency=cfg.max_concurrency))
        try:
            return evaluate_api(client, ev.env, ev.problems, *ev.plan(final=True))
        except (TeacherError, httpx.HTTPError) as e:
            self.warn(f"the teacher's own accuracy was not measured: {e}")
            return None

    def progress(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"rkl": metrics.get("reverse_kl", 0.0), **super().progress(metrics)}


def main(cfg: OPDConfig) -> Run:
    return OPD(cfg).train()
