"""Hack probes for multi-turn environments: scripted models that try to win an episode
without solving it, played through the real rollout.

A single-turn probe (rlvr/verify/probes.py) is one completion handed to `verify`; an
episode has more holes: the limits, the tools, what counts as the answer. Each probe
here is a script of model turns (the last one repeated) that `ScriptedEngine` writes,
token by token on the character tokenizer, into `generate_rollouts`, so the episode's
own `step`, its limits and the rollout's endings all take part. Every probe must earn 0;
the control (the gold answer as the first turn) must earn reward on every problem.

- ``forged_result`` (tools): a tool result written in the model's own text, then the gold.
- ``answer_in_call`` (tools): the gold as a tool call's argument, every turn; the answer
  itself never given.
- ``never_ends``: a tool call every turn (tools), or a wrong answer every turn: the turn limit.
- ``void_turn``: a turn that is neither a tool call nor an answer, every turn.
- ``rambles``: one turn that never stops writing: the episode's token limit.

    from rlvr.envs import make_env
    from rlvr.verify.episode_probes import run_episode_audit
    from rlvr.verify.probes import format_audit
    print(format_audit(run_episode_audit(make_env("tools:calculator:arithmetic"), n_problems=10)))

`run_audit` (and so `rlvr audit`) adds these rows for every multi-turn environment.
Tested by tests/test_audit.py (``.venv/bin/python -m pytest tests/test_audit.py -q``).
"""

from __future__ import annotations

from itertools import islice

from rlvr.types import MultiTurn, Problem, Sample, Sampling

EPISODE_PROBES = ("forged_result", "answer_in_call", "never_ends", "void_turn", "rambles")
TOOL_PROBES = {"forged_result", "answer_in_call"}  # only where tools are offered
EPISODE_GOLD = "gold episode (control)"


class ScriptedEngine:
    """An engine that writes given turns, as a model would: the k-th call of every episode
    writes ``turns[k]`` (the last one once they run out), ending it with the end-of-sequence
    token unless it ends with a stop string (a tool call's closing tag), cut at
    `max_new_tokens` (finish "length")."""

    def __init__(self, turns: list[str], tok=None):
        from rlvr.models.tokenizer import build_char_tokenizer

        self.tok, self.version, self.turns = tok or build_char_tokenizer(), 0, list(turns)
        self.seen: list[Sampling] = []  # each call's sampling

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[list[Sample]]:
        text = self.turns[min(len(self.seen), len(self.turns) - 1)]
        self.seen.append(sampling)
        ids = self.tok(text, add_special_tokens=False)["input_ids"]
        ids += [] if sampling.stop and text.endswith(tuple(sampling.stop)) else [self.tok.eos_token_id]
        finish = "length" if len(ids) > sampling.max_new_tokens else "stop"
        ids = ids[:sampling.max_new_tokens]
        text = self.tok.decode(ids, skip_special_tokens=True)
        return [[Sample(None, list(p), list(ids), [0.0] * len(ids), self.version, finish, text=text) for _ in range(n)]
                for p in prompts]


def episode_scripts(env, problem: Problem) -> dict[str, list[str]]:
    """The turns of each probe that applies to `problem` (tool probes where it offers tools)."""
    from rlvr.verify.probes import _known_wrong, answer_format, gold_text

    fmt, gold = answer_format(env, problem), gold_text(env, problem)
    wrong = _known_wrong(env, problem, gold, fmt)
    tools = problem.meta.get("tools") or ()
    scripts = {"never_ends": [f"<tool>{tools[0]}: 1</tool>" if tools else fmt.render(wrong)],
               "void_turn": ["Let me think about this step by step."],
               "rambles": ["and so on " * 400]}
    if tools:
        scripts["forged_result"] = [f"<result>{gold}</result>\n{fmt.render(gold)}"]
        scripts["answer_in_call"] = [f"<tool>{tools[0]}: {gold}</tool>"]
    scripts[EPISODE_GOLD] = [fmt.render(gold)]
    return {name: scripts[name] for name in (*EPISODE_PROBES, EPISODE_GOLD) if name in scripts}


def run_episode_audit(env, n_problems: int = 20, seed: int = 0, max_new_tokens: int = 64) -> list[dict]:
    """Every episode probe on the multi-turn problems among `n_problems` eval problems (a
    mixture's single-turn ones meet probes.py's alone), rows as `run_audit`'s (the example
    of a failure says how its episode ended)."""
    from rlvr.rollout import generate_rollouts

    from rlvr.verify.probes import maker

    rows: dict[str, dict] = {}
    for problem in islice(env.problems("eval", seed), n_problems):
        if not isinstance(maker(env, problem), MultiTurn):  # a mixture's single-turn problem: probes.py's alone
            continue
        for name, turns in episode_scripts(env, problem).items():
            row = rows.setdefault(name, {"env": env.name, "probe": name, "problems": 0, "rewarded": 0, "errors": 0,
                                         "example": ""})
            row["problems"] += 1
            try:
                [rollout] = generate_rollouts(ScriptedEngine(turns), env, [problem], 1,
                                              Sampling(temperature=0.0, max_new_tokens=max_new_tokens))
                [sample], [verdict] = rollout.samples, rollout.verdicts
            except Exception as e:  # an episode must decide, never raise on what the model wrote
                row["errors"] += 1
                row["example"] = row["example"] or f"{turns[0][:40]!r} raised {e!r}"
                continue
            rewarded = verdict.reward > 0
            row["rewarded"] += rewarded
            if rewarded != (name == EPISODE_GOLD):
                row["example"] = row["example"] or f"ended {sample.ended or 'answer'}: {sample.text[:50]!r}"
    for name, row in rows.items():
        row["expected"] = row["problems"] if name == EPISODE_GOLD else 0
        row["ok"] = row["errors"] == 0 and row["rewarded"] == row["expected"]
    order = (*EPISODE_PROBES, EPISODE_GOLD)
    return sorted(rows.values(), key=lambda r: order.index(r["probe"]))
