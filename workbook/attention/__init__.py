"""FlashAttention: the same function computed with less HBM traffic, measured by the GPU.

Notebook 07. One idea per file:

* ``tiled.py`` - the algorithms in plain PyTorch: the definition, standard attention, and
  FlashAttention's tiled forward (online softmax) and backward (P recomputed); the one to read;
* ``flash_triton.py`` - the same algorithm as Triton kernels: the forward;
* ``flash_triton_hopper.py`` - the forward on Hopper: tiles fetched by TMA, FA3/FA4's options;
* ``flash_triton_backward.py`` - the backward kernels, and the autograd Function of the two;
* ``flash_gluon.py`` - FlashAttention-3's arrangement (producer warp, two consumer
  warpgroups) in Gluon, Hopper only; ``gluon_model.py`` a small model of one SM and
  ``gluon_cpu.py`` that kernel's own source run in it on the CPU;
* ``budget.py`` - the exponentials' budget: the ceilings FA3's argument puts on a forward;
* ``variants.py`` - :func:`attention`: one function, every implementation (:data:`VARIANTS`);
* ``io_model.py`` - the analytic model: FLOPs and the HBM bytes each algorithm must move;
* ``measure.py`` - time, extra peak memory, bytes saved for the backward, HBM bytes (ncu);
* ``experiments.py`` - configs, ``run_*`` and :data:`EXPERIMENTS`;
* ``views.py`` - what the notebook shows: tables, the explorer, the claims.

Shapes everywhere: (batch, n_heads, seq_len, head_dim).
"""

from workbook.attention.budget import MATMUL_PER_EXP, exp_budget, exp_budget_caption, exp_ceilings
from workbook.attention.experiments import (
    EXPERIMENTS,
    ExactnessConfig,
    Gpt2Config,
    RecomputeConfig,
    TimingConfig,
    TrafficConfig,
    check_sweep,
    exactness_cases,
    gpt2_cases,
    gpt2_flops_rows,
    recompute_cases,
    run_exactness,
    run_gpt2_medium,
    run_recompute,
    run_timing,
    run_traffic,
    timing_cases,
    traffic_cases,
)
from workbook.attention.gluon_cpu import (
    PROTOCOL_EDITS,
    gluon_on_cpu_table,
    gluon_protocol_table,
    gluon_trace_table,
    run_gluon_on_cpu,
)
from workbook.attention.io_model import (
    BACKWARD_FACTOR,
    BACKWARD_FACTOR_STORED,
    MODES,
    RECOMPUTES,
    flops,
    io_bytes,
    memory_hierarchy,
    s_matrix_vs_memory,
    vanilla_io_steps,
)
from workbook.attention.measure import (
    Case,
    hbm_rows,
    make_inputs,
    make_step,
    measure_cases,
    measure_hbm,
    predicted_hbm_rows,
    saved_bytes,
    time_and_memory,
    warm_triton,
)
from workbook.attention.tiled import (
    TiledAttentionFunction,
    overlapped_attention_forward,
    reference_attention,
    tiled_attention,
    tiled_attention_backward,
    tiled_attention_forward,
    vanilla_attention,
)
from workbook.attention.variants import (
    DTYPES,
    TOLERANCE,
    VARIANTS,
    attention,
    relative_error,
    unsupported,
)
from workbook.attention.views import (
    KERNELS,
    PAPER_FIG2,
    PAPER_FIG2_SHAPE,
    claims,
    exactness_caption,
    exactness_table,
    flops_note,
    gpt2_caption,
    gpt2_limits,
    gpt2_table,
    kernel_source,
    machines_caption,
    notebook_rows,
    recorded_device,
    size_explorer,
    speedup_caption,
    targets,
    timing_caption,
    traffic_caption,
)

__all__ = [
    # the algorithms
    "reference_attention", "vanilla_attention", "tiled_attention_forward",
    "overlapped_attention_forward", "tiled_attention_backward", "TiledAttentionFunction",
    "tiled_attention",
    "VARIANTS", "DTYPES", "TOLERANCE", "attention", "unsupported", "relative_error",
    # the analytic model
    "MODES", "BACKWARD_FACTOR", "BACKWARD_FACTOR_STORED", "RECOMPUTES", "flops",
    "vanilla_io_steps", "io_bytes", "memory_hierarchy", "s_matrix_vs_memory",
    # measurements
    "Case", "make_inputs", "make_step", "saved_bytes", "time_and_memory", "measure_cases",
    "measure_hbm", "hbm_rows", "predicted_hbm_rows", "warm_triton",
    # experiments
    "ExactnessConfig", "exactness_cases", "run_exactness", "check_sweep", "TrafficConfig",
    "traffic_cases", "run_traffic", "TimingConfig", "timing_cases", "run_timing", "Gpt2Config",
    "gpt2_cases", "run_gpt2_medium", "gpt2_flops_rows", "RecomputeConfig", "recompute_cases",
    "run_recompute", "EXPERIMENTS",
    # views
    "PAPER_FIG2", "notebook_rows", "KERNELS", "kernel_source", "exactness_caption",
    "recorded_device",
    "timing_caption",
    "traffic_caption", "speedup_caption", "gpt2_caption", "machines_caption", "flops_note",
    "PAPER_FIG2_SHAPE", "size_explorer", "exactness_table", "targets", "gpt2_table",
    "gpt2_limits", "claims",
    # the exponentials' budget (FlashAttention-3's starting point)
    "MATMUL_PER_EXP", "exp_ceilings", "exp_budget", "exp_budget_caption",
    # the Gluon kernel's source run on the CPU, in a model of one SM
    "run_gluon_on_cpu", "gluon_on_cpu_table", "PROTOCOL_EDITS", "gluon_protocol_table",
    "gluon_trace_table",
]
