"""How a training step runs: a :class:`RunSpec` names its mode, attention path and options.

A run is written ``mode:attention[:option+option...]`` (``graphs:causal:bf16+rope_table``):
a mode (:data:`COMPILE_OPTIONS`: eager, compiled, CUDA graphs, ...), an attention path
(:data:`ATTENTIONS`) and one value per option axis (:data:`OPTION_AXES`). A new speed-up is one
more axis, so that the ladder in notebook 02 stays one change per row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pandas as pd

from workbook.config import WorkbookError, check_choice

__all__ = ["COMPILE_OPTIONS", "MODES", "ATTENTIONS", "FUSIONS", "WEIGHTS", "OPTIMIZERS", "ROPES",
           "PROJECTIONS", "LOSSES", "OPTION_AXES", "RunSpec", "parse_run", "RUN_ORDER",
           "run_labels", "step_ratio"]


# How each mode runs the loss function (forward + loss; backward follows the compiled graph;
# the optimizer step stays outside, compiled or not, see OPTIMIZERS).
# "graphs": CUDA graphs around forward and backward (one launch each instead of hundreds).
# "graphs_tuned": the same, and every Triton kernel's block sizes tuned by coordinate descent.
# "autotune": also searches matmul implementations and tile configurations (cuBLAS against
# Triton templates, which can fuse the elementwise work around them): minutes of compile on the
# first step; "autotune_graphs" with CUDA graphs.
# "step_graph": the compiled forward, the backward and the optimizer step recorded into one CUDA
# graph together (torch.cuda.graph): a step is one launch, as in MLPerf training submissions.
# Each step copies its batch into the graph's input buffers first, as a training loop would.
COMPILE_OPTIONS: dict[str, dict | None] = {
    "eager": None,
    "compiled": {},
    "autotune": {"mode": "max-autotune-no-cudagraphs"},
    "graphs": {"mode": "reduce-overhead"},
    "graphs_tuned": {"options": {"triton.cudagraphs": True, "coordinate_descent_tuning": True}},
    "autotune_graphs": {"mode": "max-autotune"},
    "step_graph": {},
}
MODES = tuple(COMPILE_OPTIONS)
# "sdpa": transformers' own SDPA integration. Under torch.compile (torch < 2.14) it passes SDPA
# an explicit causal mask, which rules FlashAttention out. "causal": workbook.model's
# CAUSAL_SDPA, which passes is_causal=True instead (no padding in these batches), and SDPA picks
# its kernel (on an H100 with torch 2.11: cuDNN's). "cudnn" and "flash": the same, with SDPA
# restricted to its cuDNN backend or to its FlashAttention-2 backend (GPU only).
ATTENTIONS = ("sdpa", "causal", "cudnn", "flash")
# "liger": Liger-Kernel's Triton kernels for RMSNorm, rotary embedding and SwiGLU, and its
# fused linear cross-entropy for the output layer + loss (GPU only, `pip install liger-kernel`).
FUSIONS = ("none", "liger")
# Where the weights live. "fp32": FP32 weights under BF16 autocast (nanoGPT's way): every matmul
# casts its weight to BF16, and the residual stream, norms and rotary embedding stay FP32.
# "bf16": the model is BF16 and AdamW keeps FP32 master weights (Megatron-LM's way,
# workbook.training.MasterWeightAdamW): every activation is half the bytes.
WEIGHTS = ("fp32", "bf16")
# The optimizer step. "fused": torch's fused AdamW kernel (with BF16 weights, plus two
# multi-tensor copies to and from the FP32 masters). "compiled_opt": the whole step, copies
# included, compiled by torch.compile into a few Triton kernels.
OPTIMIZERS = ("fused", "compiled_opt")
# The rotary embedding's cos and sin. "angles": computed from the positions at every forward, as
# transformers does (under torch.compile, inside every kernel that rotates q or k).
# "rope_table": read from tables built once (workbook.model.RopeTable).
ROPES = ("angles", "rope_table")
# The projections. "separate": q, k, v (and gate, up) as transformers runs them, one matmul each.
# "fused_proj": one matmul for q, k, v and one for gate, up (workbook.model.fuse_projections;
# the same parameters, concatenated in the forward). "fused_mlp": gate and up only (on the H100
# the fused q, k, v matmul gained 0.4 ms, but gathering its gradient cost 2 ms more).
PROJECTIONS = ("separate", "fused_proj", "fused_mlp")
# The output layer and the loss. "torch_ce": logits, then F.cross_entropy (compiled with the rest:
# the forward reads the logits, the backward reads them again and writes their gradient).
# "triton_ce": workbook.flops.fused_ce, whose Triton kernel writes the gradient in the forward,
# over the logits, in one read and one write (GPU; PyTorch arithmetic on a CPU).
LOSSES = ("torch_ce", "triton_ce")
# Every option axis, with its allowed values; the first is the default (torch and transformers
# as they come) and is left out of a run's name.
OPTION_AXES: dict[str, tuple[str, ...]] = {
    "fusion": FUSIONS, "weights": WEIGHTS, "optimizer": OPTIMIZERS, "rope": ROPES,
    "projections": PROJECTIONS, "loss": LOSSES}


@dataclass(frozen=True)
class RunSpec:
    """One way to run the training step: a mode (:data:`COMPILE_OPTIONS`), an attention path
    (:data:`ATTENTIONS`) and one value per option axis (:data:`OPTION_AXES`).

    Written ``mode:attention[:option+option...]``, e.g. ``graphs:causal:bf16+rope_table``
    (:meth:`parse`, ``str()``); its fields are the columns of the recorded rows."""

    mode: str = "eager"
    attention: str = "sdpa"
    fusion: str = "none"
    weights: str = "fp32"
    optimizer: str = "fused"
    rope: str = "angles"
    projections: str = "separate"
    loss: str = "torch_ce"

    def __post_init__(self) -> None:
        check_choice("mode", self.mode, MODES)
        check_choice("attention", self.attention, ATTENTIONS)
        for axis, values in OPTION_AXES.items():
            check_choice(axis, getattr(self, axis), values)
        if self.fusion == "liger" and self.loss != "torch_ce":
            raise WorkbookError("fusion 'liger' brings its own fused loss; with it the loss "
                                f"must be 'torch_ce', not {self.loss!r}")

    @classmethod
    def parse(cls, run: str) -> RunSpec:
        """"mode[:attention[:options]]", ``options`` joined with "+", at most one per axis, in
        any order; attention defaults to "sdpa", each axis to its first value."""
        parts = run.split(":")
        if len(parts) > 3:
            raise WorkbookError(f"run={run!r}: write mode[:attention[:option+option...]], e.g. "
                                "'compiled:causal', 'graphs:causal:bf16' or "
                                "'graphs:causal:liger'")
        mode, attention = (parts + ["sdpa"])[:2]
        check_choice("mode", mode, MODES)
        check_choice("attention", attention, ATTENTIONS)
        chosen = {}
        for option in (parts[2].split("+") if len(parts) == 3 else []):
            axis = next((a for a, values in OPTION_AXES.items() if option in values), None)
            if axis is None:
                check_choice("option", option,
                             [v for values in OPTION_AXES.values() for v in values[1:]])
            chosen[axis] = option
        return cls(mode, attention, **chosen)

    def __str__(self) -> str:
        options = [getattr(self, axis) for axis, values in OPTION_AXES.items()
                   if getattr(self, axis) != values[0]]
        return f"{self.mode}:{self.attention}" + (":" + "+".join(options) if options else "")

    def columns(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def parse_run(run: str) -> RunSpec:
    """The :class:`RunSpec` a run's text names, checked (see :meth:`RunSpec.parse`)."""
    return RunSpec.parse(run)


RUN_ORDER = [str(RunSpec(m, a, f, w, o, r, p, c)) for m in MODES for a in ATTENTIONS
             for w in WEIGHTS for o in OPTIMIZERS for r in ROPES for p in PROJECTIONS
             for c in LOSSES for f in FUSIONS if not (f == "liger" and c != "torch_ce")]


def run_labels(rows: pd.DataFrame) -> pd.Series:
    """The run (:class:`RunSpec`'s text) of each row; rows recorded before a column existed
    took its default (the field's default in :class:`RunSpec`)."""
    fields = [f.name for f in dataclasses.fields(RunSpec)]
    present = [f for f in fields if f in rows]
    specs = rows[present].astype(object).where(rows[present].notna(), None)
    labels = [str(RunSpec(**{k: v for k, v in zip(present, values, strict=True)
                             if v is not None}))
              for values in specs.itertuples(index=False, name=None)]
    return pd.Series(labels, index=rows.index, dtype=object)



def step_ratio(rows: pd.DataFrame, slower: str, faster: str) -> float:
    """How many times longer run ``slower``'s step takes than run ``faster``'s (each run's
    latest ``step_time`` row with status ok in ``rows``); NaN where either is missing."""
    steps = rows[(rows["metric"] == "step_time") & (rows["status"] == "ok")]
    ms = steps.groupby(run_labels(steps))["value"].last()
    return float(ms.get(slower, float("nan")) / ms.get(faster, float("nan")))
