"""Views of the batch experiments (:mod:`workbook.scaling_laws.batch_tokens`): what a larger
batch costs at equal tokens beside what more tokens buy at one batch, and where the largest
budget's IsoFLOP minimum lies when every size trains at one batch, beside the sweep's own.

Every number is printed from the rows; the verdict on the tokens per parameter is a
:class:`~workbook.claims.Claim`'s, with the same tolerance as the sweep's claim (20 ×/÷ 1.5)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from workbook.claims import Claim, claims_table
from workbook.config import takes_rows
from workbook.registry import machine_blocks
from workbook.scaling_laws.batch_tokens import batch_token_effects, runs_by_seed
from workbook.scaling_laws.fits import budget_ratio, ok_points, one_batch_per_budget
from workbook.scaling_laws.views import interval_text, sweeps


def _tokens(n: float) -> str:
    """3.5M tokens, 15.4k tokens: a count readable at either preset's scale."""
    return f"{n / 1e6:.1f}M tokens" if n >= 1e6 else f"{n / 1e3:.1f}k tokens"


@takes_rows
def effects_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`~workbook.scaling_laws.batch_tokens.batch_token_effects` per device, its seeds
    gathered: each effect's mean over the seeds, the lowest and the highest."""
    out = []
    for where, group in machine_blocks(rows):
        effects = batch_token_effects(group)
        if effects.empty:
            continue
        for (_, at, changed), g in effects.groupby(["held fixed", "at", "changed"],
                                                       sort=False):
            lo, hi = g["from"].iloc[0], g["to"].iloc[0]
            out.append({
                "where": where,
                "held fixed": f"batch {at:g}" if changed == "tokens" else _tokens(at),
                "changed": (f"{_tokens(lo)} → {_tokens(hi)}" if changed == "tokens"
                            else f"batch {lo:g} → {hi:g}"),
                "loss change (nats)": g["loss change"].mean(),
                "lowest": g["loss change"].min(), "highest": g["loss change"].max(),
                "seeds": ", ".join(str(int(s)) for s in sorted(g["seed"].unique()))})
    return pd.DataFrame(out, columns=["where", "held fixed", "changed", "loss change (nats)",
                                      "lowest", "highest", "seeds"])


def _span(values: pd.Series) -> str:
    if len(values) < 2:
        return f"{values.iloc[0]:+.2f}"
    return f"{values.min():+.2f} to {values.max():+.2f}"


@takes_rows
def effects_caption(rows: pd.DataFrame) -> str:
    """Each device's effects in words (this machine's first): the data's and the batch's over
    its seeds, and whether every seed and token count saw the larger batch cost loss at equal
    tokens."""
    found = machine_blocks(rows)
    if not found:
        return "No rows yet: run the experiment (the button above) or record it on a GPU."
    return "\n\n".join(_effects_text(where, group) for where, group in found)


def _effects_text(where: str, group: pd.DataFrame) -> str:
    effects = batch_token_effects(group)
    data = effects[effects["changed"] == "tokens"]
    batch = effects[effects["changed"] != "tokens"]
    if data.empty or batch.empty:
        return f"**{where}:** too few runs to hold either effect fixed."
    seeds = sorted(effects["seed"].unique())
    n = group["n_params"].iloc[0]
    lines = [f"**{where}** ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}; one model of "
             f"{n:,.0f} parameters):", ""]
    for at, g in data.groupby("at"):
        lines.append(f"* more data at batch {at:g} ({_tokens(g['from'].iloc[0])} → "
                     f"{_tokens(g['to'].iloc[0])}): the held-out loss changed by "
                     f"{_span(g['loss change'])} nats.")
    for at, g in batch.groupby("at"):
        lines.append(f"* a larger batch at {_tokens(at)} (batch {g['from'].iloc[0]:g} → "
                     f"{g['to'].iloc[0]:g}, fewer steps): {_span(g['loss change'])} nats.")
    if (batch["loss change"] > 0).all():
        every = "every seed" if len(seeds) > 1 else "this seed"
        lines += ["", f"In {every} and at every token count the larger batch cost loss at equal "
                  "tokens. In the sweep every point trains about the same number of steps, so "
                  "at one budget the smaller sizes, which read more tokens, train at larger "
                  "batches and pay such a cost where the larger sizes do not: that pushes each "
                  "budget's minimum toward the larger sizes, to fewer tokens per parameter. The "
                  "next experiment measures how far, at the largest budget."]
    else:
        lines += ["", "The batch's effect at equal tokens changes sign between seeds or token "
                  "counts: on these rows it is no reason for the sweep's minima to move."]
    return "\n".join(lines)


def _matching_sweep(one: pd.DataFrame, sweep_rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The rows, at ``one``'s budget, of the first of ``sweep_rows``' sweeps that ran on
    ``one``'s device (this machine or a recorded one, as ``one``) with this seed and trained
    ``one``'s sizes there, each at its own batch (another plan's points, or a sweep already at
    one batch per budget, ``batch_rule`` "largest", would answer another question)."""
    loss = one[one["metric"] == "val_loss"]
    budget, sizes = loss["budget"].iloc[0], set(loss["n_params"].round())
    here = (one["source"] == "measured").any()
    for where, sweep in sweeps(sweep_rows):
        if where.startswith("this machine") != here:
            continue
        if set(sweep["device"].dropna()) != set(one["device"].dropna()):
            continue
        if "seed" in sweep.columns and not (sweep["seed"] == seed).all():
            continue
        if one_batch_per_budget(sweep):
            continue
        at = sweep[np.isclose(sweep["budget"].astype(float), budget)]
        trained = at[(at["metric"] == "val_loss") & (at["status"] == "ok")]
        if set(trained["n_params"].round()) == sizes:
            return at
    return sweep_rows.iloc[0:0]


@takes_rows
def one_batch_table(one_rows: pd.DataFrame, sweep_rows: pd.DataFrame) -> pd.DataFrame:
    """Per device of ``one_rows`` (:func:`~workbook.scaling_laws.batch_tokens.run_one_batch`,
    each seed's newest run): the budget's minimum at one batch, per seed and with the seeds
    pooled, beside the same budget, sizes and seeds in that device's sweeps of
    ``sweep_rows`` (each point at its own batch): N_opt, D_opt, the tokens per parameter with
    its bootstrap interval (:func:`~workbook.scaling_laws.fits.budget_ratio`)."""
    out = []
    for where, group in machine_blocks(one_rows):
        pairs = []
        for seed, g in runs_by_seed(group):
            loss = g[g["metric"] == "val_loss"]
            theirs = _matching_sweep(g, sweep_rows, seed)
            pairs.append((str(seed), ok_points(g), ok_points(theirs),
                          f"{loss['batch_size'].min():g}", _batches(theirs)))
        if len(pairs) > 1:
            pairs.append((", ".join(p[0] for p in pairs) + " pooled",
                          pd.concat([p[1] for p in pairs]), pd.concat([p[2] for p in pairs]),
                          pairs[0][3], pairs[0][4]))
        for seeds, one, sweep, batch, theirs in pairs:
            for batches, points in ((f"one batch ({batch})", one),
                                    (f"the sweep's {theirs}", sweep)):
                fit = budget_ratio(points)
                if fit:
                    out.append({"where": where, "seeds": seeds, "batches": batches,
                                "budget": fit["budget"], "N_opt": fit["n_opt"],
                                "D_opt": fit["d_opt"], "tokens/param": fit["ratio"],
                                "low": fit["low"], "high": fit["high"],
                                "loss at minimum": fit["loss_min"],
                                "bracketed": fit["bracketed"], "points": fit["points"]})
    return pd.DataFrame(out, columns=["where", "seeds", "batches", "budget", "N_opt", "D_opt",
                                      "tokens/param", "low", "high", "loss at minimum",
                                      "bracketed", "points"])


def _batches(rows: pd.DataFrame) -> str:
    """'(39–105)': the batches a sweep's rows gave their trained points."""
    loss = rows[rows["metric"] == "val_loss"] if len(rows) else rows
    if loss.empty or "batch_size" not in loss.columns:
        return ""
    low, high = loss["batch_size"].min(), loss["batch_size"].max()
    return f"({low:g})" if low == high else f"({low:g}–{high:g})"


@takes_rows
def one_batch_claims(table: pd.DataFrame) -> pd.DataFrame:
    """The tokens-per-parameter claim (20 ×/÷ 1.5, as the sweep's) for each row of
    :func:`one_batch_table`: at one batch and at the sweep's batches, side by side."""
    out = []
    for _, row in table.iterrows():
        # a minimum outside the sizes trained is the parabola's extrapolation: not judged
        inside = bool(row["bracketed"])
        out.append(Claim(f"tokens ≈ 20 × params at {row['budget']:.3g} FLOPs, {row['batches']} "
                         "batches", "Chinchilla; lecture", 20.0,
                         row["tokens/param"] if inside else math.nan, "tokens/param",
                         where=row["where"] + _pooled(row["seeds"]) + (
                             "" if inside else "; its minimum lies outside the sizes trained "
                             "(an extrapolation, not judged)"),
                         factor=1.5, low=row["low"] if inside else math.nan,
                         high=row["high"] if inside else math.nan))
    return claims_table(out)


def _params(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n:,.0f}"


def _outside(row: pd.Series) -> str:
    return "" if row["bracketed"] else " (outside the sizes trained: the parabola extrapolates)"


def _pooled(seeds: str) -> str:
    """', seeds 0, 1 pooled' for a pooled row (a device's label names its seeds already)."""
    return f", seeds {seeds}" if seeds.endswith("pooled") else ""


def _interval(row: pd.Series) -> str:
    """' [low, high]' of a table row's tokens per parameter (:func:`~workbook.scaling_laws.
    views.interval_text`, which says so where the interval does not hold the estimate)."""
    return interval_text(pd.Series({"ratio": row["tokens/param"], "ratio_low": row["low"],
                                    "ratio_high": row["high"]}), "ratio", ".1f")


@takes_rows
def one_batch_caption(one_rows: pd.DataFrame, sweep_rows: pd.DataFrame) -> str:
    """Each device's :func:`one_batch_table` in words (this machine's first): the tokens per
    parameter at one batch and at the sweep's batches (seeds pooled where there are several),
    how far the minimum moved; per seed, the size both recipes train alike (the same batch and
    steps: the same loss is expected) and the training time each recipe spent on the budget."""
    table = one_batch_table(one_rows, sweep_rows)
    if table.empty:
        return ("No rows yet: run the experiment (the button above) or record it on a GPU "
                "(`bash scripts/gpu_scaling.sh onebatch`).")
    groups = dict(machine_blocks(one_rows))
    return "\n\n".join(_one_batch_text(mine, groups[where], sweep_rows)
                        for where, mine in table.groupby("where", sort=False))


def _one_batch_text(mine: pd.DataFrame, group: pd.DataFrame, sweep_rows: pd.DataFrame) -> str:
    where = mine["where"].iloc[0]
    pooled = mine[mine["seeds"].str.endswith("pooled")]
    pick = pooled if len(pooled) else mine[mine["seeds"] == mine["seeds"].iloc[0]]
    one = pick[pick["batches"].str.startswith("one batch")].iloc[0]
    head = (f"**{where}**{_pooled(one['seeds'])}, {one['budget']:.3g} FLOPs: with every size at "
            f"{one['batches']}, the minimum lies at N_opt = {_params(one['N_opt'])}, "
            f"D_opt = {_tokens(one['D_opt'])}: **{one['tokens/param']:.1f} tokens per "
            f"parameter**{_interval(one)}{_outside(one)}.")
    theirs = pick[~pick["batches"].str.startswith("one batch")]
    if len(theirs):
        s = theirs.iloc[0]
        head += (f" The same sizes and seeds at {s['batches']} batches: "
                 f"{s['tokens/param']:.1f}{_interval(s)}{_outside(s)}, N_opt = "
                 f"{_params(s['N_opt'])}.")
        head += (f" One batch moved the ratio ×{one['tokens/param'] / s['tokens/param']:.2f} "
                 f"and the lowest loss by {one['loss at minimum'] - s['loss at minimum']:+.3f} "
                 "nats." if one["bracketed"] and s["bracketed"] else
                 " A minimum outside its sizes is an extrapolation: the two are not compared.")
    lines = []
    for seeds, g in mine.groupby("seeds", sort=False):
        if seeds != one["seeds"]:
            lines.append(f"* seed {seeds}: " + "; ".join(
                f"{r['batches']}: {r['tokens/param']:.1f}{_interval(r)}"
                for _, r in g.iterrows()))
    for seed, g in runs_by_seed(group):
        lines += _alike(seed, g, _matching_sweep(g, sweep_rows, seed))
    return head + ("\n\n" + "\n".join(lines) if lines else "")


def _alike(seed: int, one: pd.DataFrame, sweep: pd.DataFrame) -> list[str]:
    """One seed's check and cost: the loss of each size that both recipes train at the same
    batch for the same steps (the same loss is expected, to the last digit on a deterministic
    GPU run), and each recipe's training seconds at this budget."""
    if sweep.empty:
        return [f"* seed {seed}: no sweep of this seed trained these sizes at this budget."]
    keys = ["n_params", "batch_size", "steps"]
    a = one[one["metric"] == "val_loss"].set_index(keys)["value"]
    b = sweep[(sweep["metric"] == "val_loss") & (sweep["status"] == "ok")].set_index(keys)[
        "value"]
    both = a.index.intersection(b.index)
    out = []
    for n, batch, steps in both:
        out.append(f"* seed {seed}: N = {n:,.0f} trains at batch {batch:g} for {steps:g} steps "
                   f"in both: loss {a[(n, batch, steps)]:.4f} here, "
                   f"{b[(n, batch, steps)]:.4f} in the sweep.")
    t_one = one.loc[one["metric"] == "train_s", "value"].sum()
    t_sweep = sweep.loc[sweep["metric"] == "train_s", "value"].sum()
    out.append(f"* seed {seed}: training time at this budget {t_one:.0f} s at one batch, "
               f"{t_sweep:.0f} s at the sweep's batches.")
    return out
