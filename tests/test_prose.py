"""Every measured number in a notebook's prose is printed by code from the rows (issue 19).

The scanner reads each notebook's markdown cells for numbers with a measurement's unit
(ms, s, GB, GB/s, TFLOP/s, %, W, J, MWh, ...). In the notebooks listed in :data:`ENFORCED`
each such number must be a lecture's or a paper's constant on that notebook's allow-list (with
its reason); anything else belongs in a caption that code prints from the rows. To enforce
another notebook, add its name and its (short) allow-list to ENFORCED.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

_NUMBER = r"\d+(?:[.,]\d+)*"
UNITS = ("ms", "s", "GB/s", "TB/s", "GB", "MB", "MiB", "TFLOP/s", "TF/s", "%", "W", "J",
         "MWh")
# a number, or a range of two, then a unit that is not the start of a longer word
PATTERN = re.compile(rf"(?<![\w.·^]){_NUMBER}(?:\s*[–-]\s*{_NUMBER})?\s?"
                     rf"(?:{'|'.join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))})"
                     r"(?![\w/])")
_CODE = re.compile(r"`[^`]*`")

# notebook -> {number as written: why it may be typed}
ENFORCED: dict[str, dict[str, str]] = {
    "01_pretraining": {
        "570 GB": "the GPT-3 paper (and the lecture): its filtered Common Crawl text",
        "1 GB": "the unit's definition (10⁹ bytes)",
    },
    "00_setup": {
        "90 s": "the workbook's own budget per notebook on a CPU (walltime.BUDGET_S)",
        "2 GB": "Binder's memory limit per notebook",
    },
    "05_data_parallel_zero": {
        "120 GB": "the ZeRO paper's Figure 1 (Ψ = 7.5B, N_d = 64): the baseline",
        "31.4 GB": "the ZeRO paper's Figure 1: stage 1",
        "16.6 GB": "the ZeRO paper's Figure 1: stage 2",
        "1.9 GB": "the ZeRO paper's Figure 1: stage 3",
        "700 GB": "the lecture's table for GPT-3 under stage 3 at N_d = 4",
        "80 GB": "an A100's / H100's memory (datasheet)",
        "15 %": "the target the issue set for formula vs measured",
        "50 %": "the ZeRO paper, Sec. 7: stage 3 communicates 1.5× DP",
    },
    "07_flash_attention": {
        "19 TB/s": "the lecture (and the FlashAttention paper): A100 SRAM bandwidth",
        "1.5 TB/s": "the lecture (and the FlashAttention paper): A100 HBM bandwidth",
        "50 MB": "the H100/H200 datasheet: L2 cache size",
        "3.35 TB/s": "the H100 SXM datasheet: HBM bandwidth",
        "1.6–2 TB/s": "the A100 datasheets (40 GB / 80 GB): HBM bandwidth",
    },
    "02_flops": {
        "28 %": "nanoGPT's README: its eager MFU",
        "38 %": "nanoGPT's README: its compiled MFU (the issue's reference point)",
        "40 %": "the target set by the issue, and the lecture's Llama 3 example at 40 % MFU",
        "50 %": "the lecture's GPT-3 example: 10,000 A100s at 50 % MFU",
        "38–43 %": "Meta's Llama 3 paper: the MFU it reports",
    },
    "03_scaling_laws": {
        "5 %": "the older recipe's warm-up setting (5 % of the steps), a configuration, not a "
               "measurement",
    },
    "04_memory": {
        "80 GB": "an H100's memory (datasheet), the lecture's GPT-3 example",
        "700 GB": "the lecture's GPT-3 example: 175B fp32 weights (and gradients)",
        "1,400 GB": "the lecture's GPT-3 example: fp32 Adam states",
        "3,000 GB": "the lecture's GPT-3 example: its total",
        "33 %": "Chen et al. (2016): one more forward, 2 of a step's 6 FLOPs per parameter",
    },
    "06_model_parallel": {},
    "08_mixed_precision": {},
    "09_sft": {
        "95 %": "the confidence level of the intervals over seeds (a setting)",
    },
    "10_evaluation_alignment": {
        "95 %": "the confidence level of the intervals over seeds (a setting)",
        "0 %": "the mid-training design's no-replay setting",
    },
    "11_lora": {
        "90 %": "the corpus split the base model was pretrained on (a setting)",
        "10 %": "the held-out corpus tail the task fine-tunes on (a setting)",
        "95 %": "the confidence level of the intervals over seeds (a setting)",
        "15 %": "the merge claim's stated tolerance (a setting)",
    },
    "12_qlora": {
        "13.5 GB": "7B parameters × 2 bytes (bf16), the lecture's arithmetic",
        "48 GB": "the QLoRA paper: 65B fine-tuned on one 48 GB GPU",
        "3 GB": "the double-quantisation formula's 0.37 bits × 65B parameters (arithmetic)",
        "780 GB": "the QLoRA paper: 16-bit fine-tuning of 65B",
        "40 GB": "an A100-40GB's memory (datasheet), the sweep's allocator cap",
        "40GB": "the product name A100-40GB",
        "80 GB": "an A100's / H100's memory (datasheet)",
        "95 %": "the confidence level of the intervals over seeds (a setting)",
        "15 %": "the notebook's stated tolerance for formula vs measured (the issue's target)",
    },
}


def typed_numbers(markdown: str) -> list[str]:
    """The numbers with a measurement's unit in ``markdown``, inline code left out."""
    return [m.group(0) for m in PATTERN.finditer(_CODE.sub("", markdown))]


def notebook_numbers(name: str) -> list[tuple[int, str]]:
    """(cell index, number as written) for every markdown cell of notebook ``name``."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return [(i, hit) for i, cell in enumerate(nb.cells) if cell.cell_type == "markdown"
            for hit in typed_numbers(cell.source)]


def _normal(hit: str) -> str:
    return re.sub(r"\s+", " ", hit).replace(" -", "–").replace("-", "–")


def test_the_scanner_finds_measurements_and_leaves_other_numbers():
    text = ("The step took 26.3–26.7 ms (41.5 %), 7.4 GB, 650 TFLOP/s and 2.1 TB/s, at 600 W; "
            "a 2000-step run, `time_ms(fn)`, 12 layers, 10¹⁵ FLOP/s, 3.15·10²³ FLOPs, 8192³.")
    assert typed_numbers(text) == ["26.3–26.7 ms", "41.5 %", "7.4 GB", "650 TFLOP/s",
                                   "2.1 TB/s", "600 W"]
    assert typed_numbers("it ran 90 s, then 5s more") == ["90 s", "5s"]


@pytest.mark.parametrize("name", sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")))
def test_no_measured_number_is_typed_into_prose(name):
    hits = notebook_numbers(name)
    if name not in ENFORCED:
        pytest.skip(f"{name}: not enforced yet; {len(hits)} typed numbers, e.g. "
                    f"{[h for _, h in hits[:5]]}")
    allowed = {_normal(k) for k in ENFORCED[name]}
    typed = [(cell, hit) for cell, hit in hits if _normal(hit) not in allowed]
    assert not typed, (f"{name}: numbers typed into markdown (cell, number): {typed}. Print "
                       "them from the rows with a caption function (display(Markdown(...))), "
                       "or, for a lecture's or a paper's constant, add it to ENFORCED with "
                       "its reason.")
