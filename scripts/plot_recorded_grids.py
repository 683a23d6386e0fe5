"""Redraw the noise and staleness grid figures from the curves EXPERIMENTS.md records.

The results files of those runs were not kept; their tables in EXPERIMENTS.md hold each
cell's held-out pass@1 at steps 0/10/20/30/40 (whole percent) and its final figure (to
0.1). This draws them as `rlvr experiment noise` and `staleness` now draw theirs, one panel
per noise level or lag with the clean or synchronous run grey in each
(`rlvr.experiments.grid.plot_curves`), from those recorded points: the curves are as
precise as the tables, no more.

    python scripts/plot_recorded_grids.py          # writes docs/noise_grid.png, docs/staleness_grid.png
"""

from __future__ import annotations

import re
from pathlib import Path

from rlvr.experiments import grid

ROOT = Path(__file__).resolve().parent.parent
STEPS = (0, 10, 20, 30, 40)


def section(text: str, heading: str) -> str:
    """The text from `heading` to the next heading of the same level."""
    start = text.index(heading)
    level = heading.split(" ")[0]
    end = text.find(f"\n{level} ", start + len(heading))
    return text[start:end if end > 0 else None]


def rows(text: str) -> dict[str, list[tuple[float, float]]]:
    """{label: [(step, pass@1)]} of every table row whose third cell is a 0/10/20/30/40 curve;
    the last point is the row's final figure (more precise than the curve's)."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not re.fullmatch(r"\d+( / \d+){4}", cells[2]):
            continue
        curve = [float(x) / 100 for x in cells[2].split(" / ")]
        final = re.match(r"\**([\d.]+)%", cells[1])
        curve[-1] = float(final.group(1)) / 100 if final else curve[-1]
        out[cells[0]] = list(zip(STEPS, curve))
    return out


def noise_panel(label: str) -> tuple[str, str] | None:
    """(panel, line) of a noise row; None for the clean, uncorrected reference."""
    if label.startswith("control"):
        return "control", "a fair coin as the reward"
    head, _, correction = label.rpartition(", ")
    if head.startswith("clean"):
        return None if correction == "none" else ("fn 0, fp 0", correction)
    rates = dict(re.findall(r"(fn|fp) = ([\d.]+)", head))
    return f"fn {rates.get('fn', '0')}, fp {rates.get('fp', '0')}", correction


def main() -> None:
    text = (ROOT / "EXPERIMENTS.md").read_text()
    noise = rows(section(text, "## The noise experiment"))
    reference = next(v for k, v in noise.items() if k.startswith("clean") and k.endswith(", none"))
    panels: dict[str, dict[str, list]] = {}
    for label, curve in noise.items():
        where = noise_panel(label)
        if where:
            panels.setdefault(where[0], {})[where[1]] = curve
    grid.plot_curves(dict(sorted(panels.items(), key=lambda kv: kv[0] == "control")), ROOT / "docs" / "noise_grid.png",
                     "zero RL behind a noisy verifier: true held-out pass@1 (40 steps; recorded points)", 0.8,
                     reference=("clean verifier", reference))

    stale = rows(section(text, "## The staleness experiment\n"))
    panels = {}
    for label, curve in stale.items():
        if label != "synchronous":
            lag, correction = label.split(", ")
            panels.setdefault(f"staleness {lag}", {})[correction] = curve
    grid.plot_curves(panels, ROOT / "docs" / "staleness_grid.png",
                     "zero RL on stale rollouts: held-out pass@1 (40 steps; recorded points)", 0.8,
                     reference=("synchronous", stale["synchronous"]))


if __name__ == "__main__":
    main()
