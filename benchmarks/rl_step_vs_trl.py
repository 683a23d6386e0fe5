"""One RL step, rlvr against TRL's `GRPOTrainer`, on the same model, task and batch.

What: the wall-clock time of one GRPO optimizer step, generation included, on CPU.
Both sides start from the same random-init tiny model (`build_tiny_model("small")`:
Qwen2 architecture, 4 layers, hidden 256, 4.2 M parameters, char tokenizer with a chat
template), saved to a temp dir that both load. Both get 2-digit additions as chat
prompts and score them with the same verifier (`env.verify`; a completion cut by the
token limit earns 0 on both sides). One step = 8 prompts x 8 samples = 64 completions
of at most 32 new tokens at T=1 (full vocabulary), then one AdamW step at lr 1e-4 with
no KL term (beta=0, no reference model).

The two sides run interleaved, one TRL step then one rlvr step, because this machine
is a noisy shared VM (run to run, either side's median moves by 30%); medians are
compared after both sides' warm-up steps.

- TRL: `GRPOTrainer` with `per_device_train_batch_size=64, num_generations=8`; a
  `TrainerCallback` times each optimizer step from `on_step_begin` to `on_step_end`
  (generation, reward, loss forward, backward, optimizer; Trainer logging lies outside).
- rlvr: exactly what `rlvr.train.rl.main` does per step: `queue.get` (the
  producer samples with `TorchEngine` and verifies), `train_on`, and `push_weights`
  (the engine takes the new weights).

Both sides stop a completion at EOS as they normally do; a random model rarely emits
it, so most completions run to 32 tokens. The mean completion length of each side is
printed so the reader can see the work is comparable.

Why: TRL is the obvious baseline for GRPO; rlvr should be clearly faster on the
laptop-class CPU it is meant to run on first. The script also counts the useful FLOPs
of rlvr's step (see benchmarks/common.py for the convention) and measures a large
fp32 matmul's FLOP/s in the same run, so it says how far rlvr is from the hardware's
floor, not only how it compares with TRL. Counting: generation = prefill of each
distinct prompt once + one decode forward per completion token after the first;
training runs the same tokens teacher-forced (each prompt once per group, as rlvr's
`policy_logprobs` does, completions per sample), so its forward costs the same useful
FLOPs as generation, and forward + backward = 3x that.

Run (a few minutes on 2 cores):

    .venv/bin/python benchmarks/rl_step_vs_trl.py                 # 12 steps each, 2 warm-up
    .venv/bin/python benchmarks/rl_step_vs_trl.py --steps 20 --skip-trl

The last line is always `speedup_vs_trl: X` (TRL median step time / rlvr median step
time; `nan` with --skip-trl).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # repo root, for rlvr

from common import generation_flops, matmul_flops_per_s, print_header  # noqa: E402

from rlvr.engine import TorchEngine  # noqa: E402
from rlvr.envs import make_env  # noqa: E402
from rlvr.models import count_parameters, load_model, save_model  # noqa: E402
from rlvr.models.forward import parts_of  # noqa: E402
from rlvr.models.tiny import PRESETS, build_tiny_model  # noqa: E402
from rlvr.train.producer import Producer  # noqa: E402
from rlvr.train.queues import make_queue  # noqa: E402
from rlvr.train.rl import RLConfig, train_on  # noqa: E402
from rlvr.types import Sampling  # noqa: E402

ENV_SPEC = {"name": "arithmetic", "digits": 2, "ops": ["add"], "template": "{expr}"}
PROMPTS, GROUP, MAX_NEW, LR, THREADS = 8, 8, 32, 1e-4, 2


def step_flops(model, groups: list[tuple[int, list[int]]]) -> tuple[float, float]:
    """(generation, training) useful FLOPs of one step; `groups`: (prompt length, completion lengths)."""
    gen = 0.0
    for prompt_len, lengths in groups:
        gen += generation_flops(model, [prompt_len], 0)[0]  # prefill once per prompt
        gen += sum(generation_flops(model, [prompt_len], c)[1] for c in lengths)  # decode per completion
    return gen, 3.0 * gen


class RlvrLoop:
    """rlvr's RL loop, one `step()` at a time, timed as `rl.main` runs it: rollouts + train + weight sync."""

    def __init__(self, path: str, steps: int):
        self.cfg = cfg = RLConfig(model=path, env=ENV_SPEC, steps=steps, prompts=PROMPTS, group_size=GROUP,
                                  max_new_tokens=MAX_NEW, lr=LR, kl_coef=0.0, eval_problems=0, seed=0)
        self.model, self.tok = load_model(path, device="cpu")
        self.model.train()
        self.parts = parts_of(self.model)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.99),
                                     weight_decay=cfg.weight_decay)
        sampling = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
        engine = TorchEngine(self.model, self.tok, version=0)
        producer = Producer(engine, make_env(cfg.env), cfg.prompts, cfg.group_size, sampling, cfg.seed,
                            cfg.drop_uniform_groups)
        self.queue = make_queue(producer, cfg.max_staleness, start=0, version=0)
        self.done = 0
        self.times, self.gen, self.sync, self.len, self.reward, self.shapes = [], [], [], [], [], []

    def step(self) -> None:
        step = self.done
        t0 = time.perf_counter()
        batch = self.queue.get(step)
        t_gen = time.perf_counter()
        train_on(batch.rollouts, self.model, self.parts, None, self.opt, self.cfg, self.tok.pad_token_id)
        t_sync = time.perf_counter()
        self.queue.push_weights(self.model.state_dict(), step + 1)
        t1 = time.perf_counter()
        self.done += 1
        self.times.append(t1 - t0)
        self.gen.append(t_gen - t0)
        self.sync.append(t1 - t_sync)
        self.len.append(statistics.fmean(len(s.completion_ids) for r in batch.rollouts for s in r.samples))
        self.reward.append(batch.stats["reward"])
        self.shapes.append([(len(r.samples[0].prompt_ids), [len(s.completion_ids) for s in r.samples])
                            for r in batch.rollouts])

    def results(self, warmup: int) -> dict:
        self.queue.close()
        keep = slice(warmup, None)
        return {"times": self.times[keep], "gen": self.gen[keep], "sync": self.sync[keep], "len": self.len[keep],
                "reward": self.reward[keep], "flops": [step_flops(self.model, s) for s in self.shapes[keep]]}


def run_trl(path: str, steps: int, warmup: int, out_dir: str, after_step=None) -> dict:
    """TRL's GRPOTrainer for `steps` optimizer steps, each timed by a callback.

    `after_step()` (untimed here) runs after each TRL step: it interleaves rlvr's steps
    with TRL's, so a slow spell of this shared VM hits both sides alike."""
    import datasets
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer

    datasets.disable_progress_bars()
    env = make_env(ENV_SPEC)
    stream = env.problems("train", seed=0)
    problems = [next(stream) for _ in range(PROMPTS * steps)]
    by_prompt = {p.prompt: p for p in problems}  # the prompt text is the expression: unique per problem
    dataset = datasets.Dataset.from_list([{"prompt": p.messages(), "answer": str(p.answer)} for p in problems])
    _, tok = load_model(path, device="cpu")  # only for the EOS id
    eos_id = tok.eos_token_id
    lengths: list[float] = []
    rewards: list[float] = []

    def verifier_reward(prompts, completions, completion_ids, answer, **_) -> list[float]:
        out = []
        for prompt, completion, ids, gold in zip(prompts, completions, completion_ids, answer):
            problem = by_prompt[prompt[-1]["content"]]
            assert str(problem.answer) == gold
            if eos_id not in ids:  # cut by the token limit: 0, as rlvr's rollout judges it
                out.append(0.0)
            else:
                out.append(env.verify(problem, completion[-1]["content"]).reward)
        lengths.append(statistics.fmean(len(ids) for ids in completion_ids))
        rewards.append(statistics.fmean(out))
        return out

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.begin: list[float] = []
            self.end: list[float] = []
            self.resume: list[float] = []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begin.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.end.append(time.perf_counter())
            if after_step is not None:
                after_step()
            self.resume.append(time.perf_counter())

    timer = StepTimer()
    config = GRPOConfig(
        output_dir=out_dir, per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
        max_completion_length=MAX_NEW, temperature=1.0, use_cpu=True, beta=0.0, learning_rate=LR,
        max_steps=steps, logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, seed=0,
    )
    trainer = GRPOTrainer(model=path, reward_funcs=verifier_reward, args=config, train_dataset=dataset,
                          processing_class=tok, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the progress bar for a log printer
    torch.set_num_threads(THREADS)
    trainer.train()
    times = [e - b for b, e in zip(timer.begin, timer.end)]
    # What the Trainer does between one step's end and the next one's begin (data loading,
    # logging) is outside the timed step; report it so the reader can add it if wished.
    between = [b2 - r1 for r1, b2 in zip(timer.resume, timer.begin[1:])]
    return {"times": times[warmup:], "between": between[warmup:], "len": lengths[warmup:], "reward": rewards[warmup:],
            "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps run by each side (warm-up included)")
    ap.add_argument("--warmup", type=int, default=2, help="first steps of each side left out of the median")
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS), help="tiny-model preset (random init)")
    ap.add_argument("--skip-trl", action="store_true", help="time rlvr only (prints speedup_vs_trl: nan)")
    args = ap.parse_args(argv)
    if args.steps <= args.warmup:
        ap.error(f"--steps ({args.steps}) must exceed --warmup ({args.warmup})")
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # keep HF's and TRL's notices out of the report
    logging.getLogger("trl").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    print_header("one GRPO step: rlvr vs TRL GRPOTrainer")
    with tempfile.TemporaryDirectory(prefix="rl_step_vs_trl_") as tmp:
        path = os.path.join(tmp, "model")
        model, tok = build_tiny_model(args.preset, seed=0)
        save_model(model, tok, path)
        print(f"model: {args.preset} ({count_parameters(model) / 1e6:.2f} M params, random init) | task: 2-digit "
              f"addition, chat prompts | step: {PROMPTS} prompts x {GROUP} samples, <= {MAX_NEW} new tokens, T=1, "
              f"lr {LR:g}, beta 0, 1 optimizer step | {args.steps} steps each, median of last "
              f"{args.steps - args.warmup}")
        peaks = [matmul_flops_per_s()]
        loop = RlvrLoop(path, args.steps)
        trl = None
        if args.skip_trl:
            for _ in range(args.steps):
                loop.step()
        else:  # TRL step, rlvr step, TRL step, ...
            trl = run_trl(path, args.steps, args.warmup, os.path.join(tmp, "trl"), after_step=loop.step)
        assert loop.done == args.steps, f"rlvr ran {loop.done} steps, expected {args.steps}"
        rl = loop.results(args.warmup)
        peaks += [matmul_flops_per_s(), matmul_flops_per_s()]
    peak = statistics.median(peaks)

    med = statistics.median(rl["times"])
    if trl is not None:
        t = trl["times"]
        print(f"TRL  GRPOTrainer  median {statistics.median(t):.3f} s/step (min {min(t):.3f}, max {max(t):.3f}) | "
              f"+ {1e3 * statistics.median(trl['between']):.0f} ms between steps | mean completion "
              f"{statistics.fmean(trl['len']):.1f} tokens | reward {statistics.fmean(trl['reward']):.3f} | "
              f"threads {trl['threads']}")
    t = rl["times"]
    print(f"rlvr train.rl     median {med:.3f} s/step (min {min(t):.3f}, max {max(t):.3f}) | generate "
          f"{statistics.median(rl['gen']):.3f} + train {med - statistics.median(rl['gen']) - statistics.median(rl['sync']):.3f}"
          f" + sync {statistics.median(rl['sync']):.3f} s | mean completion {statistics.fmean(rl['len']):.1f} tokens | "
          f"reward {statistics.fmean(rl['reward']):.3f} | threads {torch.get_num_threads()}")
    gen = statistics.fmean(f[0] for f in rl["flops"])
    train = statistics.fmean(f[1] for f in rl["flops"])
    floor = (gen + train) / peak
    print(f"matmul fp32 2048^3: {peak / 1e9:.1f} GFLOP/s (median of {len(peaks)} measurements in this run)")
    print(f"rlvr step useful FLOPs: {(gen + train) / 1e9:.3f} GFLOP (generation {gen / 1e9:.3f} + train fwd+bwd "
          f"{train / 1e9:.3f}) -> compute floor {floor * 1e3:.1f} ms; rlvr step = {med / floor:.1f}x floor "
          f"({100 * floor / med:.1f}% of matmul peak)")
    speedup = statistics.median(trl["times"]) / med if trl is not None else float("nan")
    print(f"speedup_vs_trl: {speedup:.2f}", flush=True)


if __name__ == "__main__":
    main()
