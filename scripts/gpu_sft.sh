#!/usr/bin/env bash
# Record notebooks 09 and 10's experiments on one GPU (full preset): sft_masking,
# test_task_training, mid_training. The full base model is trained (and cached under
# data/cache/) first, so each experiment only loads it. Rows go to data/results/<experiment>.csv
# with provenance; the CSVs and a log are copied to $OUT.
#
# Usage, from the repository root on the device machine:
#   export WORKBOOK_COMMIT=<`git rev-parse --short HEAD` of the checkout>  # device copy: no .git
#   bash scripts/gpu_sft.sh
# Needs only torch, transformers, pandas, numpy, scipy (no plotly/ipywidgets).
# Dry run on a CPU (small preset, ledger kept out of the repo):
#   PRESET=small WORKBOOK_RESULTS=/tmp/sft_results OUT=/tmp/sft_out bash scripts/gpu_sft.sh
set -uo pipefail
OUT=${OUT:-/tmp/sft_out}
PRESET=${PRESET:-full}
PY=${PYTHON:-python3}
LIMIT=${LIMIT:-100}                    # seconds per experiment; a slow one must not eat the rest
LIMIT_MASKING=${LIMIT_MASKING:-330}    # sft_masking: three seeds (about 200 s on an H200)
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
RESULTS=${WORKBOOK_RESULTS:-data/results}
mkdir -p "$OUT" "$RESULTS"
LOG="$OUT/sft_${PRESET}.log"
echo "sft: preset $PRESET, commit ${WORKBOOK_COMMIT:-unknown}" | tee "$LOG"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >> "$LOG" 2>&1 || true

start=$(date +%s)
"$PY" -c "from workbook.model import load_base_model; load_base_model('$PRESET', 0)" \
  >> "$LOG" 2>&1
echo "base model ($PRESET): $(( $(date +%s) - start )) s" | tee -a "$LOG"

status=0
for exp in ${EXPS:-sft_masking test_task_training mid_training}; do
  start=$(date +%s)
  limit=$LIMIT; [ "$exp" = sft_masking ] && limit=$LIMIT_MASKING
  timeout "$limit" "$PY" -m workbook run "$exp" --preset "$PRESET" --record --in-process \
    >> "$LOG" 2>&1
  rc=$?
  [ "$rc" -ne 0 ] && status=1
  echo "$exp: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$LOG"
  cp "$RESULTS/$exp.csv" "$OUT/" 2>/dev/null || true
done

# The key numbers, for the reply's output tail (full tables are in the log).
"$PY" - <<'PYEOF' 2>&1 | tee -a "$LOG"
from workbook import results, sft
rows = results.load("sft_masking")
if not rows.empty:
    print(sft.seed_table(rows).to_string(index=False))
    print(sft.paired_differences(rows).round(4).to_string(index=False))
for name in ("test_task_training", "mid_training"):
    rows = results.load(name)
    if rows.empty:
        continue
    keys = [c for c in ("variant", "replay", "step") if c in rows.columns]
    last = rows if "step" not in rows else rows[rows["step"].isin([0, rows["step"].max()])]
    print(name)
    print(last.pivot_table(index=keys, columns="metric", values="value").round(3).to_string())
PYEOF
exit $status
