"""Number formats and mixed-precision training: what each format can hold, what gets lost.

Notebook 08. Four ideas, each computed here rather than typed in, one file each:

* ``formats.py`` - range, smallest normal and subnormal, epsilon of FP32, TF32, FP16, BF16,
  FP8 (e4m3, e5m2) and INT8, from ``torch.finfo``/``iinfo`` and bit patterns; any value's bits
  and its nearest representable value in each format (:func:`explore`);
* ``mixed_step.py`` - one mixed-precision training step (autocast, ``torch.amp.GradScaler``):
  every training loop of the notebook (:func:`scaled_step`);
* ``underflow.py`` - the base model's real gradients cast to FP16/BF16/FP8, with and without a
  loss scale, and GradScaler's dynamic scale over steps (:func:`gradscaler_trace`);
* ``stagnation.py`` - a small update added to a low-precision weight rounds back to the same
  weight; FP32 master weights keep it (:class:`MasterWeightAdamW`, from ``workbook.training``);
* ``experiments.py`` - the four-way training (FP32, TF32, FP16 + GradScaler, BF16 autocast,
  each in a fresh process), the configs and :data:`EXPERIMENTS`;
* ``views.py`` - explorers, figures, tables and the lecture's claims.
"""

from workbook.precision.experiments import (
    EXPERIMENTS,
    MODE_DTYPE,
    STAGNATION_PRESETS,
    TRAIN_MODES,
    TRAINING_PRESETS,
    UNDERFLOW_PRESETS,
    StagnationConfig,
    TrainingConfig,
    UnderflowConfig,
    run_stagnation,
    run_training,
    run_underflow,
    train_one,
)
from workbook.precision.formats import (
    FORMAT_DTYPES,
    FORMATS,
    cast,
    explore,
    format_table,
    fp8_support,
    parse_value,
    round_trip,
)
from workbook.precision.mixed_step import scaled_step
from workbook.precision.stagnation import (
    MASTER_MODES,
    master_weight_training,
    stagnation_sweep,
    update_lost_share,
)
from workbook.precision.underflow import (
    GRAD_KINDS,
    UNDERFLOW_FORMATS,
    capture_gradients,
    format_lines,
    gradscaler_trace,
    log2_histogram,
    share_rows,
    underflow_shares,
)
from workbook.precision.views import (
    claims,
    format_explorer,
    histogram_figure,
    loss_scale_explorer,
    matmul_figure,
    predicted_step_times,
    scaler_figure,
    settled_caption,
    speedup_caption,
    stagnation_summary,
    training_summary,
)
from workbook.training import MasterWeightAdamW

__all__ = [
    # formats
    "FORMATS", "FORMAT_DTYPES", "format_table", "cast", "round_trip", "explore", "parse_value",
    "fp8_support",
    # underflow and loss scaling
    "GRAD_KINDS", "UNDERFLOW_FORMATS", "capture_gradients", "underflow_shares",
    "log2_histogram", "format_lines", "share_rows", "scaled_step", "gradscaler_trace",
    # stagnation and master weights
    "update_lost_share", "stagnation_sweep", "MASTER_MODES", "master_weight_training",
    "MasterWeightAdamW",
    # experiments
    "UnderflowConfig", "UNDERFLOW_PRESETS", "run_underflow", "StagnationConfig",
    "STAGNATION_PRESETS", "run_stagnation", "TRAIN_MODES", "MODE_DTYPE", "TrainingConfig",
    "TRAINING_PRESETS", "train_one", "run_training", "EXPERIMENTS",
    # views
    "format_explorer", "histogram_figure", "loss_scale_explorer", "scaler_figure",
    "training_summary", "stagnation_summary", "matmul_figure", "settled_caption",
    "predicted_step_times",
    "claims", "speedup_caption",
]
