"""Scaling laws' views: the published laws as a table, the IsoFLOP and frontier figures, the
fit summary and the claims table (the compute-allocation and over-training explorers:
:mod:`workbook.scaling_laws.explorers`)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pandas as pd

from workbook import results
from workbook.claims import Claim, claims_table, fixed, readable
from workbook.config import WorkbookError, takes_rows
from workbook.scaling_laws.fits import (
    fit_exponents,
    fit_parametric,
    fit_power_law,
    isoflop_minima,
    ok_points,
    one_batch_per_budget,
    resumed_note,
    seed_pools,
    text_note,
    wall_seconds,
    wiggle,
)
from workbook.scaling_laws.laws import (
    CHINCHILLA,
    CHINCHILLA_REPLICATION,
    ParametricLaw,
    placement,
    rule_of_thumb_optimal,
)
from workbook.scaling_laws.timing import plan_judged


def _recipe(group: pd.DataFrame) -> str:
    """A sweep's recipe: the per-size one (rows carry ``beta2``), with one batch per budget
    where its ``batch_rule`` is "largest", or the older fixed batch."""
    if "beta2" in group.columns and group["beta2"].notna().any():
        return "per-size recipe" + (", one batch per budget (its largest size's)"
                                    if one_batch_per_budget(group) else "")
    return "one batch per budget, untuned (older recipe)"


@takes_rows
def sweeps(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The sweeps in ``rows`` (:func:`workbook.registry.with_references`), the main one first:
    the rows measured on this machine if any ran here, else the newest recorded sweep of the
    current recipe. A sweep is the rows of one run (device, preset, commit, seed); each comes
    with its label: where it ran (device, date, seed), its preset, recipe, plan and text."""
    if rows.empty:
        return []
    frame = rows.copy()
    frame["_where"] = frame["source"].where(frame["source"] == "measured", "recorded")
    keys = ["_where", "device", "preset", "commit", "seed"]
    for col in (*keys, "recorded_at"):
        if col not in frame.columns:
            frame[col] = ""
    frame[keys] = frame[keys].fillna("")
    groups = [g for _, g in frame.groupby(keys, sort=False) if (g["metric"] == "val_loss").any()]

    def rank(g: pd.DataFrame) -> tuple:
        when = pd.to_datetime(g["recorded_at"], errors="coerce", utc=True).max()
        return (g["_where"].iloc[0] != "measured", not _recipe(g).startswith("per-size"),
                g["preset"].iloc[0] != "full", -when.timestamp() if pd.notna(when) else 0.0)

    out, ordered = [], [g.drop(columns="_where") for g in sorted(groups, key=rank)]
    wheres = [results.where_label(g) for g in ordered]
    for where, g in zip(wheres, ordered, strict=True):
        if wheres.count(where) > 1:  # one machine, date and seed: the commit tells them apart
            where += f", commit {g['commit'].iloc[0]}"
        preset = g["preset"].iloc[0] or "?"
        plan = (f", {plan_judged(g, sum(_points_cut(g)))}" if preset == "full" else "")
        plan += text_note(g)
        out.append((f"{where}, {preset} preset, {_recipe(g)}{plan}", g))
    return out


@takes_rows
def fit_summary(rows: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The headline numbers of every sweep in ``rows`` (the main one first, :func:`sweeps`):
    a and b, and D_opt/N_opt at the largest budget, with their bootstrap intervals (10-90 %),
    once with total N (Chinchilla's convention) and once with non-embedding N (Kaplan's).
    A sweep too small to fit is a row that says why."""
    out, found = [], sweeps(rows)
    for where, sweep in found + seed_pools(found):  # each sweep, then each pool of its seeds
        points = ok_points(sweep)
        for label, col in (("total N", "n_params"),
                           ("non-embedding N", "n_params_non_embedding")):
            row = {"sweep": where, "N counted as": label, "n_points": len(points)}
            try:
                fit = fit_exponents(points, n_boot=n_boot, seed=seed, n_column=col,
                                    progress=f"bootstrap, {label}")
            except WorkbookError as exc:
                out.append({**row, "error": str(exc)})
                continue
            out.append({**row, **asdict(fit)})
    return pd.DataFrame(out)


@takes_rows
def sweep_claims(summary: pd.DataFrame, where: str, sweep: pd.DataFrame) -> list[Claim]:
    """The claims one sweep (``where``, ``sweep``: an item of :func:`sweeps`) is judged by,
    against its :func:`fit_summary`: a, the tokens per parameter, Kaplan's a, and (full
    preset) its time."""
    nan = float("nan")
    mine = summary[summary["sweep"] == where] if "sweep" in summary.columns else summary

    def fit(count: str) -> pd.Series:
        picked = mine[mine["N counted as"] == count] if len(mine) else mine
        return picked.iloc[0] if len(picked) else pd.Series(dtype=float)

    total, non_emb = fit("total N"), fit("non-embedding N")
    label = where  # device, date, preset, recipe and plan (:func:`sweeps`)
    exponent = "exponent (N_opt ∝ C^a)"  # a has no unit: the column says what it is
    seconds, (trained, cut) = wall_seconds(sweep), _points_cut(sweep)
    time_label = label + (f"; {resumed_note(sweep)}" if resumed_note(sweep) else "")
    if cut and trained:  # the time to train every planned point, extrapolated from the rate
        time_label += f"; {cut} of {trained + cut} points cut by the time limit: " + (
            f"{seconds:.0f} s × {trained + cut}/{trained}, extrapolated"
            if np.isfinite(seconds) else "no wall time recorded to extrapolate")
        seconds *= (trained + cut) / trained
    return [
        Claim("compute-optimal N ∝ C^a, a ≈ 0.5 (total N)", "Chinchilla Table 2; Porian et "
              "al. 2024", 0.5, total.get("a", nan), exponent, where=label, abs_tol=0.05,
              low=total.get("a_low", nan), high=total.get("a_high", nan)),
        Claim("tokens ≈ 20 × params at the largest budget", "Chinchilla; lecture", 20.0,
              total.get("ratio", nan), "tokens/param", where=label, factor=1.5,
              low=total.get("ratio_low", nan), high=total.get("ratio_high", nan)),
        Claim("non-embedding N gives Kaplan's a ≈ 0.73", "Kaplan et al. 2020; Pearce & "
              "Song 2024", 0.73, non_emb.get("a", nan), exponent, where=label, abs_tol=0.1,
              low=non_emb.get("a_low", nan), high=non_emb.get("a_high", nan)),
    ] + ([Claim("IsoFLOP sweep (every planned point) ≤ 600 s on one GPU",
                "issue 21 target", 600.0, seconds, "s", time_label, kind="at_most")]
         if sweep["preset"].iloc[0] == "full" and sweep.get("seed", sweep["preset"]).nunique() < 2
         else [])   # the budget is the full preset's; a pool of seeds has no one wall time


def _points_cut(sweep: pd.DataFrame) -> tuple[int, int]:
    """(points trained, points its time limit cut) of one sweep; a recorded sweep's skipped
    rows are counted in the ledger, by its device and recording time (references are ok rows)."""
    loss = sweep[sweep["metric"] == "val_loss"]
    if (sweep["source"] == "recorded").any() and "recorded_at" in sweep.columns:
        ledger = results.load("scaling_isoflop")
        found = ledger[(ledger["metric"] == "val_loss")
                       & ledger["recorded_at"].isin(sweep["recorded_at"].dropna().unique())
                       & ledger["device"].isin(sweep["device"].dropna().unique())]
        loss = found if len(found) else loss   # rows not (or no longer) in this ledger
    errors = loss["error"] if "error" in loss.columns else pd.Series("", index=loss.index)
    cut = int(errors.astype(str).str.contains("time limit").sum())
    return int((loss["status"] == "ok").sum()), cut


@takes_rows
def claims(rows: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """The lecture's scaling claims, for every sweep in ``rows`` (the main one first, then the
    references recorded elsewhere) against its :func:`fit_summary`: each exponent and the
    tokens per parameter judged by its bootstrap interval against a stated tolerance (a point
    estimate where a sweep has no interval), the sweep's time as a budget."""
    gpt3 = placement("20 tokens/param").set_index("model").loc["GPT-3 175B"]
    out = [Claim("GPT-3 saw ~1.7 tokens per parameter", "lecture", 1.7,
                 float(gpt3["tokens_per_param"]), "tokens/param", where="published sizes")]
    found = sweeps(rows)
    for where, sweep in found + seed_pools(found):
        out += sweep_claims(summary, where, sweep)
    return claims_table(out)


def interval_text(fit: pd.Series, name: str, fmt: str) -> str:
    """' [low, high]' of a fit's ``name`` (a :func:`fit_summary` row, or an ExponentFit as a
    Series); it says so where the interval does not hold the estimate; '' without one."""
    low, high = fit.get(f"{name}_low", np.nan), fit.get(f"{name}_high", np.nan)
    if pd.isna(low) or pd.isna(high):
        return ""
    outside = not low <= fit.get(name, low) <= high  # resampling moves the fit far from it
    return f" [{low:{fmt}}, {high:{fmt}}{': the estimate lies outside it' * outside}]"


def _budget_notes(points: pd.DataFrame) -> str:
    """A sweep's budgets whose minimum is not bracketed by its sizes (the parabola's N_opt
    extrapolated) and those whose curve is not convex, in words; '' where there are none."""
    minima = isoflop_minima(points)
    if minima.empty:
        return ""
    notes = []
    outside = minima[~minima["bracketed"].astype(bool)]
    if len(outside):
        each = []
        for _, m in outside.iterrows():
            sizes = points.loc[points["budget"] == m["budget"], "n_params"]
            each.append(f"$C$ = {fixed(m['budget'])} FLOPs, N_opt {m['n_opt']:,.0f} outside "
                        f"the sizes trained ({sizes.min():,.0f} to {sizes.max():,.0f})")
        notes.append(f"{len(outside)} of {len(minima)} budgets' minima are not bracketed "
                     f"({'; '.join(each)}): their parabolas extrapolate, and they enter "
                     "$a$ and the tokens per parameter all the same")
    bent = [(b, wiggle(g["n_params"].to_numpy(), g["loss"].to_numpy()))
            for b, g in points.groupby("budget") if len(g) >= 3]
    bent = [(b, w) for b, w in bent if w > 0]
    if bent:
        each = ", ".join(f"$C$ = {fixed(b)} FLOPs (a point {w:.2f} nats off the line "
                         "through its neighbours)" for b, w in bent)
        notes.append(f"{len(bent)} of {len(minima)} budgets' curves are not convex ({each}): "
                     "the loss falls, rises and falls again between neighbouring sizes, so "
                     "their parabola's minimum rests on noise as much as on the curve, "
                     "bracketed or not")
    return " " + "; ".join(notes) + "." if notes else ""


@takes_rows
def caption(rows: pd.DataFrame, summary: pd.DataFrame) -> str:
    """Every sweep's numbers in words (Markdown), from the rows and their :func:`fit_summary`:
    exponents, tokens per parameter, minima extrapolated or on a non-convex curve."""
    lines = []
    for where, sweep in sweeps(rows):
        points = ok_points(sweep)
        wall = wall_seconds(sweep)
        took = f" in {wall:.0f} s" if np.isfinite(wall) else ""
        took += f" ({resumed_note(sweep)})" if took and resumed_note(sweep) else ""
        cut = _points_cut(sweep)[1]
        cut = f" ({cut} more were planned: the sweep's time limit cut them)" if cut else ""
        head = (f"**{where}:** {len(points)} trained points over "
                f"{points['budget'].nunique()} budgets{took}{cut}.")
        notes = _budget_notes(points)
        mine = summary[summary["sweep"] == where] if "sweep" in summary.columns else summary
        mine = mine[mine["a"].notna()] if "a" in mine.columns else mine.iloc[0:0]
        if len(mine) < 2:
            lines.append(f"{head} Too few sizes per budget to fit exponents.{notes}")
            continue
        total, ne = (mine[mine["N counted as"] == c].iloc[0]
                     for c in ("total N", "non-embedding N"))
        boot = (f"10th-90th percentile of {int(total['n_boot'])} bootstrap resamples"
                if total["n_boot"] else "no interval: 3 sizes per budget give one resample")
        lines.append(
            f"{head} Counting all parameters, $a$ = {total['a']:.2f}"
            f"{interval_text(total, 'a', '.2f')}"
            f" and at the largest budget ($C$ = {fixed(total['ratio_budget'])} FLOPs) the "
            f"optimum sits at {total['ratio']:.0f} tokens per parameter"
            f"{interval_text(total, 'ratio', '.0f')}; counting non-embedding parameters, $a$ = "
            f"{ne['a']:.2f}{interval_text(ne, 'a', '.2f')} ({boot}).{notes}")
    return "\n\n".join(lines) or "No sweep with finished points yet."


# What a table's raw column (or a fit summary's field) means, with its unit.
HEADERS = {
    "compute": "compute C (FLOPs)", "budget": "budget C (FLOPs)",
    "n_params": "N (parameters)", "n_tokens": "D (tokens)",
    "n_params_non_embedding": "non-embedding N (parameters)",
    "tokens_per_param": "tokens per parameter", "optimal_n_params": "20-tokens N (parameters)",
    "optimal_n_tokens": "20-tokens D (tokens)", "size_vs_optimal": "N / 20-tokens N",
    "batch_size": "batch (sequences)", "steps": "steps", "warmup": "warm-up (steps)",
    "lr": "peak learning rate", "beta2": "AdamW β2",
    "n_opt": "N_opt (parameters)", "d_opt": "D_opt (tokens)",
    "loss_min": "parabola's minimum loss (nats/token)", "n_points": "sizes trained",
    "bracketed": "minimum inside the sizes", "n_budgets": "budgets fitted",
    "n_boot": "bootstrap resamples",
    "a": "a (N_opt ∝ C^a)", "a_low": "a: 10th percentile", "a_high": "a: 90th percentile",
    "b": "b (D_opt ∝ C^b)", "b_low": "b: 10th percentile", "b_high": "b: 90th percentile",
    "ratio": "D_opt / N_opt at the largest budget (tokens per parameter)",
    "ratio_low": "D_opt / N_opt: 10th percentile", "ratio_high": "D_opt / N_opt: 90th percentile",
    "ratio_budget": "the largest budget (FLOPs)",
    # the time table (:func:`workbook.scaling_laws.timing.time_table`)
    "predicted training s": "full preset: predicted training (s)",
    "fixed_ms": "fixed cost (ms/step)", "per_layer_ms": "per layer (ms/step)",
    "per_gflop_ms": "per GFLOP (ms/step)", "training_s": "the sweep's own training (s)",
    "wall_s": "the sweep's wall time (s)",
}


def _cell(value: object) -> str:
    """A table cell as a reader reads it: 1,234 · 0.0956 · 3.15×10²³ (never 3.15e+23, never a
    fraction of a parameter: counts of 10,000 and more are whole), "–" for a missing number."""
    if isinstance(value, float) and np.isnan(value):
        return "–"
    return readable(value)


@takes_rows
def shown_table(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (a plan, an allocation, a placement, IsoFLOP minima) as a reader sees it:
    every number in fixed notation (:func:`workbook.claims.readable`: 6.93×10¹⁰, 155,035,
    0.0078), a missing one "–", and each known column named with its unit (:data:`HEADERS`).
    The cells are text: compute on ``table``, show this."""
    out = table.astype(object).map(_cell) if len(table) else table.copy()
    return out.rename(columns=HEADERS)


@takes_rows
def summary_table(summary: pd.DataFrame) -> pd.DataFrame:
    """A :func:`fit_summary` transposed: a column per sweep and count of N, a row per quantity
    with its unit (:data:`HEADERS`); the bootstrap's standard deviations left out."""
    if summary.empty:
        return summary
    # the summary's own names first: its n_points counts every trained point of the sweep,
    # not the sizes of one budget that HEADERS' "sizes trained" names for the minima
    own = {"sweep": "sweep (where, preset, recipe, plan)", "n_points": "trained points",
           "error": "why no fit"}
    table = shown_table(summary.drop(columns=["a_boot_sd", "b_boot_sd"], errors="ignore")
                        .rename(columns=own))
    return table.T


@takes_rows
def minima_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The IsoFLOP minimum of every budget of every sweep in ``rows`` (the main one first,
    :func:`sweeps`), with its tokens per parameter and whether the sizes trained bracket it
    (else its N_opt is the parabola's extrapolation), numbers as a reader reads them."""
    out = []
    for where, sweep in sweeps(rows):
        minima = isoflop_minima(ok_points(sweep))
        if len(minima):
            out.append(minima.assign(tokens_per_param=minima["d_opt"] / minima["n_opt"],
                                     sweep=where))
    if not out:
        return pd.DataFrame()
    table = pd.concat(out, ignore_index=True)
    table["bracketed"] = table["bracketed"].map({True: "yes", False: "no: extrapolated"})
    return shown_table(table[["sweep"] + [c for c in table.columns if c != "sweep"]])


def _main_sweep(rows: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    found = sweeps(rows)
    return found[0] if found else ("no sweep yet", rows.iloc[0:0])


def _main_fit(rows: pd.DataFrame) -> tuple[pd.DataFrame, ParametricLaw | None]:
    where, main = _main_sweep(rows)
    points = ok_points(main) if len(main) else pd.DataFrame()
    if len(points) < 5:
        return points, None
    return points, fit_parametric(points["n_params"], points["n_tokens"], points["loss"],
                                  name=f"our fit ({where.split(',')[0]})")


@takes_rows
def parametric_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Chinchilla's approach-3 law, its replication and the same form fitted to the main
    sweep of ``rows`` (:func:`sweeps`: this machine's, else the newest recording), each with
    the exponent it implies and, for the fit, the parameters that ended on a bound of the
    search (their value is the bound's, not the data's)."""
    _, ours = _main_fit(rows)
    laws = [law for law in (CHINCHILLA, CHINCHILLA_REPLICATION, ours) if law is not None]
    table = pd.DataFrame([{"law": law.name, "E (nats/token)": law.E, "A": law.A, "B": law.B,
                           "alpha": law.alpha, "beta": law.beta, "implied a = β/(α+β)": law.a,
                           "on a bound of the fit": "; ".join(law.at_bounds) or "–",
                           "source": law.source} for law in laws])
    return shown_table(table)


@takes_rows
def parametric_caption(rows: pd.DataFrame, summary: pd.DataFrame) -> str:
    """The parametric fit of the main sweep in words (Markdown), printed from the rows: its
    error, its implied a beside the IsoFLOP a of :func:`fit_summary`, and which of its
    parameters the search stopped at a bound, so that what is derived from them is read as
    the bound's."""
    points, ours = _main_fit(rows)
    if ours is None:
        return "Too few trained points (5 needed) for the parametric fit."
    err = (ours.loss(points["n_params"], points["n_tokens"]) / points["loss"] - 1).abs()
    where = _main_sweep(rows)[0]
    iso = summary[(summary["sweep"] == where) & (summary["N counted as"] == "total N")] \
        if {"sweep", "N counted as", "a"} <= set(summary.columns) else summary.iloc[0:0]
    versus = (f" against the IsoFLOP $a$ = {iso['a'].iloc[0]:.2f}"
              if len(iso) and pd.notna(iso["a"].iloc[0]) else "")
    text = (f"**{ours.name}:** median error {err.median():.1%}, worst {err.max():.1%}; the "
            f"fit implies $a$ = {ours.a:.2f}{versus}. ")
    if not ours.at_bounds:
        return text + "No parameter sits on a bound of the fit's search."
    return text + (f"The search stopped on a bound: {'; '.join(ours.at_bounds)}. That value "
                   "is where the search was told to stop, not a floor the data show, and the "
                   "exponents fitted beside it (and the $a$ they imply) take up what a free "
                   "parameter would have: read this $a$ as the bound's as much as the data's.")


# Recorded sweeps are hollow markers, one shape per sweep (this machine's are filled circles).
_RECORDED_SYMBOLS = ("circle-open", "square-open", "diamond-open", "triangle-up-open")
_LOG_C_RANGE = (10.5, 14.5)  # log10 C onto the colour scale: the small preset's to the full's


def budget_color(budget: float) -> str:
    """A budget's colour in every IsoFLOP figure: a point of a sequential scale fixed by
    log10 C (:data:`_LOG_C_RANGE`), so every budget has its own, larger budgets warmer, and
    the same budget the same colour in any figure (a palette of ten would repeat itself)."""
    from plotly.colors import sample_colorscale

    low, high = _LOG_C_RANGE
    at = min(1.0, max(0.0, (np.log10(budget) - low) / (high - low)))
    return sample_colorscale("Plasma", [0.9 * at])[0]  # its last tenth is too pale on white


def _shapes(found: list[tuple[str, pd.DataFrame]]) -> list[str | None]:
    """Each sweep's marker: None (filled circle) for this machine's, else the next hollow
    shape of :data:`_RECORDED_SYMBOLS`, one per recorded sweep."""
    out, k = [], 0
    for _, sweep in found:
        live = (sweep["source"] == "measured").any()
        out.append(None if live else _RECORDED_SYMBOLS[k % len(_RECORDED_SYMBOLS)])
        k += 0 if live else 1
    return out


# The sweeps a figure draws, at most (this machine's included); the rest are in the tables. Each
# drawn sweep takes a subtitle line and legend entries: with every sweep of the ledger (ten on
# 2026-12-05) the header took the whole figure and plotly.js drew empty axes.
MAX_DRAWN_SWEEPS = 4


def _drawn(found: list[tuple[str, pd.DataFrame]]) -> tuple[list, int]:
    """The first :data:`MAX_DRAWN_SWEEPS` of :func:`sweeps`' list (this machine's first, then
    the newest recorded of the current recipe), and how many are left out."""
    return found[:MAX_DRAWN_SWEEPS], max(0, len(found) - MAX_DRAWN_SWEEPS)


def _subtitled(title: str, found: list[tuple[str, pd.DataFrame]], left_out: int = 0) -> str:
    """``title`` with one provenance line per sweep (the main one first): how its points are
    drawn, where it ran, its preset, recipe and plan (its points and budgets); and how many
    older sweeps are not drawn (in the tables below)."""
    lines = []
    for (where, sweep), shape in zip(found, _shapes(found), strict=True):
        live = (sweep["source"] == "measured").any()
        trained, cut = _points_cut(sweep)
        budgets = sweep.loc[sweep["metric"] == "val_loss", "budget"].nunique()
        recipe = _recipe(sweep) if _recipe(sweep).startswith("per-size") else "older recipe"
        lines.append(f"{'filled' if live else shape.split('-')[0]}: "
                     f"{where.split(f', {sweep.preset.iloc[0]} preset')[0]}, "
                     f"{sweep['preset'].iloc[0]} preset, {recipe}, a "
                     f"{trained + cut}-point plan over {budgets} budgets"
                     + (f" ({trained} trained)" if cut else ""))
    if left_out:
        lines.append(f"{left_out} older sweep{'s' * (left_out > 1)} not drawn: in the tables "
                     "below")
    return title + "".join(f"<br><sup>{line}</sup>" for line in lines)


@takes_rows
def isoflop_figure(rows: pd.DataFrame, n_column: str = "n_params"):
    """Loss against N, one colour per budget (:func:`budget_color`); the parabola fitted in
    log N. A sweep measured on this machine is drawn filled (dashed parabolas); recorded sweeps
    hollow (dotted), one marker shape each, each point's hover named by where it ran. The
    subtitle names every sweep drawn, with its preset, recipe and plan (the key to the
    shapes); the legend has one entry per budget (a click hides that budget in every sweep), so
    that it stays a few rows however many sweeps the ledger holds: one entry per sweep and
    budget once took the whole height of the figure, and plotly.js drew empty axes."""
    from workbook import plots

    found, left_out = _drawn(sweeps(rows))
    fig = plots.figure(_subtitled("IsoFLOP profiles: loss vs model size", found, left_out),
                       "parameters N", "held-out loss (nats/token)", log_x=True)
    keyed: set[float] = set()
    for (where, sweep), shape in zip(found, _shapes(found), strict=True):
        points, live = ok_points(sweep), (sweep["source"] == "measured").any()
        marker = {"size": 9} if live else {"size": 8, "symbol": shape, "line": {"width": 2}}
        for budget, group in points.groupby("budget"):
            color, key = budget_color(budget), f"C = {fixed(budget)} FLOPs"
            if budget not in keyed:   # the budget's legend entry: no data, the colour only
                keyed.add(budget)
                fig.add_scatter(x=[None], y=[None], name=key, mode="markers", legendgroup=key,
                                marker={"size": 9, "color": color}, hoverinfo="skip")
            group = group.sort_values(n_column)
            name = key + ("" if live else f" ({where.split(',')[0]})")
            fig.add_scatter(x=group[n_column], y=group["loss"], name=name, mode="markers",
                            marker={**marker, "color": color}, legendgroup=key,
                            showlegend=False)
            if len(group) >= 3:
                c2, c1, c0 = np.polyfit(np.log(group[n_column]), group["loss"], 2)
                x = np.geomspace(group[n_column].min(), group[n_column].max(), 50)
                fig.add_scatter(x=x, y=c0 + c1 * np.log(x) + c2 * np.log(x) ** 2,
                                mode="lines", showlegend=False, legendgroup=key,
                                name=f"{key}: parabola fit",
                                line={"dash": "dash" if live else "dot", "color": color})
    return fig


def _crossed(symbol: str) -> str:
    """``symbol`` with a cross inside (an extrapolated minimum), its shape kept: 'square-open'
    -> 'square-x-open'; a shape plotly has no crossed form of keeps a dot instead."""
    base, hollow = symbol.removesuffix("-open"), symbol.endswith("-open")
    if base in ("circle", "square", "diamond"):
        return f"{base}-x" + ("-open" if hollow else "")
    return f"{base}-open-dot" if hollow else f"{base}-dot"


def _short(where: str, found: list) -> str:
    """A sweep's legend name: where it ran; its date and seed where another of ``found`` did."""
    head, *rest = _parts(where)
    name = head.removeprefix("recorded on ").removeprefix("NVIDIA ")
    twins = bool(rest) and sum(_parts(w)[0] == head for w, _ in found) > 1
    keep = [r for r in rest[:3] if r[:1].isdigit() or r.startswith(("seed", "commit"))]
    return ", ".join([name, *keep][:1 + 3 * twins])   # date, seed (and commit where needed)


def _parts(where: str) -> list[str]:
    """A sweep's label cut at its ', ' outside brackets: 'this machine (CPU (x86_64, 2 cores)),
    small preset' -> ['this machine (CPU (x86_64, 2 cores))', 'small preset']."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(where):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and where.startswith(", ", i):
            parts.append(where[start:i])
            start = i + 2
    return parts + [where[start:]]


@takes_rows
def frontier_figure(rows: pd.DataFrame, summary: pd.DataFrame | None = None):
    """The IsoFLOP minima N_opt(C) of every sweep with its fitted power law (the exponent from
    ``summary``, :func:`fit_summary`, when given), each named by the machine it ran on;
    Chinchilla's and Kaplan's slopes drawn through the middle budget of the sweep with the most
    budgets (the first drawn of those: this machine's where it has as many), and N at 20
    tokens/param, all three across every drawn sweep's budgets. Each sweep's minima take its
    shape of the subtitle's key (:func:`_shapes`: this machine's filled circles, each recorded
    sweep a hollow shape); a minimum its sizes do not bracket (extrapolated) is that shape with
    a cross inside (:func:`_crossed`)."""
    from workbook import plots

    found, left_out = _drawn(sweeps(rows))
    every = [isoflop_minima(ok_points(sweep)) for _, sweep in found]
    crossed = any(len(m) >= 2 and not m["bracketed"].astype(bool).all() for m in every)
    fig = plots.figure(_subtitled("Compute-optimal model size N_opt(C)", found, left_out) + (
        "<br><sup>a cross inside the shape: a minimum outside its sizes (extrapolated)</sup>"
        if crossed else ""), "compute C (FLOPs)", "N_opt (parameters)", log_x=True, log_y=True)
    mid, most = None, 0
    for (where, sweep), shape, minima in zip(found, _shapes(found), every, strict=True):
        if len(minima) < 2:
            continue
        c = np.geomspace(minima["budget"].min() / 2, minima["budget"].max() * 2, 30)
        p, coef = fit_power_law(minima["budget"], minima["n_opt"])
        fits = summary[(summary["sweep"] == where) & (summary["N counted as"] == "total N")] \
            if summary is not None and len(summary) and "a" in summary.columns else None
        shown = f"a = {p:.2f}"  # with its interval where the bootstrap gave one, never "nan"
        if fits is not None and len(fits) and pd.notna(fits["a"].iloc[0]):
            shown += interval_text(fits.iloc[0], "a", ".2f")
        color, live = plots.color_for(_short(where, [])), (sweep["source"] == "measured").any()
        inside = minima["bracketed"].astype(bool)
        symbol = shape or "circle"  # the sweep's own shape, as the subtitle's key says
        line = {"width": 2, "color": "white"} if live else {"width": 2}  # draws the cross
        # one legend entry per sweep (its fit, with a): the minima share it (legendgroup)
        fig.add_scatter(x=minima["budget"], y=minima["n_opt"], mode="markers",
                        name=f"minima, {_short(where, found)} "
                             f"({'here' if live else 'recorded'})",
                        legendgroup=where, showlegend=False,
                        marker={"size": 10, "color": color, "line": line,
                                "symbol": symbol if inside.all() else
                                [symbol if ok else _crossed(symbol) for ok in inside]})
        fig.add_scatter(x=c, y=coef * c**p, mode="lines", line={"color": color},
                        legendgroup=where, name=f"fit, {_short(where, found)}: {shown}")
        if mid is None or len(minima) > most:   # the sweep with most budgets anchors them
            mid, most = minima.iloc[len(minima) // 2], len(minima)
    if mid is None:
        return fig
    # the reference slopes run over every drawn sweep's budgets, not only the anchor's
    budgets = pd.concat([m["budget"] for m in every if len(m) >= 2])
    span = np.geomspace(budgets.min() / 2, budgets.max() * 2, 30)
    for name, y, dash in (
            ("Chinchilla slope a = 0.50", mid["n_opt"] * (span / mid["budget"]) ** 0.5, "dash"),
            ("Kaplan slope a = 0.73", mid["n_opt"] * (span / mid["budget"]) ** 0.73, "dot"),
            ("20 tokens/param", rule_of_thumb_optimal(span)[0], "dashdot")):
        fig.add_scatter(x=span, y=y, mode="lines", name=name, line={"dash": dash})
    return fig
