#!/usr/bin/env bash
# Run All of the notebooks on the GPU machine with the full preset, as a reader's "Run All" does:
# one fresh kernel per notebook, every cell in order, stop at the first error. One device call.
#
#   OUT=/tmp/out WORKBOOK_COMMIT=$(git rev-parse --short=12 HEAD) bash scripts/gpu_notebooks.sh
#   NOTEBOOKS="07_flash_attention 12_qlora" PARALLEL=1 DEADLINE=400 bash scripts/gpu_notebooks.sh
#
# Records one `notebook_walltime` row per notebook (device, preset full, status, seconds, the
# slowest cells, the executed notebook's size) into data/results/notebook_walltime.csv and
# copies it to $OUT with the log and the executed notebooks (executed.tar.gz). A notebook that
# has not started by DEADLINE seconds becomes a `skipped` row; PARALLEL > 1 runs that many
# kernels side by side (its rows say so in the `parallel` column: times are then not a lone
# reader's). The jupyter stack travels as wheels in .whl/ (the device tool's README).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_notebooks_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_notebooks.log"
if [ -d .whl ] && ! python3 -c "import nbclient, ipykernel, plotly, ipywidgets" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl >> "$LOG" 2>&1 || { echo "wheels did not install" | tee -a "$LOG"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, plotly, nbclient; print('torch', torch.__version__, 'plotly', plotly.__version__, 'nbclient', nbclient.__version__)"; } >> "$LOG" 2>&1
# Longest first, so that the deadline cuts the short ones (measured 2026-12: 12, 07, 01 longest).
ALL="12_qlora 07_flash_attention 01_pretraining 03_scaling_laws 02_flops 04_memory"
ALL="$ALL 05_data_parallel_zero 06_model_parallel 08_mixed_precision 09_sft"
ALL="$ALL 10_evaluation_alignment 11_lora 00_setup"
list=$(printf '"%s",' ${NOTEBOOKS:-$ALL}); list="[${list%,}]"
mkdir -p /tmp/executed
python3 -W ignore -m workbook run notebook_walltime --preset full --record --in-process \
  --set "notebooks=$list" --set "parallel=${PARALLEL:-1}" --set "deadline_s=${DEADLINE:-420}" \
  --set "timeout_s=${CELL_TIMEOUT:-600}" --set save_dir=/tmp/executed 2>&1 | tee -a "$LOG"
echo "== exit ${PIPESTATUS[0]}" | tee -a "$LOG"
cp data/results/notebook_walltime.csv "$OUT/"
tar czf "$OUT/executed.tar.gz" -C /tmp executed
