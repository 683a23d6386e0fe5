"""Multi-turn episodes three ways: rlvr keeping each episode's KV cache, rlvr re-prefilling, `transformers` `generate`.

Why: from its second turn on, a multi-turn episode continues a stream that grows by a
turn and an observation each time. rlvr's episode loop (rlvr/rollout.py) keeps every
live episode's keys and values in the torch engine between turns and prefills only
the new tokens (rlvr/engine/turns.py); with `--engine_options='{reuse_cache: false}'`
it prefills the whole stream each turn; a user without rlvr re-renders the chat and
calls `model.generate` on the whole history every turn. All three run the same batch
of episodes here: distinct chat prompts ("What is a+b?"), `--turns` model turns of
exactly `--new-tokens` tokens each (T=1, full vocabulary, EOS ignored: HF's
`min_new_tokens`), each answered by the same user message, "Not yet. Try again.".

- rlvr-cache, rlvr-reprefill: `generate_rollouts` over a small environment whose episodes
  always answer with that message (ending at the turn limit), on the engine `rlvr eval`
  builds (`make_engine(..., role="inference")`), the option the only difference.
- hf: `AutoModelForCausalLM.from_pretrained`; each turn `apply_chat_template` over the
  conversation so far, tokenize (left padding), `generate`, decode the new tokens and
  append them and the message to the conversation.

Each side is a process of its own, stepped in turn (benchmarks/interleave.py), one
warm-up step each, then `--repeats` interleaved rounds; medians. Each side's share of
the matmul peak is its *useful* FLOPs over its median time: every token of its final
streams fed through the model once, with its context, and the LM head for every
sampled token (benchmarks/common.py's counting), i.e. the work of an implementation that
never recomputes a token; re-prefilling is the redundant work on top. The matmul peak
is measured before each round. The last line is `speedup_cache_vs_hf_generate: X`
(tiny) or `..._smollm2: X`.

    .venv/bin/python benchmarks/multiturn.py                          # tiny: 32 episodes x 4 turns x 32 tokens
    .venv/bin/python benchmarks/multiturn.py --model smollm2-135m     # 8 episodes x 4 turns x 32 tokens
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # repo root, for rlvr

from common import forward_flops, meta_model, model_dir, print_header  # noqa: E402
from interleave import add_side_args, peak_rss_gb, run_sides, worker_channel  # noqa: E402

OBSERVATION = "Not yet. Try again."
SIDES = ("rlvr-cache", "rlvr-reprefill", "hf")


def questions(count: int, seed: int = 0) -> list[str]:
    pairs = random.Random(seed).sample([(a, b) for a in range(10, 100) for b in range(10, 100)], count)
    return [f"What is {a}+{b}?" for a, b in pairs]


class Again:
    """Episodes that answer every turn with OBSERVATION until the turn limit ends them."""

    name = "again"

    def __init__(self, turns: int):
        self.max_turns, self.max_episode_tokens = turns, 1 << 20

    def episode(self, problem):
        return self

    def step(self, turn):
        from rlvr.types import Step

        return Step(observation=OBSERVATION)


def worker(side: str, path: str, threads: int | None) -> None:
    channel = worker_channel(threads)
    if side.startswith("rlvr"):
        from rlvr.engine import make_engine
        from rlvr.models import load_model
        from rlvr.rollout import generate_rollouts
        from rlvr.types import Problem, Sampling

        model, tok = load_model(path)
        engine = make_engine(model, tok, role="inference", options={"reuse_cache": side == "rlvr-cache",
                                                                    "kv_budget_gb": 4})

        def run(qs: list[str], turns: int, new: int, seed: int) -> list[tuple[int, int, int]]:
            problems = [Problem(id=str(i), prompt=q, answer=None, env="again") for i, q in enumerate(qs)]
            sampling = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=new, seed=seed, ignore_eos=True)
            rollouts = generate_rollouts(engine, Again(turns), problems, 1, sampling)
            return [(len(s.prompt_ids), len(s.completion_ids), s.generated_tokens) for r in rollouts for s in r.samples]
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(path)
        tok.padding_side = "left"

        def run(qs: list[str], turns: int, new: int, seed: int) -> list[tuple[int, int, int]]:
            chats = [[{"role": "user", "content": q}] for q in qs]
            torch.manual_seed(seed)
            for turn in range(turns):
                texts = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats]
                batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                with torch.inference_mode():
                    out = model.generate(**batch, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                                         max_new_tokens=new, min_new_tokens=new, pad_token_id=tok.pad_token_id)
                replies = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
                for chat, reply in zip(chats, replies):
                    chat.append({"role": "assistant", "content": reply})
                    if turn + 1 < turns:
                        chat.append({"role": "user", "content": OBSERVATION})
            # The final streams as this loop last rendered them: (prompt, the rest, sampled) tokens.
            out = []
            for chat in chats:
                prompt = len(tok.apply_chat_template(chat[:1], add_generation_prompt=True, tokenize=True,
                                                     return_dict=False))
                whole = len(tok.apply_chat_template(chat, tokenize=True, return_dict=False))
                out.append((prompt, whole - prompt, turns * new))
            return out

    channel.send(ready=True, threads=torch.get_num_threads())
    while (command := channel.wait())[0] == "step":
        a = command[1]
        qs = questions(a["episodes"])
        t0 = time.perf_counter()
        streams = run(qs, a["turns"], a["new"], a["seed"])
        channel.send(seconds=time.perf_counter() - t0, streams=streams)
    channel.send(peak_rss_gb=peak_rss_gb())


def useful_flops(model, streams: list[tuple[int, int, int]]) -> float:
    """Every token of each final stream fed once (all but the last sampled one), attending
    to its whole context, and the LM head once per sampled token."""
    total = 0.0
    for prompt, rest, sampled in streams:
        fed = prompt + rest - 1
        total += forward_flops(model, fed, (fed + 1) / 2, logits_tokens=0)
        total += forward_flops(model, 0, 0, logits_tokens=sampled)
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--episodes", type=int, default=None, help="episodes in the batch (default: 32 tiny, 8 real)")
    ap.add_argument("--turns", type=int, default=4, help="model turns per episode")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens sampled per turn, EOS ignored")
    add_side_args(ap, SIDES, "interleaved timed rounds after one warm-up (default: 5 tiny, 3 real)")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.path, args.threads)
    tiny = args.model == "tiny"
    episodes = args.episodes or (32 if tiny else 8)
    repeats = args.repeats or (5 if tiny else 3)
    if min(episodes, args.turns, args.new_tokens, repeats) < 1:
        ap.error("--episodes, --turns, --new-tokens and --repeats must be at least 1")
    label = "speedup_cache_vs_hf_generate" + ("" if tiny else "_" + os.path.basename(args.model.rstrip("/")).split("-")[0])
    if args.threads:  # the matmul peak with the threads the sides use
        torch.set_num_threads(args.threads)
    print_header("multi-turn: rlvr keeping KV caches vs re-prefilling vs transformers generate, each in its own "
                 "process, interleaved")
    step = dict(episodes=episodes, turns=args.turns, new=args.new_tokens)
    with tempfile.TemporaryDirectory(prefix="multiturn_") as tmp:
        path = model_dir(args.model, tmp)
        model = meta_model(path)
        print(f"model: {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params) | "
              f"{episodes} episodes x {args.turns} turns x {args.new_tokens} tokens | T=1, EOS ignored | "
              f"1 warm-up + {repeats} interleaved rounds, medians")
        runs, finals, peak = run_sides(__file__, SIDES, path, args.threads, repeats, **step)
    medians = {}
    for name in SIDES:
        times = [s["seconds"] for s in runs[name]]
        medians[name] = med = statistics.median(times)
        flops = useful_flops(model, runs[name][0]["streams"])
        tokens = sum(t[1] + t[0] for t in runs[name][0]["streams"])
        print(f"{name:15s} median {med:7.2f} s (min {min(times):.2f}, max {max(times):.2f}) | "
              f"{flops / med / 1e9:6.2f} useful GFLOP/s = {100 * flops / med / peak:4.1f}% of matmul peak | "
              f"final streams {tokens} tokens | peak RSS {finals[name]['peak_rss_gb']:.2f} GB")
    print(f"ratio rlvr-cache vs rlvr-reprefill: {medians['rlvr-reprefill'] / medians['rlvr-cache']:.2f}x faster")
    print(f"ratio rlvr-reprefill vs hf: {medians['hf'] / medians['rlvr-reprefill']:.2f}x faster")
    print(f"{label}: {medians['hf'] / medians['rlvr-cache']:.2f}")


if __name__ == "__main__":
    main()
