"""Supervised fine-tuning (notebook 09): instruction data, a chat template, and the loss mask.

* :mod:`~workbook.sft.records` - instruction records (checked) and exactly checkable tasks;
* :mod:`~workbook.sft.masking` - the idea: the chat template, :func:`encode_chat` (which
  tokens carry loss under each policy), :func:`masked_lm_loss`;
* :mod:`~workbook.sft.replies` - scoring: greedy replies, exact match, echo, role losses;
* :mod:`~workbook.sft.experiments` - ``sft_masking`` (``EXPERIMENTS``), trained with
  :func:`workbook.training.train`;
* :mod:`~workbook.sft.views` - token views, the masking explorer, curves (mean over seeds),
  the per-seed summary and the paired difference with its 95 % interval, claims tables.
"""

from workbook.sft.experiments import (
    EXPERIMENTS,
    MASKING_PRESETS,
    UNITS,
    MaskingConfig,
    base_model,
    run_masking,
    train_sft,
)
from workbook.sft.masking import (
    ASSISTANT,
    CHAT_TEMPLATE,
    END,
    IGNORE_INDEX,
    POLICIES,
    USER,
    Encoded,
    chat_tokenizer,
    collate,
    encode_chat,
    library_assistant_mask,
    masked_lm_loss,
    next_token_targets,
    objective_table,
    prepare_model,
    render,
    token_losses,
)
from workbook.sft.records import (
    CATEGORIES,
    INSTRUCTIONS_DIR,
    LETTERS,
    ROLES,
    TASKS,
    WORDS,
    category_counts,
    instructgpt_sizes,
    load_instructions,
    split_tasks,
    task_items,
    task_records,
    validate_record,
)
from workbook.sft.replies import (
    answer_loss,
    generate_replies,
    greedy,
    make_evaluator,
    role_losses,
    score_replies,
)
from workbook.sft.views import (
    POLICY_PAIR,
    MaskingRows,
    agresti_caffo,
    curves_figure,
    final_scores,
    final_value,
    loss_claims,
    masking_caption,
    masking_claims,
    masking_explorer,
    masking_panel_title,
    mean_interval,
    mean_over_seeds,
    paired_differences,
    seed_summary,
    seed_table,
    token_view_html,
)

__all__ = [
    "EXPERIMENTS", "MASKING_PRESETS", "UNITS", "MaskingConfig", "base_model", "run_masking",
    "train_sft",
    "ASSISTANT", "CHAT_TEMPLATE", "END", "IGNORE_INDEX", "POLICIES", "USER", "Encoded",
    "chat_tokenizer", "collate", "encode_chat", "library_assistant_mask", "masked_lm_loss",
    "next_token_targets", "objective_table", "prepare_model", "render", "token_losses",
    "CATEGORIES", "INSTRUCTIONS_DIR", "LETTERS", "ROLES", "TASKS", "WORDS", "category_counts",
    "instructgpt_sizes", "load_instructions", "split_tasks", "task_items", "task_records",
    "validate_record",
    "answer_loss", "generate_replies", "greedy", "make_evaluator", "role_losses",
    "score_replies",
    "POLICY_PAIR", "MaskingRows", "curves_figure", "final_scores", "final_value", "loss_claims",
    "masking_caption", "masking_claims", "masking_explorer", "mean_interval", "mean_over_seeds",
    "agresti_caffo", "masking_panel_title",
    "paired_differences", "seed_summary", "seed_table", "token_view_html",
]
