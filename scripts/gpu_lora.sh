#!/usr/bin/env bash
# One device run for notebooks 11 and 12: record every LoRA/QLoRA experiment's full preset.
# Usage on the GPU box (repo root): bash scripts/gpu_lora.sh  (needs .whl/ with bitsandbytes;
# data/cache/ with the small base model, so the LoRA sweeps need no pretraining here).
set -u
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if ! python3 -c "import bitsandbytes" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/bitsandbytes-*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv | tee "$OUT/gpu_lora.log"
for exp in ${EXPERIMENTS:-qlora_vram qlora_quality lora_merge lora_sweep lora_advice}; do
  echo "=== $exp $(date -u +%T)" | tee -a "$OUT/gpu_lora.log"
  timeout 400 python3 -m workbook run "$exp" --preset full --record >>"$OUT/gpu_lora.log" 2>&1
  echo "=== $exp exit $? $(date -u +%T)" | tee -a "$OUT/gpu_lora.log"
  cp -f "data/results/$exp.csv" "$OUT/" 2>/dev/null
done
grep -E "^qlora_vram|===|Error|error" "$OUT/gpu_lora.log" | tail -40
