"""Rollout workers as Ray actors: the same loop, pacing, determinism, and a worker killed mid-run."""

import json
import os
import signal
import threading
import time

import pytest

ray = pytest.importorskip("ray")

from conftest import ENV, computed  # noqa: E402
from rlvr.train import rl  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _cfg(base, run_dir, **kw):
    cfg = dict(run_dir=str(run_dir), model=str(base), env=ENV, steps=3, prompts=8, group_size=4, max_new_tokens=16,
               eval_problems=0, save_every=0, seed=0, rollout_workers=2)
    return rl.RLConfig(**{**cfg, **kw})


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_workers_run_the_same_loop_deterministically(micro_base, tmp_path):
    for name in ("a", "b"):
        rl.main(_cfg(micro_base, tmp_path / name))
    a, b = _metrics(tmp_path / "a"), _metrics(tmp_path / "b")
    assert [r["step"] for r in a] == [1, 2, 3]
    for key in ("reward", "loss", "entropy", "grad_norm", "staleness", "staleness_mean", "is_ess", "behaviour_kl"):
        assert key in a[-1], key
    assert all(r["staleness"] == 0 for r in a)
    # Shards are joined in worker order, whichever finished first: the same command, the same run.
    assert computed(a) == computed(b)
    samples = [json.loads(x) for x in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert all(s["version"] == s["step"] - 1 for s in samples)  # stamped by the worker's weights


def test_pacing_bounds_staleness_and_the_correction_sees_it(micro_base, tmp_path):
    rl.main(_cfg(micro_base, tmp_path / "rl", steps=5, max_staleness=2, offpolicy="decoupled", mini_batches=2))
    m = _metrics(tmp_path / "rl")
    assert [r["step"] for r in m] == [1, 2, 3, 4, 5]
    assert max(r["staleness"] for r in m) <= 2 and any(r["staleness"] > 0 for r in m)
    assert all(0 < r["is_ess"] <= 1 for r in m), [(r.get("is_ess"), r.get("updates"), r.get("signal")) for r in m]


def test_a_killed_worker_is_restarted_and_no_step_is_lost(micro_base, tmp_path):
    run_dir = tmp_path / "rl"
    killed = []

    before = set(ray.util.list_named_actors())

    def kill_one_worker():
        while not (run_dir / "metrics.jsonl").exists() or not (run_dir / "metrics.jsonl").read_text():
            time.sleep(0.05)
        name = sorted(n for n in ray.util.list_named_actors() if n.startswith("rlvr-rollout-") and n not in before)[-1]
        worker = ray.get_actor(name)
        pid = ray.get(worker.pid.remote())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    rl.main(_cfg(micro_base, run_dir, steps=6))
    killer.join(timeout=30)
    assert killed, "the worker was never killed"
    assert [r["step"] for r in _metrics(run_dir)] == [1, 2, 3, 4, 5, 6]
    assert (run_dir / "summary.json").exists()


def _ours(before, all_jobs=False):
    if all_jobs:  # another process's actors live in its job's namespace
        names = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    else:
        names = set(ray.util.list_named_actors())
    return {n for n in names if n.startswith("rlvr-rollout-")} - before


def test_a_worker_that_keeps_dying_ends_the_run_in_one_line_and_leaves_nothing(micro_base, tmp_path):
    from rlvr.run import last_model
    from rlvr.train.rollouts.ray_queue import WorkerError

    run_dir = tmp_path / "rl"
    before = set(ray.util.list_named_actors())

    def kill_one_worker():
        while not (run_dir / "metrics.jsonl").exists() or len((run_dir / "metrics.jsonl").read_text().splitlines()) < 2:
            time.sleep(0.05)
        os.kill(ray.get(ray.get_actor(sorted(_ours(before))[0]).pid.remote()), signal.SIGKILL)

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    with pytest.raises(WorkerError, match=r"rollout worker \d died and was not brought back \(--worker_restarts 0\)"):
        rl.main(_cfg(micro_base, run_dir, steps=50, worker_restarts=0, save_every=1))
    killer.join(timeout=30)
    assert not _ours(before)  # every actor of the run is gone
    steps = [r["step"] for r in _metrics(run_dir)]
    assert 2 <= steps[-1] < 50
    assert last_model(run_dir).exists()  # the last checkpoint, intact


def test_a_model_a_worker_cannot_load_is_named(tmp_path):
    from rlvr.train.rollouts.ray_queue import RayQueue, WorkerError
    from rlvr.types import Sampling

    before = set(ray.util.list_named_actors())
    q = RayQueue(rl.RLConfig(model="x", env=ENV, rollout_workers=1), str(tmp_path / "no-model"), Sampling())
    try:
        with pytest.raises(WorkerError, match="rollout worker 0 could not start"):
            q.get(0)
    finally:
        q.close()
    assert not _ours(before)


def test_an_address_where_nothing_answers_is_refused_in_one_line(micro_base, tmp_path):
    import subprocess
    import sys

    t0 = time.time()
    out = subprocess.run([sys.executable, "-m", "rlvr.cli", "rl", "--model", str(micro_base), "--env", json.dumps(ENV),
                          "--run_dir", str(tmp_path / "rl"), "--rollout_workers", "1", "--ray_address", "127.0.0.1:1",
                          "--steps", "1"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "--ray_address '127.0.0.1:1': no Ray cluster answers at 127.0.0.1:1" in out.stderr
    assert "Traceback" not in out.stderr and time.time() - t0 < 60


LORA = dict(lora_r=4, lora_targets=["q_proj", "v_proj", "up_proj"], lr=5e-3, warmup=0)


def test_lora_adapters_reach_the_workers(micro_base, tmp_path):
    """Under LoRA the workers build the base with the same adapters and only the adapters
    travel: with no staleness the behaviour policy is the trainer's, so the behaviour-to-
    current KL stays at rounding level while the adapters move (a worker that missed them
    would sample from the base and drift away)."""
    before = set(ray.util.list_named_actors())
    rl.main(_cfg(micro_base, tmp_path / "rl", steps=4, save_every=2, **LORA))
    m = _metrics(tmp_path / "rl")
    assert [r["step"] for r in m] == [1, 2, 3, 4]
    assert all(r["behaviour_kl"] < 1e-5 for r in m), [r["behaviour_kl"] for r in m]
    assert m[-1]["updates"] > 0 and m[-1]["grad_norm"] > 0
    # Resumed from its adapter checkpoint: fresh workers load the base and get the adapters.
    rl.main(_cfg(micro_base, tmp_path / "rl", steps=6, resume=True, **LORA))
    m = _metrics(tmp_path / "rl")
    assert [r["step"] for r in m] == [1, 2, 3, 4, 5, 6]
    assert all(r["behaviour_kl"] < 1e-5 for r in m[4:]), [r["behaviour_kl"] for r in m]
    assert not _ours(before)


def test_a_killed_trainer_resumes_with_fresh_workers(micro_base, tmp_path):
    """kill -9 of the trainer's process mid-run: Ray ends the workers it owned, and
    `--resume` continues from the last checkpoint with new ones, losing no step."""
    import subprocess
    import sys

    run_dir = tmp_path / "rl"
    before = _ours(set(), all_jobs=True)
    address = ray.get_runtime_context().gcs_address  # the trainer joins this test's cluster
    cmd = [sys.executable, "-m", "rlvr.cli", "rl", "--model", str(micro_base), "--env", json.dumps(ENV),
           "--run_dir", str(run_dir), "--rollout_workers", "2", "--ray_address", address, "--steps", "40",
           "--prompts", "8", "--group_size", "4", "--max_new_tokens", "16", "--eval_problems", "0",
           "--save_every", "1", "--seed", "0"]
    trainer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (run_dir / "checkpoints" / "step_2").exists():
            time.sleep(0.1)
        assert (run_dir / "checkpoints" / "step_2").exists(), "the trainer never reached step 2"
        assert len(_ours(before, all_jobs=True)) == 2  # its workers, alive
        trainer.kill()
    finally:
        trainer.kill()
        trainer.wait()
    deadline = time.time() + 60
    while _ours(before, all_jobs=True) and time.time() < deadline:  # Ray ends the dead driver's actors
        time.sleep(0.2)
    assert not _ours(before, all_jobs=True), "the killed trainer's workers outlived it"
    done = len(_metrics(run_dir))
    assert 2 <= done < 40
    rl.main(_cfg(micro_base, run_dir, steps=done + 2, resume=True, save_every=1))
    assert [r["step"] for r in _metrics(run_dir)] == list(range(1, done + 3))
    assert not _ours(before, all_jobs=True)
