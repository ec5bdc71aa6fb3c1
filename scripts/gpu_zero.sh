#!/usr/bin/env bash
# Record notebooks 04 (memory) and 05 (data parallel / ZeRO) on every GPU present.
#
#   bash scripts/gpu_zero.sh              # on a GPU box, from the repository root
#   QUICK=1 bash scripts/gpu_zero.sh      # fewer configurations (the 1-GPU budget run)
#
# What it runs (each recorded with provenance into data/results/<experiment>.csv and copied,
# with a log, into $OUT):
#   zero_stages       DDP + DeepSpeed ZeRO 0-3 (+ offload) with N = all GPUs, one fresh
#                     torchrun launch per variant; then again with N = 1 on the same device
#                     (one launch for all variants), so per-rank memory vs 1/N_d is visible
#   memory_breakdown  params / grads / Adam / activations of a GPT-2, ckpt off and on
#   memory_fit        largest n_layer (d_model 4096) whose training step fits one GPU
# Without a GPU it runs the small presets with 1 and 2 gloo ranks (tests the script on a CPU).
# Needs deepspeed: on the device machine pass carry=[".whl"]; this script installs the wheels.
set -u
cd "$(dirname "$0")/.."
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
echo "gpus=$NGPU quick=${QUICK:-0} commit=${WORKBOOK_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null)} start=$(date -u +%T)" | tee -a "$LOG"

run() {  # run EXPERIMENT PRESET [--set KEY=VALUE ...]; each bounded, each recorded on its own
  local name=$1 preset=$2; shift 2
  local t0=$SECONDS
  echo "== $name --preset $preset $*" | tee -a "$LOG"
  timeout "${STEP_TIMEOUT:-580}" $PY -m workbook run "$name" --preset "$preset" --record "$@" >>"$LOG" 2>&1
  echo "   rc=$? after $((SECONDS - t0)) s" | tee -a "$LOG"
  cp "${WORKBOOK_RESULTS:-data/results}/$name.csv" "$OUT/" 2>/dev/null || true
}

if [ "$NGPU" -eq 0 ]; then
  run zero_stages small --set n_ranks=2
  run zero_stages small --set n_ranks=1 --set 'variants=["ddp","zero2","zero3"]'
  run memory_breakdown small
elif [ "${QUICK:-0}" = 1 ]; then
  run zero_stages full --set isolate=false --set \
      'variants=["ddp","zero0","zero1","zero2","zero3","zero2+offload_opt","zero3+offload_all"]'
  run memory_breakdown full --set 'seq_lens=[1024]'
  run memory_fit full --set 'checkpointing=[false]'
else
  run zero_stages full                              # N = every GPU, fresh launch per variant
  if [ "$NGPU" -gt 1 ]; then                        # N = 1 on the same device: the 1/N_d axis
    run zero_stages full --set n_ranks=1 --set 'variants=["zero0","zero1","zero2","zero3","ddp"]'
  fi
  run memory_breakdown full
  run memory_fit full
fi
echo "end=$(date -u +%T) total=${SECONDS}s" | tee -a "$LOG"
