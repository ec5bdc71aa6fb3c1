#!/usr/bin/env bash
# Record the 07_flash_attention experiments on one GPU (the device machine of the workbook).
#
#   OUT=/tmp/out WORKBOOK_COMMIT=$(git rev-parse --short HEAD) bash scripts/gpu_attention.sh
#   EXPERIMENTS="attention_traffic" bash scripts/gpu_attention.sh     # a subset
#
# Each experiment runs in its own process (clean peak memory), is recorded into
# data/results/<experiment>.csv with provenance, and the CSV is copied to $OUT at once, so a
# later timeout cannot lose an earlier experiment's rows.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_attention_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_attention.log"
DEFAULT="attention_timing attention_traffic attention_gpt2_medium attention_exactness"
DEFAULT="$DEFAULT attention_recompute"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  command -v ncu && ncu --version | tail -1; } >> "$LOG" 2>&1
for exp in ${EXPERIMENTS:-$DEFAULT}; do
  start=$(date +%s)
  timeout "${EXP_TIMEOUT:-200}" python3 -W ignore -m workbook run "$exp" --preset full \
    --record --in-process >> "$LOG" 2>&1
  echo "== $exp exit $? after $(( $(date +%s) - start )) s" | tee -a "$LOG"
  cp "data/results/$exp.csv" "$OUT/" 2>/dev/null || echo "== $exp: no CSV" | tee -a "$LOG"
done
