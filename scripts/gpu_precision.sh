#!/usr/bin/env bash
# Record notebook 08's GPU rows: FP32 vs TF32 vs FP16+GradScaler vs BF16 autocast training.
# Run on the GPU machine from the repository root; $OUT (if set) receives one CSV per mode and
# the log. Then, on the workbook machine:
#   python -c "from workbook import precision; precision.adopt_recorded('DIR')"
# which puts the rows into data/results/precision_training.csv.
#   WORKBOOK_COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_precision.sh
# One `workbook run` per mode, each recorded at once into its own fresh ledger: if the machine's
# time runs out, the modes already measured are kept, and no recording merges with older rows.
# Each mode still trains in its own fresh process (clean peak memory).
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_precision_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_precision.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$LOG"
# The tokenizer and token ids are rebuilt here unless data/cache was carried along.
$PY -c "from workbook.data import token_ids; print('tokens', len(token_ids('train', 4096)))" \
  2>&1 | tee -a "$LOG"
for mode in fp32 bf16_autocast fp16_gradscaler tf32; do
  start=$(date +%s)
  ledger=$(mktemp -d)
  WORKBOOK_RESULTS=$ledger $PY -m workbook run precision_training --preset full --in-process \
    --record --set "modes=[\"$mode\"]" 2>&1 | tee -a "$LOG" | tail -n 12
  echo "== $mode took $(( $(date +%s) - start )) s" | tee -a "$LOG"
  cp "$ledger/precision_training.csv" "$OUT/precision_training_$mode.csv" 2>/dev/null \
    || echo "== $mode: nothing recorded" | tee -a "$LOG"
done
