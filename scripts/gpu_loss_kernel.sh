#!/usr/bin/env bash
# The loss kernel on one GPU: the launch sweep (recorded into data/results/loss_kernel.csv) and
# Nsight Compute's count of the DRAM bytes one launch moves (does pass 2 hit L2?), into $OUT:
#   export WORKBOOK_COMMIT=<short sha>; bash scripts/gpu_loss_kernel.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu_loss_kernel_out}
mkdir -p "$OUT"
timeout 200 $PY -m workbook run loss_kernel --preset full --record > "$OUT/loss_kernel.txt" 2>&1
cp data/results/loss_kernel.csv "$OUT/"
cat > /tmp/one_launch.py <<'PYEOF'
import sys, torch
from workbook.flops import fused_ce
per_sm, evict = int(sys.argv[1]), sys.argv[2] == "1"
rows, vocab = 12 * 1024, 50304
logits = (2 * torch.randn(rows, vocab, device="cuda")).bfloat16()
targets = torch.randint(0, vocab, (rows,), device="cuda")
fused_ce.softmax_grad_(logits, targets, torch.tensor(rows, device="cuda"), per_sm=per_sm,
                       evict=evict)
torch.cuda.synchronize()
PYEOF
for cfg in "0 0" "0 1"; do
  echo "== per_sm, evict = $cfg (logits: $((12 * 1024 * 50304 * 2)) bytes)" | tee -a "$OUT/ncu.txt"
  timeout 120 ncu -k regex:_softmax_grad --metrics \
      dram__bytes_read.sum,dram__bytes_write.sum,lts__t_sector_hit_rate.pct,gpu__time_duration.sum \
      $PY /tmp/one_launch.py $cfg 2>&1 | grep -E "dram__|lts__|gpu__time|ERR" | tee -a "$OUT/ncu.txt"
done
