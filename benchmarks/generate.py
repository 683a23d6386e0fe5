"""Sampling throughput: rlvr's TorchEngine against Hugging Face `generate`, each in its own process.

Why: rollouts are most of an RL step's time, so the engine has to beat the obvious
baseline, `model.generate`, by a clear margin on the hardware rlvr is meant to run on
first. Both sides load the same model from the same directory (default: the random-init
4.2 M-parameter "small" preset; `--model smollm2-135m` the real instruct model, fetched
once with `rlvr models get smollm2-135m`), get the same distinct chat prompts (2-digit
additions) and sample the same number of tokens at T=1 over the full vocabulary with EOS
ignored (HF: `min_new_tokens`; rlvr: `Sampling(ignore_eos=True)`), so both do exactly the
same work. `--group N` samples N completions per prompt, as RL, rejection sampling and
pass@k do (HF: `num_return_sequences=N`, which prefills each prompt N times; rlvr prefills
it once and shares its keys and values); the useful FLOPs count each prompt once. HF runs
as its users run it: `AutoModelForCausalLM.from_pretrained(dir)` and `generate` in a plain
process; rlvr as `rlvr eval` runs it (`load_model`, then `make_engine` in the "inference" role:
the torch engine, sharing and prepacking the weights).

Each side is a process of its own, stepped in turn by this one (A B B A ...,
benchmarks/interleave.py): a slow spell of a shared machine hits both alike, and the two
never compete for the cores. One warm-up run of each side per batch size, then the
repeats; medians.

It also reports each side's achieved FLOP/s (useful prefill + decode FLOPs, counted as
in benchmarks/common.py, over its median time) as a fraction of a large fp32 matmul's
FLOP/s measured in the same run. The last line is `speedup_vs_hf_generate: X` (tiny) or
`speedup_vs_hf_generate_smollm2: X` (the median over batch sizes of rlvr tokens/s over
HF tokens/s).

    .venv/bin/python benchmarks/generate.py                                  # tiny: 64 prompts x 32 tokens
    .venv/bin/python benchmarks/generate.py --model smollm2-135m             # batch 32 and 64 x 64 tokens
    .venv/bin/python benchmarks/generate.py --batch 16 --new-tokens 64 --repeats 3
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

from common import device_peak, generation_flops, meta_model, model_dir, print_header  # noqa: E402
from interleave import Side, interleave, peak_rss_gb, report_peak, rounds, worker_channel  # noqa: E402


def make_prompts(tok, count: int, seed: int = 0) -> list[list[int]]:
    """`count` distinct chat prompts "a+b" with 2-digit a and b."""
    pairs = random.Random(seed).sample([(a, b) for a in range(10, 100) for b in range(10, 100)], count)
    return [tok.apply_chat_template([{"role": "user", "content": f"{a}+{b}"}], add_generation_prompt=True,
                                    tokenize=True, return_dict=False) for a, b in pairs]


def worker(side: str, path: str, threads: int | None, device: str) -> None:
    channel = worker_channel(threads)
    if side == "rlvr":
        from rlvr.engine import make_engine
        from rlvr.models import load_model
        from rlvr.types import Sampling

        model, tok = load_model(path, device=device)  # bf16 on a GPU, fp32 on CPU
        engine = make_engine(model, tok, role="inference")  # as rlvr eval builds it

        def run(prompts: list[list[int]], new: int, seed: int, n: int) -> list[int]:
            groups = engine.generate(prompts, n=n, sampling=Sampling(temperature=1.0, top_p=1.0, max_new_tokens=new,
                                                                     seed=seed, ignore_eos=True))
            return [len(s.completion_ids) for g in groups for s in g]
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rlvr.models.forward import left_pad

        dtype = torch.float32 if device == "cpu" else torch.bfloat16
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        tok = AutoTokenizer.from_pretrained(path)

        def run(prompts: list[list[int]], new: int, seed: int, n: int) -> list[int]:
            ids, valid, _ = left_pad(prompts, tok.pad_token_id, device)
            torch.manual_seed(seed)
            with torch.inference_mode():
                out = model.generate(input_ids=ids, attention_mask=valid.long(), do_sample=True, temperature=1.0,
                                     top_k=0, top_p=1.0, max_new_tokens=new, min_new_tokens=new,
                                     num_return_sequences=n, eos_token_id=tok.eos_token_id,
                                     pad_token_id=tok.pad_token_id)
            if out.is_cuda:
                torch.cuda.synchronize()
            return [out.shape[1] - ids.shape[1]] * out.shape[0]

    channel.send(ready=True, threads=torch.get_num_threads())
    while (command := channel.wait())[0] == "step":
        a = command[1]
        prompts = make_prompts(tok, a["batch"] // a["group"])
        t0 = time.perf_counter()
        lengths = run(prompts, a["new"], a["seed"], a["group"])
        channel.send(seconds=time.perf_counter() - t0, lengths=lengths, prompt_lens=[len(p) for p in prompts])
    channel.send(peak_rss_gb=peak_rss_gb())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (random-init preset 'small'), a registered name "
                    "(smollm2-135m, after `rlvr models get`) or a local HF model dir")
    ap.add_argument("--batch", type=int, nargs="+", default=None,
                    help="completions per run: distinct prompts x --group samples each (default: 64 for tiny, 32 64 "
                    "for a real model)")
    ap.add_argument("--group", type=int, default=1, help="samples per prompt (RL's group size); each batch size "
                    "must be a multiple of it")
    ap.add_argument("--new-tokens", type=int, default=None, help="tokens sampled per completion, EOS ignored "
                    "(default: 32 for tiny, 64 for a real model)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs of each side per batch size, "
                    "interleaved, after one warm-up run (default: 7 for tiny, 3 for a real model)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads of both sides "
                    "(default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (both sides in bf16 there)")
    ap.add_argument("--worker", choices=["rlvr", "hf"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.path, args.threads, args.device)
    tiny = args.model == "tiny"
    batches = args.batch or ([64] if tiny else [32, 64])
    new = args.new_tokens or (32 if tiny else 64)
    repeats = args.repeats or (7 if tiny else 3)
    bad = [b for b in batches if args.group < 1 or b % args.group]
    if bad:
        ap.error(f"--group {args.group}: every --batch must be a positive multiple of it (not {bad})")
    label = "speedup_vs_hf_generate" + ("" if tiny else "_" + os.path.basename(args.model.rstrip("/")).split("-")[0])
    label += f"_group{args.group}" if args.group > 1 else ""
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header("generate: rlvr TorchEngine vs transformers generate, each in its own process, interleaved")
    with tempfile.TemporaryDirectory(prefix="generate_") as tmp:
        path = model_dir(args.model, tmp)
        model = meta_model(path)
        print(f"model: {args.model} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M params) | "
              f"batch {batches} completions: distinct chat prompts x {args.group} sample(s) each x {new} new "
              f"tokens | T=1, EOS ignored | 1 warm-up + "
              f"{repeats} interleaved repeats per batch size, medians")
        worker_argv = [__file__, "--path", path, "--device", args.device] + (
            ["--threads", str(args.threads)] if args.threads else [])
        sides = []
        try:
            sides = [Side("rlvr", worker_argv + ["--worker", "rlvr"]), Side("hf", worker_argv + ["--worker", "hf"])]
            first, what = device_peak(args.device)
            peaks = [first]
            runs = {}
            for b in batches:
                interleave(sides, 1, batch=b, group=args.group, new=new, seed=0)  # warm-up
                runs[b] = rounds(sides, repeats, between=lambda: peaks.append(device_peak(args.device)[0]),
                                 batch=b, group=args.group, new=new)
            finals = {s.name: s.close() for s in sides}
            threads = {s.name: s.info["threads"] for s in sides}
        finally:
            for s in sides:
                s.kill()
    peak = report_peak(peaks, what, args.device)
    ratios = []
    for b in batches:
        tps = {}
        for name, label_ in (("rlvr", "rlvr TorchEngine"), ("hf", "HF generate")):
            steps = runs[b][name]
            assert all(n == new for s in steps for n in s["lengths"]), f"{name} did not sample {new} tokens a row"
            times = [s["seconds"] for s in steps]
            med = statistics.median(times)
            prefill, decode = generation_flops(model, steps[0]["prompt_lens"], new, n=args.group)
            tps[name] = b * new / med
            print(f"batch {b:3d} {label_:17s} {tps[name]:8.0f} tok/s | median {med * 1e3:8.1f} ms (min "
                  f"{min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}) | {(prefill + decode) / med / 1e9:6.2f} "
                  f"GFLOP/s = {100 * (prefill + decode) / med / peak:4.1f}% of matmul peak | threads {threads[name]}")
        ratios.append(tps["rlvr"] / tps["hf"])
        print(f"batch {b:3d} speedup {ratios[-1]:.2f}")
    print(f"peak RSS: rlvr {finals['rlvr']['peak_rss_gb']:.2f} GB, HF {finals['hf']['peak_rss_gb']:.2f} GB")
    print(f"{label}: {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
