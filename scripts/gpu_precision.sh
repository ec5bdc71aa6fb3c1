#!/usr/bin/env bash
# Record notebook 08's GPU rows: FP32 vs TF32 vs FP16+GradScaler vs BF16 autocast training.
# Run on the GPU machine from the repository root; $OUT (if set) receives the CSV and the log.
#   WORKBOOK_COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_precision.sh
set -uo pipefail
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_precision_out}
mkdir -p "$OUT"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  # The tokenizer and token ids are rebuilt here unless data/cache was carried along.
  $PY -c "from workbook.data import token_ids; print('tokens', len(token_ids('train', 4096)))"
  time $PY -m workbook run precision_training --preset full --record
} 2>&1 | tee "$OUT/gpu_precision.log"
cp data/results/precision_training.csv "$OUT/" 2>/dev/null || echo "no precision_training.csv"
