"""The demo's table from the runs `scripts/demo_table.sh OUT` made: one row per (kernel path, base seed).

    .venv/bin/python scripts/demo_table.py runs/demo-table

Prints a Markdown table (base pass@1 / pass@16 / greedy, pretraining steps, pass@1 after
RL, wall time) and the spread of each column over all runs.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def main(out: Path) -> None:
    times = {(r["path"], r["seed"]): r["process_seconds"]
             for r in map(json.loads, (out / "times.jsonl").read_text().splitlines())}
    rows = []
    for (path, seed), seconds in sorted(times.items()):
        d = json.loads((out / f"{path}-s{seed}" / "demo.json").read_text())
        k = d["eval_samples"]
        pre = d["base_pretrain"]
        rows.append({"path": path, "seed": seed, "steps": pre["steps"], "learned": pre["learned_at_step"],
                     "base_p1": d["base_pass_at_1"], "base_pk": d[f"base_pass_at_{k}"], "base_greedy": d["base_greedy"],
                     "in_band": d["base_in_band"], "final_p1": d["final_pass_at_1"], "final_greedy": d["final_greedy"],
                     "seconds": seconds})
    print(f"| kernel path | base seed | pretraining steps (learned at) | base pass@1 / pass@{k} / greedy | in band "
          "| pass@1 after RL | greedy after RL | wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['path']} | {r['seed']} | {r['steps']} ({r['learned']}) | {r['base_p1']:.1%} / {r['base_pk']:.1%} / "
              f"{r['base_greedy']:.1%} | {'yes' if r['in_band'] else '**no**'} | {r['final_p1']:.1%} | "
              f"{r['final_greedy']:.1%} | {r['seconds']:.0f} s |")
    print()
    for key, label in (("base_p1", "base pass@1"), ("base_pk", f"base pass@{k}"), ("base_greedy", "base greedy"),
                       ("final_p1", "pass@1 after RL"), ("seconds", "wall seconds")):
        v = [r[key] for r in rows]
        fmt = (lambda x: f"{x:.0f}") if key == "seconds" else (lambda x: f"{x:.1%}")
        print(f"- {label}: mean {fmt(statistics.fmean(v))}, range [{fmt(min(v))}, {fmt(max(v))}] over {len(v)} runs")
    print(f"- in band: {sum(r['in_band'] for r in rows)} of {len(rows)}; pass@1 after RL >= 85%: "
          f"{sum(r['final_p1'] >= 0.85 for r in rows)} of {len(rows)}; within 6 minutes: "
          f"{sum(r['seconds'] <= 360 for r in rows)} of {len(rows)}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo-table"))
