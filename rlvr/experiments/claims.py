"""`rlvr experiment claims`: the claims table, from the experiments' results files.

Each claim rlvr tests (`CLAIMS`) names the experiment that measures it, the command
that runs it, and the figures that bear on it: rows and columns of that experiment's
`figures` (every experiment module has one: {row: {column: value}} of one run). This
reads each experiment's RUN_DIR/results.json (the default run directories under
`--runs`; `--dirs` moves one), over seeds where the experiment ran with `--seeds` (its
spread), else its one run, and writes one markdown row per claim: the figures on the
tiny model and on the real one as "mean [min, max]" with the number of seeds, and a
verdict on each model. A verdict is computed only where the rule is clear: every figure a
claim decides by on that model is a paired change (the same held-out problems before and
after) measured on at least three seeds, all of one sign on every seed; anything else is
left for a reader.

    rlvr experiment claims                        # reads runs/*/results.json, prints the table
    rlvr experiment claims --out claims.md --dirs '{"staleness": "runs/staleness3"}'
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field

from rlvr.atomic import write_text
from rlvr.config import Config
from rlvr.experiments import seeds

MIN_SEEDS = 3  # fewer seeds than this leave the verdict to a human


@dataclass(frozen=True)
class Figure:
    label: str  # how the table names it
    experiment: str  # module in rlvr/experiments and its default run directory, runs/NAME
    row: str
    column: str
    percent: bool = True
    sign: int = 0  # +1 / -1: a paired change the claim needs above / below 0 on every seed; 0: shown only


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    command: str
    toy: list[Figure] = field(default_factory=list)
    real: list[Figure] = field(default_factory=list)


FAST, SLOW = "lr 0.0005, staleness 4", "lr 0.0001, staleness 4"  # the question: at some rate, does lag 4 hold?
CLAIMS = [
    Claim("C1", "RLVR hill-climbs a weak signal in few steps", "rlvr experiment noise --seeds 0,1,2",
          toy=[Figure("pass@1 after 40 steps from the base", "noise", "fn=0 fp=0 none", "pass@1"),
               Figure("40 steps vs the base", "noise", "fn=0 fp=0 none", "vs base (paired)", sign=+1),
               Figure("steps to 80%", "noise", "fn=0 fp=0 none", "steps to target", percent=False)],
          real=[Figure("zero RL vs base", "real", "zero RL", "vs base (paired)", sign=+1)]),
    Claim("C2", "cold start not needed but makes RL more efficient", "rlvr experiment regimes --seeds 0,1,2",
          toy=[Figure("zero RL", "regimes", "zero RL", "pass@1"),
               Figure("distill + RL", "regimes", "distill (correct) + RL", "pass@1"),
               Figure("FLOPs to 80%, zero RL", "regimes", "zero RL", "FLOPs to target", percent=False),
               Figure("FLOPs to 80%, distill + RL", "regimes", "distill (correct) + RL", "FLOPs to target",
                      percent=False)],
          real=[Figure("context distillation + RL vs zero RL", "real", "context distillation + RL", "vs zero RL (paired)",
                       sign=+1),
                Figure("FLOPs to target, zero RL", "real", "zero RL", "FLOPs to target", percent=False),
                Figure("FLOPs to target, context distillation + RL", "real", "context distillation + RL",
                       "FLOPs to target", percent=False)]),
    Claim("C3", "best-of-N self-training works at more compute", "rlvr experiment regimes --seeds 0,1,2",
          toy=[Figure("best-of-N", "regimes", "best-of-N self-SFT", "pass@1"),
               Figure("zero RL", "regimes", "zero RL", "pass@1")],
          real=[Figure("best-of-N vs base", "real", "best-of-N", "vs base (paired)", sign=+1),
                Figure("best-of-N vs zero RL, equal FLOPs", "real", "best-of-N", "vs zero RL (paired)")]),
    Claim("C4", "a distilled student stays under its teacher", "rlvr experiment ceiling --seeds 0,1,2",
          toy=[Figure("verified-SFT student vs teacher", "ceiling", "student (correct)", "vs teacher", sign=-1),
               Figure("unfiltered SFT vs teacher", "ceiling", "student (none)", "vs teacher"),
               Figure("on-policy distillation vs teacher", "ceiling", "student (opd)", "vs teacher"),
               Figure("teacher", "ceiling", "teacher", "pass@1")],
          real=[Figure("context-distilled student vs its 8-shot self", "real", "context distillation",
                       "vs teacher (paired)", sign=-1)]),
    Claim("C5", "RLVR takes the student past the teacher", "rlvr experiment ceiling --seeds 0,1,2",
          toy=[Figure("unfiltered SFT + RL vs teacher", "ceiling", "student (none) + RL", "vs teacher", sign=+1),
               Figure("on-policy distillation + RL vs teacher", "ceiling", "student (opd) + RL", "vs teacher", sign=+1),
               Figure("verified-SFT student + RL", "ceiling", "student (correct) + RL", "pass@1")],
          real=[Figure("context distillation + RL vs its 8-shot self", "real", "context distillation + RL",
                       "vs teacher (paired)", sign=+1)]),
    Claim("C6", "asynchronous off-policy bias can be handled", "rlvr experiment staleness --seeds 0,1,2",
          toy=[Figure("lag 4, lr 5e-4, none vs synchronous", "staleness", f"{FAST}, none", "vs synchronous (paired)"),
               Figure("lag 4, lr 5e-4, M2PO vs synchronous", "staleness", f"{FAST}, m2po", "vs synchronous (paired)"),
               Figure("lag 4, lr 1e-4, none vs synchronous", "staleness", f"{SLOW}, none", "vs synchronous (paired)"),
               Figure("lag 4, lr 1e-4, decoupled x4 vs synchronous x4", "staleness", f"{SLOW}, decoupled x4",
                      "vs synchronous (paired)"),
               Figure("KL(behaviour, current) at lag 4, lr 5e-4", "staleness", f"{FAST}, none", "KL(behaviour, current)",
                      percent=False)]),
    Claim("C7", "verifier noise is survivable", "rlvr experiment noise --seeds 0,1,2",
          toy=[Figure("fn 0.2 vs clean", "noise", "fn=0.2 fp=0 none", "vs clean (paired)"),
               Figure("fn 0.4 vs clean", "noise", "fn=0.4 fp=0 none", "vs clean (paired)"),
               Figure("fn 0.2, fp 0.1 vs clean", "noise", "fn=0.2 fp=0.1 none", "vs clean (paired)"),
               Figure("fn 0.4, fp 0.1 vs the base", "noise", "fn=0.4 fp=0.1 none", "vs base (paired)"),
               Figure("coin-flip reward", "noise", "coin-flip reward", "pass@1")]),
    Claim("C8", "reward hacking is the real risk", "rlvr experiment hacking --seeds 0,1,2",
          toy=[Figure("hack rate, last 5 steps, no defence", "hacking", "no defence", "hack rate (last 5)"),
               Figure("no defence vs strict reward", "hacking", "no defence", "vs held-out reward (paired)", sign=-1),
               Figure("hack penalty vs strict reward", "hacking", "hack penalty", "vs held-out reward (paired)")]),
    Claim("C9", "synthetic reasoning data helps most early (mid-training)", "rlvr experiment midtrain --seeds 0,1,2",
          toy=[Figure("pretraining mix + RL vs SFT + RL", "midtrain", "pretrain mix", "vs sft (paired)", sign=+1),
               Figure("both + RL vs SFT + RL", "midtrain", "both", "vs sft (paired)"),
               Figure("SFT + RL vs RL alone", "midtrain", "sft", "vs none (paired)")]),
    Claim("C10", "distilling from humans works as distilling from models", "rlvr experiment humans --seeds 0,1,2",
          toy=[Figure("human: SFT + RL", "humans", "human", "pass@1 RL"),
               Figure("teacher vs human, after RL", "humans", "teacher", "vs human, RL (paired)"),
               Figure("own best-of-N vs human, after RL", "humans", "self", "vs human, RL (paired)")]),
]


class ClaimsConfig(Config):
    runs: str = Field("runs", description="Where the experiments ran: each reads RUNS/NAME/results.json.")
    dirs: dict[str, str] = Field({}, description="An experiment's run directory where it is not RUNS/NAME, e.g. {\"staleness\": \"runs/staleness3\"}.")
    out: str = Field("", description="Also write the markdown table here (atomically); empty: print it only.")


def load(experiment: str, run_dir: Path) -> dict[str, dict[str, dict[str, float]]] | None:
    """{row: {column: spread}} of an experiment's results.json: its spread over seeds, or
    its one run as a spread of one; None when it has not run."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    if "spread" in data:
        return data["spread"]
    one = importlib.import_module(f"rlvr.experiments.{experiment}").figures(data)
    return {row: {col: seeds.spread([v]) for col, v in cols.items() if v is not None} for row, cols in one.items()}


def text(figures: list[Figure], spreads: dict[str, Any]) -> str:
    parts = []
    for f in figures:
        s = (spreads.get(f.experiment) or {}).get(f.row, {}).get(f.column)
        if s is not None:
            shown = seeds.show(s, f.percent, signed=f.column.startswith("vs "))
            parts.append(f"{f.label}: {shown} ({s['n']} seed{'s' if s['n'] > 1 else ''})")
    return "; ".join(parts) if parts else "not measured"


def verdict(claim: Claim, spreads: dict[str, Any]) -> str:
    """The verdict on each model the claim was measured on, and where: "tiny: holds on every
    seed (3); real: for a reader"."""
    parts = [f"{model}: {_verdict(figures, spreads)}" for model, figures in (("tiny", claim.toy), ("real", claim.real))
             if any(f.sign for f in figures)]
    return "; ".join(parts) or "for a reader"


def _verdict(figures: list[Figure], spreads: dict[str, Any]) -> str:
    found = [(f, (spreads.get(f.experiment) or {}).get(f.row, {}).get(f.column)) for f in figures if f.sign]
    if any(s is None for _, s in found):
        return "not measured" if all(s is None for _, s in found) else "for a reader"
    if any(s["n"] < MIN_SEEDS for _, s in found):
        n = min(s["n"] for _, s in found)
        return f"for a reader ({n} seed{'s' if n != 1 else ''})"
    if all((s["min"] > 0) if f.sign > 0 else (s["max"] < 0) for f, s in found):
        return f"holds on every seed ({min(s['n'] for _, s in found)})"
    if all((s["max"] < 0) if f.sign > 0 else (s["min"] > 0) for f, s in found):
        return f"fails on every seed ({min(s['n'] for _, s in found)})"
    return "mixed: for a reader"


def table(spreads: dict[str, Any]) -> str:
    lines = ["| claim | experiment | tiny model: mean [min, max] | real model | verdict |", "|---|---|---|---|---|"]
    for c in CLAIMS:
        real = text(c.real, spreads) if c.real else "-"
        lines.append(f"| {c.id} {c.text} | `{c.command}` | {text(c.toy, spreads)} | {real} | {verdict(c, spreads)} |")
    return "\n".join(lines) + "\n"


def main(cfg: ClaimsConfig) -> dict[str, Any]:
    names = sorted({f.experiment for c in CLAIMS for f in c.toy + c.real})
    unknown = set(cfg.dirs) - set(names)
    if unknown:
        raise ValueError(f"unknown experiments {sorted(unknown)} in dirs; the claims read {names}")
    spreads = {name: load(name, Path(cfg.dirs.get(name) or Path(cfg.runs) / name)) for name in names}
    markdown = table(spreads)
    print(markdown)
    if cfg.out:
        write_text(Path(cfg.out), markdown)
    return {"markdown": markdown, "measured": sorted(n for n, s in spreads.items() if s is not None)}
