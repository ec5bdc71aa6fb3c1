#!/usr/bin/env bash
# Record notebook 02's MFU benchmark on one GPU, one run ("mode:attention") per fresh process,
# each recorded as soon as it ends, most informative first, all inside one deadline:
#   export WORKBOOK_COMMIT=<short sha>; DEADLINE=560 bash scripts/gpu_mfu.sh [run ...]
# Default runs: the full preset's (workbook.flops.MFU_PRESETS["full"].runs). Rows go to
# data/results/mfu_benchmark.csv; with $OUT set, the CSV and a log are copied there.
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-560}
OUT=${OUT:-/tmp/gpu_mfu_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_mfu.log"
RUNS=("$@")
if [ ${#RUNS[@]} -eq 0 ]; then
  read -r -a RUNS <<<"$($PY -c 'from workbook.flops import MFU_PRESETS; print(*MFU_PRESETS["full"].runs)')"
fi
nvidia-smi -L 2>&1 | tee -a "$LOG"
for run in "${RUNS[@]}"; do
  left=$((DEADLINE - SECONDS))
  if [ "$left" -lt 60 ]; then echo "-- $run: skipped, ${left}s left" | tee -a "$LOG"; continue; fi
  echo "== $run (cap ${left}s, t=${SECONDS}s)" | tee -a "$LOG"
  timeout "$left" $PY -m workbook run mfu_benchmark --preset full --record \
      --set "runs=[\"$run\"]" >>"$LOG" 2>&1
  echo "   rc=$? t=${SECONDS}s" | tee -a "$LOG"
  cp data/results/mfu_benchmark.csv "$OUT/" 2>/dev/null
done
$PY - <<'PYEOF' 2>&1 | tee -a "$LOG"
import pandas as pd
from workbook import flops, results
pd.set_option("display.width", 200)
rows = results.load("mfu_benchmark")
print(flops.mfu_table(rows[rows["preset"] == "full"]).to_string())
print(flops.kernel_table(rows[rows["preset"] == "full"]).to_string())
PYEOF
