"""Scaling laws (notebook 03): how loss depends on parameters N, tokens D and compute C ≈ 6·N·D.

Three layers, kept apart:

* :mod:`~workbook.scaling_laws.laws` - **published laws** (pure formulas, what the sliders
  drive): Chinchilla, its replication, Kaplan, 20 tokens per parameter, notable models;
* :mod:`~workbook.scaling_laws.fits` - **fits** of our own runs: IsoFLOP parabolas, the
  exponents a and b and the tokens per parameter with a bootstrap interval, the parametric
  fit, and a step-time model that predicts a sweep's duration from recorded timings;
* :mod:`~workbook.scaling_laws.experiments` - **the IsoFLOP sweep** (measurement,
  ``EXPERIMENTS``), each point trained with :func:`workbook.training.train` with Porian et
  al.'s per-size recipe, FLOPs counted by :func:`workbook.flops.flops_per_token`;
* :mod:`~workbook.scaling_laws.views` - figures, explorers, the fit summary and claims;
* :mod:`~workbook.scaling_laws.batch_tokens` - **more data or a larger batch?** one size at two
  batches × two token counts, and the largest budget's sizes at one batch;
  :mod:`~workbook.scaling_laws.batch_views` - their tables, claims and captions;
* :mod:`~workbook.scaling_laws.timing` - the sweep's time: the step-time model per device
  (its latest sweep), the predicted and recorded times; :mod:`~workbook.scaling_laws.captions`
  - the verdicts against the issue's targets and the tokens per parameter, in words.
"""

from workbook.scaling_laws.batch_tokens import (
    BATCH_TOKENS_PRESETS,
    ONE_BATCH_PRESETS,
    BatchTokensConfig,
    OneBatchConfig,
    batch_token_effects,
    one_batch_sweep,
    plan_runs,
    run_batch_tokens,
    run_one_batch,
    runs_by_seed,
)
from workbook.scaling_laws.batch_tokens import EXPERIMENTS as _BATCH_TOKENS
from workbook.scaling_laws.batch_views import (
    effects_caption,
    effects_table,
    one_batch_caption,
    one_batch_claims,
    one_batch_table,
)
from workbook.scaling_laws.by_tokens import token_slopes, tokens_caption, tokens_figure
from workbook.scaling_laws.captions import (
    lecture_chinchilla_caption,
    ratio_caption,
    verdict_caption,
)
from workbook.scaling_laws.experiments import EXPERIMENTS as _ISOFLOP
from workbook.scaling_laws.experiments import (
    ISOFLOP_PRESETS,
    LADDER,
    IsoFlopConfig,
    eval_windows,
    evaluate_windows,
    model_config,
    plan_sweep,
    point_flops_per_token,
    point_settings,
    predicted_seconds,
    record_checkpoint,
    run_isoflop,
    train_point,
)
from workbook.scaling_laws.explorers import allocation_explorer, overtraining_explorer
from workbook.scaling_laws.fits import (
    ExponentFit,
    StepTime,
    at_bounds,
    budget_ratio,
    fit_exponents,
    fit_parametric,
    fit_power_law,
    fit_step_time,
    isoflop_minima,
    ok_points,
    one_batch_per_budget,
    parabola_minimum,
    pool_of,
    resumed_note,
    seed_pools,
    seed_spread,
    text_note,
    text_tokens,
    wall_seconds,
    wiggle,
)
from workbook.scaling_laws.laws import (
    CHINCHILLA,
    CHINCHILLA_EXPONENTS,
    CHINCHILLA_REPLICATION,
    KAPLAN,
    LAWS,
    LECTURE_CHINCHILLA,
    LOSS_BY,
    NOTABLE_MODELS,
    STUDIED_SIZES,
    TOKENS_PER_PARAM,
    ParametricLaw,
    allocation,
    kaplan_loss,
    kaplan_optimal,
    law_optimal,
    lecture_chinchilla_table,
    overtraining_costs,
    placement,
    published_laws,
    rule_of_thumb_optimal,
)
from workbook.scaling_laws.timing import (
    TIME_GAPS,
    latest_sweeps,
    plan_judged,
    ran_todays_plan,
    time_caption,
    time_table,
)
from workbook.scaling_laws.views import (
    HEADERS,
    MAX_DRAWN_SWEEPS,
    budget_color,
    caption,
    claims,
    fit_summary,
    frontier_figure,
    interval_text,
    isoflop_figure,
    minima_table,
    parametric_caption,
    parametric_table,
    shown_table,
    summary_table,
    sweep_claims,
    sweeps,
)

# the registry's order is the CLI's (workbook.__main__.experiment_names reads the modules'
# source in file order: batch_tokens.py before experiments.py)
EXPERIMENTS = [*_BATCH_TOKENS, *_ISOFLOP]

__all__ = [
    "BATCH_TOKENS_PRESETS", "BatchTokensConfig", "batch_token_effects", "plan_runs",
    "run_batch_tokens", "ONE_BATCH_PRESETS", "OneBatchConfig", "one_batch_sweep",
    "run_one_batch", "runs_by_seed", "effects_caption", "effects_table", "one_batch_caption",
    "one_batch_claims",
    "one_batch_table", "budget_ratio",
    "EXPERIMENTS", "ISOFLOP_PRESETS", "LADDER", "IsoFlopConfig", "eval_windows",
    "evaluate_windows", "model_config", "plan_sweep", "point_flops_per_token",
    "point_settings", "predicted_seconds", "record_checkpoint", "run_isoflop", "train_point",
    "ExponentFit", "StepTime", "at_bounds", "fit_exponents", "fit_parametric", "fit_power_law",
    "fit_step_time", "isoflop_minima", "ok_points", "one_batch_per_budget", "parabola_minimum",
    "text_note",
    "pool_of", "resumed_note", "seed_pools", "seed_spread", "text_tokens", "wall_seconds", "wiggle",
    "CHINCHILLA", "CHINCHILLA_EXPONENTS", "CHINCHILLA_REPLICATION", "KAPLAN", "LAWS",
    "LOSS_BY", "NOTABLE_MODELS", "TOKENS_PER_PARAM", "ParametricLaw", "allocation", "kaplan_loss",
    "kaplan_optimal", "law_optimal", "overtraining_costs", "placement",
    "rule_of_thumb_optimal",
    "HEADERS", "allocation_explorer", "budget_color", "caption", "claims", "fit_summary",
    "frontier_figure", "interval_text", "isoflop_figure", "minima_table", "overtraining_explorer",
    "parametric_caption", "parametric_table", "plan_judged", "published_laws", "shown_table",
    "summary_table", "sweep_claims", "sweeps", "wall_seconds", "MAX_DRAWN_SWEEPS",
    "TIME_GAPS", "latest_sweeps", "ran_todays_plan", "time_caption", "time_table",
    "ratio_caption", "verdict_caption", "STUDIED_SIZES",
    "token_slopes", "tokens_caption", "tokens_figure",
    "LECTURE_CHINCHILLA", "lecture_chinchilla_table", "lecture_chinchilla_caption",
]
