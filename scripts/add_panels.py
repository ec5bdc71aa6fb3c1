"""Add an experiment panel (``widgets.ExperimentPanel``) to the notebooks that teach a knob.

    python scripts/add_panels.py          # idempotent: a notebook that has its panel is skipped

Each panel is one markdown line (what to try) and one short code cell, put before the cell that
opens the next section (found by its first line, not by index, so edits elsewhere do not move
it). Every other cell stays byte-identical. The panel cell builds controls only: nothing runs
until the reader presses Run, so Run All takes no longer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent

# notebook: (first line of the cell to insert before, what to try, the panel's code)
PANELS = {
    "03_scaling_laws": (
        "### The exponents, with a bootstrap interval",
        "**Try it:** type a compute budget (1e10, 3e10, 1e11 FLOPs) and press Run: each run "
        "trains a few model sizes at that budget and adds one IsoFLOP curve; watch its lowest "
        "point move to larger models as the budget grows.",
        'isoflop = widgets.ExperimentPanel(\n'
        '    "scaling_isoflop", fields=["budgets", "sizes_per_budget"], x="n_params",\n'
        '    y="val_loss", group="budget", title="One IsoFLOP curve per run")\n'
        'isoflop'),
    "04_memory": (
        "## 4 · The formula's largest gap, item by item",
        "**Try it:** double `batch`, then `seq_lens`, with and without `checkpointing`: each Run "
        "adds the measured activation bytes (●) beside the formula's (◇) for the same settings.",
        'activations = widgets.ExperimentPanel(\n'
        '    "memory_breakdown", fields=["batch", "seq_lens", "checkpointing"], x="batch",\n'
        '    y="bytes", where={"component": "activations"}, group="checkpointing",\n'
        '    title="Activations: measured (●) vs formula (◇)")\n'
        'activations'),
    "05_data_parallel_zero": (
        "## 3 · Recorded on GPUs",
        "**Try it:** pick stages and a model width (`d_model`) and press Run: each rank's "
        "measured model states (●) land beside the paper's formula (◇); a wider model shows the "
        "stages pulling apart.",
        'stages = widgets.ExperimentPanel(\n'
        '    "zero_stages", fields=["variants", "d_model", "micro_batch"], x="variant",\n'
        '    y="total_bytes", title="Per-rank model states: measured (●), formula (◇)")\n'
        'stages'),
    "06_model_parallel": (
        "## Expert parallelism: routing, imbalance, drops",
        "**Try it:** set the number of micro-batches m (1, 2, 4, 8, 16) and press Run: each run "
        "adds the measured idle fraction of the first stage (●) beside (p − 1)/(m + p − 1) (◇).",
        'bubble = widgets.ExperimentPanel(\n'
        '    "pipeline_bubble", fields=["n_microbatches", "micro_batch"], x="m",\n'
        '    y="idle_fraction", where={"rank": 0}, group="schedule",\n'
        '    title="Pipeline bubble of stage 0: measured (●) vs formula (◇)")\n'
        'bubble'),
    "07_flash_attention": (
        "The workbook's Triton forward is faster than SDPA's FlashAttention-2",
        "**Try it:** pick variants, a sequence length and a head size and press Run: each run "
        "adds one forward + backward time per variant, so a few runs draw the N² curve yourself.",
        'timing_panel = widgets.ExperimentPanel(\n'
        '    "attention_timing", fields=["variants", "seq_lens", "head_dim"], x="seq_len",\n'
        '    y="time", group="variant", where={"mode": "fwd+bwd"},\n'
        '    title="Attention forward + backward time, one point per variant and run")\n'
        'timing_panel'),
    "08_mixed_precision": (
        "## 4 · Weight-update stagnation: why master weights stay in FP32",
        "**Try it:** set a loss scale (log2: 0, 8, 16, 24) and press Run: each run adds the share "
        "of real hidden-state gradients that each format flushes to zero, or keeps only as a "
        "subnormal, at that scale.",
        'underflow_panel = widgets.ExperimentPanel(\n'
        '    "precision_underflow", fields=["log2_scales", "batch_size"], x="log2_scale",\n'
        '    y=["share_zero", "share_subnormal"], group="format",\n'
        '    where={"part": "underflow", "scaling": "fixed", "kind": "hidden_grad"},\n'
        '    title="Hidden-state gradients flushed to zero, by loss scale")\n'
        'underflow_panel'),
    "09_sft": (
        "### Other devices, and what this notebook used to say",
        "**Try it:** pick masking policies, steps and a learning rate and press Run: each run "
        "(all the preset's seeds) adds its held-out answer loss along training, the mean over\n"
        "the seeds, one colour per policy.",
        'masking = widgets.ExperimentPanel(\n'
        '    "sft_masking", fields=["policies", "steps", "lr"], x="step", y="answer_loss",\n'
        '    group="policy", title="Held-out answer loss by masking policy (mean over seeds)",\n'
        '    view=sft.mean_over_seeds)\n'
        'masking'),
    "11_lora": (
        "## Learning rate: LoRA wants a larger one",
        "**Try it:** set a rank (1, 8, 64) and a learning rate and press Run: each run adds "
        "LoRA's held-out loss at that rank beside full fine-tuning's.",
        'rank_panel = widgets.ExperimentPanel(\n'
        '    "lora_sweep", fields=["ranks", "lr"], x="rank", y="eval_loss",\n'
        '    where={"sweep": "rank"}, group="method", title="Held-out loss by LoRA rank")\n'
        'rank_panel'),
    "12_qlora": (
        "## The ratio at 7B, and the lecture's 16×",
        "**Try it:** pick methods, a rank and a sequence length and press Run: each run adds "
        "the measured peak memory (●) beside the formula's (◇) per method.",
        'vram_panel = widgets.ExperimentPanel(\n'
        '    "qlora_vram", fields=["methods", "rank", "seq_len"], x="method", y="peak",\n'
        '    title="Peak memory by method: measured (●) vs formula (◇)")\n'
        'vram_panel'),
}


def add_panel(path: Path, before: str, markdown: str, code: str) -> bool:
    """Insert the two cells before the cell whose source starts with ``before``; False when
    the notebook has them already."""
    nb = nbformat.read(path, as_version=4)
    tag = f"panel-{path.stem[:2]}"
    if any(cell.get("id") in (tag, f"{tag}-try") for cell in nb.cells):
        return False
    where = [i for i, cell in enumerate(nb.cells) if cell.source.lstrip().startswith(before)]
    if len(where) != 1:
        raise SystemExit(f"{path.name}: {len(where)} cells start with {before!r}; need one")
    text = nbformat.v4.new_markdown_cell(markdown)
    text.id = f"{tag}-try"
    cell = nbformat.v4.new_code_cell(code)
    cell.id = tag
    nb.cells[where[0]:where[0]] = [text, cell]
    nbformat.write(nb, path)
    return True


def main(names: list[str]) -> int:
    for name in names or list(PANELS):
        before, markdown, code = PANELS[name]
        added = add_panel(ROOT / "notebooks" / f"{name}.ipynb", before, markdown, code)
        print(f"{name}: {'panel added' if added else 'has its panel already'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
