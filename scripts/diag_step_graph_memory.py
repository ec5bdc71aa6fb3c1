"""Print a training step's peak memory, and for step_graph its warm-up peak, recording peak and
what it holds, for a few runs in one process (GPU; a diagnostic, nothing is recorded):
    PYTHONPATH=$PWD python3 scripts/diag_step_graph_memory.py
"""
import torch

from workbook import flops

cfg = flops.MFU_PRESETS["full"]
B = flops.BEST_OPTIONS
for run in ("step_graph:causal:" + B + "+fused_mlp+triton_ce", "step_graph:causal:" + B,
            "graphs:causal:" + B + "+triton_ce", "compiled:causal:" + B + "+triton_ce"):
    out = flops.time_train_step(cfg.model(), cfg.batch_size, run, repeats=5)
    print(run, f"step {out['step_ms']:.2f} ms peak {out['peak_gb']:.2f} GB", out["graph_memory"],
          f"allocated now {torch.cuda.memory_allocated() / 1e9:.2f} GB", flush=True)
    torch.cuda.empty_cache()
