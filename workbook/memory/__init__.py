"""Where training memory goes: parameters, gradients, optimizer states, activations (04).

* :mod:`.formulas`: bytes per parameter of each model state, Korthikanti et al.'s activation
  formula, the lecture's 175B example (pure; what the explorer drives);
* :mod:`.measure`: a transformers GPT-2 trained for two steps, each component measured on its
  own (allocator, tensor sizes, saved-for-backward hooks), activations across seq_len (eager vs
  SDPA), checkpointing's recompute time, and the largest model that fits;
* :mod:`.experiments`: configs, ``run_*`` and ``EXPERIMENTS``;
* :mod:`.views`: the explorer, tables, figures and ``claims``;
* :mod:`.captions`: those tables in words, every number read from the rows.
"""

from workbook.memory.captions import (
    fit_caption,
    fit_gap,
    gap_caption,
    recompute_caption,
    sweep_caption,
)
from workbook.memory.experiments import (
    BREAKDOWN_PRESETS,
    EXPERIMENTS,
    FIT_PRESETS,
    RECOMPUTE_PRESETS,
    SWEEP_PRESETS,
    BreakdownConfig,
    FitConfig,
    RecomputeConfig,
    SweepConfig,
    batch_for_gpu,
    check_gpt_shape,
    fill_params,
    run_activation_sweep,
    run_breakdown,
    run_fit,
    run_recompute,
    sweep_predictions,
)
from workbook.memory.formulas import (
    ATTENTIONS,
    GB,
    MODEL_SHAPES,
    OPTIMIZERS,
    PRECISIONS,
    activation_bytes,
    bytes_per_param,
    fit_exponent,
    formula_fit,
    gpt_params,
    lecture_175b,
    matmul_weights,
    predicted_breakdown,
    recompute_overhead,
    scenario,
    training_memory,
)
from workbook.memory.measure import (
    FIT_PROBE_SINCE,
    SavedTensors,
    activation_sweep,
    allocated_bytes,
    build_model,
    fit_probe,
    forward_activations,
    largest_fit,
    measure_breakdown,
    random_batches,
    time_recompute,
    train_steps,
)
from workbook.memory.views import (
    EXPONENT_TOL,
    breakdown_table,
    by_device,
    claims,
    fit_formula_gb,
    fit_summary,
    gap_items,
    gap_table,
    gpu_gb_default,
    memory_explorer,
    plot_breakdown,
    plot_fit,
    plot_seq_sweep,
    recompute_claims,
    recompute_table,
    score_bytes_per_element,
    sweep_claims,
    sweep_exponents,
    sweep_method,
    sweep_table,
)
from workbook.stats import median_interval

__all__ = [
    "ATTENTIONS", "BREAKDOWN_PRESETS", "EXPERIMENTS", "EXPONENT_TOL", "FIT_PRESETS",
    "FIT_PROBE_SINCE", "GB", "fit_probe",
    "MODEL_SHAPES", "OPTIMIZERS", "PRECISIONS", "RECOMPUTE_PRESETS", "SWEEP_PRESETS",
    "BreakdownConfig", "FitConfig", "RecomputeConfig", "SavedTensors", "SweepConfig",
    "activation_bytes", "activation_sweep", "allocated_bytes", "batch_for_gpu",
    "breakdown_table", "build_model", "by_device", "bytes_per_param", "check_gpt_shape",
    "claims", "fill_params", "fit_caption", "fit_exponent", "fit_formula_gb", "fit_gap",
    "fit_summary", "formula_fit",
    "forward_activations", "gap_caption", "gap_items", "gap_table", "gpt_params",
    "gpu_gb_default", "largest_fit",
    "lecture_175b", "matmul_weights", "measure_breakdown", "median_interval",
    "memory_explorer", "plot_breakdown", "plot_fit",
    "plot_seq_sweep", "predicted_breakdown", "random_batches", "recompute_caption",
    "recompute_claims",
    "recompute_overhead", "recompute_table", "run_activation_sweep", "run_breakdown",
    "run_fit", "run_recompute", "scenario", "score_bytes_per_element", "sweep_caption",
    "sweep_claims",
    "sweep_exponents", "sweep_method", "sweep_predictions", "sweep_table", "time_recompute",
    "train_steps", "training_memory",
]
