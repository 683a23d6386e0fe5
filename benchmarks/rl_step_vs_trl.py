"""One RL step, rlvr against TRL's `GRPOTrainer`, each in its own process, on the same model, task and batch.

What: the wall-clock time of one GRPO optimizer step, generation included, on CPU, and
each side's peak memory. Two cases:

- `--model tiny` (default): a random-init 4.2 M-parameter Qwen2 (`build_tiny_model
  ("small")`, char tokenizer with a chat template), saved once and loaded by both; 2-digit
  additions as chat prompts; 8 prompts x 8 samples, <= 32 new tokens, T=1, full
  fine-tuning, AdamW lr 1e-6 (the rate does not change a step's cost, and a larger one
  let the two sides learn the reward apart within the run: TRL's completions shrank to
  10 tokens while rlvr's stayed at 17, so the steps no longer did the same work).
- `--model smollm2-135m` (or any HF dir): the real instruct model, LoRA r=16 (alpha 32)
  on every projection on both sides; 2-digit additions with rlvr's "the answer is"
  prompt (two worked examples), the same text on both sides; 4 prompts x 4 samples,
  <= 64 new tokens, T=1, AdamW lr 1e-5. Fetch it once with `rlvr models get smollm2-135m`.

Both sides: no KL term (beta 0, no reference model), one optimizer step per batch,
completions end at EOS as each side normally does, a completion cut by the token limit
earns 0. The reward (`--reward`): by default the parity of the completion's length in
characters, the same function on both sides. Why not the verifier: rlvr computes no
forward or backward for a group whose rewards are all equal (it adds nothing to the
gradient), TRL computes every group; with the verifier a random-init model earns 0
everywhere, so rlvr would skip training altogether and the ratio would measure the skip,
not the step. Parity gives almost every group a signal, so both sides train on all of
them; `--reward verifier` measures the realistic case, skip included. Each side's mean
completion length, reward and share of groups with a signal are printed so the reader
can see the work compares.

How it is timed (benchmarks/interleave.py): each side runs in a process of its own, as
its users run it, and the parent steps them in turn (A B B A ...), so a slow spell of a
shared machine hits both alike and neither ever competes with the other for the cores.

- TRL: `GRPOTrainer(per_device_train_batch_size=prompts*group, num_generations=group)`;
  a callback holds the trainer at each step's end until the parent asks for the next
  step; the step's time runs from that request to the next `on_step_end` (the Trainer's
  own between-step work, data loading and logging, included).
- rlvr: exactly what `rlvr.train.rl.main` does per step, set up as `main` sets it up
  (`setup_model`, an engine in the "trainer" role, which shares the weights, `Producer`, `train_on`,
  `push_weights`).

Compute floor: each side's useful FLOPs (benchmarks/common.py; prompts once per group,
completions per sample, from that side's own token counts) over a large fp32 matmul's
rate, measured by the parent before every round (a shared VM's speed drifts by 20-40%
within minutes; each step is set against the rate measured next to it). Training counts forward + backward as 3x
the forward with full fine-tuning and 2x under LoRA (no weight gradients for the frozen
base).

    .venv/bin/python benchmarks/rl_step_vs_trl.py                          # tiny, 12 steps each
    .venv/bin/python benchmarks/rl_step_vs_trl.py --model smollm2-135m --steps 6 --warmup 1
    .venv/bin/python benchmarks/rl_step_vs_trl.py --skip-trl

Then rlvr runs `--profile` more steps (untimed) under the CPU profiler and prints how long
its matmul kernels alone took a step (benchmarks/common.py, `MATMUL_KERNELS`): the step's
share of the peak were everything but its matmuls free, i.e. the most any fusion of the
remaining small ops could reach at the rates the kernels get for the step's shapes.

The last line is `speedup_vs_trl: X` (tiny) or `speedup_vs_trl_smollm2: X` (TRL median
step time / rlvr median step time; `nan` with --skip-trl).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # repo root, for rlvr

from common import (device_peak, generation_flops, matmul_kernel_seconds, meta_model, model_dir,  # noqa: E402
                    print_header)
from interleave import Channel, Side, interleave, peak_rss_gb  # noqa: E402

TINY = {"env": {"name": "arithmetic", "digits": 2, "ops": ["add"], "template": "{expr}"},
        "prompts": 8, "group": 8, "max_new": 32, "lr": 1e-6, "lora_r": 0}
REAL = {"env": "prompt:format=answer_is,shots=2:arithmetic:digits=2,ops=add",
        "prompts": 4, "group": 4, "max_new": 64, "lr": 1e-5, "lora_r": 16}
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
THREADS = 2


def _quiet() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # keep HF's and TRL's notices out of the report
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def parity(text: str) -> float:
    """The default reward of both sides: differs within almost every group (see the docstring)."""
    return float(len(text) % 2)


class ParityReward:
    """An environment's problems, scored by `parity` instead of its verifier."""

    def __init__(self, env):
        self.env = env

    def verify(self, problem, completion: str):
        from rlvr.types import Verdict

        return Verdict(reward=parity(completion), correct=bool(parity(completion)))

    def __getattr__(self, name):
        return getattr(self.env, name)


def _sync(device: str) -> None:
    if device != "cpu":
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- rlvr side
def rlvr_worker(path: str, case: dict, steps: int, device: str) -> None:
    from rlvr.engine import make_engine
    from rlvr.envs import make_env
    from rlvr.train.batch import micro_batch_tokens
    from rlvr.train.rollouts.producer import Producer
    from rlvr.train.rollouts.queues import make_queue
    from rlvr.train.rl import RLConfig, reference_logprobs
    from rlvr.train.rl_update import train_on
    from rlvr.train.setup import make_optimizer, setup_model
    from rlvr.types import Sampling

    channel = Channel()
    torch.set_num_threads(THREADS)
    cfg = RLConfig(model=path, env=case["env"], steps=steps, prompts=case["prompts"], group_size=case["group"],
                   max_new_tokens=case["max_new"], lr=case["lr"], warmup=0, kl_coef=0.0, eval_problems=0, seed=0,
                   lora_r=case["lora_r"], lora_targets=LORA_TARGETS, device=device)
    model, tok, parts = setup_model(cfg, path)  # as rl.main sets up
    reference = reference_logprobs(cfg, model, parts)
    max_tokens = micro_batch_tokens(parts, cfg.activation_gb)
    opt = make_optimizer(model, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)
    engine = make_engine(model, tok, cfg.engine, role="trainer", version=0, options=cfg.engine_options)
    env = make_env(cfg.prompted(cfg.env))
    if case["reward"] == "parity":
        env = ParityReward(env)
    queue = make_queue(Producer(engine, env, cfg.prompts, cfg.group_size, sampling, cfg.seed, cfg.drop_uniform_groups),
                       cfg.max_staleness, start=0, version=0)
    def one_step(step: int) -> dict:
        t0 = time.perf_counter()
        batch = queue.get(step)
        t_gen = time.perf_counter()
        metrics = train_on(batch.rollouts, model, parts, reference, opt, cfg, tok.pad_token_id, max_tokens)
        t_sync = time.perf_counter()
        queue.push_weights(model.state_dict(), step + 1)
        _sync(device)
        t1 = time.perf_counter()
        return dict(seconds=t1 - t0, generate=t_gen - t0, sync=t1 - t_sync, reward=batch.stats["reward"],
                    signal=metrics.get("signal", 0.0),
                    shapes=[(len(r.samples[0].prompt_ids), [len(s.completion_ids) for s in r.samples])
                            for r in batch.rollouts])

    channel.send(ready=True, threads=torch.get_num_threads())
    step, peak_gb = 0, peak_rss_gb()
    while (command := channel.wait())[0] == "step":
        if command[1].get("profile"):  # untimed: a step under the profiler, its matmul kernels' seconds
            seconds, out = matmul_kernel_seconds(lambda: one_step(step))
            out["matmul_seconds"] = seconds
        else:
            out = one_step(step)
            peak_gb = peak_rss_gb()  # the timed steps' peak (the profiler's records would add to it)
        step += 1
        channel.send(**out)
    queue.close()
    channel.send(peak_rss_gb=peak_gb)


# ----------------------------------------------------------------------------- TRL side
def trl_worker(path: str, case: dict, steps: int, device: str) -> None:
    import datasets
    from transformers import AutoTokenizer, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.envs import make_env

    channel = Channel()
    _quiet()
    datasets.disable_progress_bars()
    env = make_env(case["env"])  # the same spec rlvr's side uses: the same prompt text
    stream = env.problems("train", seed=0)
    problems = [next(stream) for _ in range(case["prompts"] * steps)]
    by_prompt = {p.messages()[-1]["content"]: p for p in problems}
    dataset = datasets.Dataset.from_list([{"prompt": p.messages(), "answer": str(p.answer)} for p in problems])
    tok = AutoTokenizer.from_pretrained(path)
    eos_id = tok.eos_token_id
    step_log: dict = {}

    def verifier_reward(prompts, completions, completion_ids, answer, **_) -> list[float]:
        out, shapes, rewards = [], {}, {}
        for prompt, completion, ids, gold in zip(prompts, completions, completion_ids, answer):
            problem = by_prompt[prompt[-1]["content"]]
            assert str(problem.answer) == gold
            text = completion[-1]["content"]
            if eos_id not in ids:  # cut by the token limit
                out.append(0.0)
            else:
                out.append(parity(text) if case["reward"] == "parity" else env.verify(problem, text).reward)
            key = prompt[-1]["content"]
            if key not in shapes:
                shapes[key] = (len(tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True,
                                                           return_dict=False)), [])
            shapes[key][1].append(len(ids))
            rewards.setdefault(key, []).append(out[-1])
        step_log.update(reward=statistics.fmean(out), shapes=list(shapes.values()),
                        signal=statistics.fmean(len(set(r)) > 1 for r in rewards.values()))
        return out

    class Stepper(TrainerCallback):
        """Holds the trainer between steps until the parent asks for one; times request -> step end."""

        def __init__(self):
            self.t0 = None

        def _wait(self):
            if channel.wait()[0] != "step":
                raise SystemExit(0)
            self.t0 = time.perf_counter()

        def on_step_begin(self, args, state, control, **kwargs):
            if self.t0 is None:  # the first step: everything before it is set-up
                channel.send(ready=True, threads=torch.get_num_threads())
                self._wait()

        def on_step_end(self, args, state, control, **kwargs):
            _sync(device)
            channel.send(seconds=time.perf_counter() - self.t0, **step_log)
            if state.global_step < state.max_steps:
                self._wait()

    peft_config = None
    if case["lora_r"]:
        from peft import LoraConfig

        peft_config = LoraConfig(r=case["lora_r"], lora_alpha=2 * case["lora_r"], target_modules=LORA_TARGETS,
                                 lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_"), per_device_train_batch_size=case["prompts"] * case["group"],
        num_generations=case["group"], max_completion_length=case["max_new"], temperature=1.0,
        use_cpu=device == "cpu", bf16=device != "cpu", model_init_kwargs={"dtype": "bfloat16" if device != "cpu" else "float32"},
        beta=0.0, learning_rate=case["lr"], max_steps=steps, logging_steps=1, report_to=[], save_strategy="no",
        disable_tqdm=True, seed=0)
    trainer = GRPOTrainer(model=path, reward_funcs=verifier_reward, args=config, train_dataset=dataset,
                          processing_class=tok, callbacks=[Stepper()], peft_config=peft_config)
    trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the progress bar for a log printer
    torch.set_num_threads(THREADS)
    trainer.train()
    channel.wait()  # "quit"
    channel.send(peak_rss_gb=peak_rss_gb())


# ------------------------------------------------------------------------------- parent
def step_flops(model, groups: list, lora: bool) -> tuple[float, float]:
    """(generation, training) useful FLOPs of one step; `groups`: (prompt length, completion lengths)."""
    gen = 0.0
    for prompt_len, lengths in groups:
        gen += generation_flops(model, [prompt_len], 0)[0]  # prefill once per prompt
        gen += sum(generation_flops(model, [prompt_len], c)[1] for c in lengths)  # decode per completion
    return gen, (2.0 if lora else 3.0) * gen


def _summary(name: str, steps: list[dict], warmup: int, model, lora: bool, rates: list[float]) -> dict:
    """Median step time; the share of the matmul peak is each step's floor (its useful FLOPs at
    the rate measured just before its round) over its time, median over the steps."""
    kept = steps[warmup:]
    times = [s["seconds"] for s in kept]
    flops = [sum(step_flops(model, s["shapes"], lora)) for s in kept]
    floors = [f / r for f, r in zip(flops, rates[warmup:])]
    lens = [statistics.fmean(c for _, cs in s["shapes"] for c in cs) for s in kept]
    return {"name": name, "median": statistics.median(times), "min": min(times), "max": max(times),
            "first": steps[0]["seconds"], "len": statistics.fmean(lens),
            "reward": statistics.fmean(s["reward"] for s in kept), "gflop": statistics.fmean(flops) / 1e9,
            "floor": statistics.median(floors), "of_peak": statistics.median(f / t for f, t in zip(floors, times)),
            "signal": statistics.fmean(s["signal"] for s in kept)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (random-init preset 'small'), a registered name "
                    "(smollm2-135m, after `rlvr models get`) or a local HF model dir")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps run by each side (warm-up included)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps of each side left out of the median")
    ap.add_argument("--reward", default="parity", choices=["parity", "verifier"],
                    help="parity of the completion's length (both sides train on every group) or the task's verifier")
    ap.add_argument("--skip-trl", action="store_true", help="time rlvr only (the last line says nan)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (bf16 weights on both sides there)")
    ap.add_argument("--profile", type=int, default=3, help="extra rlvr steps run under the CPU profiler after the "
                    "timed ones, to print the time its matmul kernels alone take (0: none)")
    ap.add_argument("--worker", choices=["rlvr", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _quiet()
        return (rlvr_worker if args.worker == "rlvr" else trl_worker)(args.path, json.loads(args.case), args.steps,
                                                                      args.device)
    if args.steps <= args.warmup:
        ap.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    _quiet()
    torch.set_num_threads(THREADS)
    tiny = args.model == "tiny"
    case = {**(TINY if tiny else REAL), "reward": args.reward}
    label = "speedup_vs_trl" if tiny else "speedup_vs_trl_" + os.path.basename(args.model.rstrip("/")).split("-")[0]
    print_header("one GRPO step: rlvr vs TRL GRPOTrainer, each in its own process, interleaved")
    with tempfile.TemporaryDirectory(prefix="rl_step_vs_trl_") as tmp:
        path = model_dir(args.model, tmp)
        model = meta_model(path)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"model: {args.model} ({n_params / 1e6:.1f} M params) | task: {case['env']} | step: {case['prompts']} "
              f"prompts x {case['group']} samples, <= {case['max_new']} new tokens, T=1, lr {case['lr']:g}, beta 0, "
              f"{'LoRA r=%d on %s' % (case['lora_r'], ','.join(LORA_TARGETS)) if case['lora_r'] else 'full fine-tuning'}"
              f", 1 optimizer step | reward: {args.reward} | {args.steps} steps each, median of the last "
              f"{args.steps - args.warmup}")
        worker = [__file__, "--path", path, "--case", json.dumps(case), "--steps", str(args.steps), "--device",
                  args.device, "--worker"]
        sides = []
        try:
            sides.append(Side("rlvr", worker + ["rlvr"]))
            if not args.skip_trl:
                sides.append(Side("trl", worker + ["trl"]))
            what = device_peak(args.device)[1]
            rates: list[float] = []  # the matmul rate before each round (the workers wait on their pipes)
            steps = interleave(sides, args.steps, between=lambda: rates.append(device_peak(args.device)[0]))
            # rlvr's ceiling on this machine: its steps' matmul kernels alone, at the rates they
            # reach for the step's shapes (CPU profiler; extra steps, untimed).
            profiled = [sides[0].step(profile=True) for _ in range(args.profile)] if args.device == "cpu" else []
            finals = {s.name: s.close() for s in sides}
        finally:
            for s in sides:
                s.kill()
    kept = rates[args.warmup:]
    threads = {s.name: s.info["threads"] for s in sides}
    lora = bool(case["lora_r"])
    res = {name: _summary(name, steps[name], args.warmup, model, lora, rates) for name in steps}
    print(f"matmul {what} on {args.device}: {statistics.median(kept) / 1e9:.1f} GFLOP/s (median; measured before "
          f"each of the {len(kept)} timed rounds: {min(kept) / 1e9:.1f}-{max(kept) / 1e9:.1f})")
    for name, label_ in (("trl", "TRL GRPOTrainer"), ("rlvr", "rlvr train.rl")):
        if name not in res:
            continue
        r = res[name]
        extra = f" | groups with signal {r['signal']:.0%}"
        if name == "rlvr":
            kept = steps["rlvr"][args.warmup:]
            extra += (f" | generate {statistics.median(s['generate'] for s in kept):.3f} + sync "
                      f"{statistics.median(s['sync'] for s in kept):.3f} s")
        print(f"{label_:16s} median {r['median']:.3f} s/step (min {r['min']:.3f}, max {r['max']:.3f}; first "
              f"{r['first']:.3f}) | mean completion {r['len']:.1f} tokens | reward {r['reward']:.3f} | useful "
              f"{r['gflop']:.2f} GFLOP -> floor {r['floor'] * 1e3:.0f} ms = {100 * r['of_peak']:.1f}% of matmul peak"
              f" | peak RSS {finals[name]['peak_rss_gb']:.2f} GB | threads {threads[name]}{extra}")
    for name in res:  # a slow step, and what it did: its longest completion sets decoding's length
        slow = max(steps[name][args.warmup:], key=lambda st: st["seconds"])
        longest = max(c for _, cs in slow["shapes"] for c in cs)
        print(f"{name} slowest step {slow['seconds']:.3f} s: longest completion {longest} tokens"
              + (f", generate {slow['generate']:.3f} s" if "generate" in slow else ""))
    if profiled:
        flops = sum(sum(step_flops(model, p["shapes"], lora)) for p in profiled)
        seconds = sum(p["matmul_seconds"] for p in profiled)
        peak = statistics.median(rates[args.warmup:])
        print(f"rlvr matmul kernels alone (profiled, {len(profiled)} more steps): {seconds / len(profiled):.3f} s a step "
              f"for {flops / len(profiled) / 1e9:.2f} useful GFLOP = {100 * flops / seconds / peak:.1f}% of matmul peak: "
              f"the step's share of the peak were everything else free")
    if "trl" in res:  # should the two sides' work differ (lengths drift as they learn), per useful FLOP too
        per = {n: res[n]["median"] / res[n]["gflop"] for n in res}
        print(f"time per useful GFLOP: TRL {1e3 * per['trl']:.1f} ms, rlvr {1e3 * per['rlvr']:.1f} ms -> "
              f"work-normalised speedup {per['trl'] / per['rlvr']:.2f}")
    speedup = res["trl"]["median"] / res["rlvr"]["median"] if "trl" in res else float("nan")
    print(f"{label}: {speedup:.2f}", flush=True)


if __name__ == "__main__":
    main()
