"""Training on several processes (rlvr/train/parallel.py), on gloo: N ranks take the step
one process takes on the same batch, under DDP and FSDP2; runs launched by torchrun
write once, resume on any number of processes, and die whole when a rank dies; `rlvr rs`
gathers each round from every rank; `--stop_on_hack` stops every rank at one step.

    pytest -q tests/test_distributed.py
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlvr.engine import TorchEngine
from rlvr.envs import make_env
from rlvr.models import build_tiny_model
from rlvr.models.forward import parts_of
from rlvr.train import rl, rl_update
from rlvr.train.rollouts.producer import Producer
from rlvr.types import Sampling, Verdict

ENV = {"name": "arithmetic", "digits": 2, "ops": ["add", "sub"], "template": "{expr}"}
AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
PROXIMAL = {"epochs": 2, "offpolicy": "decoupled"}  # two updates on one batch, against the log-probs before them
REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch():
    """A fixed batch: six groups of four, mixed rewards and uniform ones (left out of the
    compute but not of the denominator), completions of different lengths."""
    model, tok = build_tiny_model("micro", seed=3)
    producer = Producer(TorchEngine(model, tok), make_env(ENV), prompts=6, group_size=4,
                        sampling=Sampling(max_new_tokens=6, seed=1))
    rollouts = producer.produce(0).rollouts
    for i, r in enumerate(rollouts):
        r.verdicts = [Verdict(float(i % 3 == 0 and j % 2 == 0), i % 3 == 0 and j % 2 == 0) for j in range(4)]
    rollouts[4].verdicts = [Verdict(float(j == 1), j == 1) for j in range(4)]
    return model, tok, rollouts


def _step(model, tok, rollouts, agg: str, par=None, gathered: list | None = None, **more) -> list[torch.Tensor]:
    """One RL update (SGD, so the parameters move by the gradient itself); the full parameters
    after it. `gathered` collects, at each layer's MLP in a training forward, how many layers
    hold their full weights then (a sharded one holds DTensors)."""
    from torch.distributed.tensor import DTensor

    from rlvr.train.parallel import SINGLE
    par = par or SINGLE
    model = par.wrap(model)
    layers = model.model.layers
    if gathered is not None:
        def count(module, args):
            if torch.is_grad_enabled():
                gathered.append(sum(not isinstance(m.self_attn.q_proj.weight, DTensor) for m in layers))
        for m in layers:
            m.mlp.register_forward_pre_hook(count)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    cfg = rl.RLConfig(model="x", env=ENV, agg=agg, loss="ppo_clip", micro_batch=3, **more)
    rl_update.train_on(rollouts, model, parts_of(model), None, opt, cfg, tok.pad_token_id, max_tokens=20, par=par)
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in model.parameters()]


def _sft_rows() -> list:
    """SFT rows of different lengths, the loss on some of their tokens."""
    from rlvr.train.sft import Example
    g = torch.Generator().manual_seed(0)
    rows = []
    for n in (9, 4, 13, 6, 7):
        ids = torch.randint(3, 20, (n,), generator=g).tolist()
        rows.append([Example(ids, [i >= n // 2 for i in range(n)])])
    return rows


def _sft_step(model, tok, rows, par=None) -> list[torch.Tensor]:
    """One SFT step (rlvr.train.sft.train_rows, SGD); the full parameters after it."""
    from rlvr.train.parallel import SINGLE
    from rlvr.train.sft import train_rows
    par = par or SINGLE
    model = par.wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    train_rows(parts_of(model), rows, tok.pad_token_id, "cpu", max_tokens=16, par=par)
    par.sync_grads(model)
    opt.step()
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in model.parameters()]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from rlvr.compute import Compute
    from rlvr.train.parallel import Parallel
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    model, tok, rollouts = _batch()
    mine = rollouts[rank::world]  # whole groups on one rank
    if rank == 1:
        mine = mine[:1]  # ranks need not hold as many groups (nor micro-batches) as each other
    else:
        mine = mine + [r for r in rollouts[1::world]][1:]
    results = {}
    for mode in ("ddp", "fsdp"):
        for agg in AGGS:
            gathered = [] if mode == "fsdp" and agg == AGGS[0] else None
            results[f"{mode}/{agg}"] = _step(copy.deepcopy(model).train(), tok, copy.deepcopy(mine), agg,
                                             Parallel(rank, world, mode, group=True), gathered)
            if gathered is not None:
                results["gathered"] = gathered
        results[f"{mode}/proximal"] = _step(copy.deepcopy(model).train(), tok, copy.deepcopy(mine), AGGS[0],
                                            Parallel(rank, world, mode, group=True), **PROXIMAL)
        results[f"{mode}/sft"] = _sft_step(copy.deepcopy(model).train(), tok, _sft_rows()[rank::world],
                                           Parallel(rank, world, mode, group=True))
    meter = Compute(10, "rl", reduce=Parallel(rank, world, group=True).sum)
    meter.trained(rank + 1)
    results["trained_tokens"] = meter.own.trained_tokens
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def test_two_ranks_take_the_step_one_process_takes(tmp_path):
    """DDP and FSDP2 on 2 gloo processes against one process on the same groups, for every
    aggregation (token_mean's denominator is the whole batch's, uniform groups included),
    two epochs with a proximal pass (no-grad forwards before the updates), and an SFT step
    on the same rows. Rank 1 holds one uniform group, so no micro-batch of its own: under
    fsdp it runs zero-weight ones, whose gathers pair with rank 0's. Under fsdp a training
    forward holds one layer's full weights at a time."""
    out = tmp_path / "ranks.pt"
    torch.multiprocessing.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = torch.load(out)
    model, tok, rollouts = _batch()
    for key, agg, more in [(agg, agg, {}) for agg in AGGS] + [("proximal", AGGS[0], PROXIMAL)]:
        want = _step(copy.deepcopy(model).train(), tok, copy.deepcopy(rollouts), agg, **more)
        start = list(model.parameters())
        assert any(not torch.equal(w, s) for w, s in zip(want, start))  # the step moved the weights
        for mode in ("ddp", "fsdp"):
            for w, g in zip(want, got[f"{mode}/{key}"]):
                assert torch.allclose(w, g, atol=2e-6), (mode, key, (w - g).abs().max())
    assert got["gathered"] and max(got["gathered"]) == 1, got["gathered"]
    want = _sft_step(copy.deepcopy(model).train(), tok, _sft_rows())
    for mode in ("ddp", "fsdp"):  # SFT: the mean over every rank's tokens
        for w, g in zip(want, got[f"{mode}/sft"]):
            assert torch.allclose(w, g, atol=2e-6), (mode, "sft", (w - g).abs().max())
    assert got["trained_tokens"] == 3  # every rank's tokens charged on every rank's meter


def test_a_rank_without_peers_fails_within_dist_timeout(tmp_path):
    """Rank 0 of 2 whose peer never comes: one line after --dist_timeout, nothing written."""
    import time
    env = {**os.environ, "PYTHONPATH": str(REPO), "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "rlvr.cli", "rl", f"--run_dir={tmp_path / 'run'}", "--dist_timeout=3"],
                       capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert p.returncode == 1 and time.time() - t0 < 90
    assert p.stderr.strip().count("\n") == 0 and "could not be reached" in p.stderr, p.stderr
    assert not (tmp_path / "run").exists()


# -- runs under torchrun --------------------------------------------------------------
def torchrun(nproc: int, *args: str, timeout: float = 240, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
           f"--master_port={free_port()}", "-m", "rlvr.cli", *args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)


def cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlvr.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny model saved as a model directory (no pretraining: these tests are about plumbing)."""
    from rlvr.models.io import save_model
    path = tmp_path_factory.mktemp("base") / "model"
    model, tok = build_tiny_model("micro", seed=0)
    return save_model(model, tok, path)


def rl_args(base: Path, run: Path, *more: str) -> list[str]:
    return ["rl", f"--model={base}", f"--run_dir={run}", f"--env={json.dumps(ENV)}", "--prompts=4", "--group_size=4",
            "--max_new_tokens=6", "--eval_problems=4", "--eval_samples=2", "--hack_monitor=0", "--log_samples=1",
            "--save_every=1", "--kl_coef=0.05", "--lr_by_signal=false", *more]  # the KL term: an update every step


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_torchrun_writes_once_and_resumes_on_any_number_of_processes(tmp_path, base, mode):
    run = tmp_path / "run"
    p = torchrun(2, *rl_args(base, run, "--steps=2", f"--parallel={mode}"))
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2]  # one line a step: rank 0's, with every rank's figures
    assert rows[-1]["generated_tokens"] > 0 and rows[-1]["compute/generated_tokens"] >= rows[-1]["generated_tokens"]
    last = run / "checkpoints" / "last"
    assert (last / "optimizer").is_dir() == (mode == "fsdp") and (last / "optimizer.pt").exists() == (mode == "ddp")
    assert not list((run / "checkpoints").glob(".*"))  # no temporary left behind
    # The exported model loads with plain from_pretrained.
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(last / "model") is not None
    # Resume: on two processes, then as a single one.
    p = torchrun(2, *rl_args(base, run, "--steps=3", f"--parallel={mode}", "--resume"))
    assert p.returncode == 0, p.stderr[-3000:]
    p = cli(*rl_args(base, run, "--steps=4", "--resume"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert [r["step"] for r in _rows(run)] == [1, 2, 3, 4]
    assert json.loads((run / "summary.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_a_single_process_run_resumes_on_two(tmp_path, base):
    run = tmp_path / "run"
    assert cli(*rl_args(base, run, "--steps=1")).returncode == 0
    p = torchrun(2, *rl_args(base, run, "--steps=2", "--resume", "--parallel=fsdp"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert [r["step"] for r in _rows(run)] == [1, 2]


def _rank_pid(agent: int, rank: int) -> int | None:
    """The pid of torchrun's worker of LOCAL_RANK `rank` (a child of the agent `agent`)."""
    children = Path(f"/proc/{agent}/task/{agent}/children").read_text().split()
    for pid in children:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"LOCAL_RANK={rank}".encode() in env:
            return int(pid)
    return None


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_and_the_checkpoint_survives(tmp_path, base):
    import signal
    import time

    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           "-m", "rlvr.cli", *rl_args(base, run, "--steps=200", "--eval_problems=0")]
    agent = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                             env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 180
        while not (run / "checkpoints" / "step_2").exists() and agent.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        pid = _rank_pid(agent.pid, 1)
        assert pid is not None, agent.stderr.read() if agent.poll() is not None else "no rank 1"
        os.kill(pid, signal.SIGKILL)  # mid-step, or mid-checkpoint
        _, err = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
    assert agent.returncode != 0
    ours = [line for line in err.splitlines() if line.startswith("rlvr rl: rank 0")]
    assert len(ours) == 1 and "peer process" in ours[0], err[-3000:]  # the surviving rank says why, in one line
    assert (run / "checkpoints" / "last" / "trainer_state.pt").exists()  # the newest whole checkpoint
    rows = _rows(run)
    p = torchrun(2, *rl_args(base, run, f"--steps={rows[-1]['step'] + 1}", "--eval_problems=0", "--resume"))
    assert p.returncode == 0, p.stderr[-3000:]
    steps = [r["step"] for r in _rows(run)]
    assert steps == list(range(1, steps[-1] + 1)) and steps[-1] == rows[-1]["step"] + 1


# -- rlvr rs under torchrun -------------------------------------------------------------
def rs_args(base: Path, run: Path, *more: str) -> list[str]:
    """Every sample kept (`--keep none`), so an untrained model has data to fine-tune on. `--`
    ends torchrun's options: its parser would take `--n` for a prefix of `--nnodes`."""
    return ["rs", "--", f"--model={base}", f"--run_dir={run}", f"--env={json.dumps(ENV)}", "--problems=6", "--n=2",
            "--keep=none", "--max_new_tokens=6", "--sft_batch_size=4", "--sft_epochs=1", "--sft_warmup=0",
            "--eval_problems=4", "--eval_samples=2", *more]


def _data(run: Path, rnd: int) -> list[dict]:
    return [json.loads(line) for line in (run / f"round_{rnd}" / "data.jsonl").read_text().splitlines()]


def test_rs_under_torchrun_samples_every_ranks_share_and_fine_tunes_on_all(tmp_path, base):
    run = tmp_path / "rs"
    p = torchrun(2, *rs_args(base, run, "--rounds=2"))
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(run)
    assert [r["step"] for r in rows] == [0, 1, 2]  # the start's evaluation, then one line a round
    # A round's data holds every rank's share of the one process's problems, in their order.
    stream = make_env(ENV).problems("train", seed=0 * 1_000_003 + 1)
    want = [next(stream).id for _ in range(6)]
    data = _data(run, 1)
    assert list(dict.fromkeys(r["problem_id"] for r in data)) == want
    # Its figures are sums over ranks: the kept rows of both, the round's tokens charged once.
    for rnd in (1, 2):
        stats = json.loads((run / f"round_{rnd}" / "round.json").read_text())
        assert rows[rnd]["kept"] == stats["kept"] == len(_data(run, rnd)) > 0
        assert rows[rnd]["generated_tokens"] == stats["generated_tokens"]
    assert rows[1]["compute/generated_tokens"] == rows[1]["generated_tokens"]  # neither once a rank nor half
    assert rows[2]["compute/generated_tokens"] == rows[1]["generated_tokens"] + rows[2]["generated_tokens"]
    assert not list(run.glob("round_*/.*"))  # no temporary left behind
    # The round's fine-tuning ran on both ranks: one process group, one metrics line a step of 4 rows.
    steps = -(-rows[2]["kept"] // 4)
    assert rows[2]["sft_steps"] == steps and [r["step"] for r in _rows(run / "round_2" / "sft")] == list(range(1, steps + 1))
    assert rows[2]["compute/trained_tokens"] == sum(r["trained_tokens"] for rnd in (1, 2)
                                                    for r in _rows(run / f"round_{rnd}" / "sft"))
    from transformers import AutoModelForCausalLM
    assert AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "last" / "model") is not None
    assert json.loads((run / "summary.json").read_text())["rounds"] == 2


@pytest.mark.slow
def test_rs_under_torchrun_resumes_a_round_that_has_its_data(tmp_path, base):
    """Killed after round 2's sampling and fine-tuning, before its checkpoint: the resumed
    run reads round 2's data back (not sampled again, charged once) and ends as one; a
    third round runs in one process."""
    import shutil
    run = tmp_path / "rs"
    assert torchrun(2, *rs_args(base, run, "--rounds=2", "--eval_problems=0")).returncode == 0
    first = _rows(run)
    shutil.rmtree(run / "checkpoints" / "step_2")
    (run / "checkpoints" / "last").unlink()
    (run / "checkpoints" / "last").symlink_to("step_1")
    before = (run / "round_2" / "data.jsonl").read_text()
    p = torchrun(2, *rs_args(base, run, "--rounds=2", "--eval_problems=0", "--resume"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert (run / "round_2" / "data.jsonl").read_text() == before
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["compute/generated_tokens"] == first[-1]["compute/generated_tokens"]
    assert json.loads((run / "summary.json").read_text())["rounds"] == 2
    # ... and continues in one process.
    p = cli(*rs_args(base, run, "--rounds=3", "--eval_problems=0", "--resume"))
    assert p.returncode == 0, p.stderr[-3000:]
    assert [r["step"] for r in _rows(run)] == [1, 2, 3] and (run / "round_3" / "round.json").exists()


# -- --stop_on_hack under torchrun --------------------------------------------------------
LENIENT = "lenient:substring:arithmetic:digits=1,ops=add"


def _hack_rollouts(hacks: bool):
    """Four problems of four completions: each holds the gold somewhere, and ends on it
    (right) or on a wrong answer (a hack the held-out check catches)."""
    from rlvr.types import Rollout, Sample
    env = make_env(LENIENT)
    out = []
    for _, p in zip(range(4), env.problems("train", 0)):
        texts = [f"{p.answer} #### 99" if hacks else f"#### {p.answer}"] * 2 + [f"#### {p.answer}", "#### none"]
        out.append(Rollout(p, [Sample(p, [1], [2], [0.0], 0, "stop", text=t) for t in texts],
                           [env.verify(p, t) for t in texts]))
    return out


def _monitor_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from rlvr.train.monitor import HackMonitor, HackStop
    from rlvr.train.parallel import Parallel
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    monitor = HackMonitor(make_env(LENIENT), samples=64, par=Parallel(rank, world, group=True))
    figures = monitor(_hack_rollouts(hacks=rank == 0), step=0)  # rank 0 alone would stop, rank 1 alone not
    reason = HackStop(0.3, monitor).check(figures, 0, torch.nn.Linear(2, 1))
    torch.save({"figures": figures, "reason": reason}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_the_hack_monitor_reads_every_ranks_rollouts_so_ranks_stop_together(tmp_path):
    """One rank's batch all hacks, the other's none: both ranks read the figures of the
    whole batch (one process's on it) and take the same --stop_on_hack decision."""
    from rlvr.train.monitor import HackMonitor
    out = tmp_path / "monitor"
    torch.multiprocessing.spawn(_monitor_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    got = [torch.load(f"{out}.{rank}") for rank in (0, 1)]
    whole = HackMonitor(make_env(LENIENT), samples=64)(_hack_rollouts(True) + _hack_rollouts(False), step=0)
    assert got[0]["figures"] == got[1]["figures"] == whole and whole["hack/rate"] == pytest.approx(8 / 24)
    assert got[0]["reason"] == got[1]["reason"] and got[0]["reason"].startswith("stopped at step 1: hack rate 33.3%")


@pytest.mark.slow
def test_stop_on_hack_under_torchrun_ends_every_rank_cleanly(tmp_path, base):
    """An untrained model writes digits at random: the substring grader rewards some, the
    held-out check none, so the run stops at its first step, on both ranks, saying why."""
    run = tmp_path / "rl"
    p = torchrun(2, *rl_args(base, run, "--steps=3", f"--env={LENIENT}", "--max_new_tokens=16", "--hack_monitor=32",
                             "--stop_on_hack=0.5", "--eval_problems=0"))
    assert p.returncode == 0, p.stderr[-3000:]  # every rank returned: none waits in a collective
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped"].startswith("stopped at step 1: hack rate") and summary["steps"] == 0
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1] and rows[0]["stopped_on_hack"] == 1.0 and rows[0]["hack/rate"] >= 0.5
    assert "stopped at step 1" in p.stdout + p.stderr
    assert (run / "checkpoints" / "last" / "model").is_dir()
