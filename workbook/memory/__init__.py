"""Where training memory goes: parameters, gradients, optimizer states, activations (04).

* :mod:`.formulas`: bytes per parameter of each model state, Korthikanti et al.'s activation
  formula, the lecture's 175B example (pure; what the explorer drives);
* :mod:`.measure`: a transformers GPT-2 trained for two steps, each component measured on its
  own (allocator, tensor sizes, saved-for-backward hooks), and the largest model that fits;
* :mod:`.experiments`: configs, ``run_*`` and ``EXPERIMENTS``;
* :mod:`.views`: the explorer, tables, figures and ``claims``.
"""

from workbook.memory.experiments import (
    BREAKDOWN_PRESETS,
    EXPERIMENTS,
    FIT_PRESETS,
    BreakdownConfig,
    FitConfig,
    check_gpt_shape,
    fill_params,
    run_breakdown,
    run_fit,
)
from workbook.memory.formulas import (
    GB,
    MODEL_SHAPES,
    OPTIMIZERS,
    PRECISIONS,
    activation_bytes,
    bytes_per_param,
    formula_fit,
    gpt_params,
    lecture_175b,
    predicted_breakdown,
    scenario,
    training_memory,
)
from workbook.memory.measure import (
    SavedTensors,
    allocated_bytes,
    build_model,
    largest_fit,
    measure_breakdown,
)
from workbook.memory.views import (
    breakdown_table,
    claims,
    fit_summary,
    memory_explorer,
    plot_breakdown,
    plot_fit,
)

__all__ = [
    "BREAKDOWN_PRESETS", "EXPERIMENTS", "FIT_PRESETS", "GB", "MODEL_SHAPES", "OPTIMIZERS",
    "PRECISIONS", "BreakdownConfig", "FitConfig", "SavedTensors", "activation_bytes",
    "allocated_bytes", "breakdown_table", "build_model", "bytes_per_param", "check_gpt_shape",
    "claims", "fill_params", "fit_summary", "formula_fit", "gpt_params", "largest_fit",
    "lecture_175b", "measure_breakdown", "memory_explorer", "plot_breakdown", "plot_fit",
    "predicted_breakdown", "run_breakdown", "run_fit", "scenario", "training_memory",
]
