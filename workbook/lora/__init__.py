"""LoRA (notebook 11): freeze W, learn a low-rank update B @ A beside it.

* :mod:`~workbook.lora.adapter` - the idea: :class:`LoRALinear` from scratch, PEFT's version,
  the trainable-parameter formula;
* :mod:`~workbook.lora.shapes` - published Llama shapes (1B-65B) as configs, for counting;
* :mod:`~workbook.lora.experiments` - the rank / target / learning-rate sweep and the merge
  timing (``EXPERIMENTS``);
* :mod:`~workbook.lora.views` - the demos' tables and the claims table;
* :mod:`~workbook.lora.tables` - the sweeps' tables and figures as a reader sees them (units,
  integers, "–" with a reason, this machine first, references by device and date).
"""

from workbook.lora.adapter import (
    ATTENTION,
    FFN,
    MODULE_NAMES,
    TARGET_GROUPS,
    LoRALinear,
    add_lora,
    add_peft_lora,
    check_rank,
    count_trainable,
    linear_shapes,
    lora_params,
    randomise_adapters,
    resolve_targets,
    with_lora,
)
from workbook.lora.experiments import (
    ADVICE_PRESETS,
    EXPERIMENTS,
    LORA_SWEEP_PRESETS,
    MERGE_PRESETS,
    AdviceConfig,
    LoraSweepConfig,
    MergeConfig,
    advice_plan,
    advice_rows,
    base_on_cpu,
    eval_loss,
    finetune,
    matched_ranks,
    panel_ranks,
    run_lora_advice,
    run_lora_sweep,
    run_merge,
    sweep_plan,
    task_ids,
)
from workbook.lora.shapes import SHAPES, LlamaShape, llama_config, n_params_of, shape
from workbook.lora.tables import (
    RANK_COLUMNS,
    advice_table,
    rank_figure,
    rank_table,
    readable_values,
    share_table,
    targets_figure,
    where_column,
    where_order,
)
from workbook.lora.views import (
    GRID_TOL,
    advice_caption,
    best_lr,
    claims,
    lr_figure,
    lr_optima,
    lr_ratio,
    merge_caption,
    multi_adapter_demo,
    paired_gap,
    power_of_ten,
    rank_cost_caption,
    scratch_vs_peft,
    seed_interval,
    seed_summary,
    summary_note,
    trainable_summary,
)

__all__ = [
    "ATTENTION", "FFN", "MODULE_NAMES", "TARGET_GROUPS", "LoRALinear", "add_lora",
    "add_peft_lora", "check_rank", "count_trainable", "linear_shapes", "lora_params",
    "randomise_adapters", "resolve_targets", "with_lora",
    "ADVICE_PRESETS", "EXPERIMENTS", "LORA_SWEEP_PRESETS", "MERGE_PRESETS", "AdviceConfig",
    "LoraSweepConfig", "MergeConfig", "advice_plan", "advice_rows", "base_on_cpu", "eval_loss",
    "finetune", "matched_ranks", "panel_ranks", "run_lora_advice", "run_lora_sweep", "run_merge",
    "sweep_plan", "task_ids",
    "SHAPES", "LlamaShape", "llama_config", "n_params_of", "shape",
    "GRID_TOL", "advice_caption", "best_lr", "claims", "lr_figure", "lr_optima", "lr_ratio",
    "merge_caption", "multi_adapter_demo", "paired_gap", "rank_cost_caption",
    "scratch_vs_peft", "seed_interval",
    "seed_summary", "summary_note", "trainable_summary",
    "RANK_COLUMNS", "advice_table", "power_of_ten", "rank_figure", "rank_table",
    "readable_values", "share_table", "targets_figure", "where_column", "where_order",
]
