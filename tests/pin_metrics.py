"""Pinned metrics: a few seeded pretrain, SFT, rs and RL steps, on one fixed float path.

A restructure of the trainers must not change what they compute. This script runs a
handful of short seeded runs and prints their metrics (clocks and memory left out) as
JSON; `tests/test_pinned.py` runs it and compares with `tests/pinned_metrics.json`,
written by the code before the restructure.

Floats differ across CPUs (AVX-512, AVX2, generic kernels), so the runs go on one path
every x86-64 CPU can take, whatever the machine: PyTorch's generic kernels, oneDNN and
MKL capped at AVX2, MKL in its reproducible mode, one thread. The test starts a fresh
interpreter with those variables set, since they are read when torch loads.

    python tests/pin_metrics.py --write   # retake the pin (after a change that should move it)
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
from pathlib import Path

PIN = Path(__file__).with_name("pinned_metrics.json")
KERNEL_ENV = {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
              "MKL_CBWR": "AVX2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
ENV = {"name": "arithmetic", "digits": 1, "ops": ["add"], "template": "{expr}"}


def measure(root: Path) -> dict[str, list[dict]]:
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import computed

    from rlvr.envs import make_env
    from rlvr.train import pretrain, rl, rs, sft
    from rlvr.train.corpus import worked_solution

    torch.set_num_threads(1)

    def rows(run_dir: Path) -> list[dict]:
        return computed([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()])

    out: dict[str, list[dict]] = {}
    base = root / "base"
    pretrain.main(pretrain.PretrainConfig(run_dir=str(base), env=ENV, preset="micro", steps=400, batch_size=64,
                                          lr=3e-3, warmup=10, slip=0.7, seed=0, check_every=200, check_problems=8,
                                          check_samples=4, check_max_new_tokens=16))
    out["pretrain"] = rows(base)[-3:]
    common = dict(model=str(base), env=ENV, max_new_tokens=16, eval_problems=8, eval_samples=2, save_every=0)
    rl.main(rl.RLConfig(run_dir=str(root / "rl"), steps=3, prompts=8, group_size=4, eval_every=2, seed=5, **common))
    out["rl"] = rows(root / "rl")
    rl.main(rl.RLConfig(run_dir=str(root / "rl_off"), steps=3, prompts=8, group_size=4, seed=7, kl_coef=0.05,
                        epochs=2, mini_batches=2, micro_batch=8, max_staleness=1, exact_staleness=True,
                        offpolicy="decoupled", advantage="grpo", agg="seq_mean_token_mean", lr_by_signal=False,
                        **common))
    out["rl_offpolicy"] = rows(root / "rl_off")
    env, rng = make_env(ENV), random.Random(0)
    data = root / "sft.jsonl"
    data.write_text("".join(
        json.dumps({"messages": p.messages() + [{"role": "assistant", "content": worked_solution(p, 0.0, rng)}]}) + "\n"
        for _, p in zip(range(40), env.problems("train", 0))))
    sft.main(sft.SFTConfig(run_dir=str(root / "sft"), model=str(base), data=str(data), epochs=2, batch_size=8,
                           max_length=64, eval_problems=8, eval_samples=2, seed=2))
    out["sft"] = rows(root / "sft")
    rs.main(rs.RSConfig(run_dir=str(root / "rs"), model=str(base), env=ENV, rounds=2, problems=8, n=4,
                        max_new_tokens=16, sft_epochs=1, sft_batch_size=8, eval_problems=8, eval_samples=2, seed=1))
    out["rs"] = rows(root / "rs")
    return out


def run_pinned() -> dict[str, list[dict]]:
    """`measure` in a fresh interpreter on the pinned float path."""
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run([sys.executable, __file__, "--out", f"{tmp}/m.json"],
                              env={**os.environ, **KERNEL_ENV}, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"pin_metrics.py failed:\n{proc.stderr[-4000:]}")
        return json.loads(Path(f"{tmp}/m.json").read_text())


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"retake the pin into {PIN.name}")
    ap.add_argument("--out", help="write the metrics here (what the test reads)")
    args = ap.parse_args()
    if args.write:
        PIN.write_text(json.dumps(run_pinned(), indent=1, sort_keys=True) + "\n")
        print(f"wrote {PIN}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = measure(Path(tmp))
        text = json.dumps(result, indent=1, sort_keys=True)
        Path(args.out).write_text(text) if args.out else print(text)
