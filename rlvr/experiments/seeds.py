"""An experiment over several seeds: each figure as its mean and range.

A tiny model's training lands somewhere else with another seed or on another CPU, so
a claim that rests on one run may be luck. `over_seeds` runs an experiment once per
seed, each in `RUN_DIR/seed_N` with its own base (base_seed = seed) and its own
sampling, and `spread` turns each figure into mean, min and max over the seeds.
`results.json` in RUN_DIR holds every seed's results and the spread; the table
prints "mean [min, max]".

    rlvr experiment regimes --seeds 0,1,2
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import BeforeValidator, Field
from rich.console import Console
from rich.table import Table

from rlvr.atomic import write_json


def _listed(value: Any) -> Any:
    """`--seeds 0,1,2` (YAML reads a string) and `--seeds 3` (an int) as lists."""
    if isinstance(value, str):
        return [part.strip() for part in value.strip("[]").split(",") if part.strip()]
    return [value] if isinstance(value, int) else value


Seeds = Annotated[list[int], BeforeValidator(_listed)]  # a seeds field of an experiment's config
# The key of an experiment that may run once per seed, declared once.
PerSeed = Annotated[Seeds, Field([], description="Run once per seed, each with its own base (base_seed = seed), in RUN_DIR/seed_N, and report every figure as mean [min, max] (e.g. --seeds 0,1,2); empty: one run with `seed`.")]


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "n": len(values)}


def show(s: dict[str, float] | None, percent: bool = True, runs: int = 0, signed: bool = False) -> str:
    """"mean [min, max]", with "(n of N)" when only n of the N runs have the figure; `signed`:
    a change, written with its sign."""
    if s is None:
        return "-"
    sign = "+" if signed else ""
    f = (lambda v: f"{v:{sign}.1%}") if percent else (lambda v: f"{v:{sign}.3g}")
    text = f"{f(s['mean'])} [{f(s['min'])}, {f(s['max'])}]" if s["n"] > 1 else f(s["mean"])
    return text + (f" ({s['n']} of {runs})" if runs and s["n"] < runs else "")


def over_seeds(main: Callable[[Any], dict[str, Any]], cfg, seeds: list[int],
               figures: Callable[[dict[str, Any]], dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Run `main` once per seed; `figures(result)` -> {row: {column: value}} of one run.
    Returns {"seeds", "runs" (each seed's result), "spread" ({row: {column: spread}})}."""
    root = Path(cfg.run_dir)
    runs: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        Console().rule(f"seed {seed} ({len(runs) + 1} of {len(seeds)})")
        update = {"run_dir": str(root / f"seed_{seed}"), "seed": seed, "seeds": []}
        if "base_seed" in type(cfg).model_fields:  # a pretrained model (rlvr experiment real) has no base seed
            update["base_seed"] = seed
        runs[seed] = main(cfg.model_copy(update=update))
    per_seed = [figures(r) for r in runs.values()]
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for row in per_seed[0]:
        for col in per_seed[0][row]:
            values = [f[row][col] for f in per_seed if row in f and f[row].get(col) is not None]
            if values:
                rows.setdefault(row, {})[col] = spread(values)
    out = {"seeds": seeds, "spread": rows, "runs": {str(s): r for s, r in runs.items()}}
    write_json(root / "results.json", out)
    return out


def run_and_show(main: Callable[[Any], dict[str, Any]], cfg,
                 figures: Callable[[dict[str, Any]], dict[str, dict[str, float]]], what: str,
                 columns: dict[str, bool], draw: Callable[[dict[str, Any], str], Path] | None = None) -> dict[str, Any]:
    """An experiment's --seeds: `over_seeds`, then the spread of `what` as a table, and
    `draw(out, "mean and range over seeds [...]")`'s figure over the seeds, where it has one."""
    out = over_seeds(main, cfg, cfg.seeds, figures)
    print_spread(f"{what} over seeds {cfg.seeds}: mean [min, max]", out["spread"], columns, len(cfg.seeds))
    if draw is not None:
        Console().print(f"figure over seeds: {draw(out, f'mean and range over seeds {cfg.seeds}')}")
    return out


def print_spread(title: str, spread_rows: dict[str, dict[str, dict[str, float]]], columns: dict[str, bool],
                 runs: int) -> None:
    """columns: {name: is_a_percentage}; runs: how many seeds ran."""
    table = Table(title=title)
    table.add_column("")
    for col in columns:
        table.add_column(col, justify="right")
    for row, cols in spread_rows.items():
        table.add_row(row, *[show(cols.get(c), pct, runs) for c, pct in columns.items()])
    Console().print(table)
