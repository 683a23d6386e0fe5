"""Rollout workers as Ray actors: `rlvr rl --rollout_workers N`.

Each worker is an actor holding its own engine, built from the run's model directory
(CPU or GPU, as Ray places it); under LoRA from the base, with the same adapters, and
only the adapters travel (a few MB instead of the whole model). A batch is split into N
shards, one per worker, generated in parallel and joined in shard order, so the trainer consumes the same
batch whatever finished first. The trainer puts each new version of its weights in
Ray's object store once (`push_weights`) and every task carries a reference to the
newest; a worker fetches the weights only when their version is newer than its own.

Pacing enforces `max_staleness`: batch i is submitted only once the trainer holds
weights of version >= i - max_staleness, with those weights, so nothing generated is
ever thrown away for being stale. With 0 the workers parallelise each synchronous
batch; with k they also run up to k batches ahead of the trainer.

Faults: actors restart when their process dies (kill -9 included) and Ray retries the
task they were running on the new process, which reloads the model and fetches the
weights the task names, so the batch is regenerated and no step is lost. A killed
trainer resumes from its checkpoint with fresh workers (`--resume`).

`ray.init()` starts a local cluster unless `--ray_address` names one to join.

Failures end the run with one line (`WorkerError`, printed by the CLI without a
traceback) and leave its last checkpoint as it was: an address where nothing answers
(probed for 5 s first, since Ray itself retries for minutes), a worker that dies more
often than `--worker_restarts`, a worker that cannot load the model. The queue's actors
are killed on the way out, so none outlives the run.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Any

from torch import Tensor

from rlvr.config import InputError
from rlvr.train.rollouts.producer import Batch, batch_stats
from rlvr.train.rollouts.queues import check_fit
from rlvr.types import Sampling, Stateful

try:
    import ray
except ImportError:  # pragma: no cover - the error is raised where a user asks for workers
    ray = None


def _require_ray() -> None:
    if ray is None:
        raise ImportError("--rollout_workers needs Ray: pip install 'rlvr[ray]'") from None


class WorkerError(InputError):
    """The rollout workers cannot go on (or start): the message says which and why."""


def probe(address: str, timeout: float = 5.0) -> None:
    """Refuse an address where nothing answers, quickly (Ray's own connect retries for
    minutes). "auto" and "" are Ray's to resolve."""
    if address in ("", "auto", "local"):
        return
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise WorkerError(f"--ray_address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise WorkerError(f"--ray_address {address!r}: no Ray cluster answers at {host}:{port} ({e})") from None


def _reason(e: BaseException) -> str:
    """The last meaningful line of a Ray error: the worker's own exception, not Ray's frame dump."""
    lines = [x.strip() for x in str(e).splitlines() if x.strip() and not x.strip().startswith(("File ", "^", "~"))]
    return lines[-1] if lines else type(e).__name__


class _Worker:
    """One rollout worker (wrapped as a Ray actor by RayQueue)."""

    def __init__(self, model_dir: str, env_spec: Any, prompts: int, group_size: int, sampling: Sampling,
                 seed: int, drop_uniform: bool, version: int, threads: int, lora: dict | None,
                 engine: str = "torch", engine_options: dict | None = None):
        import torch

        from rlvr.engine import make_engine
        from rlvr.envs import make_env
        from rlvr.models import load_model
        from rlvr.train.rollouts.producer import Producer

        torch.set_num_threads(threads)
        model, tok = load_model(model_dir)
        self.lora = lora is not None
        if self.lora:  # the trainer's adapters arrive with the first task
            from rlvr.models.lora import add_lora

            model, version = add_lora(model, base=model_dir, **lora), -1
        self.env = make_env(env_spec)
        engine = make_engine(model, tok, engine, role="snapshot", version=version, options=engine_options)
        self.producer = Producer(engine, self.env, prompts, group_size, sampling, seed, drop_uniform)
        self.version = version  # the weights loaded from model_dir (-1: adapters not received yet)

    def pid(self) -> int:
        return os.getpid()

    def produce(self, index: int, shard: int, shards: int, weights: list, version: int, env_state: Any) -> Batch:
        if version != self.version and weights[0] is not None:
            self.producer.sync_weights(ray.get(weights[0]), version, partial=self.lora)
            self.version = version
        if env_state is not None and isinstance(self.env, Stateful):
            self.env.load_state(env_state)
        return self.producer.produce(index, shard, shards)


class RayQueue:
    def __init__(self, cfg, model_dir: str, sampling: Sampling, start: int = 0, env_state: Any = None,
                 threads: int = 1, adapters: dict[str, Tensor] | None = None):
        """`model_dir`: what the workers load (under LoRA the base); `adapters`: under LoRA,
        the trainer's adapter tensors now (the only weights pushed from then on)."""
        _require_ray()
        self._started = not ray.is_initialized()
        if self._started:
            probe(cfg.ray_address)
            try:
                ray.init(address=cfg.ray_address or None, include_dashboard=False, log_to_driver=False,
                         **({} if cfg.ray_address else {"num_cpus": max(cfg.rollout_workers, os.cpu_count() or 1)}))
            except ConnectionError as e:
                raise WorkerError(f"--ray_address {cfg.ray_address!r}: {e}") from None
        self.restarts = cfg.worker_restarts
        actor = ray.remote(num_cpus=threads, max_restarts=self.restarts, max_task_retries=self.restarts)(_Worker)
        run = uuid.uuid4().hex[:8]  # actor names, unique per queue: rlvr-rollout-RUN-I
        self.names = [f"rlvr-rollout-{run}-{i}" for i in range(cfg.rollout_workers)]
        lora = None if adapters is None else {"r": cfg.lora_r, "alpha": cfg.lora_alpha or 2.0 * cfg.lora_r,
                                              "targets": list(cfg.lora_targets)}
        self.workers = [actor.options(name=name).remote(
            model_dir, cfg.prompted(cfg.env), cfg.prompts, cfg.group_size, sampling, cfg.seed, cfg.drop_uniform_groups, start,
            threads, lora, cfg.engine, cfg.engine_options) for name in self.names]
        self.max_staleness, self.version, self.env_state = cfg.max_staleness, start, env_state
        self.weights_ref = None  # None: the workers' own (the model directory's) weights are current
        self.keys = None if adapters is None else sorted(adapters)  # what a push sends
        if adapters is not None:
            self.push_weights(adapters, start, env_state)
        self.next_index = start
        self.pending: dict[int, list] = {}

    def _submit(self, index: int) -> None:
        n = len(self.workers)
        self.pending[index] = [w.produce.remote(index, k, n, [self.weights_ref], self.version, self.env_state)
                               for k, w in enumerate(self.workers)]

    def get(self, step: int) -> Batch:
        t0 = time.perf_counter()
        while self.next_index <= step + self.max_staleness:  # pacing: only batches these weights may make
            self._submit(self.next_index)
            self.next_index += 1
        parts: list[Batch] = self._collect(self.pending.pop(step))
        kept = [r for p in parts for r in p.rollouts]
        generated = [r for p in parts for r in p.generated]
        batch = Batch(step, kept, min(p.version for p in parts), max(p.seconds for p in parts),
                      batch_stats(generated, kept), generated)
        batch.stats["wait_for_workers"] = time.perf_counter() - t0
        return check_fit(batch, step, self.max_staleness)

    def _collect(self, refs: list) -> list[Batch]:
        parts = []
        for k, ref in enumerate(refs):
            try:
                parts.append(ray.get(ref))
            except ray.exceptions.RayActorError as e:
                why = _reason(e)
                if "creation task" in str(e) or "__init__" in str(e):
                    raise WorkerError(f"rollout worker {k} could not start: {why}") from None
                raise WorkerError(f"rollout worker {k} died and was not brought back (--worker_restarts "
                                  f"{self.restarts}): {why}") from None
            except ray.exceptions.RayError as e:
                raise WorkerError(f"rollout worker {k} failed: {_reason(e)}") from None
        return parts

    def push_weights(self, state: dict[str, Tensor], version: int, env_state: Any = None) -> None:
        keys = self.keys if self.keys is not None else state
        self.weights_ref = ray.put({k: state[k].detach().cpu() for k in keys})
        self.version, self.env_state = version, env_state

    def worker_pids(self) -> list[int]:
        return ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers, self.pending = [], {}
        if self._started:
            ray.shutdown()
