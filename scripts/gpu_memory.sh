#!/usr/bin/env bash
# Record notebook 04's GPU rows: the breakdown (and its gap), activations vs seq_len (eager vs
# SDPA), checkpointing's recompute time, and the largest model that fits.
# Run on the GPU machine from the repository root:
#   OUT=/tmp/out WORKBOOK_COMMIT=$(git rev-parse --short=12 HEAD) bash scripts/gpu_memory.sh
# One `workbook run` per experiment, each recorded as soon as it ends (a later timeout loses
# nothing before it). Do not record under WORKBOOK_GPU_MEMORY_GB: the rows would carry the
# card's own name. $OUT receives the ledgers and the log.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_memory_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_memory.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$LOG"
for name in ${EXPERIMENTS:-memory_seq_sweep memory_recompute memory_breakdown memory_fit}; do
  start=$(date +%s)
  $PY -W ignore -m workbook run "$name" --preset full --record 2>&1 | tee -a "$LOG" | tail -n 8
  echo "== $name took $(( $(date +%s) - start )) s" | tee -a "$LOG"
  cp "data/results/$name.csv" "$OUT/" 2>/dev/null || echo "no $name.csv" | tee -a "$LOG"
done
