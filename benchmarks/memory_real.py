"""Peak memory of RL steps on a real model: full fine-tuning against LoRA.

Why: a 135M-parameter model is the smallest real checkpoint people bring, and a laptop
must hold its RL step. Each setting runs `rlvr rl` for a few steps in its own process
(so one setting's allocations never count in another's) and reports that process's
peak resident memory (ru_maxrss), the step times and what was generated. Settings:

    full     every weight trained: AdamW state for all of them
    lora     LoRA r=16 on every projection; the base frozen
    +ckpt    the same with activation checkpointing

The batch is the issue's: 8 prompts x 4 completions, up to 64 new tokens, on 2-digit
addition with the "the answer is" format (a format the instruct model writes, so the
step has rewards that differ and really runs backward).

    .venv/bin/python benchmarks/memory_real.py --model smollm2-135m
    .venv/bin/python benchmarks/memory_real.py --model PATH --settings full lora --steps 3
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
ENV = "prompt:format=answer_is:arithmetic:digits=2,ops=add"


def child(args: argparse.Namespace, setting: str) -> None:
    from rlvr.train import rl

    run_dir = Path(tempfile.mkdtemp()) / "rl"
    cfg = rl.RLConfig(run_dir=str(run_dir), model=args.model, env=args.env, steps=args.steps, prompts=8,
                      group_size=4, max_new_tokens=64, lr=1e-5, warmup=0, eval_problems=0, save_every=0,
                      log_samples=0, seed=0, **SETTINGS[setting])
    t0 = time.perf_counter()
    rl.main(cfg)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ckpt = run_dir / "checkpoints" / "last"
    size = sum(f.stat().st_size for f in ckpt.resolve().rglob("*") if f.is_file())
    print(json.dumps({"setting": setting, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "wall_s": time.perf_counter() - t0, "step_s": [round(r["step_time"], 1) for r in rows],
                      "generated": [r["generated_tokens"] for r in rows], "updates": [r["updates"] for r in rows],
                      "reward": [round(r["reward"], 3) for r in rows], "checkpoint_mb": size / 2**20}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--env", default=ENV)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--settings", nargs="+", default=["full", "lora"], choices=sorted(SETTINGS))
    ap.add_argument("--child", default="")
    args = ap.parse_args()
    if args.child:
        return child(args, args.child)
    from common import print_header

    print_header(f"RL peak memory: {args.model}, 8 prompts x 4 completions x <= 64 tokens, {args.steps} steps")
    for setting in args.settings:
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--env", args.env,
                              "--steps", str(args.steps), "--child", setting],
                             capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            print(f"{setting}: failed\n{out.stderr[-3000:]}")
            continue
        r = json.loads(lines[-1])
        print(f"{setting:10s} peak RSS {r['peak_rss_gb']:.2f} GB   steps {r['step_s']} s   generated {r['generated']}"
              f"   updates {r['updates']}   reward {r['reward']}   checkpoint {r['checkpoint_mb']:.0f} MB")
        print(f"peak_rss_gb_{setting}: {r['peak_rss_gb']:.2f}")


if __name__ == "__main__":
    main()
