#!/usr/bin/env bash
# Record notebook 06's experiments (tensor_parallel, pipeline_bubble, expert_parallel) on every
# GPU of this machine: 1, 2, 4 or 8. Each experiment takes its world size from the GPUs present
# (NCCL, one process per GPU under torchrun) and also runs the smaller degrees (tp = 1, 2, 4 ..;
# p = 2, 4 ..). Rows go to data/results/<experiment>.csv with provenance; the CSVs and a log are
# copied to $OUT.
#
# Usage, from the repository root on the device machine:
#   export WORKBOOK_COMMIT=<`git rev-parse --short HEAD` of the checkout>  # device copy: no .git
#   bash scripts/gpu_model_parallel.sh
# Needs only torch, pandas, numpy, scipy (no plotly/ipywidgets/deepspeed).
# Dry run on a CPU (2 gloo ranks, small preset, ledger kept out of the repo):
#   PRESET=small WORKBOOK_RESULTS=/tmp/mp_results OUT=/tmp/mp_out bash scripts/gpu_model_parallel.sh
set -uo pipefail
OUT=${OUT:-/tmp/model_parallel_out}
PRESET=${PRESET:-full}
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
RESULTS=${WORKBOOK_RESULTS:-data/results}   # the ledger folder (workbook.results honours it)
mkdir -p "$OUT" "$RESULTS"

N=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
LOG="$OUT/model_parallel_${N}gpu.log"
EXPS=${EXPS:-"tensor_parallel pipeline_bubble expert_parallel parallel_3d"}   # override to split a run
echo "model_parallel: $N GPU(s), preset $PRESET, commit ${WORKBOOK_COMMIT:-unknown}" | tee "$LOG"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader >> "$LOG" 2>&1 || true

status=0
for exp in $EXPS; do
  start=$(date +%s)
  timeout 1500 "$PY" -m workbook run "$exp" --preset "$PRESET" --record >> "$LOG" 2>&1
  rc=$?
  [ "$rc" -ne 0 ] && status=1
  echo "$exp: exit $rc after $(( $(date +%s) - start )) s" | tee -a "$LOG"
done

# Key numbers of this run, for the reply's output tail (the full tables are in the log).
"$PY" - "$N" <<'PYEOF' 2>&1 | tee -a "$LOG"
import sys
import pandas as pd
from workbook import model_parallel as mp, results
pd.set_option("display.width", 160)
n = int(sys.argv[1])
def latest(name):
    rows = results.load(name)
    if rows.empty:
        return rows
    return rows[rows["recorded_at"] == rows["recorded_at"].max()]
tp, pp, ep = latest("tensor_parallel"), latest("pipeline_bubble"), latest("expert_parallel")
bad = pd.concat([r[r["status"] != "ok"] for r in (tp, pp, ep) if not r.empty])
print(f"rows not ok: {len(bad)}")
if len(bad):
    print(bad[[c for c in ("world", "metric", "status", "error") if c in bad]].head(10))
keep = ["max_abs_err_output", "max_abs_err_weight_grad", "max_abs_err_torch_tp_mlp",
        "allreduce_calls", "allreduce_payload", "step_ms_one_device",
        "step_ms_tensor_parallel", "allreduce_ms", "comm_share_estimate"]
if not tp.empty:
    print(mp.tp_summary(tp[tp["metric"].isin(keep)]).to_string(index=False))
if not pp.empty:
    s = mp.pp_summary(pp).pivot_table(index=["p", "m"], columns="kind", values="value")
    print(s.round(3).to_string())
    print(mp.schedule_summary(pp).round(4).to_string(index=False))
d3 = latest("parallel_3d")
if not d3.empty:
    print(mp.tradeoff_table(d3).round(3).to_string(index=False))
if not ep.empty:
    print(mp.ep_summary(ep).round(4).to_string(index=False))
PYEOF

for exp in $EXPS; do
  [ -f "$RESULTS/$exp.csv" ] && cp "$RESULTS/$exp.csv" "$OUT/"
done
ls -la "$OUT"
exit $status
