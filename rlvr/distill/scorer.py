"""Teachers that score: per-token log-probs of the student's own samples, for on-policy distillation.

On-policy distillation (rlvr/algos/teacher.py) asks a teacher how likely it finds each
token the student sampled. `LocalScorer` answers with a local checkpoint: one forward
pass over prompt and completion, no gradient, on any device, through the engine's
`score`. `annotate` turns its answers into each sample's per-token advantages and the
metrics a run logs (the reverse KL falling is what progress looks like).

Teacher and student must share a tokenizer: the teacher scores the student's token
ids, which would mean other text to another tokenizer and train silently wrong.
`check_same_tokenizer` refuses a mismatch at start, naming both and their vocabularies.

    scorer = LocalScorer("runs/teacher", student_tok)
    metrics = annotate(rollouts, scorer, coef=1.0)   # sets Sample.token_advantages

Tested by tests/test_opd.py.
"""

from __future__ import annotations

from pathlib import Path

from rlvr.algos.teacher import reverse_kl, reverse_kl_advantages
from rlvr.config import InputError
from rlvr.types import Rollout


def check_same_tokenizer(student_tok, teacher_tok, student: str, teacher: str) -> None:
    """An `InputError` unless both tokenizers map every token to the same id."""
    s, t = student_tok.get_vocab(), teacher_tok.get_vocab()
    if s != t:
        raise InputError(f"teacher {teacher} and student {student} have different tokenizers ({len(t)} and {len(s)} "
                         "tokens): the teacher would score ids that mean other text to it; on-policy distillation "
                         "needs a teacher of the student's tokenizer")


class LocalScorer:
    """A local checkpoint (anything `load_model` reads) as a scoring teacher. With
    `student_tok`, a teacher of another tokenizer is refused here (else call `check`)."""

    def __init__(self, path: str | Path, student_tok=None, student: str = "the student", device=None, dtype=None,
                 engine: str = "torch", engine_options: dict | None = None):
        from rlvr.engine import make_engine
        from rlvr.models import count_parameters, load_model

        model, self.tok = load_model(path, device=device, dtype=dtype)
        self.name, self.parameters = str(path), count_parameters(model)
        if student_tok is not None:
            self.check(student_tok, student)
        self.engine = make_engine(model, self.tok, engine, role="inference", options=engine_options)

    def check(self, student_tok, student: str) -> None:
        check_same_tokenizer(student_tok, self.tok, student, self.name)

    def score(self, prompts: list[list[int]], completions: list[list[int]]) -> list[list[float]]:
        return self.engine.score(prompts, completions)

    def flops(self, tokens: int) -> float:
        """A forward pass over `tokens` (compute.py's 2 N per token)."""
        return 2.0 * self.parameters * tokens


def annotate(rollouts: list[Rollout], scorer, coef: float) -> dict[str, float]:
    """Score every sample with the teacher and set its per-token advantages to the reverse
    KL signal (`coef` times it); returns the mean reverse KL per model token and per
    sequence, and the tokens the teacher read (each sample's prompt and stream)."""
    samples = [s for r in rollouts for s in r.samples]
    if not samples:
        return {"teacher_tokens": 0}
    teacher = scorer.score([s.prompt_ids for s in samples], [s.completion_ids for s in samples])
    kl_sum, tokens, seq_kl = 0.0, 0, []
    for s, t in zip(samples, teacher):
        mask = s.mask()
        s.token_advantages = reverse_kl_advantages(s.logprobs, t, mask, coef)
        kl = reverse_kl(s.logprobs, t, mask)
        kl_sum += sum(kl)
        tokens += sum(1 for m in mask if m)
        seq_kl.append(sum(kl))
    return {"reverse_kl": kl_sum / max(tokens, 1), "reverse_kl_seq": sum(seq_kl) / len(seq_kl),
            "teacher_tokens": sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)}
