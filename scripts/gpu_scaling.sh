#!/usr/bin/env bash
# Record the IsoFLOP sweep (workbook/scaling_laws/experiments.py) on one GPU.
#
#   bash scripts/gpu_scaling.sh probe [KEY=VALUE ...]   # one budget, 7 sizes: timing + centring
#   bash scripts/gpu_scaling.sh full  [KEY=VALUE ...]   # the full preset, recorded in the ledger
#   SEED=1 bash scripts/gpu_scaling.sh full              # another seed (init and batches): its own sweep
#   SEEDS="0 1 2" bash scripts/gpu_scaling.sh full       # three sweeps in a row (checkpoint each)
#   bash scripts/gpu_scaling.sh batch                    # one size, 2 batches x 2 token counts (~90 s)
#   bash scripts/gpu_scaling.sh onebatch                 # the largest budget, one batch for all (~260 s)
#   bash scripts/gpu_scaling.sh graphs                   # the CUDA-graph step: its GPU test, then
#                                                        # the largest budget eager and graphed
#
# Uses the stdlib-source token cache (data/cache/scaling/); where it is missing the sweep builds
# it first (a BPE trained on the stdlib: outside the sweep's own wall time, inside the call's),
# or build it beforehand: `python -c "from workbook.data import build_stdlib_source as b; b(2048)"`.
# Finished points go to $OUT/isoflop_checkpoint.csv (full: isoflop_checkpoint_s<seed>.csv) as
# they finish; if the sweep is killed, they are recorded from there. Copies the ledger, the
# checkpoint and the log to $OUT.
set -u
MODE=${1:-full}
SEED=${SEED:-0}
shift || true
OUT=${OUT:-/tmp/scaling_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
CKPT="$OUT/isoflop_checkpoint.csv"
export WORKBOOK_OUT="$OUT"   # --set paths must stay in the project, or in this folder
SETS=(--set "checkpoint=\"$CKPT\"")
for kv in "$@"; do SETS+=(--set "$kv"); done
# appended: `graphs && full` in one call keeps both logs
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$OUT/log.txt"

if [ "$MODE" = probe ]; then
  python3 -m workbook run scaling_isoflop --preset full --in-process \
    --set 'budgets=[3e13]' --set sizes_per_budget=7 "${SETS[@]}" 2>&1 | tee -a "$OUT/log.txt"
  exit 0
fi

if [ "$MODE" = graphs ]; then   # training.train_static's CUDA graph on this GPU, beside eager
  python3 -m pytest -q -s -rf -p no:cacheprovider -o addopts="" tests/test_training_static.py \
    2>&1 | tee -a "$OUT/log.txt"
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then   # exit 1: `graphs && full cuda_graph=true` stops here
    echo "the CUDA-graph test failed: no timing, no graphed sweep" | tee -a "$OUT/log.txt"
    exit 1
  fi
  for g in false true; do   # no checkpoint: an eager point must not stand in for a graphed one
    python3 -m workbook run scaling_isoflop --preset full --in-process --seed "$SEED" \
      --set 'budgets=[2e14]' --set cuda_graph=$g "${@/#/--set=}" 2>&1 | tee -a "$OUT/log.txt"
  done
  exit 0
fi

if [ "$MODE" = batch ]; then   # data or batch? (workbook/scaling_laws/batch_tokens.py)
  python3 -m workbook run scaling_batch_tokens --preset full --seed "$SEED" --record \
    "${@/#/--set=}" 2>&1 | tee -a "$OUT/log.txt"
  python3 -c "from workbook import results, scaling_laws as sl
print(sl.batch_token_effects(results.load('scaling_batch_tokens')).to_string())" \
    2>&1 | tee -a "$OUT/log.txt"
  cp data/results/scaling_batch_tokens.csv "$OUT/" 2>/dev/null
  exit 0
fi

if [ "$MODE" = onebatch ]; then   # the largest budget at one batch (workbook/scaling_laws/batch_tokens.py)
  python3 -m workbook run scaling_one_batch --preset full --seed "$SEED" --record \
    "${SETS[@]}" 2>&1 | tee -a "$OUT/log.txt"
  cp data/results/scaling_one_batch.csv "$OUT/" 2>/dev/null
  python3 -c "from workbook import results, scaling_laws as sl
print(sl.isoflop_minima(sl.ok_points(results.load('scaling_one_batch'))).to_string())" \
    2>&1 | tee -a "$OUT/log.txt"
  exit 0
fi

# The recorded sweep's text is CPython 3.11.7's stdlib (workbook.data.STDLIB_SOURCE). A GPU
# image's own stdlib may lack parts (Debian packs the test suite apart: the H200's gave a third
# of the tokens, and its sweep at 4d7c149e4cad repeated them up to 13.6 times), so carry the
# cache built here; ALLOW_OTHER_TEXT=1 records a sweep on another text anyway (labelled so).
if [ "${ALLOW_OTHER_TEXT:-0}" != 1 ] && ! python3 -c "
import json, sys
from workbook.data import STDLIB_SOURCE, cache_dir
m = cache_dir() / 'scaling' / 'stdlib-source-v2048' / 'manifest.json'
ok = m.exists() and json.loads(m.read_text())['text_sha256'] == STDLIB_SOURCE['sha256']
sys.exit(0 if ok else 1)"; then
  echo "data/cache/scaling/stdlib-source-v2048 is missing or not CPython 3.11.7's stdlib: carry it (or ALLOW_OTHER_TEXT=1)" | tee -a "$OUT/log.txt"
  exit 1
fi
# SEEDS="0 1 2": one sweep per seed, one after the other, each with its own checkpoint
# (isoflop_checkpoint_s<seed>.csv in $OUT; a seed's sweep resumes from it in a later call)
for SEED in ${SEEDS:-$SEED}; do
  CKPT="$OUT/isoflop_checkpoint_s$SEED.csv"
  SETS=(--set "checkpoint=\"$CKPT\"")
  for kv in "$@"; do SETS+=(--set "$kv"); done
  start=$(date +%s)
  python3 -m workbook run scaling_isoflop --preset full --seed "$SEED" --record "${SETS[@]}" \
    2>&1 | tee -a "$OUT/log.txt"
  rc=${PIPESTATUS[0]}
  echo "sweep command (seed $SEED): exit $rc, wall time $(( $(date +%s) - start )) s (process" \
    "start included)" | tee -a "$OUT/log.txt"
  if [ "$rc" -ne 0 ] && [ -s "$CKPT" ]; then
    echo "recording the finished points from the checkpoint" | tee -a "$OUT/log.txt"
    python3 -c "from workbook.scaling_laws import record_checkpoint as r
print(r('$CKPT', seed=$SEED))" 2>&1 | tee -a "$OUT/log.txt"
  fi
  cp data/results/scaling_isoflop.csv "$OUT/" 2>/dev/null
done
# the ledger goes back before the report: a call that ends during the fits keeps the record
# (130ac1be1319's first seed-1 call ended there and returned only the checkpoint)
cp data/results/scaling_isoflop.csv "$OUT/" 2>/dev/null
python3 - <<'PY' 2>&1 | tee -a "$OUT/log.txt"
import pandas as pd
from workbook import results, scaling_laws as sl
rows = results.load("scaling_isoflop")
rows = rows[rows["preset"] == "full"]
with pd.option_context("display.width", 200, "display.max_columns", 30,
                       "display.max_colwidth", 80):
    for where, sweep in sl.sweeps(rows):
        print(where)
        print(sl.isoflop_minima(sl.ok_points(sweep)))
    summary = sl.fit_summary(rows)
    print(summary.T)
    print(sl.claims(rows, summary)[["claim", "measured", "low", "high", "where", "verdict"]])
PY
cp data/results/scaling_isoflop.csv "$OUT/" 2>/dev/null
exit 0
