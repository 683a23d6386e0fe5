"""Asynchronous RL against synchronous: rollout samples per second and wall time to a target.

Why: rollouts are most of an RL step, so overlapping them with training (a producer
thread, or Ray rollout workers) is the first thing a user scales. This measures what
it buys on this machine, in one run, from one base with the same settings:

    sync           generation and training alternate (`--max_staleness 0`)
    thread k       a producer thread up to k versions ahead (`--max_staleness k`)
    ray N, k       N Ray rollout workers, up to k versions ahead (`--rollout_workers N`)

For each: rollout samples per second of the whole loop (samples trained / wall seconds
of the loop, its periodic evaluations included: workers keep generating while the
trainer evaluates, as they would for a user), the mean staleness it ran at, held-out
pass@1 at the end, and the loop's wall seconds until held-out pass@1 first reached
`--target` (evaluated every `--eval-every` steps). Both clocks start after the step-0
evaluation, so Ray's start-up (the local cluster, the actors loading the model) is in
neither; the process's whole wall time is printed beside them. Ratios are against
`sync` measured in the same run.

    .venv/bin/python benchmarks/async_vs_sync.py                       # the demo's base, 30 steps
    .venv/bin/python benchmarks/async_vs_sync.py --configs sync "thread 1" "ray 2, 1"
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for rlvr

from common import print_header  # noqa: E402

from rlvr.demo import pretrained_base  # noqa: E402
from rlvr.train import pretrain, rl  # noqa: E402

CONFIGS = ["sync", "thread 1", "thread 2", "ray 1, 1", "ray 1, 2", "ray 2, 1", "ray 2, 2"]


def settings(name: str) -> dict:
    if name == "sync":
        return {"max_staleness": 0}
    m = re.fullmatch(r"thread (\d+)", name)
    if m:
        return {"max_staleness": int(m[1])}
    m = re.fullmatch(r"ray (\d+), (\d+)", name)
    if m:
        return {"rollout_workers": int(m[1]), "max_staleness": int(m[2])}
    raise SystemExit(f"unknown config {name!r}: sync | thread K | ray N, K")


def measure(name: str, model: str, env, args, root: Path) -> dict:
    run_dir = root / re.sub(r"[^a-z0-9]+", "-", name)
    t0 = time.perf_counter()
    rl.main(rl.RLConfig(run_dir=str(run_dir), model=model, env=env, steps=args.steps, prompts=args.prompts,
                        group_size=args.group_size, max_new_tokens=32, lr=args.lr, lr_schedule="cosine",
                        eval_every=args.eval_every, eval_problems=args.eval_problems, eval_samples=4, save_every=0,
                        seed=0, **settings(name)))
    process = time.perf_counter() - t0
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [json.loads(x) for x in (run_dir / "evals.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "step_time" in r]
    # The run's own clock (compute/wall_seconds), from the end of the step-0 evaluation:
    # the loop with its periodic evaluations, as a user waits for it. Workers and threads
    # keep generating while the trainer evaluates, which is part of what async buys.
    start = evals[0]["compute"]["wall_seconds"]
    loop = steps[-1]["compute/wall_seconds"] - start
    samples = args.prompts * args.group_size * len(steps)
    reached = next((e["compute"]["wall_seconds"] - start for e in evals[1:]
                    if next(iter(e["metrics"].values()))["pass@1"]["mean"] >= args.target), None)
    final = next(iter(evals[-1]["metrics"].values()))["pass@1"]["mean"]
    return {"config": name, "samples_per_s": samples / loop, "loop_seconds": loop, "process_seconds": process,
            "staleness_mean": sum(r.get("staleness_mean", 0.0) for r in steps) / len(steps),
            "final_pass@1": final, "seconds_to_target": reached}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=CONFIGS, help=f"of: sync | thread K | ray N, K (default {CONFIGS})")
    p.add_argument("--model", default="", help="starting model (default: the demo's base, pretrained once and cached)")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--group-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--eval-problems", type=int, default=100)
    p.add_argument("--target", type=float, default=0.6, help="held-out pass@1 whose wall time to reach is reported")
    args = p.parse_args()
    print_header("async_vs_sync")
    pre = pretrain.PretrainConfig()
    model = args.model or str(pretrained_base(pre))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            print(f"--- {name}", flush=True)
            results.append(measure(name, model, pre.env, args, Path(tmp)))
    base = next((r for r in results if r["config"] == "sync"), results[0])
    print(f"\n{'config':<10} {'samples/s':>10} {'x sync':>7} {'lag':>5} {'to target':>10} {'x sync':>7} "
          f"{'final pass@1':>12} {'process':>8}")
    for r in results:
        speed = r["samples_per_s"] / base["samples_per_s"]
        to = f"{r['seconds_to_target']:.0f} s" if r["seconds_to_target"] is not None else "never"
        faster = (f"{base['seconds_to_target'] / r['seconds_to_target']:.2f}"
                  if r["seconds_to_target"] and base["seconds_to_target"] else "-")
        print(f"{r['config']:<10} {r['samples_per_s']:>10.0f} {speed:>7.2f} {r['staleness_mean']:>5.2f} {to:>10} "
              f"{faster:>7} {r['final_pass@1']:>12.1%} {r['process_seconds']:>7.0f}s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
