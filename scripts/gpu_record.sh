#!/usr/bin/env bash
# Record experiments on the GPU machine, in the order given, within one device call.
#
#   OUT=/tmp/out WORKBOOK_COMMIT=$(git rev-parse --short=12 HEAD) DEADLINE=540 \
#     bash scripts/gpu_record.sh energy_per_token sft_masking memory_seq_sweep:full
#
# Each argument is `experiment[:preset]` (preset full if left out), optionally followed, in the
# same quoted argument, by `--set` options of that run:
#   bash scripts/gpu_record.sh "panel_walltime:full --set record_each=full" qlora_vram
# Each run is a fresh process
# through the runner (`python -m workbook run … --record`): a failure is a row and never
# replaces a good one. After every run the whole ledger goes to $OUT/results.tar.gz, so a call
# that ends early loses nothing. An experiment whose expected time (registry.expected_seconds)
# exceeds what is left of DEADLINE is not started.
set -u
# The device machine has no .git: the rows' commit comes from here, never from a guess.
: "${WORKBOOK_COMMIT:?set WORKBOOK_COMMIT=\$(git rev-parse --short=12 HEAD) on your machine}"
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu_record_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_record.log"
START=$(date +%s)
source scripts/device_env.sh
python3 -W ignore -m workbook prepare --preset full 2>&1 | tail -2 >> "$LOG"
for target in "$@"; do
  read -r head sets <<< "$target"   # "exp[:preset]" and the run's own --set options, if any
  exp=${head%%:*}; preset=full; [ "$exp" != "$head" ] && preset=${head#*:}
  left=$(( ${DEADLINE:-540} - ($(date +%s) - START) ))
  need=$(python3 -c "from workbook import registry as r; s, _ = r.expected_seconds('$exp', '$preset'); print(int(s or 0))" 2>/dev/null || echo 0)
  if [ "$left" -lt $(( need > 20 ? need : 20 )) ]; then
    echo "== $target: not started ($left s left, expected ${need} s)" | tee -a "$LOG"; continue
  fi
  t0=$(date +%s)
  timeout "$left" python3 -W ignore -m workbook run "$exp" --preset "$preset" $sets --record \
    > "$OUT/$exp.txt" 2>&1
  rc=$?
  echo "== $target: exit $rc in $(( $(date +%s) - t0 )) s" | tee -a "$LOG"
  tail -c 1500 "$OUT/$exp.txt" >> "$LOG"
  tar czf "$OUT/results.tar.gz" -C data results
done
