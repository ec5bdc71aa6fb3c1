#!/usr/bin/env bash
# The Gluon forward (workbook/attention/flash_gluon.py) on a Hopper GPU, in one device call:
#
#   bash scripts/gpu_flash_gluon.sh          # correctness, then timings beside cuDNN (~5 min)
#
# 1. its GPU test: outputs and log-sum-exp against PyTorch for every tile option (the test runs
#    the kernel in a child process with a timeout, so a barrier waited on forever fails it);
# 2. only if that passed: scripts/gpu_flash_forward_tuning.py --gluon (TF/s per K/V tile and
#    ring depth, beside cuDNN, FA2 and the TMA kernel's launches, at N = 4k/8k/16k and causal
#    16k); 3. the compiled resources of each configuration with this Triton.
# Everything goes to $OUT/gluon_log.txt (commit it to data/results/logs/ with the hash).
set -u
OUT=${OUT:-/tmp/gluon_out}
mkdir -p "$OUT"
LOG="$OUT/gluon_log.txt"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "# scripts/gpu_flash_gluon.sh at ${WORKBOOK_COMMIT:-unknown commit}, $(date -u +%F)" | tee "$LOG"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee -a "$LOG"
# the CPU tests too (the sm_90 compile with this Triton; the kernel's source in the CPU model,
# the host function's descriptors with this Triton), then the GPU test alone: it must pass
timeout 180 python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_flash_gluon.py \
  tests/test_gluon_cpu.py -k "not on_hopper" 2>&1 | tail -15 | tee -a "$LOG"
timeout 300 python3 -m pytest -q -p no:cacheprovider -o addopts="" -s \
  "tests/test_flash_gluon.py::test_gluon_forward_equals_pytorch_on_hopper" 2>&1 \
  | tail -60 | tee "$OUT/gpu_test.txt" | tee -a "$LOG"
if ! grep -q "1 passed" "$OUT/gpu_test.txt"; then
  echo "the Gluon forward did not pass its GPU test: no timings" | tee -a "$LOG"
  exit 1
fi
timeout 420 python3 scripts/gpu_flash_forward_tuning.py --gluon 2>&1 | tee -a "$LOG"
python3 scripts/sm90_resources.py 2>&1 | grep -E "^(sm_90|gluon)" | tee -a "$LOG"
