"""Notebook 03's verdicts in words, printed from the rows: what the main sweep shows against
the issue's targets (:func:`verdict_caption`), and what the rows and the literature say about
where its tokens per parameter sits against the lecture's 20 (:func:`ratio_caption`)."""

from __future__ import annotations

import math
from dataclasses import asdict

import pandas as pd

from workbook.claims import Claim, fixed, judge
from workbook.config import takes_rows
from workbook.scaling_laws.fits import (
    fit_exponents,
    isoflop_minima,
    ok_points,
    one_batch_per_budget,
    pool_of,
    seed_pools,
    seed_spread,
    text_note,
    text_tokens,
)
from workbook.scaling_laws.laws import (
    CHINCHILLA,
    CHINCHILLA_REPLICATION,
    LECTURE_CHINCHILLA,
    STUDIED_SIZES,
    TOKENS_PER_PARAM,
)
from workbook.scaling_laws.views import interval_text, sweep_claims, sweeps

# Muennighoff et al. (2023), "Scaling Data-Constrained Language Models": up to about 4 epochs,
# repeated data trained about as well as unique data; beyond, its value decayed.
REPEAT_EPOCHS = 4


def _count(n: float) -> str:
    """A model size in words: '70 million', '16 billion', '901 million'."""
    return f"{n / 1e9:.3g} billion" if n >= 1e9 else f"{n / 1e6:.3g} million"


def _judged(claim: Claim) -> str:
    """One claim's verdict in a sentence: the band it had to fall in, the measured value and
    interval, the verdict's word, and which edge of the band the interval crosses."""
    said = judge(claim)
    word = said.split(":")[0].split(" (")[0]
    unit = "" if claim.unit.startswith("exponent") else f" {claim.unit}"
    if math.isnan(claim.measured):
        return f"* **{claim.claim}**: not measured ({said})."
    if claim.kind == "at_most":
        return (f"* **{claim.claim}**: {claim.measured:.0f}{unit} against at most "
                f"{claim.predicted:.0f}{unit}: **{word}**.")
    if claim.factor:
        lo, hi = claim.predicted / claim.factor, claim.predicted * claim.factor
        band = f"{fixed(claim.predicted)} ×/÷ {fixed(claim.factor)}"
    else:
        lo, hi = claim.predicted - claim.abs_tol, claim.predicted + claim.abs_tol
        band = f"{fixed(claim.predicted)} ± {fixed(claim.abs_tol, 2)}"
    head = (f"* **{claim.claim}**: {fixed(claim.measured)}{unit}, against {band} "
            f"({fixed(lo)} to {fixed(hi)})")
    if math.isnan(claim.low) or math.isnan(claim.high):
        rest = said[len(word):].strip().removeprefix(":").strip()
        rest = rest[1:-1] if rest.startswith("(") and rest.endswith(")") else rest
        return f"{head}, no interval: **{word}**" + (f" ({rest})." if rest else ".")
    span = f"[{fixed(claim.low)}, {fixed(claim.high)}]"
    if word == "holds":
        why = f"the whole interval {span} lies inside the band"
    elif word == "off":
        side = f"below {fixed(lo)}" if claim.high < lo else f"above {fixed(hi)}"
        why = f"the whole interval {span} lies {side}"
    else:
        past = ([f"below {fixed(lo)}"] if claim.low < lo else []) + (
            [f"above {fixed(hi)}"] if claim.high > hi else [])
        why = (f"the interval {span} reaches {' and '.join(past)}: the sweep can neither "
               "confirm the claim to this tolerance nor rule it out")
    return f"{head}: **{word}**, {why}."


@takes_rows
def verdict_caption(rows: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The main sweep of ``rows`` (:func:`~workbook.scaling_laws.views.sweeps`: this machine's,
    else the newest recording) against the issue's targets, one line per claim, from its
    :func:`~workbook.scaling_laws.views.fit_summary`: a within 0.05 of 0.5, the tokens per
    parameter within 1.5× of 20 at the largest budget, Kaplan's a with non-embedding N, and
    the sweep's time against 10 minutes (full preset); then, where its machine ran the same
    plan under several seeds (:func:`~workbook.scaling_laws.fits.seed_pools`), the pool's."""
    found = sweeps(rows)
    if not found:
        return "No sweep with finished points yet."
    where, sweep = found[0]
    lines = [_judged(claim) for claim in sweep_claims(summary, where, sweep)]
    text = f"**The main sweep ({where})** against the targets:\n\n" + "\n".join(lines)
    pooled = pool_of(where, sweep, seed_pools(found))
    if pooled:
        label, pool = pooled
        gap = seed_spread(pool)
        noise = (f" At one point the seeds' losses differ by a median {gap['median']:.3f}"
                 f" nats over {gap['points']} points, at most {gap['max']:.3f} ($C$ = "
                 f"{fixed(gap['budget'])} FLOPs, N = {gap['n_params']:,.0f}): a wiggle both "
                 "seeds show is the curve's, one that a single seed shows is noise."
                 if gap else "")
        text += (f"\n\n**Its seeds pooled ({label})**, each parabola fitted to every "
                 f"seed's points.{noise}\n\n" + "\n".join(
                     _judged(c) for c in sweep_claims(summary, label, pool)))
    return text


def _text_bullet(found: list, summary: pd.DataFrame, points: pd.DataFrame,
                 minima: pd.DataFrame) -> str:
    """How often the largest budget's optimum, and its most data-heavy point, read the text;
    and what the other sweeps, on texts of other sizes, measured."""
    sweep = found[0][1]
    size = text_tokens(sweep)
    if math.isnan(size):
        return "* **Which text:** these rows do not say how large the training text was."
    top = minima.loc[minima["budget"].idxmax()]
    heaviest = points.loc[points["budget"] == top["budget"], "n_tokens"].max() / size
    text = text_note(sweep).removeprefix(", ") or f"{size / 1e6:.1f}M training tokens"
    out = (f"* **Which text:** {text}; the largest budget's optimum reads them "
           f"{top['d_opt'] / size:.1f} times, its most data-heavy point {heaviest:.1f} times. ")
    if heaviest <= REPEAT_EPOCHS:
        out += (f"Up to about {REPEAT_EPOCHS} epochs repeated tokens are worth nearly as much "
                "as new ones (Muennighoff et al. 2023): repetition is not what moves this "
                "optimum.")
    else:
        out += (f"Beyond about {REPEAT_EPOCHS} epochs repeated tokens are worth less than new "
                "ones (Muennighoff et al. 2023), and Chinchilla's models saw theirs about once: "
                "a penalty on the data-heavy points, which would move the optimum toward "
                "larger models.")
    total = summary[summary.get("N counted as", pd.Series(dtype=str)) == "total N"] \
        if len(summary) else summary
    others = []
    for where, other in found[1:]:
        fit = total[total["sweep"] == where] if "sweep" in total.columns else total.iloc[0:0]
        other_size = text_tokens(other)
        if len(fit) and "ratio" in fit.columns and pd.notna(fit["ratio"].iloc[0]) \
                and not math.isnan(other_size) and abs(other_size / size - 1) > 0.01:
            others.append(f"{fit['ratio'].iloc[0]:.1f} tokens per parameter on a "
                          f"{other_size / 1e6:.1f}M-token text ({where})")
    if others:
        out += " Measured on other texts: " + "; ".join(others) + "."
    return out


def _inside_only(points: pd.DataFrame, minima: pd.DataFrame) -> str:
    """How far a sweep's extrapolated budgets move a: the exponents fitted again to the
    budgets whose minimum lies inside their sizes alone ('' where fewer than 2 do, or none
    lies outside)."""
    inside = minima.loc[minima["bracketed"].astype(bool), "budget"]
    if len(inside) < 2 or len(inside) == len(minima):
        return ""
    kept = points[points["budget"].isin(inside)]
    said = []
    for col, count in (("n_params", "every parameter"),
                       ("n_params_non_embedding", "non-embedding parameters")):
        fit = pd.Series(asdict(fit_exponents(kept, n_boot=500, n_column=col)))
        said.append(f"{fit['a']:.2f}{interval_text(fit, 'a', '.2f')} counting {count}")
    return (f". Fitted to the {len(inside)} budgets whose minimum lies inside their sizes "
            f"alone, $a$ = {' and '.join(said)}: how far the extrapolated budgets moved it (a "
            "check, not a second result to pick from)")


@takes_rows
def ratio_caption(rows: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Why the main sweep's optimum sits where it does against the lecture's 20 tokens per
    parameter, in facts the rows and the literature give: the ratio at every budget, its
    drift over the sweep (C^(b−a)), the same minima counted without embeddings, the sweep's
    model sizes against those the published studies trained, and what the published laws
    themselves say at this budget when extrapolated down to it."""
    found = sweeps(rows)
    points = ok_points(found[0][1]) if found else pd.DataFrame()
    minima = isoflop_minima(points) if len(points) else pd.DataFrame()
    where = found[0][0] if found else ""
    fits = summary[summary["sweep"] == where] if "sweep" in summary.columns else summary
    fits = fits[fits["a"].notna()] if "a" in fits.columns else fits.iloc[0:0]
    if len(minima) < 2 or len(fits) < 2:
        return "Too few budgets with a minimum to say where the optimum sits."
    total, ne = (fits[fits["N counted as"] == c].iloc[0]
                 for c in ("total N", "non-embedding N"))
    outside = int((~minima["bracketed"].astype(bool)).sum())
    if outside or not total["n_boot"]:
        why = ([f"{outside} of {len(minima)} budgets' minima lie outside the sizes trained, "
                "so their parabolas extrapolate and the exponents lean on them"]
               if outside else []) + (
            [] if total["n_boot"] else ["3 sizes per budget give no interval to judge it by"])
        top_inside = bool(minima.loc[minima["budget"].idxmax(), "bracketed"])
        return (f"The main sweep ({where}) cannot say where its optimum sits: "
                + "; ".join(why) + _inside_only(points, minima) + (
                    ". Its largest budget's minimum lies inside its sizes: the tokens per "
                    "parameter there is measured, but not read budget by budget here.\n"
                    if top_inside and total["n_boot"] else
                    ". Its tokens per parameter is not a measurement.\n")
                + _text_bullet(found, summary, points, minima) + _batch_bullet(found))
    ratios = minima["d_opt"] / minima["n_opt"]
    below = int((ratios < TOKENS_PER_PARAM).sum())
    span = minima["budget"].max() / minima["budget"].min()
    drift = span ** (total["b"] - total["a"])
    top = float(total["ratio_budget"])
    law_ratio = {}
    for law in (CHINCHILLA, CHINCHILLA_REPLICATION):
        n_opt, d_opt = law.optimal(top)
        law_ratio[law.name] = float(d_opt / n_opt)
    sizes = (points["n_params"].min(), points["n_params"].max())
    studied = ", ".join(f"{name} {_count(lo)} to {_count(hi)}"
                        for name, (lo, hi) in STUDIED_SIZES.items())
    smaller = sizes[1] < min(lo for lo, _ in STUDIED_SIZES.values())
    return "\n".join([
        f"* **Budget by budget:** {below} of {len(minima)} budgets put the "
        f"optimum below {TOKENS_PER_PARAM:.0f} tokens per parameter (from {ratios.min():.1f} "
        f"to {ratios.max():.1f}). With $b - a$ = {total['b'] - total['a']:+.2f}, the ratio "
        f"($\\propto C^{{b-a}}$) changes {drift:.2f}× over the sweep's {span:.0f}× of compute"
        + (": what separates it from 20 is a level, not a drift with the budget."
           if below == len(minima) and 1 / 1.5 <= drift <= 1.5 else "."),
        _text_bullet(found, summary, points, minima) + _batch_bullet(found),
        f"* **Which N:** the same minima counted without embeddings give "
        f"{ne['ratio']:.1f} tokens per parameter at the largest budget, against "
        f"{total['ratio']:.1f} with every parameter: at this scale the count of $N$ alone "
        "moves the answer, as Pearce & Song (2024) show it moves $a$. The lecture's 20 "
        "counts every parameter (Hoffmann et al. 2022), as the claim above does.",
        f"* **Which scale:** the sweep's models have {sizes[0]:,.0f} to {sizes[1]:,.0f} "
        f"parameters; {studied}." + (
            " Even the largest model here is smaller than the smallest of either study: the "
            "20 is carried down from far larger models, not measured at this scale."
            if smaller else ""),
        f"* **What the published laws say down here:** extrapolated to $C$ = {fixed(top)} "
        "FLOPs, " + " and ".join(f"{name} puts the optimum at {r:.0f}"
                                 for name, r in law_ratio.items())
        + " tokens per parameter: they disagree with each other by "
        f"{max(law_ratio.values()) / min(law_ratio.values()):.1f}× at this budget, so neither "
        "is a prediction to hold the sweep to."])


def _batch_bullet(found: list[tuple[str, pd.DataFrame]]) -> str:
    """'* Which batch: ...' where ``scaling_one_batch`` has rows (the main sweep's device's,
    else another's): the largest budget's tokens per parameter with every size at one batch,
    beside the same budget, sizes and seed at a batch per point (:func:`~workbook.scaling_laws.
    batch_views.one_batch_table`), said as what the main sweep's own rule (``batch_rule``)
    gained or would gain; '' where there are no such rows."""
    from workbook import registry
    from workbook.scaling_laws.batch_views import one_batch_table

    if not found:
        return ""
    main = found[0][1]
    one = registry.shown("scaling_one_batch")
    if "device" not in one.columns:
        return ""
    mine_device = one[one["device"].isin(set(main["device"].dropna()))]
    one = mine_device if len(mine_device) else one
    table = one_batch_table(one, pd.concat([g for _, g in found], ignore_index=True))
    if table.empty:
        return ""
    seeds = table["seeds"].iloc[-1]   # the pooled row where there is one
    pick = table[table["seeds"] == seeds]
    mine = pick[pick["batches"].str.startswith("one batch")].iloc[0]
    theirs = pick[~pick["batches"].str.startswith("one batch")]
    where = mine["where"] + (f", seeds {seeds}" if seeds.endswith("pooled") else "")
    at_one = (f"{mine['tokens/param']:.1f} tokens per parameter with every size at "
              f"{mine['batches']}")
    if one_batch_per_budget(main):
        per_point = (f" the optimum of the {mine['budget']:.3g}-FLOP budget sat at "
                     f"{theirs['tokens/param'].iloc[0]:.1f} at {theirs['batches'].iloc[0]} "
                     f"batches, against {at_one}" if len(theirs) else
                     f" the one-batch run of the {mine['budget']:.3g}-FLOP budget put its "
                     f"optimum at {at_one}")
        return ("\n* **Which batch:** this sweep trains every size of a budget at one batch "
                "(its largest size's), the smaller sizes for more steps. With a batch per "
                "point instead (every point about the same steps, so the token-richer sizes "
                f"at larger batches),{per_point} ({where}; the section \"More data, or a "
                "larger batch?\" below).")
    beside = (f", against {theirs['tokens/param'].iloc[0]:.1f} at {theirs['batches'].iloc[0]}"
              " batches on the same sizes and seeds" if len(theirs) else "")
    return (f"\n* **Which batch:** every point trains for about the same number of steps, so "
            "a budget's token-richer sizes train at larger batches. With every size at "
            f"{mine['batches']}, the {mine['budget']:.3g}-FLOP budget's optimum sits at "
            f"{mine['tokens/param']:.1f} tokens per parameter{beside} ({where}; the section "
            "\"More data, or a larger batch?\" below).")


@takes_rows
def lecture_chinchilla_caption(table: pd.DataFrame) -> str:
    """What :func:`.laws.lecture_chinchilla_table` shows, in numbers read from it: how close
    6·N·D comes to the lecture's FLOPs, its tokens per parameter, and how far each published
    law's optimum at the same FLOPs lies from the lecture's N."""
    if len(table) != len(LECTURE_CHINCHILLA) or "6ND / compute" not in table.columns:
        return "*No table: pass `lecture_chinchilla_table()`.*"
    gap = (table["6ND / compute"] - 1).abs().max()
    ratio = table["tokens_per_param"]
    text = (f"6·N·D from the lecture's own N and D gives its FLOPs within {gap:.1%} in every "
            f"row (its D and FLOPs are rounded to two digits); its tokens per parameter run from "
            f"{ratio.min():.1f} to {ratio.max():.1f}.")
    for law in (CHINCHILLA, CHINCHILLA_REPLICATION):
        n = table[f"N_opt / N ({law.name})"]
        tpp = table[f"tokens/param ({law.name})"]
        text += (f" At the same FLOPs, {law.name}'s optimum is {n.min():.2f}–{n.max():.2f}× "
                 f"the lecture's N, at {tpp.min():.0f}–{tpp.max():.0f} tokens per parameter.")
    return text
