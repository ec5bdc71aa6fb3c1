"""How long the IsoFLOP sweep takes (notebook 03's time table and its caption): per device, the
step-time model (:func:`~workbook.scaling_laws.fits.fit_step_time`) fitted to that device's
latest sweep alone, the full preset's training time it predicts, and beside it what that sweep
itself spent: the sum of its points' training times and its wall time."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from workbook.config import takes_rows
from workbook.results import where_label
from workbook.scaling_laws.experiments import (
    ISOFLOP_PRESETS,
    IsoFlopConfig,
    plan_sweep,
    predicted_seconds,
)
from workbook.scaling_laws.fits import fit_step_time, resumed_note

# Why a cell of the time table has no number (``results.dashed(time_table(...), TIME_GAPS)``).
TIME_GAPS = {"predicted training s": "– (the sweep and the plan differ in CUDA graphs: other "
                                     "step times)",
             "wall_s": "– (the sweep recorded no wall time)",
             "training_s": "– (the sweep recorded no training times)"}


@takes_rows
def latest_sweeps(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """Per device, the rows of its latest full-preset sweep in ``rows`` (one recording: its
    source, commit and time), this machine's first, then the newest recording first. An
    older sweep of the same device (another plan, another commit) is left out: its timings
    are not the ones today's code and plan run at."""
    if rows.empty or "preset" not in rows.columns or "device" not in rows.columns:
        return []
    full = rows[rows["preset"] == "full"].copy()
    for col in ("source", "commit", "recorded_at"):
        full[col] = full[col].fillna("").astype(str) if col in full.columns else ""
    found = []
    for _, device in full.groupby("device", sort=False):
        runs = _runs(device)
        if runs:
            found.append(max(runs, key=_recency))
    return sorted(found, key=_recency, reverse=True)


def _runs(rows: pd.DataFrame) -> list[pd.DataFrame]:
    """The timed sweeps in ``rows`` (full preset, one device), one recording each."""
    rows = rows.copy()
    for col in ("source", "commit", "recorded_at"):
        rows[col] = rows[col].fillna("").astype(str) if col in rows.columns else ""
    return [g for _, g in rows.groupby(["source", "commit", "recorded_at"], sort=False)
            if (g["metric"] == "train_s").any()]


def _recency(sweep: pd.DataFrame) -> tuple[bool, float]:
    when = pd.to_datetime(sweep["recorded_at"], errors="coerce", utc=True).max()
    return ((sweep["source"] == "measured").any(), when.timestamp() if pd.notna(when) else 0.0)


def _training_s(sweep: pd.DataFrame) -> float:
    timed = sweep.loc[(sweep["metric"] == "train_s") & (sweep["status"] == "ok"), "value"]
    timed = timed.astype(float)
    return float(timed.sum()) if np.isfinite(timed).any() else np.nan


def _wall_s(sweep: pd.DataFrame) -> float:
    wall = sweep.loc[sweep["metric"] == "sweep_wall_s", "value"].astype(float)
    wall = wall[np.isfinite(wall)]
    return float(wall.max()) if len(wall) else np.nan


@takes_rows
def ran_todays_plan(sweep: pd.DataFrame, cfg: IsoFlopConfig | None = None) -> bool:
    """Whether ``sweep`` trained exactly the points ``cfg`` (default: the full preset) plans:
    then its own training time is what :func:`time_table` predicts, comparable number for
    number. A sweep that replayed its steps from CUDA graphs (``cuda_graph``) and one that ran
    them eagerly take other times for the same points: the flag must match too."""
    plan = plan_sweep(cfg or ISOFLOP_PRESETS["full"])
    plan = plan[plan["status"] == "planned"]
    timed = sweep[(sweep["metric"] == "train_s") & (sweep["status"] == "ok")]

    # the batch too, where the sweep has it: one batch per budget (batch_rule "largest")
    # trains the same sizes at other batches, for other steps and times
    batched = "batch_size" in timed.columns and timed["batch_size"].notna().all()

    def points(frame: pd.DataFrame) -> set[tuple[float, ...]]:
        batch = frame["batch_size"] if batched else pd.Series(0, index=frame.index)
        return {(float(f"{b:.4g}"), float(n), float(s)) for b, n, s in zip(
            frame["budget"], frame["n_params"], batch, strict=True)}
    return points(timed) == points(plan) and _graphed(sweep) == (
        cfg or ISOFLOP_PRESETS["full"]).cuda_graph


def _graphed(sweep: pd.DataFrame) -> bool:
    """Whether ``sweep`` replayed its steps from CUDA graphs: its ``cuda_graph`` column asked
    for them (a sweep recorded before the column ran eagerly) and, where the sweep counted its
    ``graphed_steps``, some steps replayed (a capture that failed ran eagerly and counts 0)."""
    if "cuda_graph" not in sweep.columns or not sweep["cuda_graph"].fillna(False).astype(
            bool).any():
        return False
    counted = sweep.loc[sweep["metric"] == "graphed_steps", "value"]
    return counted.empty or bool((counted > 0).any())


@takes_rows
def time_table(rows: pd.DataFrame, cfg: IsoFlopConfig | None = None) -> pd.DataFrame:
    """One row per device with a full-preset sweep in ``rows``, fitted to that device's latest
    sweep only (:func:`latest_sweeps`): the training seconds ``cfg`` (default: the full
    preset) is predicted to take there, the step-time model's costs (each ≥ 0), and that
    sweep's own training time (the sum of its points' ``train_s``) and wall time. Missing
    times are NaN here; show them with ``results.dashed(table, TIME_GAPS)``. A sweep whose
    steps ran eagerly predicts nothing for a plan that replays CUDA graphs (nor the other way
    round): its prediction is NaN."""
    cfg = cfg or ISOFLOP_PRESETS["full"]
    out = []
    for sweep in latest_sweeps(rows):
        step = fit_step_time(sweep)
        commit = str(sweep["commit"].iloc[0])
        out.append({"sweep": where_label(sweep) + (f", commit {commit}" if commit else ""),
                    "predicted training s": predicted_seconds(cfg, sweep)
                    if _graphed(sweep) == cfg.cuda_graph else np.nan,
                    "fixed_ms": step.fixed_ms, "per_layer_ms": step.per_layer_ms,
                    "per_gflop_ms": step.per_gflop_ms, "training_s": _training_s(sweep),
                    "wall_s": _wall_s(sweep)})
    columns = ["sweep", "predicted training s", "fixed_ms", "per_layer_ms",
               "per_gflop_ms", "training_s", "wall_s"]
    return pd.DataFrame(out, columns=columns)


@takes_rows
def time_caption(rows: pd.DataFrame, cfg: IsoFlopConfig | None = None) -> str:
    """:func:`time_table` in words (Markdown), one paragraph per device, printed from the rows:
    the predicted training time, and, where the sweep ran the same plan, how it compares with
    the sweep's own training and wall time; a cost per GFLOP of 0 said for what it means."""
    table = time_table(rows, cfg)
    lines = []
    for (_, row), sweep in zip(table.iterrows(), latest_sweeps(rows), strict=True):
        if not np.isfinite(row["predicted training s"]):
            how = ("from CUDA graphs", "eagerly")
            mine, plan = (how if _graphed(sweep) else how[::-1])
            lines.append(f"**{row['sweep']}:** its steps ran {mine}, the plan's run {plan}: "
                         "another time per step, so its step times predict nothing for the "
                         "plan (its own times are in the table)." + _other_runs(rows, sweep, cfg))
            continue
        text = (f"**{row['sweep']}:** the step-time model fitted to this sweep predicts "
                f"{row['predicted training s']:.0f} s of training for the full preset.")
        if (cfg or ISOFLOP_PRESETS["full"]).batch_rule == "steps":
            one = predicted_seconds(replace(cfg or ISOFLOP_PRESETS["full"],
                                            batch_rule="largest"), sweep)
            text += (f" With one batch per budget (`batch_rule` \"largest\": every size at its "
                     f"budget's largest size's batch, more steps for the smaller ones) it "
                     f"predicts {one:.0f} s.")
        if row["per_gflop_ms"] == 0:
            text += (" Its cost per GFLOP came out 0 (the fit keeps every cost ≥ 0): over "
                     "these sizes the step time grew with the number of layers, not with the "
                     "FLOPs; what a layer costs whatever its width (kernel launches), not "
                     "arithmetic, set it.")
        train, wall = row["training_s"], row["wall_s"]
        gap = row["predicted training s"] - train
        if not ran_todays_plan(sweep, cfg):
            text += (" This sweep ran a plan of its own, not today's, so its own times "
                     "(in the table) are not the prediction's to match.")
        elif np.isfinite(train):
            resumed = resumed_note(sweep)
            text += (f" The sweep ran today's plan: its points trained for {train:.0f} s in "
                     "all" + ((f" and it counts {wall:.0f} s ({resumed}: its last run's wall "
                               "time plus those points' training), so start-up, evaluation and"
                               f" the work between points added at least {wall - train:.0f} s"
                               if resumed else
                               f" and the sweep took {wall:.0f} s from start to end, so "
                               "start-up, evaluation and the work between points added "
                               f"{wall - train:.0f} s") if np.isfinite(wall)
                              else "; it recorded no wall time") + ". "
                     + ("The prediction matches the training time to the second"
                        if abs(gap) < 0.5 else
                        f"The prediction lies {abs(gap):.0f} s {'above' if gap > 0 else 'below'}"
                        " the training time")
                     + " (fitted to these very points: a check of the fit, not a forecast).")
        else:
            text += " The sweep ran today's plan but recorded no training times."
        text += _other_runs(rows, sweep, cfg)
        lines.append(text)
    return "\n\n".join(lines) or "No full-preset sweep with step times recorded yet."


def plan_judged(sweep: pd.DataFrame, planned: int) -> str:
    """Which plan a full-preset sweep of ``planned`` points ran: today's full preset
    (:func:`plan_sweep`: the same budgets and model sizes), or its own, older one."""
    today = plan_sweep(ISOFLOP_PRESETS["full"])
    today, loss = today[today["status"] == "planned"], sweep[sweep["metric"] == "val_loss"]
    ran, now = sorted(loss["budget"].dropna().unique()), sorted(today["budget"].unique())
    if planned == len(today) and len(ran) == len(now) and np.allclose(ran, now):
        def pairs(f: pd.DataFrame) -> set:
            return set(zip(f["budget"], f["n_params"].astype(float).round(), strict=True))
        if pairs(loss) <= pairs(today):
            return f"today's {len(today)}-point full preset"
        return f"its own {planned}-point plan (today's budgets, other sizes), not today's"
    per = (f"{planned // len(ran)} sizes per budget" if ran and planned % len(ran) == 0
           else f"over {len(ran)} budgets")
    return (f"its own {planned}-point plan ({per}), not today's {len(today)}-point "
            f"full preset ({len(today) // len(now)} sizes × {len(now)} budgets)")


def _other_runs(rows: pd.DataFrame, latest: pd.DataFrame, cfg: IsoFlopConfig | None) -> str:
    """Today's plan on the same device name, run at other times (another machine, another
    seed): their training and wall times beside the latest's, since machines of one name
    need not agree ('' where there are none)."""
    full = rows[(rows["preset"] == "full") & (rows["device"] == latest["device"].iloc[0])]
    others = [g for g in _runs(full) if g["recorded_at"].iloc[0]
              != str(latest["recorded_at"].iloc[0]) and ran_todays_plan(g, cfg)]
    if not others:
        return ""
    each = [f"{where_label(g)}: {_training_s(g):.0f} s of training, {_wall_s(g):.0f} s in all"
            + (f" ({resumed_note(g)})" if resumed_note(g) else "") for g in others]
    return (f" Today's plan ran on this device name {len(others)} more time"
            f"{'s' * (len(others) > 1)}: {'; '.join(each)}. Machines of one name need not "
            "agree: these small models are launch-bound, so the host sets much of the time.")
