"""The rollout queues: how batches reach the trainer, behind one interface.

    get(step)                   the batch for trainer step `step`
    push_weights(state, version) the trainer's new weights (version = updates so far)
    close()                     stop whatever generates

`max_staleness` bounds the lag: the batch the trainer consumes at step i was generated
by weights of version >= i - max_staleness. It is enforced by pacing (generation waits
for weights fresh enough), never by throwing finished work away.

    SyncQueue    generation and training alternate in the trainer's thread (max_staleness 0)
    LaggedQueue  the same, but batch i comes from the weights of version exactly i - lag:
                 off-policy data of a known, repeatable age, for studying its bias
                 (`--exact_staleness`)
    ThreadQueue  a background thread generates up to max_staleness batches ahead with the
                 newest weights it has, overlapping generation with training
    RayQueue     rollout workers as Ray actors (ray_queue.py, `--rollout_workers N`)

The loop, the losses and the metrics do not know which one runs; the behaviour
log-probs and policy version every sample carries let the loss correct the lag
(rlvr/algos/offpolicy.py).

    queue = make_queue(producer, max_staleness=1, start=0)
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Protocol

from torch import Tensor

from rlvr.train.rollouts.producer import Batch, Producer


class RolloutQueue(Protocol):
    def get(self, step: int) -> Batch: ...

    def push_weights(self, state: dict[str, Tensor], version: int, env_state: Any = None) -> None: ...

    def close(self) -> None: ...


def check_fit(batch: Batch, step: int, max_staleness: int) -> Batch:
    if batch.index != step or batch.version < step - max_staleness:
        raise RuntimeError(f"batch {batch.index} (version {batch.version}) is not fit for step {step} "
                           f"with max_staleness {max_staleness}")
    return batch


class SyncQueue:
    """On-policy: the producer generates batch `step` when the trainer asks for it."""

    max_staleness = 0

    def __init__(self, producer: Producer):
        self.producer = producer

    def get(self, step: int) -> Batch:
        return check_fit(self.producer.produce(step), step, 0)

    def push_weights(self, state: dict[str, Tensor], version: int, env_state: Any = None) -> None:
        self.producer.sync_weights(state, version)

    def close(self) -> None:
        pass


class LaggedQueue:
    """Batch `step` is generated, in the trainer's thread, by the weights of version
    max(first, step - lag): every batch exactly `lag` versions stale once the run is `lag`
    steps in. Keeps the last `lag` weight snapshots in memory. After a resume the lag
    builds up again from the resumed weights (older snapshots are not checkpointed)."""

    def __init__(self, producer: Producer, lag: int, version: int = 0):
        if lag < 1:
            raise ValueError(f"a LaggedQueue needs lag >= 1, got {lag}")
        self.producer, self.max_staleness = producer, lag
        self.current = version  # the version the producer's engine holds
        self.snapshots: dict[int, dict[str, Tensor]] = {}

    def push_weights(self, state: dict[str, Tensor], version: int, env_state: Any = None) -> None:
        self.snapshots[version] = {k: v.detach().clone() for k, v in state.items()}
        for old in [v for v in self.snapshots if v < version - self.max_staleness]:
            del self.snapshots[old]

    def get(self, step: int) -> Batch:
        target = max(self.current, step - self.max_staleness)
        if target != self.current:
            self.producer.sync_weights(self.snapshots[target], target)
            self.current = target
        return check_fit(self.producer.produce(step), step, self.max_staleness)

    def close(self) -> None:
        self.snapshots.clear()


class ThreadQueue:
    """A producer thread in the trainer's process, up to `max_staleness` batches ahead."""

    def __init__(self, producer: Producer, max_staleness: int, start: int = 0, version: int = 0):
        if max_staleness < 1:
            raise ValueError(f"a ThreadQueue needs max_staleness >= 1, got {max_staleness}")
        self.producer, self.max_staleness = producer, max_staleness
        self.next_index, self.version = start, version
        self._weights: tuple[dict[str, Tensor], int] | None = None
        self._cond = threading.Condition()
        self._error: BaseException | None = None
        self._stop = False
        self._queue: queue.Queue[Batch] = queue.Queue(maxsize=max_staleness)
        self._thread = threading.Thread(target=self._run, daemon=True, name="rollout-producer")
        self._thread.start()

    def push_weights(self, state: dict[str, Tensor], version: int, env_state: Any = None) -> None:
        snapshot = {k: v.detach().clone() for k, v in state.items()}
        with self._cond:
            self._weights = (snapshot, version)
            self._cond.notify_all()

    def get(self, step: int) -> Batch:
        while True:
            try:
                return check_fit(self._queue.get(timeout=0.5), step, self.max_staleness)
            except queue.Empty:
                if self._error is not None:
                    raise RuntimeError("rollout producer failed") from self._error

    def close(self) -> None:
        """Stop the producer thread and wait for it (a thread left inside torch ops at
        interpreter exit aborts the process)."""
        self._stop = True
        with self._cond:
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        try:
            index = self.next_index
            while not self._stop:
                with self._cond:
                    # Pacing: wait until weights fresh enough for batch `index` have arrived.
                    while not self._stop and self._weights is None and index - self.version > self.max_staleness:
                        self._cond.wait(timeout=0.5)
                    pending, self._weights = self._weights, None
                if self._stop:
                    return
                if pending is not None:
                    self.producer.sync_weights(*pending)
                    self.version = pending[1]
                    if index - self.version > self.max_staleness:
                        continue
                batch = self.producer.produce(index)
                while not self._stop:
                    try:
                        self._queue.put(batch, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                index += 1
        except BaseException as e:  # surfaced to the trainer by get()
            self._error = e


def make_queue(producer: Producer, max_staleness: int = 0, start: int = 0, version: int = 0,
               exact: bool = False) -> RolloutQueue:
    """The in-process queue for `max_staleness` (Ray's is built by rlvr.train.rollouts.ray_queue);
    `exact`: a LaggedQueue instead of a producer thread."""
    if max_staleness < 0:
        raise ValueError(f"max_staleness must be >= 0, got {max_staleness}")
    if max_staleness == 0:
        return SyncQueue(producer)
    return LaggedQueue(producer, max_staleness, version) if exact else ThreadQueue(producer, max_staleness, start, version)
