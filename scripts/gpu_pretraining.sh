#!/usr/bin/env bash
# Record the GPU experiments of notebooks 01-02 on one GPU (the `run` device tool or any box):
#   bash scripts/gpu_pretraining.sh [experiment ...]      (default: all of them)
# Each experiment runs in a fresh process and appends its rows, with provenance, to
# data/results/<experiment>.csv; with $OUT set, the CSVs and a log are copied there.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
EXPERIMENTS=("$@")
[ ${#EXPERIMENTS[@]} -eq 0 ] && EXPERIMENTS=(mfu_benchmark flops_sweep pretraining_curve transfer_learning)
LOG=${OUT:-/tmp}/gpu_pretraining.log
nvidia-smi -L 2>&1 | tee -a "$LOG"
for exp in "${EXPERIMENTS[@]}"; do
  echo "=== $exp $(date -u +%T)" | tee -a "$LOG"
  $PY -m workbook run "$exp" --preset full --record 2>&1 | grep -v "Loading weights" | tee -a "$LOG"
  [ -n "${OUT:-}" ] && cp "data/results/$exp.csv" "$OUT/" 2>/dev/null
done
echo "=== done $(date -u +%T)" | tee -a "$LOG"
