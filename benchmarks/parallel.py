"""RL steps in one process against two under torchrun, and DDP's memory against FSDP2's.

Why: on a machine of C cores, one process can use them all through intra-op threads, or
C processes can take one core each and split the batch (rlvr/train/parallel.py). This
runs the same `rlvr rl` steps both ways (the same global batch: `--prompts` split
between the ranks) and prints the mean step time after the first step, the ratio, and
each setting's peak resident memory per process (`peak_rss_gb` of metrics.jsonl: under
torchrun the mean over the ranks). Settings:

    1 process x 2 threads            OMP_NUM_THREADS=2, no torchrun (tiny: also x 1 thread)
    2 processes x 1 thread, ddp      torchrun --nproc_per_node 2 --parallel ddp
    2 processes x 1 thread, fsdp     torchrun --nproc_per_node 2 --parallel fsdp (not for LoRA)

Models: `tiny` (rlvr's own, untrained) and SmolLM2-135M-Instruct (`rlvr models get
smollm2-135m`) on one-digit arithmetic with two worked examples, with LoRA (r=16: one
process against ddp) and in full fine-tuning (ddp against fsdp: the memory of sharded
AdamW state). A small KL term with `--lr_by_signal false` makes every group train.

    .venv/bin/python benchmarks/parallel.py                       # everything
    .venv/bin/python benchmarks/parallel.py --models tiny --steps 4
    .venv/bin/python benchmarks/parallel.py --models smollm2 --full-only   # ddp against fsdp memory
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOL_ENV = "prompt:format=answer_is,shots=2:arithmetic:digits=1,ops=add+sub"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rl(args: list[str], procs: int, threads: int, run_dir: Path, timeout: float) -> dict:
    """One `rlvr rl` run; its mean step time after the first step and its peak memory."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(threads)}
    launch = [sys.executable, "-m", "rlvr.cli"] if procs == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={free_port()}",
        "-m", "rlvr.cli"]
    t0 = time.perf_counter()
    p = subprocess.run(launch + ["rl", f"--run_dir={run_dir}", *args], capture_output=True, text=True, env=env,
                       timeout=timeout)
    if p.returncode != 0:
        raise SystemExit(f"failed: {' '.join(launch + args)}\n{p.stderr[-2000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_time" in r]
    timed = rows[1:] or rows
    return {"step_s": sum(r["step_time"] for r in timed) / len(timed), "peak_rss_gb": max(r["peak_rss_gb"] for r in rows),
            "trained_tokens": sum(r.get("trained_tokens", 0) for r in rows), "wall_s": time.perf_counter() - t0}


def settings(name: str, model: str, steps: int) -> list[tuple[str, list[str], list[tuple[str, int, int, str]]]]:
    """(label, rl args, [(setting, processes, threads, parallel)]) for one model."""
    one, two = [("1 proc x 2 threads", 1, 2, "")], [("2 procs x 1 thread, ddp", 2, 1, "ddp")]
    sharded = [("2 procs x 1 thread, fsdp", 2, 1, "fsdp")]
    common = [f"--steps={steps}", "--eval_problems=0", "--hack_monitor=0", "--log_samples=0", "--save_every=0"]
    if name == "tiny":
        return [("tiny (untrained, full)", [f"--model={model}", "--env=arithmetic:digits=2", "--prompts=16",
                                            "--group_size=4", "--max_new_tokens=16", "--kl_coef=0.05",
                                            "--lr_by_signal=false", *common],
             one + [("1 proc x 1 thread", 1, 1, "")] + two + sharded)]
    smol = [f"--model={model}", f"--env={SMOL_ENV}", "--prompts=4", "--group_size=4", "--max_new_tokens=32",
            "--lr=1e-5", "--kl_coef=0.01", "--lr_by_signal=false", *common]  # every group trains
    return [("SmolLM2-135M, LoRA r=16", smol + ["--lora_r=16"], one + two),
            ("SmolLM2-135M, full", smol, two + sharded)]  # the memory of sharded AdamW state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["tiny", "smollm2"], choices=["tiny", "smollm2"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--smol-steps", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--full-only", action="store_true", help="SmolLM2 in full fine-tuning only (no LoRA runs)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from rlvr.models import build_tiny_model, hub
    from rlvr.models.io import save_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = {}
        if "tiny" in args.models:
            paths["tiny"] = str(save_model(*build_tiny_model("tiny", seed=0), tmp / "tiny"))
        if "smollm2" in args.models:
            paths["smollm2"] = str(hub.get("smollm2-135m"))
        print(f"cpus: {os.cpu_count()}; RL steps (tiny {args.steps}, SmolLM2 {args.smol_steps}; the first untimed); "
              "one global batch split over the ranks")
        print(f"{'model':28} {'setting':26} {'step s':>8} {'vs row 1':>9} {'peak RSS/rank GB':>17} {'trained tok':>11}")
        for name in args.models:
            for label, rl_args, runs in settings(name, paths[name], args.steps if name == "tiny" else args.smol_steps):
                if args.full_only and "LoRA" in label:
                    continue
                base = None
                for i, (setting, procs, threads, mode) in enumerate(runs):
                    extra = [f"--parallel={mode}"] if mode else []
                    r = run_rl(rl_args + extra, procs, threads, tmp / f"{name}-{i}-{len(label)}", args.timeout)
                    base = base or r["step_s"]
                    print(f"{label:28} {setting:26} {r['step_s']:8.2f} {base / r['step_s']:8.2f}x "
                          f"{r['peak_rss_gb']:17.2f} {r['trained_tokens']:11.0f}", flush=True)


if __name__ == "__main__":
    main()
