"""Training on several processes: data-parallel (`--parallel ddp`) or sharded (`fsdp`).

Launched by `torchrun`, which sets RANK, WORLD_SIZE and the rendezvous in the
environment; `start()` joins the process group (NCCL on GPUs, gloo on CPU) and every
trainer then runs the same loop on its share of each step's data:

    torchrun --nproc_per_node 2 -m rlvr.cli rl --model runs/demo/base --parallel ddp

Without torchrun `start()` gives `SINGLE`, whose every method is the plain
single-process thing (no collective, the same numbers as before).

Exactness. Each rank weighs its loss by its share of the *whole* step's denominator
(the regimes all-reduce it with `sum`), and gradients are then **summed** across ranks,
never averaged: N ranks take the optimizer step one process takes on the same batch.

- ddp: every rank holds the whole model; after a step's micro-batches `sync_grads`
  all-reduces the gradients (summed, in fp32, one flat bucket per dtype). This is
  DDP's algorithm with the reduction done explicitly after the last micro-batch rather
  than by `DistributedDataParallel`'s hooks during backward: the trainers run their own
  functional forward (rlvr/models/forward.py), micro-batch counts differ across ranks,
  and a rank whose groups carry no signal may compute nothing at all.
- fsdp: `torch.distributed.fsdp.fully_shard`, one FSDP2 unit per decoder layer and a
  root unit (`Root`) for the rest (embeddings, final norm, head; tied ones stay one
  parameter). Parameters, gradients and AdamW state are sharded; a training forward
  (`run`) gathers each layer as rlvr's functional forward enters it (forward.ENTER) and
  frees it after, backward gathers it again and reduce-scatters its gradient at once, so
  a rank holds one layer's full weights at a time and only its shard of the gradients.
  Those are collectives every rank makes in the same order: a rank with fewer
  micro-batches than another runs zero-weight ones (`pad`) until both ran as many.
  Generation (`whole`, `gathering`) reads the layers without entering them, so it gathers
  the whole model once for a rollout or evaluation phase; the next `run` frees it.
  Low-precision weights are kept fp32 and cast for compute by FSDP's MixedPrecisionPolicy.
  On CPU it fixes glibc's mmap threshold, so freed gather buffers go back to the system
  (`fsdp.fixed_mmap_threshold`; the units are built in rlvr/train/fsdp.py). Its checkpoints
  keep the optimizer state sharded through torch.distributed.checkpoint
  (`save_optimizer`).

Everything that writes (the run directory, the progress bar) is rank 0's; metrics are
reduced into it (`reduce_metrics`). Evaluation runs on every rank alike (same weights,
same seeds), so what it decides (pretraining's stop) needs no broadcast; rank 0 logs it.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from rlvr.atomic import atomic_dir
from rlvr.config import InputError
from rlvr.train.fsdp import Root, fixed_mmap_threshold, shard_by_layer
from rlvr.train.setup import restore_optimizer

MODES = ("ddp", "fsdp")


@dataclass
class Parallel:
    rank: int = 0
    world: int = 1
    mode: str = "ddp"
    root: Any = None  # the root FSDP unit (fsdp only)
    group: bool = False  # launched by torchrun: the collectives run, also for one rank (NCCL on one GPU)
    layers: list = field(default_factory=list)  # the decoder layers' FSDP units (fsdp only)
    gathered: bool = False  # the layers kept gathered for generation (`whole`), until the next `run`

    @property
    def main(self) -> bool:
        """Whether this process writes (rank 0)."""
        return self.rank == 0

    @property
    def sharded(self) -> bool:
        return self.root is not None

    # -- the model -------------------------------------------------------------------
    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """Shard `model` in place under fsdp (its modules keep their names and identity); as is otherwise."""
        if not self.group or self.mode != "fsdp":
            return model
        self.root, self.layers = shard_by_layer(model, self.world)
        return model

    @property
    def units(self) -> list:
        """Every FSDP unit, the root first (none unless fsdp)."""
        return [self.root, *self.layers] if self.sharded else []

    def run(self, fn: Callable[[], Any]) -> Any:
        """`fn()` running the model for training (or a no-grad pass on training's path): under
        fsdp inside the root unit, whose embeddings, final norm and head it gathers, while each
        layer gathers and frees its own weights as the forward enters it, and again in
        backward, which reduce-scatters each layer's gradient as it finishes. Those are
        collectives: every rank must make as many forwards and backwards, in the same order
        (`pad`). A model gathered whole for generation is freed first."""
        if not self.sharded:
            return fn()
        if self.gathered:
            self.reshard()
        return self.root(fn)

    def pad(self, n: int, micro_batch: Callable[[], torch.Tensor], grad: bool = True) -> None:
        """Under fsdp, `n` zero-weight micro-batches (forward and backward, or with `grad=False`
        forward only): a rank with fewer micro-batches than the rank with the most (`max`,
        agreed before either starts) runs these after its own, so the layers' gathers and
        reduce-scatters pair up across ranks. `micro_batch()` is the regime's own forward on
        a batch of one token, so it enters the layers as a real one does (RL's runs a prompt
        pass and a completion pass); its output times 0 goes backward, so every gradient it
        adds is exactly 0. Nothing otherwise (ddp reduces once a step)."""
        if not self.sharded:
            return
        for _ in range(n):
            with torch.set_grad_enabled(grad):
                out = self.run(lambda: micro_batch().float().sum() * 0)
            if grad:
                out.backward()

    def whole(self, fn: Callable[[], Any]) -> Any:
        """`fn()` with every parameter in place (generation reads the layers without entering
        their units). Under fsdp the first call after training (or anything that resharded,
        such as `state_dict()`) gathers every unit, a collective each rank makes once, and the
        model stays whole until the next `run` (rollouts and evaluation may make different
        numbers of calls on each rank)."""
        if not self.sharded:
            return fn()
        from torch.distributed.tensor import DTensor
        if any(isinstance(next(unit.parameters()), DTensor) for unit in self.units):
            for unit in self.units:
                unit.unshard()
            for layer in self.layers:  # a prefill's forward enters the units: keep them gathered
                layer.set_reshard_after_forward(False, recurse=False)
            self.gathered = True
        return self.root(fn)

    def reshard(self) -> None:
        """Under fsdp, put the sharded parameters back on the model, freeing any gathered ones:
        before anything holds on to `model.parameters()` (an optimizer), and before training."""
        for unit in self.units:
            unit.reshard()
        if self.gathered:
            for layer in self.layers:
                layer.set_reshard_after_forward(True, recurse=False)
            self.gathered = False

    def gathering(self, engine):
        """An engine sharing the trainer's weights that generates with them gathered (fsdp); `engine` otherwise."""
        return Gathering(engine, self) if self.sharded else engine

    def sync_grads(self, model: torch.nn.Module) -> None:
        """Sum the step's gradients over ranks (call on every rank once per optimizer step,
        before clipping). Under fsdp each backward has already reduce-scattered them."""
        if not self.group or self.sharded:
            return
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        for dtype in {p.dtype for p in params}:
            group = [p for p in params if p.dtype == dtype]
            flat = torch.cat([p.grad.reshape(-1).float() for p in group])
            dist.all_reduce(flat)
            at = 0
            for p in group:
                p.grad.copy_(flat[at:at + p.numel()].view_as(p.grad))
                at += p.numel()

    # -- numbers ---------------------------------------------------------------------
    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over ranks."""
        return self._reduce(values, dist.ReduceOp.SUM)

    def min(self, values: list[float]) -> list[float]:
        return self._reduce(values, dist.ReduceOp.MIN)

    def max(self, values: list[float]) -> list[float]:
        return self._reduce(values, dist.ReduceOp.MAX)

    def _reduce(self, values: list[float], op) -> list[float]:
        if not self.group:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
        dist.all_reduce(t, op=op)
        return t.tolist()

    def reduce_metrics(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """A step's metrics over ranks: token and micro-batch counts summed, the rest
        averaged over the ranks that report them."""
        if not self.group:
            return metrics
        rows = self.gather(metrics)
        out: dict[str, Any] = {}
        for key in dict.fromkeys(k for row in rows for k in row):
            values = [row[key] for row in rows if key in row]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                out[key] = metrics.get(key, values[0])
            elif summed(key):
                out[key] = sum(values)
            else:
                out[key] = sum(values) / len(values)
        return out

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (picklable), in rank order, on every rank; `[obj]` in one process."""
        if not self.group:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.group:
            dist.barrier()

    # -- checkpoints -------------------------------------------------------------------
    @contextlib.contextmanager
    def atomic_dir(self, path: Path) -> Iterator[Path]:
        """`atomic.atomic_dir` that every rank writes into: rank 0 makes the temporary
        directory and renames it into place once every rank has written its part."""
        if not self.group:
            with atomic_dir(path) as tmp:
                yield tmp
            return
        if self.main:
            with atomic_dir(path) as tmp:
                shared = [str(tmp)]
                dist.broadcast_object_list(shared, src=0)
                yield tmp
                dist.barrier()
        else:
            shared = [None]
            dist.broadcast_object_list(shared, src=0)
            yield Path(shared[0])
            dist.barrier()

    def save_model(self, model: torch.nn.Module, tok, path: Path) -> None:
        """The whole model in HF format, written by rank 0 (under fsdp gathered there first,
        on the CPU): what `from_pretrained` and `rlvr serve` load."""
        from rlvr.models.io import save_model
        if not self.sharded:
            if self.main:
                save_model(model, tok, path)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
        self.reshard()
        full = get_model_state_dict(self.root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.main:
            save_model(model, tok, path, {k.removeprefix("model."): v for k, v in full.items()})

    def optimizer_state(self, model: torch.nn.Module, opt) -> Any:
        """What a checkpoint keeps of the optimizer: its state dict, or under fsdp this
        rank's shards (keyed by parameter name, as torch.distributed.checkpoint wants)."""
        if not self.sharded or not opt.state:  # nothing sharded before the first update
            return opt.state_dict()
        self.reshard()  # the names of the shards the optimizer holds
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        return Sharded(get_optimizer_state_dict(self.root, opt))

    def save_optimizer(self, state: Any, into: Path) -> None:
        """optimizer.pt (written by rank 0), or under fsdp optimizer/ (every rank its shards)."""
        if isinstance(state, Sharded):
            import torch.distributed.checkpoint as dcp
            dcp.save({"optimizer": state.state}, checkpoint_id=str(into / "optimizer"))
        elif self.main:
            torch.save(state, into / "optimizer.pt")

    def restore_optimizer(self, model: torch.nn.Module, opt, state: dict, where: str) -> None:
        """Load what a checkpoint kept of the optimizer, whoever wrote it: a sharded
        optimizer/ (any number of ranks; torch.distributed.checkpoint reshards it) into
        this optimizer, sharded or not; a whole optimizer.pt into a sharded one (each rank
        keeps its shards) or, as in one process, into a whole one."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                             set_optimizer_state_dict)
        root = self.root if self.sharded else Root(model)  # the names shards are saved under
        if "optimizer_dir" in state:
            import torch.distributed.checkpoint as dcp
            loaded = {"optimizer": get_optimizer_state_dict(root, opt)}
            dcp.load(loaded, checkpoint_id=str(state["optimizer_dir"]))
            set_optimizer_state_dict(root, opt, loaded["optimizer"])
        elif self.sharded and state.get("optimizer", {}).get("state"):
            full = state["optimizer"]  # keyed by position among the trainable parameters: named here
            names = [f"model.{n}" for n, p in model.named_parameters() if p.requires_grad]
            named = {"state": {names[i]: s for i, s in full["state"].items()},
                     "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in full["param_groups"]]}
            set_optimizer_state_dict(root, opt, named, options=StateDictOptions(full_state_dict=True))
        else:
            restore_optimizer(opt, state, where)


class Gathering:
    """An engine whose generation runs with the sharded model gathered (`Parallel.whole`)."""

    def __init__(self, engine, par: Parallel):
        self.engine, self.par = engine, par

    def generate(self, *args, **kwargs):
        return self.par.whole(lambda: self.engine.generate(*args, **kwargs))

    def turn_batch(self):
        """The engine's multi-turn batch; its turns generate with the model gathered here
        (it stays so until training's next `run`)."""
        return self.par.whole(self.engine.turn_batch)

    def __getattr__(self, name: str):
        return getattr(self.engine, name)


@dataclass
class Sharded:
    """An optimizer state dict of which each rank holds its own shards."""
    state: dict


SINGLE = Parallel()


def summed(key: str) -> bool:
    """Whether a metric is a count that adds up over ranks (rather than a mean)."""
    return key.endswith("_tokens") or key in ("micro_batches", "kept", "generated")


def start(mode: str = "ddp", timeout_s: float = 1800.0, cuda: bool = False) -> Parallel:
    """Join torchrun's process group (from RANK / WORLD_SIZE / MASTER_ADDR in the
    environment); `SINGLE` when the process was not launched by torchrun. NCCL when the
    model trains on `cuda` (each rank on its LOCAL_RANK's GPU), else gloo. A rank that
    cannot reach its peers fails after `timeout_s` seconds."""
    if "WORLD_SIZE" not in os.environ:
        return Parallel(mode=mode)
    if mode not in MODES:
        raise InputError(f"--parallel {mode!r}: choose one of {list(MODES)}")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if mode == "fsdp" and not cuda:
        fixed_mmap_threshold()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=timeout_s))
    signal.signal(signal.SIGTERM, _stopped)  # how torchrun stops the others when a rank fails
    return Parallel(dist.get_rank(), dist.get_world_size(), mode, group=True)


class Stopped(RuntimeError):
    """torchrun stopped this rank (SIGTERM): another one failed."""


def _stopped(signum, frame) -> None:
    raise Stopped("stopped by torchrun: a peer process failed")


# What gloo and NCCL say when a peer died or is out of reach (torch.distributed's own
# errors are DistError; gloo's lost connections surface as plain RuntimeErrors).
LOST_PEER = ("connection closed", "connection reset", "broken pipe", "timed out", "timeout", "nccl", "gloo")


def peer_failure(e: BaseException) -> str | None:
    """One line for an error a lost peer caused under torchrun (None for any other error):
    torchrun's agent then stops every rank; the last checkpoint is whole (written atomically)."""
    if "WORLD_SIZE" not in os.environ:
        return None
    text = str(e).strip()
    if not isinstance(e, (dist.DistError, Stopped)) and not (isinstance(e, RuntimeError) and any(s in text.lower() for s in LOST_PEER)):
        return None
    first = text.splitlines()[0][:200] if text else type(e).__name__
    return (f"rank {os.environ.get('RANK', '?')}: a peer process died or could not be reached ({first}); "
            "checkpoints are written whole, so the same command with --resume continues from the last")


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
