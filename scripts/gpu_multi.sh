#!/usr/bin/env bash
# One call on a multi-GPU machine (2, 4 or 8 GPUs) that records notebooks 05 and 06 at the
# machine's full width, most valuable first, inside one deadline:
#
#   1. zero_stages: DDP + ZeRO 0-3 (+ zero2 reduce-to-owner) over every GPU present
#   2. zero_stages: the same stages with one rank (the 1/N_d axis on the same hardware)
#   3. tensor_parallel, pipeline_bubble (p = 2, 4, .. N), expert_parallel over every GPU
#   4. zero_stages with CPU offload (optimizer; optimizer + parameters) over every GPU
#
# Usage, from the repository root on the device machine (carry=[".whl"] for deepspeed):
#   export WORKBOOK_COMMIT=<short sha>; DEADLINE=560 bash scripts/gpu_multi.sh
# Every step is capped by what is left of DEADLINE (seconds from the start); each ZeRO launch
# is recorded as soon as it ends, so a step cut short keeps what finished. The ledger is
# copied to /tmp/ledger and written there (WORKBOOK_RESULTS); after every step the ledgers of
# this script's experiments (only those: the device returns few files) are copied to
# $OUT/results, merged with what was there: copy them back into data/results/.
# Dry run on a CPU (2 gloo ranks, small presets): PRESET=small OUT=/tmp/multi bash scripts/gpu_multi.sh
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PRESET=${PRESET:-full}
DEADLINE=${DEADLINE:-560}
OUT=${OUT:-/tmp/gpu_multi_out}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# NVLink multicast stays off on the shared hosts (device KINDS.md)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if ! $PY -c "import deepspeed" >/dev/null 2>&1 && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
LEDGER=${LEDGER:-/tmp/ledger}
mkdir -p "$OUT/results" "$LEDGER"
cp data/results/*.csv "$LEDGER/" 2>/dev/null
export WORKBOOK_RESULTS="$LEDGER"
EXPS="zero_stages pipeline_bubble tensor_parallel expert_parallel parallel_3d"
SKIP=${SKIP:-}   # experiments to leave out, e.g. SKIP="expert_parallel" when already recorded
LOG="$OUT/gpu_multi.log"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)")
echo "gpus=$NGPU preset=$PRESET deadline=${DEADLINE}s commit=${WORKBOOK_COMMIT:-?} $(date -u +%FT%TZ)" | tee "$LOG"
nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader >>"$LOG" 2>&1
nvidia-smi topo -m >>"$LOG" 2>&1

step() {  # step CAP_S EXPERIMENT [--set K=V ...]: bounded by CAP_S and by what is left
  local cap=$1 name=$2; shift 2
  case " $SKIP " in *" $name "*) echo "-- $name: skipped (SKIP)" | tee -a "$LOG"; return;; esac
  local left=$((DEADLINE - SECONDS))
  [ "$left" -lt "$cap" ] && cap=$left
  if [ "$cap" -lt 20 ]; then echo "-- $name $*: skipped, ${left}s left" | tee -a "$LOG"; return; fi
  echo "== $name $* (cap ${cap}s)" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$cap" $PY -m workbook run "$name" --preset "$PRESET" --record "$@" >>"$LOG" 2>&1
  echo "   rc=$? after $((SECONDS - t0))s (t=${SECONDS}s)" | tee -a "$LOG"
  for e in $EXPS; do [ -f "$LEDGER/$e.csv" ] && cp "$LEDGER/$e.csv" "$OUT/results/"; done
}

STAGES='["ddp","zero0","zero1","zero2","zero3"]'
step 240 zero_stages --set record_each=$PRESET --set 'variants=["ddp","zero0","zero1","zero2","zero2+reduce","zero3"]'
[ "$NGPU" -gt 1 ] && step 150 zero_stages --set n_ranks=1 --set record_each=$PRESET --set "variants=$STAGES"
step 150 pipeline_bubble
step 150 tensor_parallel
step 100 expert_parallel
step 120 parallel_3d
step 300 zero_stages --set record_each=$PRESET --set 'variants=["zero2+offload_opt","zero3+offload_all"]'
grep -h "Error\|error:" "$LOG" | sort | uniq -c | head -20
echo "end t=${SECONDS}s" | tee -a "$LOG"
