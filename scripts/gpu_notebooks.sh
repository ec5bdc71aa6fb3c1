#!/usr/bin/env bash
# Run All of the notebooks on the GPU machine with the full preset, as a reader's "Run All" does:
# one fresh kernel per notebook, every cell in order, stop at the first error. One device call.
#
#   OUT=/tmp/out WORKBOOK_COMMIT=$(git rev-parse --short=12 HEAD) bash scripts/gpu_notebooks.sh
#   NOTEBOOKS="07_flash_attention 00_setup" DEADLINE=500 bash scripts/gpu_notebooks.sh
#   WORKBOOK_GPU_MEMORY_GB=24 bash scripts/gpu_notebooks.sh   # as on a 24 GB card (emulated;
#   only the notebook_walltime rows are recorded: the experiments' ledgers have no cap column)
#
# One notebook at a time (times are a lone reader's), each recorded as soon as it ends: a
# `notebook_walltime` row (device, preset full, status, seconds, the slowest cells in `detail`,
# the executed notebook's size, the peak memory of the kernel's process tree, the memory cap if
# any) in data/results/notebook_walltime.csv, copied to $OUT at once
# with the log, the executed notebooks (executed.tar.gz) and the whole ledger (results.tar.gz:
# the live rows the notebooks measured, recorded; WORKBOOK_RECORD=0 turns that off). DEADLINE (s, whole call) stops the
# notebook running at that moment (a `timeout` row) and starts no other, nor one whose last
# full run on this GPU took longer than the time left. The jupyter stack
# travels as wheels in .whl/ (the device tool's README).
set -u
# The device copy's .git (if any) is stale: the rows' commit comes from here.
: "${WORKBOOK_COMMIT:?set WORKBOOK_COMMIT=\$(git rev-parse --short=12 HEAD) on your machine}"
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_notebooks_out}
mkdir -p "$OUT" data/cache/executed
LOG="$OUT/gpu_notebooks.log"
START=$(date +%s)
source scripts/device_env.sh
# What the notebooks measure live goes into the ledger too (registry.recording): one Run All
# leaves this GPU's rows of every experiment it ran, copied back as results.tar.gz.
export WORKBOOK_RECORD=${WORKBOOK_RECORD:-1}
# PROFILE=1: every experiment's child leaves a cProfile summary in $OUT/profiles (runner's
# WORKBOOK_PROFILE): where a slow cell's seconds go. It slows Python-heavy code, so such a run
# records nothing and its times are not the workbook's wall times.
if [ "${PROFILE:-0}" = 1 ]; then
  export WORKBOOK_PROFILE="$OUT/profiles" WORKBOOK_RECORD=0
fi
ALL="00_setup 01_pretraining 02_flops 03_scaling_laws 04_memory 05_data_parallel_zero"
ALL="$ALL 06_model_parallel 07_flash_attention 08_mixed_precision 09_sft"
ALL="$ALL 10_evaluation_alignment 11_lora 12_qlora"
# As `make lab` does before JupyterLab starts: the tokenizer and the base model are built once
# here (timed, in the log), not inside whichever notebook needs them first.
# On a GPU prepare also compiles 07's Triton kernels (registry.warm_up). The log counts the
# entries of Triton's disk cache after prepare and after each notebook, naming the kernels of
# the new ones: a notebook that still adds entries compiled something the warm-up did not.
# $OUT/triton_meta.tgz keeps every entry's metadata (its .json: signature, constants, options)
# and a listing by time, to diff a notebook's new binary against the warm-up's.
TRITON_DIR=${TRITON_CACHE_DIR:-$HOME/.triton/cache}
SEEN=$(mktemp)
ls "$TRITON_DIR" 2>/dev/null | sort > "$SEEN"
echo "triton cache: $(wc -l < "$SEEN") entries before prepare" >> "$LOG"
triton_new() {
  local now; now=$(mktemp)
  ls "$TRITON_DIR" 2>/dev/null | sort > "$now"
  local names; names=$(for h in $(comm -13 "$SEEN" "$now"); do
      ls "$TRITON_DIR/$h" | grep -E '\.json$' | grep -v '^__grp__' | head -1; done \
    | sed 's/\.json$//' | sort | uniq -c | awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}')
  echo "triton cache: $(wc -l < "$now") entries after $1 (new: ${names:-none})" | tee -a "$LOG"
  mv "$now" "$SEEN"
  if [ -d "$TRITON_DIR" ]; then
    (cd "$TRITON_DIR" && ls -lt --time-style=full-iso -d -- */ > "$OUT/entries_by_time.txt" \
      && tar czf "$OUT/triton_meta.tgz" -C "$OUT" entries_by_time.txt \
           -C "$TRITON_DIR" $(ls -- */*.json | grep -v /__grp__) \
      ; rm -f "$OUT/entries_by_time.txt") 2>/dev/null
  fi
}
python3 -W ignore -m workbook prepare --preset "${PRESET:-full}" 2>&1 | tee -a "$LOG" | tail -4
triton_new prepare > /dev/null
for nb in ${NOTEBOOKS:-$ALL}; do
  left=$(( ${DEADLINE:-540} - ($(date +%s) - START) ))
  if [ "$left" -lt 20 ]; then echo "== $nb: not started, past the deadline" | tee -a "$LOG"; continue; fi
  # A notebook whose last full run on this GPU took longer than the time left is not started:
  # it would only end as a `timeout` row.
  last=$(python3 - "$nb" <<'PY'
import csv, subprocess, sys
gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip().splitlines()[:1]
rows = [r for r in csv.DictReader(open("data/results/notebook_walltime.csv"))
        if r["notebook"] == sys.argv[1] and r["source"] == "measured" and r["status"] == "ok"
        and r["metric"] == "wall_time" and r["run_preset"] == "full" and [r["device"]] == gpu]
print(int(float(rows[-1]["value"])) if rows else 0)
PY
)
  if [ "${last:-0}" -gt "$left" ]; then
    echo "== $nb: not started, its last run took ${last} s and ${left} s are left" | tee -a "$LOG"; continue
  fi
  record=--record; [ "${PROFILE:-0}" = 1 ] && record=""   # a profiled run's times are not kept
  python3 -W ignore -m workbook run notebook_walltime --preset "${PRESET:-full}" $record --in-process \
    --set "notebooks=[\"$nb\"]" --set "deadline_s=$left" --set "timeout_s=${CELL_TIMEOUT:-600}" \
    --set save_dir=data/cache/executed 2>&1 | grep -v "running over TCP" >> "$LOG"
  grep -E "^$nb: " "$LOG" | tail -1
  triton_new "$nb"
  cp data/results/notebook_walltime.csv "$OUT/"
  tar czf "$OUT/executed.tar.gz" -C data/cache executed
  tar czf "$OUT/results.tar.gz" -C data results
done
