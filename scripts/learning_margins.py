"""Measure the margins of the tests that assert learning, over seeds, on this CPU's kernel path.

The learning tests (pytest -m learning) each assert that a tiny run learned by some
margin. A margin is only honest if it holds on every float-kernel path a CPU may take,
so this script runs each learning test's own configuration over several base seeds
(the micro base's pretraining) and run seeds, and prints what each measured:

    .venv/bin/python scripts/learning_margins.py --bases 0,1,2 --seeds 0,1
    ATEN_CPU_CAPABILITY=default .venv/bin/python scripts/learning_margins.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python scripts/learning_margins.py

It prints one JSON line per (base seed, run seed): the RL test's reward gain, the rs
test's held-out and own pass-rate gains, and the SFT test's greedy gain (its random
start seeded like the base). The thresholds in the tests sit below the smallest value seen over all three paths;
their comments say how many runs were measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from conftest import MICRO_BASE  # noqa: E402
from test_rs import _cfg as rs_cfg, rs_gains  # noqa: E402
from test_sft import _cfg as sft_cfg, _greedy as greedy, random_micro, worked_data  # noqa: E402
from test_train import _rl_cfg as rl_cfg, rl_gain  # noqa: E402

from rlvr.models import build_tiny_model, save_model  # noqa: E402
from rlvr.train import pretrain, rl, rs, sft  # noqa: E402
from rlvr.run import last_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", default="0,1,2", help="seeds of the micro base's pretraining")
    ap.add_argument("--seeds", default="0,1", help="seeds of the RL and rs runs on each base")
    ap.add_argument("--tests", default="rl,rs,sft", help="which learning tests to measure")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the test suite runs
    path = os.environ.get("ATEN_CPU_CAPABILITY", "native")
    root = Path(tempfile.mkdtemp())
    data = worked_data(root / "add.jsonl")
    tests = set(args.tests.split(","))
    for b in map(int, args.bases.split(",")):
        t0 = time.time()
        row: dict = {"path": path, "base": b}
        base = root / f"base{b}"
        if tests & {"rl", "rs"}:
            pretrain.main(pretrain.PretrainConfig(run_dir=str(base), **{**MICRO_BASE, "seed": b}))
            row["pretrain_s"] = round(time.time() - t0, 1)
        micro = random_micro(root / f"micro{b}", seed=b)  # the SFT test's random start, seeded like the base
        for s in map(int, args.seeds.split(",")):
            out = {**row, "seed": s}
            if "rl" in tests:
                first, last = rl_gain(rl.main(rl_cfg(base, root / f"rl{b}-{s}", seed=s)).dir)
                out["rl_gain"] = round(last - first, 3)
            if "rs" in tests:
                acc, own = rs_gains(rs.main(rs_cfg(base, root / f"rs{b}-{s}", seed=s)).dir)
                out.update(rs_best_gain=round(max(acc[1:]) - acc[0], 3), rs_acc=acc, rs_own_gain=round(own, 3))
            if "sft" in tests:
                run = sft.main(sft_cfg(micro, data, root / f"sft{b}-{s}", seed=s, eval_problems=0, eval_env=None))
                out["sft_gain"] = round(greedy(last_model(run.dir)) - greedy(micro), 3)
            print(json.dumps(out), flush=True)

if __name__ == "__main__":
    main()
