"""FLOPs (work) versus FLOP/s (speed): 6·N·D, the attention term, counted FLOPs, and MFU.

Notebook 02. Three ways to know how much arithmetic one training step is: **predicted** (the
formula, ``formulas.py``), **counted** (``FlopCounterMode``) and **measured** (the step's wall
time; achieved / peak FLOP/s is the MFU), the last two in ``step.py``. One idea per file:

* ``formulas.py`` - 6·N per token, the attention term, training time on N GPUs (pure math);
* ``runs.py`` - :class:`RunSpec`: how a timed step runs (mode, attention, option axes);
* ``step.py`` - one training step built, counted, timed and turned into MFU rows;
* ``energy.py`` - joules per token from NVML, and a whole run's GPU-hours, MWh, CO₂ and $;
* ``fused_ce.py`` - the output layer + loss whose Triton kernel writes the gradient in the
  forward (with its PyTorch twin);
* ``experiments.py`` - configs, ``run_*`` and :data:`EXPERIMENTS`;
* ``views.py`` - what the notebook shows: tables, figures, the calculator, the claims.
"""

from workbook.flops.captions import (
    claims_caption,
    counted_caption,
    energy_caption,
    kernel_caption,
    loss_kernel_caption,
    mfu_caption,
    ncu_caption,
    ncu_loss_bytes,
)
from workbook.flops.energy import GPT3, V100, EnergyMeter, load_nvml, predict_run_cost
from workbook.flops.experiments import (
    BEST_OPTIONS,
    ENERGY_PRESETS,
    EXPERIMENTS,
    FLOPS_PRESETS,
    LOSS_KERNEL_PRESETS,
    MFU_PRESETS,
    QUICK_RUNS,
    EnergyConfig,
    FlopsSweepConfig,
    LossKernelConfig,
    MfuConfig,
    quick_config,
    run_energy_per_token,
    run_flops_sweep,
    run_loss_kernel,
    run_mfu_benchmark,
)
from workbook.flops.formulas import (
    LECTURE_EXAMPLES,
    ReadableTable,
    RunExample,
    attention_flops_per_token,
    flops_per_token,
    gpu_peak_tflops,
    lecture_examples,
    matmul_params,
    step_flops,
    training_dtype,
    training_flops,
    training_time,
)
from workbook.flops.runs import (
    ATTENTIONS,
    COMPILE_OPTIONS,
    FUSIONS,
    LOSSES,
    MODES,
    OPTIMIZERS,
    OPTION_AXES,
    PROJECTIONS,
    ROPES,
    RUN_ORDER,
    WEIGHTS,
    RunSpec,
    parse_run,
    run_labels,
    step_ratio,
)
from workbook.flops.step import (
    apply_liger,
    count_flops,
    count_step_flops,
    kernel_breakdown,
    kernel_family,
    kernel_times,
    make_loss_fn,
    make_train_step,
    setup_step,
    step_rows,
    time_train_step,
)
from workbook.flops.views import (
    bf16_rooflines,
    calculator,
    claims,
    energy_claims,
    energy_table,
    formula_vs_counted,
    gpt3_assumptions,
    gpt3_prediction,
    kernel_table,
    kernel_values,
    loss_kernel_table,
    mfu_table,
    mfu_values,
    recorded_or_note,
    sweep_figure,
    top_kernels,
    where_of,
)

__all__ = [
    # formulas
    "matmul_params", "attention_flops_per_token", "flops_per_token", "step_flops",
    "training_flops", "gpu_peak_tflops", "training_dtype", "training_time", "RunExample",
    "LECTURE_EXAMPLES", "lecture_examples",
    # runs
    "COMPILE_OPTIONS", "MODES", "ATTENTIONS", "FUSIONS", "WEIGHTS", "OPTIMIZERS", "ROPES",
    "PROJECTIONS", "LOSSES", "OPTION_AXES", "RunSpec", "parse_run", "RUN_ORDER", "run_labels",
    "step_ratio",
    # one training step
    "make_loss_fn", "setup_step", "count_step_flops", "count_flops", "apply_liger",
    "kernel_family", "kernel_times", "kernel_breakdown", "make_train_step", "time_train_step",
    "step_rows",
    # experiments
    "MfuConfig", "BEST_OPTIONS", "MFU_PRESETS", "QUICK_RUNS", "quick_config",
    "run_mfu_benchmark", "FlopsSweepConfig", "FLOPS_PRESETS", "run_flops_sweep",
    "LossKernelConfig", "LOSS_KERNEL_PRESETS", "run_loss_kernel", "EnergyConfig",
    "ENERGY_PRESETS", "run_energy_per_token", "EXPERIMENTS",
    # energy
    "load_nvml", "EnergyMeter", "predict_run_cost", "GPT3", "V100",
    # views
    "formula_vs_counted", "recorded_or_note", "mfu_table", "kernel_table", "sweep_figure",
    "calculator", "claims", "loss_kernel_table", "top_kernels", "where_of", "energy_table",
    "gpt3_assumptions", "gpt3_prediction", "energy_claims", "mfu_caption", "kernel_caption",
    "loss_kernel_caption", "energy_caption", "ncu_loss_bytes", "ncu_caption",
    "ReadableTable", "bf16_rooflines", "mfu_values", "kernel_values", "counted_caption",
    "claims_caption",
]
