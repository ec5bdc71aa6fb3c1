"""Evaluation and alignment (notebook 10): exact-match benchmarks, training on the test task,
mid-training, and pairwise preferences turned into a leaderboard.

* :mod:`~workbook.evaluation.arena` - the idea: simulated votes, Bradley-Terry and Elo;
* :mod:`~workbook.evaluation.experiments` - ``test_task_training`` and ``mid_training``
  (``EXPERIMENTS``), with the exact-match and corpus-loss scoring they use;
* :mod:`~workbook.evaluation.views` - the arena explorer, summaries, pipeline, claims.
"""

from workbook.evaluation.arena import (
    ELO_BASE,
    ELO_SCALE,
    ArenaConfig,
    arena_models,
    check_battles,
    fit_bradley_terry,
    fit_bradley_terry_logistic,
    knob_sweep,
    leaderboard,
    online_elo,
    rank_agreement,
    simulate_arena,
)
from workbook.evaluation.experiments import (
    EXPERIMENTS,
    MID_PRESETS,
    TEST_TASK_PRESETS,
    MidTrainingConfig,
    TestTaskConfig,
    continue_pretraining,
    corpus_loss,
    domain_split,
    exact_match_eval,
    heldout,
    per_task_exact_match,
    run_mid_training,
    run_test_task,
    stable_hash,
    training_mix,
)
from workbook.evaluation.views import (
    claims,
    leaderboard_explorer,
    mid_training_summary,
    pipeline_table,
    results_label,
    test_task_caption,
    test_task_summary,
)

__all__ = [
    "ELO_BASE", "ELO_SCALE", "ArenaConfig", "arena_models", "check_battles",
    "fit_bradley_terry", "fit_bradley_terry_logistic", "knob_sweep", "leaderboard",
    "online_elo", "rank_agreement", "simulate_arena",
    "EXPERIMENTS", "MID_PRESETS", "TEST_TASK_PRESETS", "MidTrainingConfig", "TestTaskConfig",
    "continue_pretraining", "corpus_loss", "domain_split", "exact_match_eval", "heldout",
    "per_task_exact_match", "run_mid_training", "run_test_task", "stable_hash", "training_mix",
    "claims", "leaderboard_explorer", "mid_training_summary", "pipeline_table",
    "results_label", "test_task_caption", "test_task_summary",
]
