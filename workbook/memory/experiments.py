"""The memory notebook's experiments: the breakdown (measured beside the formula) and the
largest model that fits one GPU. Each measurement runs in a fresh process (``runner.call``)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch

from workbook import runner
from workbook.config import WorkbookError, check_choice, check_range, check_values
from workbook.hardware import detect
from workbook.memory.formulas import (
    OPTIMIZERS,
    PRECISIONS,
    activation_bytes,
    gpt_params,
    predicted_breakdown,
    recompute_overhead,
)
from workbook.memory.measure import activation_sweep, time_recompute
from workbook.registry import Experiment
from workbook.results import param_columns


def check_gpt_shape(n_layer: int, d_model: int, n_head: int, vocab: int) -> None:
    """The GPT-2 shapes the memory and ZeRO experiments accept, or a one-line error."""
    check_range("n_layer", n_layer, 1, 200)
    check_range("d_model", d_model, 8, 16384)
    check_range("n_head", n_head, 1, 256)
    if d_model % n_head:
        raise WorkbookError(f"d_model={d_model} must be a multiple of n_head={n_head}")
    check_range("vocab", vocab, 16, 300_000)


def fill_params(frame: pd.DataFrame) -> pd.DataFrame:
    """No NaN or empty text in parameter columns: the ledger keys rows by them, and with
    pandas 3 a NaN (or an empty string, read back from CSV as NaN) breaks that key. Every frame
    carries an ``error`` column ("-" when fine), so ledgers of good and failed runs merge."""
    frame = frame.copy()
    if "error" not in frame:
        frame["error"] = "-"
    for col in param_columns(frame):
        if col == "seed":
            continue
        if pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].fillna(-1)
        else:
            frame[col] = frame[col].fillna("-").astype(str).replace("", "-")
    return frame


@dataclass(frozen=True)
class BreakdownConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab: int
    seq_lens: tuple[int, ...]
    batch: int
    precision: str
    optimizer: str
    checkpointing: tuple[bool, ...] = (False, True)
    attention: str = "eager"
    timeout_s: int = 300
    scale_to_gpu: bool = True   # batch scaled to this GPU's memory (batch_for_gpu)

    def __post_init__(self) -> None:
        check_gpt_shape(self.n_layer, self.d_model, self.n_head, self.vocab)
        for s in self.seq_lens:
            check_range("seq_len", s, 2, 32768)
        check_range("batch", self.batch, 1, 1024)
        check_choice("precision", self.precision, PRECISIONS[:3])
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("attention", self.attention, ("eager", "sdpa"))
        check_range("timeout_s", self.timeout_s, 1, 86_400)


BREAKDOWN_PRESETS = {
    "small": BreakdownConfig(n_layer=2, d_model=64, n_head=4, vocab=512, seq_lens=(128,),
                             batch=2, precision="fp32", optimizer="adamw"),
    # one length: memory_seq_sweep covers seq_len; two fresh processes (ckpt off, on) instead
    # of six keep 04's Run All on a GPU inside its budget
    "full": BreakdownConfig(n_layer=12, d_model=768, n_head=12, vocab=50304,
                            seq_lens=(1024,), batch=8, precision="amp_bf16",
                            optimizer="adamw"),
}


def run_breakdown(cfg: BreakdownConfig, seed: int) -> pd.DataFrame:
    """Each (seq_len, checkpointing) in a fresh process, with the formula beside it. On a GPU
    smaller than the 80 GB the full preset was sized for, the batch shrinks with it
    (:func:`batch_for_gpu`); a configuration that still does not fit is an ``oom`` row."""
    batch = batch_for_gpu(cfg.batch) if cfg.scale_to_gpu else cfg.batch
    frames = []
    for seq_len in cfg.seq_lens:
        for ckpt in cfg.checkpointing:
            kw = {"n_layer": cfg.n_layer, "d_model": cfg.d_model, "n_head": cfg.n_head,
                  "vocab": cfg.vocab, "seq_len": seq_len, "batch": batch,
                  "precision": cfg.precision, "optimizer": cfg.optimizer,
                  "checkpointing": ckpt, "attention": cfg.attention}
            rows = runner.call("workbook.memory.measure:measure_breakdown", {**kw, "seed": seed},
                               timeout_s=cfg.timeout_s)
            n = int(rows["n_params"].iloc[0]) if "n_params" in rows and rows[
                "status"].eq("ok").any() else gpt_params(cfg.n_layer, cfg.d_model, cfg.vocab,
                                                         seq_len)
            frames.append(pd.concat([rows, predicted_breakdown(n, **kw)], ignore_index=True)
                          .assign(**kw))
    return fill_params(pd.concat(frames, ignore_index=True).assign(seed=seed))


@dataclass(frozen=True)
class FitConfig:
    d_model: int
    n_head: int
    vocab: int
    seq_len: int
    batch: int
    precision: str
    checkpointing: tuple[bool, ...]
    max_layers: int
    timeout_s: int = 300

    def __post_init__(self) -> None:
        check_gpt_shape(1, self.d_model, self.n_head, self.vocab)  # layers: what the fit finds
        check_range("max_layers", self.max_layers, 1, 512)
        check_range("seq_len", self.seq_len, 2, 32768)
        check_range("batch", self.batch, 1, 1024)
        check_choice("precision", self.precision, PRECISIONS[:3])
        check_range("timeout_s", self.timeout_s, 1, 86_400)


FIT_PRESETS = {
    "small": FitConfig(d_model=256, n_head=4, vocab=8192, seq_len=256, batch=4,
                       precision="amp_bf16", checkpointing=(False,), max_layers=64),
    "full": FitConfig(d_model=4096, n_head=32, vocab=50304, seq_len=2048, batch=4,
                      precision="amp_bf16", checkpointing=(False, True), max_layers=64),
}


def run_fit(cfg: FitConfig, seed: int) -> pd.DataFrame:
    frames = []
    for ckpt in cfg.checkpointing:
        frames.append(runner.call("workbook.memory.measure:largest_fit", {
            "d_model": cfg.d_model, "n_head": cfg.n_head, "vocab": cfg.vocab,
            "seq_len": cfg.seq_len, "batch": cfg.batch, "precision": cfg.precision,
            "checkpointing": ckpt, "max_layers": cfg.max_layers, "seed": seed},
            timeout_s=cfg.timeout_s))
    return fill_params(pd.concat(frames, ignore_index=True).assign(seed=seed))


def batch_for_gpu(batch: int, reference_gb: float = 80.0) -> int:
    """The batch a full preset sized for a ``reference_gb`` card runs with on this GPU: scaled
    down in proportion to the memory :func:`workbook.hardware.detect` finds (capped by
    ``$WORKBOOK_GPU_MEMORY_GB``) and rounded down to a power of two, never up, at least 1.
    On a CPU (no memory to run out of at these sizes) the batch stays."""
    check_range("batch", batch, 1, 4096)
    check_range("reference_gb", reference_gb, 1, 10_000)
    machine = detect()
    if machine.device != "cuda" or machine.memory_gb >= reference_gb:
        return batch
    scaled = max(1, int(batch * machine.memory_gb / reference_gb))
    return min(batch, 1 << (scaled.bit_length() - 1))


@dataclass(frozen=True)
class SweepConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab: int
    seq_lens: tuple[int, ...]
    batch: int
    precision: str
    attentions: tuple[str, ...] = ("eager", "sdpa")
    scale_to_gpu: bool = True   # batch scaled to this GPU's memory (batch_for_gpu)

    def __post_init__(self) -> None:
        check_gpt_shape(self.n_layer, self.d_model, self.n_head, self.vocab)
        check_values("seq_lens", self.seq_lens)
        for s in self.seq_lens:
            check_range("seq_len", s, 2, 32768)
        if len(set(self.seq_lens)) < 2:
            raise WorkbookError(f"seq_lens={self.seq_lens} needs at least two different "
                                "lengths (an exponent is fitted through them)")
        check_range("batch", self.batch, 1, 1024)
        check_choice("precision", self.precision, PRECISIONS[:3])
        check_values("attentions", self.attentions)
        for a in self.attentions:
            check_choice("attention", a, ("eager", "sdpa"))


SWEEP_PRESETS = {
    "small": SweepConfig(n_layer=2, d_model=64, n_head=4, vocab=512,
                         seq_lens=(64, 128, 256, 512), batch=2, precision="fp32"),
    # GPT-2 124M under autocast: eager at 4096 holds ~60 GB of s×s matrices (batch 4)
    "full": SweepConfig(n_layer=12, d_model=768, n_head=12, vocab=50304,
                        seq_lens=(256, 512, 1024, 2048, 4096), batch=4, precision="amp_bf16"),
}


def sweep_predictions(cfg: SweepConfig, batch: int) -> pd.DataFrame:
    """The activation formula per (attention, seq_len): with the s² term for eager, without
    it for SDPA (no dropout, as measured)."""
    e = 4 if cfg.precision == "fp32" else 2
    rows = []
    for attention in cfg.attentions:
        for s in cfg.seq_lens:
            acts = activation_bytes(cfg.n_layer, cfg.d_model, cfg.n_head, s, batch,
                                    act_bytes=e, attention_matrix=attention == "eager",
                                    vocab=cfg.vocab, dropout=False)
            rows += [{"attention": attention, "seq_len": s, "method": "formula",
                      "value": acts["total"]},
                     {"attention": attention, "seq_len": s, "method": "formula scores",
                      "value": acts["scores"]}]
    return pd.DataFrame(rows).assign(metric="bytes", unit="bytes", source="predicted",
                                     status="ok")


def run_activation_sweep(cfg: SweepConfig, seed: int) -> pd.DataFrame:
    """Activations across seq_len, eager vs SDPA, measured beside the formula.

    Measured here, in this process: ``registry.run_isolated`` (what notebooks and ``--record``
    use) has already started a fresh one for the run, and each length is measured as a
    difference of the allocator's counts around its own forward.
    """
    batch = batch_for_gpu(cfg.batch) if cfg.scale_to_gpu else cfg.batch
    measured = activation_sweep(cfg.n_layer, cfg.d_model, cfg.n_head, cfg.vocab,
                                list(cfg.seq_lens), batch, cfg.precision,
                                list(cfg.attentions), seed)
    rows = pd.concat([measured, sweep_predictions(cfg, batch)], ignore_index=True)
    return fill_params(rows.assign(n_layer=cfg.n_layer, d_model=cfg.d_model,
                                   n_head=cfg.n_head, vocab=cfg.vocab, batch=batch,
                                   precision=cfg.precision, seed=seed))


@dataclass(frozen=True)
class RecomputeConfig:
    n_layer: int
    d_model: int
    n_head: int
    vocab: int
    seq_len: int
    batch: int
    precision: str
    steps: int
    repeats: int
    scale_to_gpu: bool = True   # batch scaled to this GPU's memory (batch_for_gpu)

    def __post_init__(self) -> None:
        check_gpt_shape(self.n_layer, self.d_model, self.n_head, self.vocab)
        check_range("seq_len", self.seq_len, 2, 32768)
        check_range("batch", self.batch, 1, 1024)
        check_choice("precision", self.precision, PRECISIONS[:3])
        check_range("steps", self.steps, 1, 1000)
        check_range("repeats", self.repeats, 3, 100)  # a spread needs three


RECOMPUTE_PRESETS = {
    "small": RecomputeConfig(n_layer=2, d_model=64, n_head=4, vocab=512, seq_len=128, batch=4,
                             precision="fp32", steps=3, repeats=7),
    "full": RecomputeConfig(n_layer=12, d_model=768, n_head=12, vocab=50304, seq_len=1024,
                            batch=8, precision="amp_bf16", steps=10, repeats=7),
}


def run_recompute(cfg: RecomputeConfig, seed: int) -> pd.DataFrame:
    """Step time and memory with and without activation checkpointing, beside the predicted
    recompute overhead (one more forward: +1/3 of a step's FLOPs; the blocks' forward alone,
    which is what transformers recomputes). Runs in the process ``run_isolated`` started."""
    batch = batch_for_gpu(cfg.batch) if cfg.scale_to_gpu else cfg.batch
    params = {"n_layer": cfg.n_layer, "d_model": cfg.d_model, "n_head": cfg.n_head,
              "vocab": cfg.vocab, "seq_len": cfg.seq_len, "batch": batch,
              "precision": cfg.precision}
    try:
        rows = time_recompute(**params, steps=cfg.steps, repeats=cfg.repeats, seed=seed)
    except (torch.OutOfMemoryError, MemoryError) as exc:
        rows = pd.DataFrame([{"metric": "step_ms", "method": "timed", "value": float("nan"),
                              "unit": "ms", "source": "measured", "status": "oom",
                              "error": str(exc).splitlines()[0][:200]}])
    over = recompute_overhead(cfg.n_layer, cfg.d_model, cfg.vocab, cfg.seq_len)
    pred = [{"metric": "overhead", "method": f"formula ({k})", "value": v, "unit": "fraction"}
            for k, v in over.items()]
    e = 4 if cfg.precision == "fp32" else 2
    for ckpt in (False, True):
        acts = activation_bytes(cfg.n_layer, cfg.d_model, cfg.n_head, cfg.seq_len, batch,
                                act_bytes=e, checkpointing=ckpt, attention_matrix=False,
                                vocab=cfg.vocab, dropout=False)
        pred.append({"checkpointing": ckpt, "metric": "bytes", "method": "formula",
                     "value": acts["total"], "unit": "bytes"})
    pred = pd.DataFrame(pred).assign(source="predicted", status="ok")
    rows = pd.concat([rows, pred], ignore_index=True).assign(**params, seed=seed)
    return fill_params(rows)


EXPERIMENTS = [
    Experiment(name="memory_breakdown", dispatches=True,
               summary="params, grads, Adam states, activations of a GPT-2, measured vs formula",
               notebook="04_memory", run=run_breakdown, presets=BREAKDOWN_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900,
               # full: two fresh processes (checkpointing off, on); the H200's Run All of 04
               # took 77.6 s for six of them (three lengths) before the preset kept one length
               typical_s={"full": 30},
               # the panel's first Run: one of those processes (~13 s) and its parent
               panel_start={"full": {"checkpointing": (False,)}}, panel_s={"full": 18}),
    Experiment(name="memory_fit", dispatches=True,
               summary="largest GPT (n_layer at fixed width) whose training step fits this GPU",
               notebook="04_memory", run=run_fit, presets=FIT_PRESETS,
               min_gpus={"small": 1, "full": 1}, timeout_s=900),
    Experiment(name="memory_seq_sweep",
               summary="activation memory vs seq_len: eager attention (s²) vs SDPA (s), "
                       "measured beside the formula with and without its s² term",
               notebook="04_memory", run=run_activation_sweep, presets=SWEEP_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900,
               typical_s={"small": 15, "full": 40}),
    Experiment(name="memory_recompute",
               summary="activation checkpointing: step time (recompute) and memory, with and "
                       "without, beside one extra forward's FLOPs",
               notebook="04_memory", run=run_recompute, presets=RECOMPUTE_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900,
               typical_s={"small": 15, "full": 40}),
]
