#!/usr/bin/env bash
# Every experiment once, small preset, on the GPU machine: do the GPU code paths still run?
# (A restructure is checked on a CPU by CI; this is its check where the readers' GPUs are.)
#
#   OUT=/tmp/out bash scripts/gpu_smoke.sh   # records nothing; one line each
#
# Four at a time (small presets use little of one GPU), each in its own process with a limit.
set -u
export PYTHONUNBUFFERED=1 WORKBOOK_PRESET=small
OUT=${OUT:-/tmp/gpu_smoke_out}
mkdir -p "$OUT/smoke"
LOG="$OUT/gpu_smoke.log"
source scripts/device_env.sh
SKIP="notebook_walltime rerun_memory"
names=$(python3 -m workbook list 2>/dev/null | awk '{print $1}')
for exp in $names; do
  case " $SKIP " in *" $exp "*) continue ;; esac
  echo "$exp"
done | xargs -P "${PARALLEL:-4}" -I{} bash -c \
  'start=$(date +%s); timeout '"${EXP_TIMEOUT:-150}"' python3 -W ignore scripts/smoke_one.py {} \
     > '"$OUT"'/smoke/{}.txt 2>&1; rc=$?;
   echo "{}: exit $rc in $(( $(date +%s) - start )) s: $(tail -1 '"$OUT"'/smoke/{}.txt | cut -c1-200)"' \
  | tee -a "$LOG"
