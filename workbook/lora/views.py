"""LoRA's tables and claims: the from-scratch layer against PEFT's on a whole model, trainable
parameters by rank and target modules, two adapters on one base, and the claims table."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from workbook import stats
from workbook.claims import Claim, claims_table, readable
from workbook.config import check_range, check_values, takes_rows
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
from workbook.results import where_label

_POWER = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(value: float) -> str:
    """A learning rate in one notation for a whole grid: 3e-06 -> '3×10⁻⁶', 0.001 -> '1×10⁻³'
    (fixed notation would print 3×10⁻⁶ as '0.0000' beside '0.001'); "–" for NaN."""
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    mantissa = f"{value / 10 ** exponent:.3g}"
    if abs(float(mantissa)) >= 10:   # 9.9996e-4 rounds up to 10×10⁻⁴: say 1×10⁻³
        exponent += 1
        mantissa = f"{value / 10 ** exponent:.3g}"
    return f"{mantissa}×10{str(exponent).translate(_POWER)}"


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
        {"what": "max |logits(scratch) - logits(PEFT)|", "value": float(diff), "unit": "logit"},
        {"what": "trainable params, scratch", "value": count_trainable(ours), "unit": "params"},
        {"what": "trainable params, PEFT", "value": count_trainable(peft_model),
         "unit": "params"},
    ], columns=["what", "value", "unit"]).astype({"value": object})


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
    params = dict(peft_model.named_parameters())
    base_n = sum(p.numel() for n, p in params.items() if "lora_" not in n)
    rows.append({"adapter": "base (frozen)", "metric": "base_params", "value": base_n,
                 "unit": "params"})
    for name in ("spam", "sentiment"):   # what one task stores: its adapter alone
        stored = sum(p.numel() for n, p in params.items() if f".{name}." in n)
        rows += [{"adapter": name, "metric": "adapter_params", "value": stored,
                  "unit": "params"},
                 {"adapter": name, "metric": "share_of_base", "value": 100 * stored / base_n,
                  "unit": "% of the base's params"}]
    return pd.DataFrame(rows).astype({"value": object})   # the count stays an integer


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


def seed_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): the mean over seeds and its Student-t interval at ``level``
    (:func:`workbook.stats.t_interval`; NaN bounds for a single value: one seed has no
    interval)."""
    check_values("values", list(values))
    return stats.t_interval(values, level)


@takes_rows
def seed_summary(rows: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Held-out loss per configuration over its seeds: mean, 95 % interval, seeds (n)."""
    loss = rows[rows["metric"] == "eval_loss"]
    out = []
    for key, part in loss.groupby(list(by), sort=True):
        mean, low, high = seed_interval(part["value"].tolist())
        out.append({**dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                    "mean": mean, "low": low, "high": high, "n": len(part)})
    return pd.DataFrame(out)


@takes_rows
def lr_figure(rows: pd.DataFrame):
    """Held-out loss vs learning rate of ``lora_advice`` rows: mean over seeds with its 95 %
    interval as error bars, one trace per method and device (this machine's and references):
    the method's colour, the device's marker shape."""
    from workbook import plots

    lr = rows[rows["sweep"] == "lr"]
    where = lr["device"].astype(str) if "device" in lr.columns else "this machine"
    curve = seed_summary(lr.assign(where=where), ["method", "where", "lr"])
    fig = plots.figure(plots.title_with_source("Held-out loss vs learning rate (mean over seeds, "
                                               "95 % interval)", lr), "learning rate",
                       "loss (nats)", log_x=True)
    symbol = plots.machine_symbols(curve["where"])
    for (method, device), part in curve.groupby(["method", "where"], sort=False):
        color = plots.color_for(method)
        fig.add_scatter(x=part["lr"], y=part["mean"], name=f"{method} ({device})",
                        mode="lines+markers", line={"color": color},
                        marker={"color": color, "symbol": symbol[device], "size": 8},
                        error_y={"type": "data", "symmetric": False,
                                 "array": (part["high"] - part["mean"]).fillna(0),
                                 "arrayminus": (part["mean"] - part["low"]).fillna(0)})
    return fig


def _log_optimum(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, str]:
    """The minimum of a loss-vs-log10(lr) curve: the grid's best point refined by a parabola
    through it and its two neighbours (where it has both); and where it sits in the grid."""
    i = int(np.argmin(losses))
    if i == 0 or i == len(lrs) - 1:
        return float(np.log10(lrs[i])), "lowest" if i == 0 else "highest"
    x, y = np.log10(lrs[i - 1:i + 2]), losses[i - 1:i + 2]
    a, b, _ = np.polyfit(x, y, 2)
    best = -b / (2 * a) if a > 0 else x[1]
    return float(np.clip(best, x[0], x[2])), "inside"


@takes_rows
def lr_optima(rows: pd.DataFrame) -> pd.DataFrame:
    """Per method and seed of a ``lora_advice`` LR sweep: log10 of the best learning rate
    (parabola through the grid's best point and its neighbours) and where it lies in the grid
    ('inside', or 'lowest'/'highest': then the optimum may lie beyond the grid)."""
    out = []
    if not {"sweep", "metric", "run_seed", "lr", "method"} <= set(rows.columns):
        return pd.DataFrame(out, columns=["method", "run_seed", "log10_lr", "edge"])
    part = rows[(rows["sweep"] == "lr") & (rows["metric"] == "eval_loss")]
    for (method, seed), one in part.groupby(["method", "run_seed"]):
        one = one.sort_values("lr")
        log_lr, edge = _log_optimum(one["lr"].to_numpy(float), one["value"].to_numpy(float))
        out.append({"method": method, "run_seed": seed, "log10_lr": log_lr, "edge": edge})
    return pd.DataFrame(out, columns=["method", "run_seed", "log10_lr", "edge"])


@takes_rows
def paired_gap(rows: pd.DataFrame, sweep: str, column: str, worse: object,
               better: object) -> tuple[float, float, float, int]:
    """loss(``worse``) - loss(``better``) per seed in one sweep of ``lora_advice`` rows (same
    seed: same batches and held-out windows), as (mean, low, high, seeds): > 0 means
    ``better`` really is better only when ``low`` > 0."""
    loss = rows[(rows["sweep"] == sweep) & (rows["metric"] == "eval_loss")] \
        if {"sweep", "metric", "run_seed", column} <= set(rows.columns) else rows.iloc[0:0]
    if loss.empty:
        return math.nan, math.nan, math.nan, 0
    by = loss.pivot_table(index="run_seed", columns=column, values="value")
    if worse not in by.columns or better not in by.columns:
        return math.nan, math.nan, math.nan, 0
    gaps = (by[worse] - by[better]).dropna()
    if gaps.empty:
        return math.nan, math.nan, math.nan, 0
    return (*seed_interval(gaps.tolist()), len(gaps))


GRID_TOL = 0.25    # decades: half a step of the 1-3-10 learning-rate grids


@takes_rows
def lr_ratio(rows: pd.DataFrame) -> dict:
    """log10(LoRA's best LR / full FT's), paired by seed: mean, 95 % interval, the tolerance
    (the larger of the interval's half-width and half a grid step, :data:`GRID_TOL`), whether
    every seed's optimum lies inside both grids (else the ratio is only a bound), and the
    interval a claim is judged on (``judged_low``, ``judged_high``): the seeds' interval
    widened by half a grid step at each end (one seed: the mean ± half a step), since a refined
    optimum is no finer than its grid and seeds that agree closely do not make it finer."""
    opt = lr_optima(rows)
    wide = opt.pivot_table(index="run_seed", columns="method", values="log10_lr") \
        if len(opt) else opt
    if not {"lora", "full"} <= set(wide.columns):
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "tol": GRID_TOL,
                "judged_low": math.nan, "judged_high": math.nan,
                "bracketed": False, "edges": "not measured", "n": 0}
    logs = (wide["lora"] - wide["full"]).dropna()
    mean, low, high = seed_interval(logs.tolist())
    half = (high - low) / 2 if len(logs) > 1 else 0.0
    edges = opt.groupby("method")["edge"].agg(lambda e: ",".join(sorted(set(e))))
    ends = (low, high) if low == low else (mean, mean)
    return {"mean": mean, "low": low, "high": high, "tol": max(half, GRID_TOL),
            "judged_low": ends[0] - GRID_TOL, "judged_high": ends[1] + GRID_TOL,
            "bracketed": bool((opt["edge"] == "inside").all()),
            "edges": "; ".join(f"{m}: {e}" for m, e in edges.items()), "n": len(logs)}


@takes_rows
def advice_caption(rows: pd.DataFrame) -> str:
    """The advice sweeps in words, every number from ``rows``: where they were measured, each
    method's best LR, the ratio, the batch sizes' and the target modules' gaps with their
    intervals, and plainly whether the data can tell the alternatives apart."""
    r = lr_ratio(rows)
    opt = lr_optima(rows).groupby("method")["log10_lr"].mean()
    spread = (f"95 % interval over seeds {10 ** r['low']:.3g}–{10 ** r['high']:.3g}×"
              if r["low"] == r["low"] else "one seed: no interval")
    if not r["bracketed"]:
        rule = ("With an optimum at a grid's edge the ratio is only a bound, and the claims "
                "below do not judge it.")
    else:
        rule = (f"So the claims below judge the ratio on {10 ** r['judged_low']:.3g}–"
                f"{10 ** r['judged_high']:.3g}× (log10 [{r['judged_low']:.2f}, "
                f"{r['judged_high']:.2f}]), that interval widened by the half step at each end"
                + (" (one seed: the ratio ± the half step)." if r["low"] != r["low"] else "."))
    lines = [f"Best learning rate (mean over {r['n']} seeds of the refined grid minimum): "
             + ", ".join(f"{m} {power_of_ten(10 ** v)}" for m, v in opt.items())
             + f"; LoRA / full = {10 ** r['mean']:.3g}× ({spread}); optima in the grid: "
               f"{r['edges']}. A refined optimum is no finer than its grid, whose half step "
               f"is ±{GRID_TOL:.2f} decades (a factor of {10 ** GRID_TOL:.2f}): an interval "
               "narrower than that shows that the seeds agree, not that the grid pins the "
               f"optimum down that finely. {rule}"]
    sizes = sorted(rows.loc[rows["sweep"] == "batch", "batch_size"].unique()) \
        if "batch_size" in rows.columns else []
    if len(sizes) > 1:
        m, lo, hi, n = paired_gap(rows, "batch", "batch_size", sizes[-1], sizes[0])
        lines.append(_gap_words(f"batch {sizes[-1]} minus batch {sizes[0]} (same tokens)",
                                m, lo, hi, n))
    part = rows[(rows["sweep"] == "targets") & (rows["metric"] == "trainable_params")]
    counts = part.groupby("targets")[["rank", "value"]].first() \
        if {"targets", "rank"} <= set(part.columns) else pd.DataFrame()
    if {"attention", "ffn"} <= set(counts.index):
        m, lo, hi, n = paired_gap(rows, "targets", "targets", "attention", "ffn")
        lines.append(_gap_words(
            f"attention-only (rank {counts.loc['attention', 'rank']:.0f}, "
            f"{counts.loc['attention', 'value']:,.0f} params) minus FFN-only (rank "
            f"{counts.loc['ffn', 'rank']:.0f}, {counts.loc['ffn', 'value']:,.0f} params)",
            m, lo, hi, n))
    # which machine's rows these are: this one's, or a recorded device's (named, dated)
    return f"*{where_label(rows)}:*\n\n" + "\n\n".join(f"* {line}" for line in lines)


def _gap_words(what: str, mean: float, low: float, high: float, n: int) -> str:
    head = f"Held-out loss, {what}: {mean:+.4f} nats (95 % interval {low:+.4f} to {high:+.4f}, " \
           f"{n} seeds)"
    if not (low == low and high == high):
        return head + " — one seed: no interval, no verdict."
    if low > 0 or high < 0:
        return head + " — the interval excludes zero: the difference is real at this budget."
    return head + " — the interval includes zero: these data cannot tell the two apart."


@takes_rows
def claims(rank_rows: pd.DataFrame, advice: pd.DataFrame, timing: pd.DataFrame
           ) -> pd.DataFrame:
    """The lecture's and the LoRA papers' claims against this notebook's rows: parameter counts
    (the lecture's "~16K" within the default tolerance, the PEFT print and the sweep's counts
    exactly: ``rel_tol=0``); the learning-rate ratio from bracketed optima, judged by its 95 %
    interval over seeds widened by half a grid step at each end, :data:`GRID_TOL` (one seed:
    the ratio ± that half step; a ratio built on an optimum at a grid's edge is only a bound:
    not measured); small batches and FFN targets as paired gaps
    over seeds, holding only when the interval excludes zero (one seed: n/a); the merge's
    latency. Each row says where its numbers were measured (this machine, or recorded where)."""
    nan = float("nan")
    pred = rank_rows[rank_rows["source"] == "predicted"]["value"].sum()
    counted = rank_rows[rank_rows["source"] != "predicted"]["value"].sum()
    r = lr_ratio(advice)
    where_adv = where_label(advice)
    lr_where = where_adv if r["bracketed"] else (
        f"{where_adv}; an optimum at a grid's edge ({r['edges']}): the ratio is only a bound")
    log_ratio, lr_low, lr_high = (r["mean"], r["judged_low"], r["judged_high"]) \
        if r["bracketed"] else (nan, nan, nan)
    judged = (f"; low and high: the seeds' 95 % interval widened by the grid's half step, "
              f"±{GRID_TOL:g} decades") if r["bracketed"] else ""
    sizes = sorted(advice.loc[advice["sweep"] == "batch", "batch_size"].unique()) \
        if "batch_size" in advice.columns else []
    batch = paired_gap(advice, "batch", "batch_size", sizes[-1], sizes[0]) \
        if len(sizes) > 1 else (nan, nan, nan, 0)
    target = paired_gap(advice, "targets", "targets", "attention", "ffn")

    big, small = (sizes[-1], sizes[0]) if sizes else ("?", "?")
    t = forward_times(timing)
    return claims_table([
        Claim("1024x1024 at rank 8 trains ~16K numbers", "lecture", 16_000, 8 * (1024 + 1024),
              "params", "formula r(d_in+d_out), 1024x1024 shape"),
        Claim("PEFT example: r=8 on q,v of a 7B model trains 4,194,304", "lecture (PEFT print)",
              4_194_304, lora_params(llama_config("7b"), 8, "qv"), "params",
              "formula, Llama-2-7B shape", rel_tol=0),
        Claim("trainable params = r(d_in+d_out) per matrix", "LoRA paper", pred, counted,
              "params (sum over the sweep)", where_label(rank_rows), rel_tol=0),
        Claim("LoRA's best LR is higher than full FT's (log10 of the ratio > 0)", "lecture",
              0.0, log_ratio, "decades", lr_where + judged, low=lr_low, high=lr_high,
              kind="at_least", needs_interval=True),
        Claim("LoRA's best LR ≥ 10× full FT's (log10 ratio ≥ 1)",
              "LoRA Without Regret (Schulman et al., 2025)", 1.0, log_ratio, "decades",
              lr_where + judged, low=lr_low, high=lr_high, kind="at_least",
              needs_interval=True),
        Claim(f"small batches beat large at equal tokens (loss of batch {big} minus batch "
              f"{small} > 0)", "lecture", 0.0, batch[0], "nats", where_adv, low=batch[1],
              high=batch[2], kind="at_least", needs_interval=True),
        Claim("adapting the FFN beats attention-only at equal trainable parameters "
              "(loss gap attention − FFN > 0)", "lecture", 0.0, target[0], "nats", where_adv,
              low=target[1], high=target[2], kind="at_least", needs_interval=True),
        Claim("merged adapter adds no latency (merged / base forward time)", "LoRA paper", 1.0,
              t.get("merged", nan) / t.get("base", nan), "ratio", where_label(timing),
              rel_tol=MERGE_TOL),
    ])


def _measured(rows: pd.DataFrame) -> pd.DataFrame:
    part = rows[rows["source"] != "predicted"] if "source" in rows.columns else rows
    if "status" in part.columns:
        part = part[part["status"].fillna("ok") == "ok"]
    return part


@takes_rows
def rank_cost_caption(rows: pd.DataFrame) -> str:
    """Step time and peak memory over the rank sweep in words, every number from ``rows``
    (one machine's: ``registry.main_rows``): the range over LoRA's ranks beside full
    fine-tuning's value (Markdown)."""
    part = _measured(rows)
    part = part[part["sweep"] == "rank"] if "sweep" in part.columns else part.iloc[0:0]
    pieces = []
    for metric, what in (("step_time", "step time"), ("peak_memory", "peak memory")):
        rows_m = part[(part["metric"] == metric) & part["value"].notna()]
        by = rows_m[rows_m["method"] == "lora"].groupby("rank")["value"].mean()
        if by.empty:
            continue
        unit = str(rows_m["unit"].dropna().iloc[0]) if rows_m["unit"].notna().any() else ""
        text = (f"{what} {by.min():,.1f}–{by.max():,.1f} {unit} over LoRA ranks "
                f"{int(by.index.min())}–{int(by.index.max())}")
        full = rows_m.loc[rows_m["method"] == "full", "value"]
        if len(full):
            text += f" (full fine-tuning {full.mean():,.1f} {unit})"
        pieces.append(text)
    if not pieces:
        return "*No step-time or memory rows of the rank sweep yet.*"
    return f"*{where_label(part)}:* " + "; ".join(pieces) + "."


@takes_rows
def merge_caption(rows: pd.DataFrame) -> str:
    """The merge experiment in words, every number from ``rows`` (one machine's): how far the
    merged logits are from the unmerged adapter's, how far the adapter moves the base's, and
    the forward time of base, unmerged and merged models (Markdown)."""
    part = _measured(rows)
    if part.empty or "metric" not in part.columns:
        return "*No lora_merge rows yet.*"
    diff = part[part["metric"] == "max_abs_diff"].groupby("variant")["value"].max()
    ms = forward_times(part)
    pieces = []
    if "merged vs adapter" in diff:
        pieces.append(f"merged and unmerged logits differ by at most "
                      f"{readable(diff['merged vs adapter'])}")
    if "adapter vs base" in diff:
        pieces.append(f"the adapter moves the base's logits by up to "
                      f"{diff['adapter vs base']:.3g}")
    if {"base", "unmerged", "merged"} <= set(ms.index):
        pieces.append(f"one forward pass takes {ms['base']:.2f} ms for the base, "
                      f"{ms['unmerged']:.2f} ms unmerged ({ms['unmerged'] / ms['base']:.2f}× the "
                      f"base) and {ms['merged']:.2f} ms merged "
                      f"({ms['merged'] / ms['base']:.2f}×)")
    if not pieces:
        return "*No lora_merge rows yet.*"
    text = f"*{where_label(part)}:* " + "; ".join(pieces) + "."
    if {"base", "merged"} <= set(ms.index) and abs(ms["merged"] / ms["base"] - 1) > MERGE_TOL:
        text += (f" **The merged model timed {ms['merged'] / ms['base']:.2f}× the base although "
                 "both run the same kernels on the same shapes** (`merge_and_unload` leaves "
                 "plain linear layers), so the merge itself cannot cost or save time.")
        if (part.get("timing", pd.Series(dtype=str)) == "interleaved").any():
            text += (" The three were timed in turn, so a drift between them does not explain "
                     "it either; these rows do not say what does.")
        else:
            text += (" These rows timed them one after the other, not in turn: the gap is "
                     "read as a drift between two timings of a forward pass this short "
                     "(rows recorded since the timing was interleaved can tell).")
    return text


MERGE_TOL = 0.15   # the merge claim's tolerance on merged / base forward time


def forward_times(rows: pd.DataFrame) -> pd.Series:
    """Mean forward ms per variant (base, unmerged, merged) of lora_merge ``rows``: only the
    rows timed in turn (``timing == 'interleaved'``) where there are any, since those timed
    one after the other beside them drift (the H200's 1.22x merged/base of a67f047e845c was
    0.98x in turn at c72a19100e6f)."""
    ms = rows[rows["metric"] == "forward_time"] if "metric" in rows.columns else rows.iloc[:0]
    in_turn = ms.get("timing", pd.Series("", index=ms.index)) == "interleaved"
    return (ms[in_turn] if in_turn.any() else ms).groupby("variant")["value"].mean()
