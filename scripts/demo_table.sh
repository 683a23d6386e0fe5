#!/usr/bin/env bash
# The demo's table over base seeds and CPU kernel paths (EXPERIMENTS.md): each run is a
# fresh `rlvr demo` (its own base, pretrained and cached in OUT) timed alone on the machine.
#   scripts/demo_table.sh OUT [SEEDS] [PATHS]      e.g. scripts/demo_table.sh runs/demo-table "0 1 2 3 4"
set -euo pipefail
out=${1:?usage: scripts/demo_table.sh OUT [SEEDS] [PATHS]}
seeds=${2:-"0 1 2 3 4"}
paths=${3:-"native default avx2"}
py=${PY:-.venv/bin/python}
mkdir -p "$out"
for path in $paths; do
  case $path in
    native) env=() ;;
    default) env=(ATEN_CPU_CAPABILITY=default) ;;
    avx2) env=(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2) ;;
    *) echo "unknown kernel path $path (native, default, avx2)" >&2; exit 2 ;;
  esac
  for seed in $seeds; do
    run="$out/$path-s$seed"
    [ -f "$run/demo.json" ] && continue
    start=$(date +%s.%N)
    env "${env[@]}" "$py" -m rlvr.cli demo --run_dir "$run" --base_dir "$out/base-$path-s$seed" --base_seed "$seed" \
      > "$out/$path-s$seed.log" 2>&1
    end=$(date +%s.%N)
    echo "{\"path\": \"$path\", \"seed\": $seed, \"process_seconds\": $(echo "$end - $start" | bc)}" >> "$out/times.jsonl"
  done
done
