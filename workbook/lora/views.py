"""LoRA's tables and claims: the from-scratch layer against PEFT's on a whole model, trainable
parameters by rank and target modules, two adapters on one base, and the claims table."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from workbook.claims import Claim, claims_table
from workbook.config import check_range, takes_rows
from workbook.lora.adapter import (
    add_lora,
    add_peft_lora,
    check_rank,
    count_trainable,
    linear_shapes,
    lora_params,
    randomise_adapters,
    with_lora,
)
from workbook.lora.shapes import llama_config, n_params_of


def _check_demo(rank: int, seed: int, seq_len: int) -> None:
    """The demos' own arguments, checked before a model is copied."""
    check_range("rank", rank, 1, 4096)
    check_range("seed", seed, 0, 2**63 - 1)
    check_range("seq_len", seq_len, 1, 4096)


def scratch_vs_peft(model: nn.Module, rank: int = 4, seed: int = 0,
                    seq_len: int = 16) -> pd.DataFrame:
    """The from-scratch LoRA and PEFT's on copies of ``model``, given the same A and B.

    Returns the largest logit difference (float rounding only) and both trainable counts.
    """
    _check_demo(rank, seed, seq_len)
    peft_model = with_lora(model, rank, 2.0 * rank, "all", seed)
    randomise_adapters(peft_model, seed + 1)
    ours = add_lora(copy.deepcopy(model), rank, alpha=2.0 * rank, targets="all")
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if "lora_" in name:          # ...q_proj.lora_A  <->  ...q_proj.lora_A.default.weight
                p.copy_(theirs[f"base_model.model.{name}.default.weight"])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, model.config.vocab_size, (2, seq_len), generator=gen)
    with torch.no_grad():
        diff = (ours(input_ids=x).logits - peft_model(input_ids=x).logits).abs().max()
    return pd.DataFrame([
        {"what": "max |logits(scratch) - logits(PEFT)|", "value": float(diff)},
        {"what": "trainable params, scratch", "value": count_trainable(ours)},
        {"what": "trainable params, PEFT", "value": count_trainable(peft_model)},
    ])


def trainable_summary(configs: dict, rank: int, targets: str | Sequence[str]) -> pd.DataFrame:
    """Per model: full fine-tuning vs LoRA trainable parameters and their training state.

    Training state = gradient (2 B, bf16) + fp32 Adam moments (8 B) per trainable parameter;
    the frozen weights are paid for either way.
    """
    rows = []
    for name, config in configs.items():
        for method in ("full", "lora"):
            if method == "full":
                n = n_params_of(config)
            else:
                for i, o in linear_shapes(config).values():
                    check_rank(rank, i, o)
                n = lora_params(config, rank, targets)
            rows.append({"model": name, "method": method, "trainable_params": n,
                         "train_state_GB": 10 * n / 1e9})
    return pd.DataFrame(rows)


@takes_rows
def summary_note(table: pd.DataFrame) -> str:
    """One line per model of :func:`trainable_summary`: share trained and training state."""
    lo = table[table.method == "lora"].set_index("model")
    full = table[table.method == "full"].set_index("model")
    return " · ".join(
        f"{m}: {lo.trainable_params[m]:,} trainable "
        f"({100 * lo.trainable_params[m] / full.trainable_params[m]:.3f} %), training state "
        f"{lo.train_state_GB[m]:.3g} GB vs {full.train_state_GB[m]:.3g} GB" for m in lo.index)


def multi_adapter_demo(model: nn.Module, rank: int = 4, seed: int = 0,
                       seq_len: int = 16) -> pd.DataFrame:
    """Two adapters on one base: swap between them, then combine them linearly.

    The combination uses PEFT's ``add_weighted_adapter(..., combination_type="cat")``, which
    stacks the two A's and B's: exactly W + dW_spam + dW_sentiment, for any ranks.
    """
    _check_demo(rank, seed, seq_len)
    peft_model = add_peft_lora(model, rank, alpha=2 * rank, adapter_name="spam")
    peft_model.add_adapter("sentiment", peft_model.peft_config["spam"])
    for i, name in enumerate(("spam", "sentiment")):
        peft_model.set_adapter(name)
        randomise_adapters(peft_model, seed + i, adapter=name)
    gen = torch.Generator().manual_seed(seed)
    device = next(peft_model.parameters()).device
    x = torch.randint(0, peft_model.config.vocab_size, (2, seq_len), generator=gen).to(device)
    out, rows = {}, []
    with torch.no_grad():
        with peft_model.disable_adapter():
            out["base"] = peft_model(input_ids=x).logits
        for name in ("spam", "sentiment"):
            peft_model.set_adapter(name)
            out[name] = peft_model(input_ids=x).logits
        peft_model.add_weighted_adapter(["spam", "sentiment"], [1.0, 1.0], "both",
                                        combination_type="cat")
        peft_model.set_adapter("both")
        out["both"] = peft_model(input_ids=x).logits
        peft_model.base_model.set_adapter(["spam", "sentiment"])   # both active at once
        out["together"] = peft_model(input_ids=x).logits
    for name in ("spam", "sentiment", "both"):
        rows.append({"adapter": name, "metric": "max_abs_diff_vs_base",
                     "value": float((out[name] - out["base"]).abs().max()), "unit": "logit"})
    rows.append({"adapter": "both (cat) vs spam+sentiment active", "metric": "max_abs_diff",
                 "value": float((out["both"] - out["together"]).abs().max()), "unit": "logit"})
    rows.append({"adapter": "spam vs sentiment", "metric": "max_abs_diff",
                 "value": float((out["spam"] - out["sentiment"]).abs().max()), "unit": "logit"})
    stored = sum(p.numel() for n, p in peft_model.named_parameters() if ".spam" in n)
    rows.append({"adapter": "spam", "metric": "adapter_params", "value": stored,
                 "unit": "params"})
    return pd.DataFrame(rows)


@takes_rows
def best_lr(rows: pd.DataFrame, method: str) -> tuple[float, str]:
    """The learning rate with the lowest held-out loss for ``method`` in an LR sweep's
    ``eval_loss`` rows, and where it sits in the grid: 'inside', or 'lowest'/'highest' (then
    the true optimum may lie beyond the grid, and any ratio built on it is only a bound)."""
    part = rows[(rows["method"] == method) & (rows["metric"] == "eval_loss")]
    if part.empty:
        return float("nan"), "not measured"
    best = float(part.loc[part["value"].idxmin(), "lr"])
    grid = sorted(part["lr"].unique())
    edge = "lowest" if best == grid[0] else "highest" if best == grid[-1] else "inside"
    return best, edge


@takes_rows
def claims(rank_rows: pd.DataFrame, lr_rows: pd.DataFrame, timing: pd.DataFrame,
           where: str) -> pd.DataFrame:
    """The lecture's and the LoRA paper's claims against this notebook's rows: parameter counts
    (exact), the learning-rate ratio (only where both optima lie inside the sweep's grid;
    otherwise the ratio is a bound and the claim is not measured), the merge's latency."""
    nan = float("nan")
    pred = rank_rows[rank_rows["source"] == "predicted"]["value"].sum()
    counted = rank_rows[rank_rows["source"] != "predicted"]["value"].sum()
    (lr_lora, edge_lora), (lr_full, edge_full) = best_lr(lr_rows, "lora"), best_lr(lr_rows, "full")
    bracketed = edge_lora == edge_full == "inside"
    ratio = lr_lora / lr_full
    t = timing[timing["metric"] == "forward_time"].groupby("variant")["value"].first()
    lr_where = where if bracketed else (
        f"{where}; best LR at the grid's edge (lora: {edge_lora}, full: {edge_full}), "
        f"so {ratio:.3g}× is only a bound")
    return claims_table([
        Claim("1024x1024 at rank 8 trains ~16K numbers", "lecture", 16_000, 8 * (1024 + 1024),
              "params"),
        Claim("PEFT example: r=8 on q,v of a 7B model trains 4,194,304", "lecture (PEFT print)",
              4_194_304, lora_params(llama_config("7b"), 8, "qv"), "params",
              "formula, Llama-2-7B shape"),
        Claim("trainable params = r(d_in+d_out) per matrix", "LoRA paper", pred, counted,
              "params (sum over the sweep)", "counted by PEFT"),
        Claim("LoRA's best LR is higher than full FT's", "lecture", 1.0, ratio, "× (ratio)",
              lr_where, kind="at_least"),
        Claim("... by about 10×", "lecture", 10.0, ratio if bracketed else nan, "×", lr_where,
              rel_tol=0.5),
        Claim("merged adapter adds no latency (merged / base forward time)", "LoRA paper", 1.0,
              t.get("merged", nan) / t.get("base", nan), "ratio", where),
    ])
