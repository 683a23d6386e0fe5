"""Sampling throughput: rlvr's TorchEngine against Hugging Face `generate` on the same model.

Why: rollouts are most of an RL step's time, so the engine has to beat the obvious
baseline, `model.generate`, by a clear margin on the hardware rlvr is meant to run on
first (a laptop-class CPU). Both sides get the same random-init model (default: the
4.2 M-parameter "small" preset), the same distinct chat prompts (2-digit additions),
and sample the same number of tokens at T=1 over the full vocabulary with EOS
ignored (HF: `min_new_tokens`; rlvr: `Sampling(ignore_eos=True)`), so both do exactly
the same work. The two are interleaved A, B, A, B... after a warm-up and the medians
are compared, because this machine is a noisy shared VM.

It also reports the engine's achieved FLOP/s (useful prefill + decode FLOPs, counted
as in benchmarks/common.py, over its median time) as a fraction of a large fp32
matmul's FLOP/s measured in the same run. The last line is always
`speedup_vs_hf_generate: X` (rlvr tokens/s over HF tokens/s).

    .venv/bin/python benchmarks/generate.py                # 64 prompts x 32 tokens, 7 repeats
    .venv/bin/python benchmarks/generate.py --batch 16 --new-tokens 64 --preset tiny
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for rlvr

from common import generation_flops, matmul_flops_per_s, print_header  # noqa: E402

from rlvr.engine import TorchEngine  # noqa: E402
from rlvr.models.forward import left_pad  # noqa: E402
from rlvr.models.io import count_parameters  # noqa: E402
from rlvr.models.tiny import PRESETS, build_tiny_model  # noqa: E402
from rlvr.types import Sampling  # noqa: E402


def make_prompts(tok, count: int, seed: int = 0) -> list[list[int]]:
    """`count` distinct chat prompts "a+b" with 2-digit a and b."""
    pairs = random.Random(seed).sample([(a, b) for a in range(10, 100) for b in range(10, 100)], count)
    return [tok.apply_chat_template([{"role": "user", "content": f"{a}+{b}"}], add_generation_prompt=True,
                                    tokenize=True, return_dict=False) for a, b in pairs]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--batch", type=int, default=64, help="number of distinct prompts, one sample each")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens sampled per prompt (EOS ignored)")
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS), help="tiny-model preset (random init)")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs of each side, interleaved, after warm-up")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs of each side first")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # keep HF's notices from landing after the final line

    model, tok = build_tiny_model(args.preset, seed=0)
    model.eval().requires_grad_(False)
    prompts = make_prompts(tok, args.batch)
    T = args.new_tokens
    engine = TorchEngine(model, tok, max_batch=max(1024, args.batch))
    ids, valid, _ = left_pad(prompts, tok.pad_token_id)
    mask = valid.long()

    def run_rlvr(seed: int = 0):
        return engine.generate(prompts, n=1, sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=T,
                                                               seed=seed, ignore_eos=True))

    def run_hf(seed: int = 0):
        torch.manual_seed(seed)
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
                                  top_p=1.0, max_new_tokens=T, min_new_tokens=T,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    print_header("generate: rlvr TorchEngine vs transformers generate")
    print(f"model: {args.preset} ({count_parameters(model) / 1e6:.2f} M params, random init) | "
          f"{args.batch} prompts (len {min(map(len, prompts))}-{max(map(len, prompts))}) x {T} new tokens | "
          f"T=1, EOS ignored | {args.warmup} warm-up + {args.repeats} interleaved repeats, medians")
    peak = matmul_flops_per_s()

    for _ in range(args.warmup):
        groups, out = run_rlvr(), run_hf()
    # Both sides must do the same work: every row exactly T new tokens.
    assert all(len(g[0].completion_ids) == T for g in groups), "rlvr did not sample new_tokens per prompt"
    assert out.shape[1] - ids.shape[1] == T, "HF did not sample new_tokens per prompt"

    times: dict[str, list[float]] = {"rlvr": [], "hf": []}
    for r in range(args.repeats):
        for name, fn in (("rlvr", run_rlvr), ("hf", run_hf)):
            t0 = time.perf_counter()
            fn(seed=r + 1)
            times[name].append(time.perf_counter() - t0)
    peak = statistics.median([peak, matmul_flops_per_s(), matmul_flops_per_s()])  # before and after the runs

    tokens = args.batch * T
    med = {k: statistics.median(v) for k, v in times.items()}
    tps = {k: tokens / med[k] for k in med}
    prefill, decode = generation_flops(model, [len(p) for p in prompts], T)
    for name, label in (("rlvr", "rlvr TorchEngine"), ("hf", "HF generate")):
        v = times[name]
        print(f"{label:17s} {tps[name]:9.0f} tok/s | median {med[name] * 1e3:7.1f} ms "
              f"(min {min(v) * 1e3:.1f}, max {max(v) * 1e3:.1f}) | {(prefill + decode) / med[name] / 1e9:.2f} GFLOP/s")
    print(f"matmul fp32 2048^3: {peak / 1e9:.1f} GFLOP/s (median of 3 measurements in this run)")
    print(f"rlvr achieved: {(prefill + decode) / med['rlvr'] / 1e9:.2f} GFLOP/s = "
          f"{100 * (prefill + decode) / med['rlvr'] / peak:.1f}% of matmul peak "
          f"(useful FLOPs: prefill {prefill / 1e9:.3f} + decode {decode / 1e9:.3f} GFLOP)")
    # On a shared VM a burst of load can hit one side's median; the fastest runs say
    # what each side does undisturbed. The headline (last line) stays the median ratio.
    print(f"speedup on fastest runs (min times): {min(times['hf']) / min(times['rlvr']):.2f}")
    print(f"speedup_vs_hf_generate: {tps['rlvr'] / tps['hf']:.2f}")


if __name__ == "__main__":
    main()
