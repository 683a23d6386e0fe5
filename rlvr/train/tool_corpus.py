"""The synthetic corpus with a calculator: some problems are offered one, and some documents use it.

A variant of corpus.py for the tools experiment (rlvr/experiments/tools.py). Each
document is one train-split problem of a `tools:` environment over column additions:

- with probability `offer_share` the problem is offered the tool, and its document is
  exactly the token stream an episode of that environment feeds the model: the prompt as
  the rollout renders it (rlvr/rollout.py `encode_prompt`: the tag format's offer), then,
  with probability `tool_share`, a call of the tool on the problem's expression, the
  environment's own answer to it (the episode's `step` runs the tool; `observation_ids`
  writes the result as the rollout appends it) and the answer line; otherwise the usual
  column work with slips (corpus.py), in one turn;
- otherwise the problem is asked without the offer, and the document is corpus.py's.

Every document is made of the rollout's own token ids (decoded once to text, which the
character tokenizer encodes back to the same ids; tests/test_tool_corpus.py checks it),
so what pretraining reads is token for token what an RL episode feeds the model.

    docs = tool_documents(make_env("tools:calculator:arithmetic:digits=3,ops=add"), tok,
                          slip=0.7, seed=0, offer_share=0.5, tool_share=0.3)
"""

from __future__ import annotations

import dataclasses
import random
from typing import Iterator

from rlvr.envs.arithmetic import expression
from rlvr.envs.tool_calls import tag_call
from rlvr.rollout import encode_prompt, observation_ids
from rlvr.train.corpus import worked_solution
from rlvr.types import Problem, Turn
from rlvr.verify.extract import format_answer


def episode_ids(env, tok, problem: Problem, turns: list[str]) -> list[int]:
    """The token stream an episode of `env` (a `tools:` environment) feeds the model when
    the model writes `turns` in order: the prompt, each turn's tokens (the last closed by
    EOS, as a finished answer is) and the environment's observation after every earlier
    one, made by the episode itself and appended as the rollout appends it."""
    env.use_tokenizer(tok)
    episode, ids = env.episode(problem), encode_prompt(tok, problem)
    for i, text in enumerate(turns):
        last = i == len(turns) - 1
        turn = tok(text + (tok.eos_token if last else ""), add_special_tokens=False)["input_ids"]
        ids += turn
        step = episode.step(Turn(text, turn, "stop"))
        if (step.verdict is None) == last:
            raise ValueError(f"{problem.id}: the episode {'went on after' if last else 'ended at'} turn {i + 1} "
                             f"({text!r})")
        if not last:
            ids += observation_ids(tok, step, turn)
    return ids


def tool_document(env, tok, problem: Problem, offer: bool, use_tool: bool, slip: float, rng: random.Random,
                  slip_later: float | None = None) -> str:
    """One problem's document (see the module docstring)."""
    if not offer:
        plain = dataclasses.replace(problem, meta={k: v for k, v in problem.meta.items() if k != "tools"})
        reply = worked_solution(plain, slip, rng, slip_later)
        return tok.apply_chat_template(plain.messages() + [{"role": "assistant", "content": reply}], tokenize=False)
    turns = ([tag_call(problem.meta["tools"][0], expression(problem)), format_answer(problem.answer)] if use_tool
             else [worked_solution(problem, slip, rng, slip_later)])
    return tok.decode(episode_ids(env, tok, problem, turns))


def tool_documents(env, tok, slip: float, seed: int, offer_share: float, tool_share: float,
                   slip_later: float | None = None) -> Iterator[str]:
    """An endless, deterministic stream of documents from `env`'s train split."""
    rng = random.Random(f"tool-corpus/{seed}")
    for problem in env.problems("train", seed):
        offer = rng.random() < offer_share
        use_tool = offer and rng.random() < tool_share
        yield tool_document(env, tok, problem, offer, use_tool, slip, rng, slip_later)
