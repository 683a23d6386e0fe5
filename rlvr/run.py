"""The run directory every command writes, and what all trainers share about it.

    runs/NAME/
      config.yaml          the whole resolved config
      metrics.jsonl        one JSON object per step (with cumulative `compute/...` keys)
      samples.jsonl        a sample of rollouts with verdicts
      evals.jsonl          one line per evaluation: step, compute so far, metrics
      checkpoints/step_N/  model/ (HF format; an adapter under LoRA), trainer_state.pt, and
                           optimizer.pt in the newest only (what a resume needs), atomically
      checkpoints/last     symlink to the newest checkpoint
      eval.json            the final evaluation
      summary.json         what the run spent (own, inherited, total) and its final numbers
      tensorboard/         the metrics as TensorBoard events (with --tensorboard)
      wandb/, wandb_id     the W&B run's local files and id (with --wandb; rlvr/mirrors.py)

Under torchrun only rank 0 writes the logs; a checkpoint is written by every rank
into one temporary directory that rank 0 renames into place (the sharded optimizer
state of --parallel fsdp is `optimizer/`, through torch.distributed.checkpoint).

A run resumes from `checkpoints/last`: `Run.resume_state()` gives back the trainer
state and trims the JSONL logs to the checkpoint's step, so a killed run continues
as if it had never stopped (TensorBoard events past it are purged too).
The config's `tensorboard` and `wandb` keys mirror every row (rlvr/mirrors.py).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from rlvr.atomic import point_link, recover, write_json, write_text
from rlvr.config import Config, to_yaml
from rlvr.jsonl import read_jsonl
from rlvr.mirrors import check_mirrors, open_mirrors, scalars
from rlvr.train.parallel import SINGLE, Parallel


LOGS = ("metrics.jsonl", "samples.jsonl", "evals.jsonl")


class Run:
    def __init__(self, run_dir: str | Path, cfg: Config, resume: bool = False, par: Parallel = SINGLE):
        self.dir = Path(run_dir)
        self.par, self.writes = par, par.main
        self.ckpt_dir = self.dir / "checkpoints"
        if self.dir.exists() and any(self.dir.iterdir()) and not resume and (self.dir / "metrics.jsonl").exists():
            raise FileExistsError(f"run directory {self.dir} already holds a run: pass --resume to continue "
                                  "it, or choose another --run_dir")
        check_mirrors(cfg)
        self.cfg, self._mirrors, self._resumed_at, self._made = cfg, None, None, None
        par.barrier()  # every rank has checked the directory before rank 0 writes in it
        if self.writes:
            self._made = _first_missing(self.dir)  # what `discard` removes: the directories this start creates
            self.dir.mkdir(parents=True, exist_ok=True)
            write_text(self.dir / "config.yaml", to_yaml(cfg))

    def discard(self) -> None:
        """Undo a start that failed before its first step: remove the directories it created,
        or else the config.yaml it wrote, so that a bad --model or device leaves nothing behind."""
        if not self.writes:
            return
        if self._made is not None:
            shutil.rmtree(self._made, ignore_errors=True)
        else:
            (self.dir / "config.yaml").unlink(missing_ok=True)

    # -- logging -------------------------------------------------------------------
    def log(self, step: int, metrics: dict[str, Any]) -> None:
        self.append("metrics.jsonl", {"step": step, **metrics})
        if not self.writes:  # rank 0 mirrors, as it writes
            return
        if self._mirrors is None:  # opened at the first row, once a resume has said where it starts
            self._mirrors = open_mirrors(self.dir, self.cfg, self._resumed_at)
        for mirror in self._mirrors:
            mirror.log(step, scalars(metrics))

    def append(self, name: str, row: dict[str, Any]) -> None:
        if not self.writes:
            return
        with open(self.dir / name, "a") as f:
            f.write(json.dumps(row, default=str) + "\n")

    def finish(self, summary: dict[str, Any]) -> Path:
        """Write summary.json and close the mirrors: the last thing a trainer does. A run
        resumed after its last step evaluates nothing new: its final metrics stay those
        of eval.json."""
        if summary.get("final") is None and (self.dir / "eval.json").exists():
            summary = {**summary, "final": json.loads((self.dir / "eval.json").read_text())["metrics"]}
        for mirror in self._mirrors or []:
            mirror.close()
        self._mirrors = None
        return self.write_json("summary.json", summary)

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.append("samples.jsonl", {"step": step, **r})

    def write_json(self, name: str, obj: Any) -> Path:
        if self.writes:
            write_json(self.dir / name, obj)
        return self.dir / name

    # -- checkpoints ------------------------------------------------------------------
    def save(self, step: int, model, tok, state: dict[str, Any], keep_last: int = 2) -> Path:
        path, par = self.ckpt_dir / f"step_{step}", self.par
        with par.atomic_dir(path) as tmp:
            par.save_model(model, tok, tmp / "model")  # whole (gathered under fsdp), by rank 0
            full = {**state, "step": step, "rng": _rng_state()}
            if "optimizer" in full:  # twice the trainable weights: kept where a resume reads it
                par.save_optimizer(full.pop("optimizer"), tmp)
            if par.main:
                torch.save(full, tmp / "trainer_state.pt")
                if "compute" in state:  # readable without loading the optimizer (rlvr/compute.py)
                    (tmp / "compute.json").write_text(json.dumps(state["compute"]))
        if par.main:
            point_link(self.ckpt_dir / "last", path.name)
            for old in self.checkpoints()[:-keep_last] if keep_last > 0 else []:
                shutil.rmtree(old, ignore_errors=True)
            for old in self.checkpoints()[:-1]:  # a resume starts from the newest
                (old / "optimizer.pt").unlink(missing_ok=True)
                shutil.rmtree(old / "optimizer", ignore_errors=True)
        par.barrier()
        return path

    def checkpoints(self) -> list[Path]:
        if not self.ckpt_dir.exists():
            return []
        found = [p for p in self.ckpt_dir.glob("step_*") if (p / "trainer_state.pt").exists()]
        return sorted(found, key=lambda p: int(p.name.split("_")[1]))

    def resume_state(self) -> tuple[Path, dict[str, Any]] | None:
        """(model dir, trainer state) of the newest checkpoint, or None when there is none."""
        if self.writes:
            recover(self.ckpt_dir)  # what a kill during a checkpoint's write left behind
        self.par.barrier()
        ckpts = self.checkpoints()
        if not ckpts:  # killed before its first checkpoint: it starts again, so do its logs
            self.restart_logs()
            return None
        if self.writes:
            point_link(self.ckpt_dir / "last", ckpts[-1].name)  # a kill may have come before it moved
        state = torch.load(ckpts[-1] / "trainer_state.pt", weights_only=False)
        if (ckpts[-1] / "optimizer.pt").exists():
            state["optimizer"] = torch.load(ckpts[-1] / "optimizer.pt", weights_only=False)
        elif (ckpts[-1] / "optimizer").is_dir():  # sharded: loaded into the optimizer once it exists
            state["optimizer_dir"] = ckpts[-1] / "optimizer"
        _set_rng_state(state["rng"])
        self._trim_logs(state["step"])
        self._resumed_at = state["step"] + 1
        return ckpts[-1] / "model", state

    def restart_logs(self) -> None:
        """Forget everything logged so far (JSONL logs and TensorBoard events): the run starts over."""
        self._trim_logs(-1)
        self._resumed_at = 0

    def _trim_logs(self, step: int) -> None:
        for name in LOGS if self.writes else ():
            path = self.dir / name
            if path.exists():  # a half-written last line (a kill mid-write) is dropped too
                keep = [row for _, row in read_jsonl(path, truncated_tail=[]) if row["step"] <= step]
                write_text(path, "".join(json.dumps(row, default=str) + "\n" for row in keep))


def last_model(path: str | Path) -> Path:
    """Resolve what `--model` names: a model dir, a checkpoint dir, or a run dir."""
    path = Path(path)
    if (path / "model" / "config.json").exists():
        return path / "model"
    if (path / "checkpoints" / "last" / "model").exists():
        return path / "checkpoints" / "last" / "model"
    return path


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of `path` that does not exist yet (None: it all does)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
