#!/usr/bin/env bash
# Record notebook 08's GPU rows: FP32 vs TF32 vs FP16+GradScaler vs BF16 autocast training.
# Run on the GPU machine from the repository root:
#   WORKBOOK_COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_precision.sh
# One `workbook run` per mode, each recorded as soon as it ends (if the machine's time runs out,
# the modes already measured are kept). Each mode trains in its own fresh process (clean peak
# memory). $OUT (if set) receives the ledger and the log.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_precision_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_precision.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$LOG"
for mode in fp32 bf16_autocast fp16_gradscaler tf32; do
  start=$(date +%s)
  $PY -m workbook run precision_training --preset full --record --set "modes=[\"$mode\"]" \
    2>&1 | tee -a "$LOG" | tail -n 6
  echo "== $mode took $(( $(date +%s) - start )) s" | tee -a "$LOG"
done
cp data/results/precision_training.csv "$OUT/" 2>/dev/null || echo "nothing recorded" | tee -a "$LOG"
