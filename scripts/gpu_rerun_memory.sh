#!/usr/bin/env bash
# A reader reruns a measuring cell 10 times: does the kernel keep GPU memory? (issue 20)
#
#   OUT=/tmp/out WORKBOOK_COMMIT=$(git rev-parse --short=12 HEAD) bash scripts/gpu_rerun_memory.sh
#
# One kernel per target cell (workbook.walltime.run_rerun_memory, `rerun_memory` full preset);
# rows recorded into data/results/rerun_memory.csv and copied to $OUT.
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_rerun_memory_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_rerun_memory.log"
source scripts/device_env.sh
# One target per command, each recorded as it ends: a later timeout loses nothing before it.
for target in ${TARGETS:-08_mixed_precision:9 06_model_parallel:9 07_flash_attention:15}; do
  python3 -W ignore -m workbook run rerun_memory --preset full --record --in-process \
    --set "targets=[\"$target\"]" 2>&1 | grep -v "running over TCP" >> "$LOG"
  cp data/results/rerun_memory.csv "$OUT/" 2>/dev/null || echo "no CSV" | tee -a "$LOG"
done
grep -E "growth|error" "$LOG" | tail -30
