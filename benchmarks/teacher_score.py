"""A teacher scoring a student's samples: rlvr's local teacher against a `transformers` forward.

Why: in on-policy distillation (`rlvr opd`) the teacher reads every sample the student
drew, prompt included, and a group's n samples share one prompt. With few-shot prompts
(SmolLM2 on `rlvr experiment real`'s task: ~180 prompt tokens, ~10 sampled) the prompt
is most of what the teacher reads. rlvr's local teacher (`LocalScorer`, the torch
engine's `score`) computes each distinct prompt once and lets its completions attend to
its keys and values (`rlvr-unshared`: the same scorer asked one sample of each group at
a time, so no call holds a prompt twice: what the sharing alone buys); the baseline is
what TRL's `GKDTrainer` does with a local teacher:
`teacher(input_ids, attention_mask).logits` over each padded prompt + completion, then
`log_softmax` and a gather of the completion tokens' log-probs, under `torch.no_grad`.

The batch: `--prompts` train problems of `--env` (the real experiment's task by
default), rendered as rlvr renders them, `--group` completions each of `--new-tokens`
token ids drawn at random from the vocabulary (the cost does not depend on what the
tokens say). Both sides return the log-probs of every completion token; they agree to
1e-3 (checked each round). Each side is a process of its own, stepped in turn
(benchmarks/interleave.py), one warm-up, then `--repeats` interleaved rounds; medians.
Useful FLOPs are one forward over each distinct prompt and every completion token with
its context, and the LM head on the completion tokens (benchmarks/common.py's counting).
The last line is `speedup_teacher_score_vs_hf: X` (tiny) or `..._smollm2: X`.

    .venv/bin/python benchmarks/teacher_score.py                          # tiny: 16 prompts x 4 x 24 tokens
    .venv/bin/python benchmarks/teacher_score.py --model smollm2-135m     # the same batch on SmolLM2-135M
"""

from __future__ import annotations

import argparse
import itertools
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

SIDES = ("rlvr", "rlvr-unshared", "hf")
ENV = "prompt:format=answer_is,shots=2:lists:length=4,max_value=99,ops=max+min"


def make_batch(path: str, env_spec: str, prompts: int, group: int, new: int, seed: int = 0):
    """(prompt ids, completion ids): `prompts` problems' rendered prompts, each `group` times,
    and random completions of `new` ordinary tokens."""
    from transformers import AutoTokenizer

    from rlvr.envs import make_env
    from rlvr.rollout import encode_prompt

    tok = AutoTokenizer.from_pretrained(path)
    env = make_env(env_spec)
    rendered = [encode_prompt(tok, p) for p in itertools.islice(env.problems("train", seed), prompts)]
    ordinary = sorted(set(range(len(tok))) - set(tok.all_special_ids))
    rng = random.Random(seed)
    return ([p for p in rendered for _ in range(group)],
            [[rng.choice(ordinary) for _ in range(new)] for _ in range(prompts * group)])


def worker(side: str, path: str, threads: int | None) -> None:
    channel = worker_channel(threads)
    if side.startswith("rlvr"):
        from rlvr.distill.scorer import LocalScorer

        scorer = LocalScorer(path)

        def run(prompts, completions):
            if side == "rlvr":
                return scorer.score(prompts, completions)
            out: list = [None] * len(prompts)  # one call per sample of each group: no prompt twice in a call
            for j in range(group_size(prompts)):
                rows = [i for i in range(len(prompts)) if i % group_size(prompts) == j]
                for i, lp in zip(rows, scorer.score([prompts[i] for i in rows], [completions[i] for i in rows])):
                    out[i] = lp
            return out
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        pad = AutoTokenizer.from_pretrained(path).pad_token_id or 0

        def run(prompts, completions):
            seqs = [p + c for p, c in zip(prompts, completions)]
            width = max(map(len, seqs))
            ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
            mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            out = []
            for b, (p, c) in enumerate(zip(prompts, completions)):
                at = torch.arange(len(p) - 1, len(p) + len(c) - 1)
                out.append(logp[b, at, torch.tensor(c)].tolist())
            return out

    channel.send(ready=True, threads=torch.get_num_threads())
    while (command := channel.wait())[0] == "step":
        a = command[1]
        t0 = time.perf_counter()
        logps = run(a["prompts"], a["completions"])
        channel.send(seconds=time.perf_counter() - t0, logps=logps)
    channel.send(peak_rss_gb=peak_rss_gb())


def group_size(prompts: list[list[int]]) -> int:
    """How many times the batch repeats its first prompt, in a row (make_batch's layout)."""
    return next((i for i, p in enumerate(prompts) if p != prompts[0]), len(prompts))


def useful_flops(model, prompts: list[list[int]], completions: list[list[int]]) -> float:
    """Each distinct prompt once (no logits), every completion token with its context and
    its logits."""
    total = sum(forward_flops(model, len(p), (len(p) + 1) / 2, logits_tokens=0) for p in {tuple(p) for p in prompts})
    for p, c in zip(prompts, completions):
        total += forward_flops(model, len(c), len(p) + (len(c) + 1) / 2, logits_tokens=len(c))
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--env", default=ENV, help="the environment whose train prompts are scored")
    ap.add_argument("--prompts", type=int, default=16, help="distinct prompts in the batch")
    ap.add_argument("--group", type=int, default=4, help="completions per prompt (the student's group size)")
    ap.add_argument("--new-tokens", type=int, default=24, help="tokens per completion")
    add_side_args(ap, SIDES, "interleaved timed rounds after one warm-up (default: 5 tiny, 3 real)")
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.path, args.threads)
    tiny = args.model == "tiny"
    repeats = args.repeats or (5 if tiny else 3)
    if min(args.prompts, args.group, args.new_tokens, repeats) < 1:
        ap.error("--prompts, --group, --new-tokens and --repeats must be at least 1")
    label = "speedup_teacher_score_vs_hf" + ("" if tiny else "_" + os.path.basename(args.model.rstrip("/")).split("-")[0])
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header("teacher scoring: rlvr's local teacher (shared prompts) vs a transformers forward per sequence, "
                 "each in its own process, interleaved")
    with tempfile.TemporaryDirectory(prefix="teacher_score_") as tmp:
        path = model_dir(args.model, tmp)
        model = meta_model(path)
        prompts, completions = make_batch(path, args.env, args.prompts, args.group, args.new_tokens)
        step = dict(prompts=prompts, completions=completions)
        mean_prompt = sum(map(len, prompts)) / len(prompts)
        print(f"model: {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params) | "
              f"{args.prompts} prompts (mean {mean_prompt:.0f} tokens) x {args.group} completions x "
              f"{args.new_tokens} tokens | 1 warm-up + {repeats} interleaved rounds, medians")
        runs, finals, peak = run_sides(__file__, SIDES, path, args.threads, repeats, **step)
    for name in SIDES[1:]:
        for a, b in zip(runs["rlvr"], runs[name]):
            gap = max(abs(x - y) for p, q in zip(a["logps"], b["logps"]) for x, y in zip(p, q))
            if gap > 1e-3:
                raise SystemExit(f"rlvr and {name} disagree: log-probs differ by up to {gap:.2g}")
    flops = useful_flops(model, prompts, completions)
    medians = {}
    for name in SIDES:
        times = [s["seconds"] for s in runs[name]]
        medians[name] = med = statistics.median(times)
        print(f"{name:5s} median {med:7.3f} s (min {min(times):.3f}, max {max(times):.3f}) | "
              f"{flops / med / 1e9:6.2f} useful GFLOP/s = {100 * flops / med / peak:4.1f}% of matmul peak | "
              f"peak RSS {finals[name]['peak_rss_gb']:.2f} GB")
    print(f"ratio rlvr vs rlvr-unshared (the shared prompts alone): {medians['rlvr-unshared'] / medians['rlvr']:.2f}x faster")
    print(f"ratio rlvr-unshared vs hf: {medians['hf'] / medians['rlvr-unshared']:.2f}x faster")
    print(f"{label}: {medians['hf'] / medians['rlvr']:.2f}")


if __name__ == "__main__":
    main()
