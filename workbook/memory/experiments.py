"""The memory notebook's experiments: the breakdown (measured beside the formula) and the
largest model that fits one GPU. Each measurement runs in a fresh process (``runner.call``)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from workbook import runner
from workbook.config import WorkbookError, check_choice, check_range
from workbook.memory.formulas import OPTIMIZERS, PRECISIONS, gpt_params, predicted_breakdown
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
    "full": BreakdownConfig(n_layer=12, d_model=768, n_head=12, vocab=50304,
                            seq_lens=(256, 512, 1024), batch=8, precision="amp_bf16",
                            optimizer="adamw"),
}


def run_breakdown(cfg: BreakdownConfig, seed: int) -> pd.DataFrame:
    """Each (seq_len, checkpointing) in a fresh process, with the formula beside it."""
    frames = []
    for seq_len in cfg.seq_lens:
        for ckpt in cfg.checkpointing:
            kw = {"n_layer": cfg.n_layer, "d_model": cfg.d_model, "n_head": cfg.n_head,
                  "vocab": cfg.vocab, "seq_len": seq_len, "batch": cfg.batch,
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


EXPERIMENTS = [
    Experiment(name="memory_breakdown",
               summary="params, grads, Adam states, activations of a GPT-2, measured vs formula",
               notebook="04_memory", run=run_breakdown, presets=BREAKDOWN_PRESETS,
               min_gpus={"small": 0, "full": 1}, timeout_s=900),
    Experiment(name="memory_fit",
               summary="largest GPT (n_layer at fixed width) whose training step fits this GPU",
               notebook="04_memory", run=run_fit, presets=FIT_PRESETS,
               min_gpus={"small": 1, "full": 1}, timeout_s=900),
]
