"""FLOPs by formula: 6·N per token, the attention term, and what they mean in days of GPUs.

Every matmul parameter costs 2 FLOPs per token forward and 4 backward (6·N), plus attention's
two sequence-length matmuls, 12·n_layers·seq_len·d_model per token (Kaplan et al. 2020; PaLM
appendix B). :func:`flops_per_token` is the workbook's one FLOPs-per-token (notebooks 02 and 03
both use it); :func:`training_time` turns C = 6·N·D into days on a number of GPUs at an MFU.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from workbook.config import WorkbookError, check_flag, check_range
from workbook.hardware import DATASHEET, datasheet
from workbook.model import ModelConfig

__all__ = ["matmul_params", "attention_flops_per_token", "flops_per_token", "step_flops",
           "training_flops", "gpu_peak_tflops", "training_dtype", "training_time", "RunExample",
           "LECTURE_EXAMPLES", "lecture_examples", "ReadableTable"]


def matmul_params(cfg: ModelConfig) -> int:
    """Parameters that take part in a matmul for every token: the blocks' projections and the
    output layer. The input embedding is a lookup (no FLOPs); norms are negligible."""
    per_layer = 4 * cfg.d_model**2 + 3 * cfg.d_model * cfg.d_ff
    return cfg.n_layers * per_layer + cfg.vocab_size * cfg.d_model


def attention_flops_per_token(n_layers: int, seq_len: int, d_model: int, *,
                              causal: bool = False) -> float:
    """Training FLOPs per token of QKᵀ and A·V: 2·2·seq_len·d_model per layer forward, ×3 with
    the backward. MFU is conventionally counted without the causal mask's saving; with
    ``causal=True`` the half that a FlashAttention kernel skips is left out."""
    check_range("n_layers", n_layers, 1, 100_000)
    check_range("seq_len", seq_len, 1, 10_000_000)
    check_range("d_model", d_model, 1, 1_000_000)
    check_flag("causal", causal)
    full = 12.0 * n_layers * seq_len * d_model
    return full / 2 if causal else full


def flops_per_token(cfg: ModelConfig, seq_len: int | None = None, *, causal: bool = False,
                    n_params: float | None = None) -> dict[str, float]:
    """Training FLOPs per token, by part (their sum is the whole): ``dense`` = 6·N and
    ``attention`` (:func:`attention_flops_per_token`).

    N is :func:`matmul_params` unless ``n_params`` is given (scaling laws count every
    parameter, as Chinchilla does). ``causal=False`` counts all of QKᵀ and A·V, as MFU is
    conventionally counted; ``causal=True`` leaves out the half a causal kernel skips."""
    if seq_len is not None:
        check_range("seq_len", seq_len, 1, 10_000_000)
    check_flag("causal", causal)
    if n_params is not None:
        check_range("n_params", n_params, 1, 1e15)
    seq_len = cfg.seq_len if seq_len is None else seq_len
    n = matmul_params(cfg) if n_params is None else n_params
    return {"dense": 6.0 * n,
            "attention": attention_flops_per_token(cfg.n_layers, seq_len, cfg.d_model,
                                                   causal=causal)}


def step_flops(cfg: ModelConfig, batch_size: int, seq_len: int | None = None) -> float:
    """Predicted FLOPs of one training step (forward + backward) on batch_size × seq_len."""
    seq_len = cfg.seq_len if seq_len is None else seq_len
    return sum(flops_per_token(cfg, seq_len).values()) * batch_size * seq_len


def training_flops(n_params: float, n_tokens: float) -> float:
    """The lecture's rule: C ≈ 6·N·D (forward 2·N·D, backward 4·N·D)."""
    return 6.0 * n_params * n_tokens


def gpu_peak_tflops(gpu: str, dtype: str = "bf16") -> float:
    """Dense datasheet TFLOP/s of a GPU named as in ``workbook.hardware.DATASHEET``."""
    peaks = datasheet(gpu)
    if peaks is None or dtype not in peaks.tflops:
        having = [name for name, p in DATASHEET if dtype in p.tflops]
        raise WorkbookError(f"no datasheet peak for gpu={gpu!r}, dtype={dtype!r}; allowed: the "
                            f"GPUs with a {dtype} peak: {', '.join(having) or 'none'} "
                            "(workbook.hardware.DATASHEET)")
    return peaks.tflops[dtype]


def training_dtype(gpu: str) -> str:
    """The 16-bit format a GPU trains in: bf16 where it has it, else fp16 (the T4, pre-Ampere)."""
    peaks = datasheet(gpu)
    return "bf16" if peaks is None or "bf16" in peaks.tflops else "fp16"


def training_time(n_params: float, n_tokens: float, *, gpu: str = "A100", n_gpus: int = 1,
                  utilization: float = 0.4, dtype: str = "bf16") -> dict[str, float]:
    """Wall time of a training run: 6·N·D / (peak × n_gpus × utilization).

    Returns FLOPs, seconds, hours, days and GPU-hours. ``utilization`` is the MFU (0-1).
    """
    check_range("n_params", n_params, 1, 1e15)
    check_range("n_tokens", n_tokens, 1, 1e16)
    check_range("n_gpus", n_gpus, 1, 10_000_000)
    check_range("utilization", utilization, 0.01, 1.0)
    flops = training_flops(n_params, n_tokens)
    seconds = flops / (gpu_peak_tflops(gpu, dtype) * 1e12 * n_gpus * utilization)
    return {"flops": flops, "seconds": seconds, "hours": seconds / 3600,
            "days": seconds / 86400, "gpu_hours": seconds * n_gpus / 3600}


@dataclass(frozen=True)
class RunExample:
    name: str
    n_params: float
    n_tokens: float
    gpu: str
    n_gpus: int
    utilization: float
    dtype: str
    claim: str          # what the source says, to compare against


# The lecture's worked examples (notes 001, section 2.3): same inputs, so the same answers.
LECTURE_EXAMPLES: tuple[RunExample, ...] = (
    RunExample("GPT-3 175B", 175e9, 300e9, "A100", 10_000, 0.5, "bf16",
               "lecture: 6ND ≈ 3.15×10²³ FLOPs; 10,000 A100 at 312 TFLOP/s, 50 % -> "
               "≈ 202,000 s ≈ 56 h ≈ 2.3 days"),
    RunExample("Llama 3 405B", 405e9, 15e12, "H100", 16_384, 0.4, "bf16",
               "lecture: 6ND ≈ 3.6×10²⁵ FLOPs; Meta (Llama 3 paper): 16K H100 at 38-43 % "
               "MFU, 30.84M GPU-hours for the 405B model"),
)


class ReadableTable(pd.DataFrame):
    """A plain DataFrame to code; in a notebook its numbers in fixed notation
    (:func:`workbook.claims.readable`: 1,287 · 3.15×10²³, never 3.15e+23), as HTML and as
    plain text alike, so a printed table does not depend on the last digits of a float."""

    @property
    def _constructor(self):  # pandas operations keep the type
        return ReadableTable

    def _shown(self) -> pd.DataFrame:
        from workbook.claims import readable

        frame = pd.DataFrame(self)
        numeric = list(frame.select_dtypes("number").columns)
        shown = frame.astype({c: object for c in numeric}).map(readable)
        return shown.mask(frame.isna(), "–")  # a missing cell reads "–", never blank or NaN

    def _repr_html_(self) -> str:  # a plain table, no Styler: its random ids differ per run
        return self._shown().to_html(index=False)

    def _repr_pretty_(self, printer, cycle: bool) -> None:  # IPython's text/plain
        printer.text(self._shown().to_string(index=False))


def lecture_examples() -> pd.DataFrame:
    """The worked examples through :func:`training_time`, one row per example (numbers in fixed
    notation where a notebook shows them)."""
    rows = []
    for ex in LECTURE_EXAMPLES:
        t = training_time(ex.n_params, ex.n_tokens, gpu=ex.gpu, n_gpus=ex.n_gpus,
                          utilization=ex.utilization, dtype=ex.dtype)
        rows.append({"run": ex.name, "n_params": ex.n_params, "n_tokens": ex.n_tokens,
                     "gpu": ex.gpu, "n_gpus": ex.n_gpus, "utilization": ex.utilization,
                     **t, "source says": ex.claim})
    return ReadableTable(rows)
