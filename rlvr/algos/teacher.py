"""On-policy distillation's learning signal: a teacher's per-token reverse KL, as pure functions.

The student samples its own completions; the teacher scores every sampled token. The
per-token reverse KL estimate, log p_student(x_t) - log p_teacher(x_t) at the sampled
token x_t, is how much more the student likes its own choice than the teacher does;
its negative, scaled by `coef`, is each token's advantage (the tinker cookbook's
on-policy distillation, with discount 0: no token is credited with later ones):

    A_t = -coef * (log p_student(x_t) - log p_teacher(x_t))

Minimising the policy-gradient loss with these advantages minimises the reverse KL
KL(student || teacher) over the student's own samples, a mode-seeking objective dense
where a verifier's reward is one bit per episode. Tokens the environment wrote (mask
0) carry no signal.

    adv = reverse_kl_advantages(student_logp, teacher_logp, mask, coef=1.0)

Tested by tests/test_opd.py.
"""

from __future__ import annotations


def reverse_kl(student_logp: list[float], teacher_logp: list[float], mask: list[int]) -> list[float]:
    """Per-token reverse KL estimate log p_student - log p_teacher of the sampled tokens (0 off the mask)."""
    if not len(student_logp) == len(teacher_logp) == len(mask):
        raise ValueError(f"reverse_kl: {len(student_logp)} student, {len(teacher_logp)} teacher log-probs and "
                         f"{len(mask)} mask entries for one completion")
    return [(s - t) if m else 0.0 for s, t, m in zip(student_logp, teacher_logp, mask)]


def reverse_kl_advantages(student_logp: list[float], teacher_logp: list[float], mask: list[int],
                          coef: float = 1.0) -> list[float]:
    """Each token's advantage: -coef times its reverse KL estimate (0 off the mask)."""
    return [-coef * k for k in reverse_kl(student_logp, teacher_logp, mask)]
