"""Evaluation and alignment (notebook 10): exact-match benchmarks, training on the test task,
mid-training, and pairwise preferences turned into a leaderboard.

* :mod:`~workbook.evaluation.arena` - the idea: simulated votes, Bradley-Terry and Elo;
* :mod:`~workbook.evaluation.dpo` - the idea: the DPO loss against a frozen reference;
* :mod:`~workbook.evaluation.preferences` - preference pairs from the SFT model's own wrong
  answers, and safety (refusal) pairs built offline;
* :mod:`~workbook.evaluation.experiments` - ``test_task_training``, ``mid_training`` and
  ``dpo_alignment`` (``EXPERIMENTS``), with the exact-match and corpus-loss scoring they use;
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
from workbook.evaluation.dpo import (
    dpo_loss,
    dpo_step,
    frozen_reference,
    pair_logps,
    pair_record,
    pairs_loss,
    reward_stats,
    sequence_logps,
)
from workbook.evaluation.experiments import (
    DPO_PRESETS,
    EXPERIMENTS,
    MID_PRESETS,
    TEST_TASK_PRESETS,
    DPOConfig,
    MidTrainingConfig,
    TestTaskConfig,
    alignment_scores,
    continue_pretraining,
    corpus_loss,
    domain_split,
    exact_match_eval,
    heldout,
    mid_training_steps,
    per_task_exact_match,
    run_dpo,
    run_mid_training,
    run_test_task,
    stable_hash,
    train_dpo,
    training_mix,
)
from workbook.evaluation.preferences import (
    COMPLIANCE,
    REFUSAL,
    is_refusal,
    refusal_rate,
    safety_chats,
    safety_pairs,
    safety_prompts,
    task_pairs,
    win_rate,
)
from workbook.evaluation.views import (
    GENERAL_GAIN_TOLERANCE,
    OVER_REFUSAL_TOLERANCE,
    claims,
    dpo_caption,
    dpo_claims,
    dpo_curves,
    dpo_figure,
    dpo_summary,
    heldout_requests,
    leaderboard_explorer,
    mean_interval,
    mid_training_caption,
    mid_training_effects,
    mid_training_summary,
    pipeline_table,
    requests_to_resolve,
    results_label,
    share_gap_interval,
    shown_numbers,
    smallest_bound,
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
    "dpo_loss", "dpo_step", "frozen_reference", "pair_logps", "pair_record", "pairs_loss",
    "reward_stats",
    "sequence_logps", "DPO_PRESETS", "DPOConfig", "alignment_scores", "mid_training_steps",
    "run_dpo", "train_dpo", "COMPLIANCE", "REFUSAL", "is_refusal", "refusal_rate", "safety_chats",
    "safety_pairs", "safety_prompts", "task_pairs", "win_rate", "OVER_REFUSAL_TOLERANCE",
    "dpo_caption", "dpo_claims", "dpo_curves", "dpo_figure", "dpo_summary", "mean_interval",
    "mid_training_caption", "mid_training_effects", "shown_numbers", "GENERAL_GAIN_TOLERANCE",
    "share_gap_interval", "smallest_bound", "requests_to_resolve", "heldout_requests",
]
