"""Peak memory of RL steps on a real model: full fine-tuning against LoRA.

Why: a 135M-parameter model is the smallest real checkpoint people bring, and a laptop
must hold its RL step. Each setting runs `rlvr rl` for a few steps in its own process
(so one setting's allocations never count in another's) and reports that process's
peak resident memory (ru_maxrss), the step times and what was generated. Settings:

    full     every weight trained: AdamW state for all of them
    lora     LoRA r=16 on every projection; the base frozen
    +ckpt    the same with activation checkpointing

The batch is the one the memory targets (LoRA ≤ 1.5 GB, full ≤ 3 GB) were set for: 8
prompts x 4 completions, up to 64 new tokens, on single-digit additions and subtractions
with the "the answer is" format and two worked examples (what `rlvr experiment real`
trains on: the instruct model earns reward there, ~15% pass@1, so groups differ and the
step really runs backward; on 2-digit additions without examples it earned 0 in every
step of a run, so nothing trained). A run in which no step trained says so. The model
answers in ~10-20 tokens there; `--worst-case` runs the same step with every completion
at the 64-token limit (the engine ignoring EOS) and every group trained (rewards
alternate within each group, since `rlvr rl` gives a cut completion 0 and would skip the
groups), so each step trains on all 32 x 64 tokens: the memory a long-answer task needs.
It builds what `rl.main` builds (`setup_model`, the optimizer, a weight-sharing engine,
`train_on` with the `--activation_gb` budget) without the evaluator and the checkpoint.

    .venv/bin/python benchmarks/memory_real.py --model smollm2-135m
    .venv/bin/python benchmarks/memory_real.py --model PATH --settings full lora --steps 3
    .venv/bin/python benchmarks/memory_real.py --worst-case --settings full lora lora+ckpt full+ckpt
    .venv/bin/python benchmarks/memory_real.py --sft --settings lora full --steps 2

`--sft` runs `rlvr sft` instead: 16 worked solutions of ~800 tokens a step (running sums
of 40 two-digit numbers; SmolLM2 spells numbers digit by digit), 13k tokens, in
micro-batches that fit `--activation-gb`
(`--activation-gb 100`: the whole step in one forward, as sft ran before it planned).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SETTINGS = {"full": {}, "lora": {"lora_r": 16}, "lora+ckpt": {"lora_r": 16, "activation_checkpointing": True},
            "full+ckpt": {"activation_checkpointing": True}}
ENV = "prompt:format=answer_is,shots=2:arithmetic:digits=1,ops=add+sub"


def worst_case(args: argparse.Namespace, setting: str) -> None:
    from rlvr.algos import compute_advantages
    from rlvr.engine import make_engine
    from rlvr.envs import make_env
    from rlvr.rollout import generate_rollouts
    from rlvr.train import rl, rl_update
    from rlvr.train.batch import micro_batch_tokens
    from rlvr.train.setup import make_optimizer, setup_model
    from rlvr.types import Sampling, Verdict

    cfg = rl.RLConfig(model=args.model, env=args.env, prompts=8, group_size=4, max_new_tokens=64, lr=1e-5,
                      activation_gb=args.activation_gb, seed=0, **SETTINGS[setting])
    model, tok, parts = setup_model(cfg, args.model)
    opt = make_optimizer(model, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    max_tokens = micro_batch_tokens(parts, cfg.activation_gb)
    engine = make_engine(model, tok, cfg.engine, role="trainer", options=cfg.engine_options)
    env = make_env(cfg.prompted(cfg.env))
    stream = env.problems("train", seed=0)
    sampling = Sampling(temperature=1.0, max_new_tokens=64, seed=0, ignore_eos=True)
    steps, t0 = [], time.perf_counter()
    for _ in range(args.steps):
        t = time.perf_counter()
        rollouts = generate_rollouts(engine, env, [next(stream) for _ in range(cfg.prompts)], cfg.group_size, sampling)
        for r in rollouts:
            r.verdicts = [Verdict(float(i % 2), bool(i % 2)) for i in range(len(r.samples))]
        m = rl_update.train_on(compute_advantages(rollouts, cfg.advantage), model, parts, None, opt, cfg,
                               tok.pad_token_id, max_tokens)
        engine.sync_weights({}, len(steps) + 1)
        steps.append((time.perf_counter() - t, sum(len(s.completion_ids) for r in rollouts for s in r.samples),
                      m["loss_tokens"], m["micro_batches"]))
    print(json.dumps({"setting": setting, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "wall_s": time.perf_counter() - t0, "step_s": [round(s[0], 1) for s in steps],
                      "generated": [s[1] for s in steps], "updates": [1] * len(steps), "reward": [0.5] * len(steps),
                      "checkpoint_mb": 0.0, "trained": [s[2] for s in steps], "micro": [s[3] for s in steps],
                      "max_tokens": max_tokens}))


def child(args: argparse.Namespace, setting: str) -> None:
    from rlvr.train import rl

    run_dir = Path(tempfile.mkdtemp()) / "rl"
    cfg = rl.RLConfig(run_dir=str(run_dir), model=args.model, env=args.env, steps=args.steps, prompts=8,
                      group_size=4, max_new_tokens=64, lr=1e-5, warmup=0, eval_problems=0, save_every=0,
                      log_samples=0, seed=0, activation_gb=args.activation_gb, **SETTINGS[setting])
    t0 = time.perf_counter()
    rl.main(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ckpt = run_dir / "checkpoints" / "last"
    size = sum(f.stat().st_size for f in ckpt.resolve().rglob("*") if f.is_file())
    print(json.dumps({"setting": setting, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "wall_s": time.perf_counter() - t0, "step_s": [round(r["step_time"], 1) for r in rows],
                      "generated": [r["generated_tokens"] for r in rows], "updates": [r["updates"] for r in rows],
                      "reward": [round(r["reward"], 3) for r in rows], "checkpoint_mb": size / 2**20,
                      "trained": [r.get("loss_tokens", 0) for r in rows], "micro": [r.get("micro_batches", 0) for r in rows]}))


def sft_child(args: argparse.Namespace, setting: str) -> None:
    """`rlvr sft` on long worked solutions: 16 conversations of ~800 tokens a step (13k tokens)."""
    import random

    from rlvr.train import sft

    tmp = Path(tempfile.mkdtemp())
    rng = random.Random(0)
    with open(tmp / "data.jsonl", "w") as f:
        for _ in range(64):
            terms = [rng.randint(10, 99) for _ in range(40)]
            steps, total = [], 0
            for t in terms:
                steps.append(f"{total} + {t} = {total + t}.")
                total += t
            f.write(json.dumps({"messages": [
                {"role": "user", "content": "Add these numbers: " + ", ".join(map(str, terms)) + "."},
                {"role": "assistant", "content": "Adding one at a time: " + " ".join(steps) + f" The answer is {total}."},
            ]}) + "\n")
    cfg = sft.SFTConfig(run_dir=str(tmp / "sft"), model=args.model, data=str(tmp / "data.jsonl"), max_steps=args.steps,
                        batch_size=16, max_length=1024, lr=1e-5, warmup=0, eval_problems=0, save_every=0, seed=0,
                        activation_gb=args.activation_gb, **SETTINGS[setting])
    t0 = time.perf_counter()
    sft.main(cfg)
    rows = [json.loads(line) for line in (tmp / "sft" / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_time" in r]
    print(json.dumps({"setting": setting, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "wall_s": time.perf_counter() - t0, "step_s": [round(r["step_time"], 1) for r in rows],
                      "generated": [0] * len(rows), "updates": [1] * len(rows), "reward": [0] * len(rows),
                      "checkpoint_mb": 0.0, "trained": [r["trained_tokens"] for r in rows],
                      "micro": [r["micro_batches"] for r in rows]}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--env", default=ENV)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--settings", nargs="+", default=["full", "lora"], choices=sorted(SETTINGS))
    ap.add_argument("--activation-gb", type=float, default=1.0, help="rl's --activation_gb")
    ap.add_argument("--worst-case", action="store_true",
                    help="every completion to the token limit, every group trained (see above)")
    ap.add_argument("--sft", action="store_true",
                    help="`rlvr sft` steps instead: 16 worked solutions of ~800 tokens a step (micro-batches by tokens)")
    ap.add_argument("--child", default="")
    args = ap.parse_args()
    if args.child:
        return (sft_child if args.sft else worst_case if args.worst_case else child)(args, args.child)
    from common import print_header

    what = ("SFT peak memory: 16 conversations of ~800 tokens a step" if args.sft else
            f"RL peak memory: 8 prompts x 4 completions x <= 64 tokens, env {args.env}")
    print_header(f"{what}, {args.model}, {args.steps} steps, activation budget {args.activation_gb:g} GB"
                 f"{', worst case' if args.worst_case else ''}")
    for setting in args.settings:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--env", args.env,
                              "--steps", str(args.steps), "--activation-gb", str(args.activation_gb),
                              *(["--worst-case"] if args.worst_case else []), *(["--sft"] if args.sft else []),
                              "--child", setting],
                             capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            print(f"{setting}: failed (exit {out.returncode}{', killed: out of memory?' if out.returncode == -9 else ''})\n{out.stderr[-3000:]}")
            continue
        r = json.loads(lines[-1])
        print(f"{setting:10s} peak RSS {r['peak_rss_gb']:.2f} GB   steps {r['step_s']} s   generated {r['generated']}"
              f"   updates {r['updates']}   trained tokens {r['trained']} in {r['micro']} micro-batches"
              f"   reward {r['reward']}   checkpoint {r['checkpoint_mb']:.0f} MB"
              + (f"   micro-batch cap {r['max_tokens']} tokens" if "max_tokens" in r else ""))
        if not any(r["updates"]):
            print(f"{setting}: no step trained (every group's rewards were equal): the figure is generation's alone")
        print(f"peak_rss_gb_{setting}: {r['peak_rss_gb']:.2f}")


if __name__ == "__main__":
    main()
