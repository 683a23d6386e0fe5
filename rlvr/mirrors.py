"""Mirrors of a run's metrics.jsonl: TensorBoard event files and a Weights & Biases run.

metrics.jsonl is the record; a mirror receives every row's numbers as they are logged,
for the dashboards people already watch. A config key of the same name turns each on
(`--tensorboard`, `--wandb`); `Run` (rlvr/run.py) opens them at the first row and closes
them with the run. A mirror is a class with `log(step, scalars)` and `close()`, opened
with the run directory, the config and the first step it will see; adding one is a
class and a line in `MIRRORS`.

    rlvr rl --tensorboard && tensorboard --logdir runs/rl/tensorboard
    rlvr rl --wandb --wandb_project my-project      # WANDB_MODE=offline: written to runs/rl/wandb, `wandb sync` later

A resumed run continues its mirrors: TensorBoard purges the events the killed run
logged after its checkpoint; W&B continues the same run (its id is kept in
RUN_DIR/wandb_id) and, as W&B ignores steps it has seen, keeps the killed run's rows
past the checkpoint rather than the new ones.
"""

from __future__ import annotations

import importlib.util
import uuid
from pathlib import Path
from typing import Any

from rlvr.atomic import write_text
from rlvr.config import InputError


def scalars(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics row (what a dashboard can plot)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class TensorBoard:
    package = "tensorboard"

    def __init__(self, run_dir: Path, cfg, first_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        # A resumed run overwrites what the killed one logged after its checkpoint.
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=first_step)

    def log(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        self.writer.close()


class WandB:
    package = "wandb"

    def __init__(self, run_dir: Path, cfg, first_step: int | None):
        import wandb

        id_file = run_dir / "wandb_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        write_text(id_file, run_id + "\n")
        self.run = wandb.init(project=getattr(cfg, "wandb_project", "") or "rlvr", name=run_dir.name, id=run_id,
                              resume="allow", dir=str(run_dir), config=cfg.model_dump(mode="json"))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


MIRRORS: dict[str, type] = {"tensorboard": TensorBoard, "wandb": WandB}


def check_mirrors(cfg) -> None:
    """Fail before a run starts when a mirror `cfg` turns on lacks its package."""
    for name, cls in MIRRORS.items():
        if getattr(cfg, name, False) and importlib.util.find_spec(cls.package) is None:
            raise InputError(f"--{name} needs the {cls.package} package: pip install 'rlvr[{name}]'")


def open_mirrors(run_dir: Path, cfg, first_step: int | None) -> list:
    """The mirrors `cfg` turns on (its keys named as in `MIRRORS`)."""
    return [cls(run_dir, cfg, first_step) for name, cls in MIRRORS.items() if getattr(cfg, name, False)]
