"""Measure the margins of the tests that assert learning, over seeds, on this CPU's kernel path.

The learning tests (pytest -m learning) each assert that a tiny run learned by some
margin. A margin is only honest if it holds on every float-kernel path a CPU may take,
so this script runs each learning test's own configuration over several base seeds
(the micro base's pretraining) and run seeds, and prints what each measured:

    .venv/bin/python scripts/learning_margins.py --bases 0,1,2 --seeds 0,1
    ATEN_CPU_CAPABILITY=default .venv/bin/python scripts/learning_margins.py
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        .venv/bin/python scripts/learning_margins.py

The thresholds in the tests sit below the smallest value seen over all three paths;
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
from test_train import _rl_cfg as rl_cfg, rl_gain  # noqa: E402

from rlvr.train import pretrain, rl, rs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bases", default="0,1,2", help="seeds of the micro base's pretraining")
    ap.add_argument("--seeds", default="0,1", help="seeds of the RL and rs runs on each base")
    args = ap.parse_args()
    torch.set_num_threads(1)  # as the test suite runs
    path = os.environ.get("ATEN_CPU_CAPABILITY", "native")
    root = Path(tempfile.mkdtemp())
    for b in map(int, args.bases.split(",")):
        t0 = time.time()
        base = root / f"base{b}"
        pretrain.main(pretrain.PretrainConfig(run_dir=str(base), **{**MICRO_BASE, "seed": b}))
        summary = json.loads((base / "summary.json").read_text())
        row = {"path": path, "base": b, "base_steps": summary["steps"], "in_band": summary["in_band"],
               "pretrain_s": round(time.time() - t0, 1)}
        for s in map(int, args.seeds.split(",")):
            first, last = rl_gain(rl.main(rl_cfg(base, root / f"rl{b}-{s}", seed=s)).dir)
            acc, own = rs_gains(rs.main(rs_cfg(base, root / f"rs{b}-{s}", seed=s)).dir)
            print(json.dumps({**row, "seed": s, "rl_gain": round(last - first, 3),
                              "rs_best_gain": round(max(acc[1:]) - acc[0], 3), "rs_acc": acc,
                              "rs_own_gain": round(own, 3)}), flush=True)


if __name__ == "__main__":
    main()
