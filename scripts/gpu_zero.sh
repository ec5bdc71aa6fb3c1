#!/usr/bin/env bash
# Record notebooks 04 (memory) and 05 (data parallel / ZeRO) on every GPU present.
#
#   bash scripts/gpu_zero.sh [zero|zero1|memory|all]   # from the repository root; default all
#   QUICK=1 bash scripts/gpu_zero.sh                   # fewer configurations (1-GPU budget run)
#
# zero    zero_stages: DDP + DeepSpeed ZeRO 0-3 (+ zero2 reduce-to-owner, + CPU offload) with
#         N = every GPU present, one fresh torchrun launch per variant (9), each launch recorded
#         as soon as it ends. Each launch is capped at 150 s.
# zero1   with more than one GPU: stages 0-3 + DDP again with N = 1 on the same device (the
#         1/N_d axis), 5 launches.
# memory  memory_breakdown (GPT-2 124M: params, grads, Adam, activations, ckpt off/on, three
#         sequence lengths) and memory_fit (largest d_model-4096 GPT that trains on one GPU,
#         ckpt off/on). About 3-4 min.
# Rows go to data/results/<experiment>.csv with provenance (set WORKBOOK_COMMIT where there is
# no .git); the CSVs and a log are copied into $OUT. Without a GPU: small presets, 1 and 2 gloo
# ranks (tests this script on a CPU). Needs deepspeed: with carry=[".whl"] the wheels there are
# installed into /tmp/site.
set -u
cd "$(dirname "$0")/.."
PART=${1:-all}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false NCCL_NVLS_ENABLE=0
PY=${PYTHON:-python3}
if ! $PY -c "import deepspeed" >/dev/null 2>&1 && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
OUT=${OUT:-/tmp/gpu_zero_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_zero.log"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
echo "part=$PART gpus=$NGPU quick=${QUICK:-0} commit=${WORKBOOK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)} start=$(date -u +%T)" | tee -a "$LOG"

run() {  # run EXPERIMENT PRESET [--set KEY=VALUE ...]; each bounded, each recorded on its own
  local name=$1 preset=$2; shift 2
  local t0=$SECONDS
  echo "== $name --preset $preset $*" | tee -a "$LOG"
  timeout "${STEP_TIMEOUT:-590}" $PY -m workbook run "$name" --preset "$preset" --record "$@" >>"$LOG" 2>&1
  echo "   rc=$? after $((SECONDS - t0)) s" | tee -a "$LOG"
  cp "${WORKBOOK_RESULTS:-data/results}/$name.csv" "$OUT/" 2>/dev/null || true
}

STAGES='["zero0","zero1","zero2","zero3","ddp"]'
if [ "$NGPU" -eq 0 ]; then
  P=small
  ZERO_ALL=(--set n_ranks=2 --set record_each=small)
  ZERO_ONE=(--set n_ranks=1 --set record_each=small --set "variants=$STAGES")
  MEM=()
  FIT=()
elif [ "${QUICK:-0}" = 1 ]; then
  P=full
  ZERO_ALL=(--set record_each=full --set 'variants=["zero0","zero1","zero2","zero3","ddp","zero3+offload_all"]')
  ZERO_ONE=()
  MEM=(--set 'seq_lens=[1024]')
  FIT=(--set 'checkpointing=[false]')
else
  P=full
  ZERO_ALL=(--set record_each=full)
  ZERO_ONE=(--set n_ranks=1 --set record_each=full --set "variants=$STAGES")
  MEM=()
  FIT=()
fi

if [ "$PART" = zero ] || [ "$PART" = all ]; then
  run zero_stages $P "${ZERO_ALL[@]}"
fi
if [ "$PART" = zero1 ] || [ "$PART" = all ]; then
  if [ "$NGPU" -ne 1 ] && [ ${#ZERO_ONE[@]} -gt 0 ]; then
    run zero_stages $P "${ZERO_ONE[@]}"
  fi
fi
if [ "$PART" = memory ] || [ "$PART" = all ]; then
  run memory_breakdown $P "${MEM[@]}"
  [ "$NGPU" -gt 0 ] && run memory_fit $P "${FIT[@]}"
fi
echo "end=$(date -u +%T) total=${SECONDS}s" | tee -a "$LOG"
