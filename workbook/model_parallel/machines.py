"""Which machine a row came from, and the helpers every notebook-06 view shares: rows split
into one block per machine (this one first), a rank mean that keeps the provenance columns,
the 'where' label, one number picked from the rows."""

from __future__ import annotations

import math

import pandas as pd

from workbook.results import dashed, provenance_label, where_label

PROVENANCE = ("device", "n_gpus", "recorded_at", "seed")


def mean_over_ranks(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean over ranks per ``keys``; provenance columns are kept so plots can label the source."""
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    keys = list(dict.fromkeys([k for k in [*keys, *PROVENANCE] if k in ok.columns]))
    return ok.groupby(keys, dropna=False)["value"].mean().reset_index()


def first_block(rows: pd.DataFrame) -> pd.DataFrame:
    """This machine's rows where it measured any, else the first recorded device's."""
    blocks = machine_blocks(rows)
    return blocks[0][1] if blocks else rows


def largest_world(rows: pd.DataFrame) -> pd.DataFrame:
    """Expert-parallel rows of the run with the most ranks (E grows with the world size)."""
    has = "world" in rows.columns and not rows.empty
    return rows[rows["world"] == rows["world"].max()] if has else rows


def machine_blocks(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(where, rows) per machine (device and GPU count): this machine's live rows first."""
    if rows is None or rows.empty:
        return []
    keys = [k for k in ("device", "n_gpus") if k in rows.columns]
    if not keys:
        return [(where_of(rows), rows)]
    parts = [part for _, part in rows.groupby(keys, sort=False, dropna=False)]
    parts.sort(key=lambda part: not (part["source"] == "measured").any())
    return [(where_of(part), part) for part in parts]


def where_of(rows: pd.DataFrame) -> str:
    """:func:`results.where_label`, plus 'gloo ranks on the CPU' where a GPU machine ran these
    ranks as CPU processes (more ranks than GPUs), so that its name is not read as its GPUs'."""
    if not {"backend", "n_gpus"} <= set(rows.columns):
        return where_label(rows)
    gpus = (pd.to_numeric(rows["n_gpus"], errors="coerce") > 0).any()
    gloo = gpus and set(rows["backend"].dropna()) == {"gloo"}
    return where_label(rows) + (", gloo ranks on the CPU" if gloo else "")


def subtitled(title: str, rows: pd.DataFrame, note: str = "") -> str:
    """``title`` with where its rows come from: recorded rows get their provenance from
    :func:`plots.title_with_source`; this machine's alone get 'this machine (device)' here.
    ``note`` (a fact read from the rows, e.g. 'one stage') follows the label."""
    recorded = "source" in rows.columns and (rows["source"] == "recorded").any()
    label = "; ".join(filter(None, ["" if recorded else where_of(rows), note]))
    return f"{title}<br><sup>{label}</sup>" if label else title


def pick(rows: pd.DataFrame, metric: str, source: str = "measured", how: str = "mean",
          **where_) -> float:
    sel = (rows["metric"] == metric) & rows["source"].isin(
        [source] if source == "predicted" else ["measured", "recorded"])
    for k, v in where_.items():
        if k not in rows.columns:
            return math.nan
        sel &= rows[k] == v
    vals = rows.loc[sel, "value"]
    return float(getattr(vals, how)()) if len(vals) else math.nan


def with_schedule(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows recorded before 1F1B existed were GPipe's."""
    sched = rows["schedule"] if "schedule" in rows.columns else pd.Series("gpipe", rows.index)
    return rows.assign(schedule=sched.fillna("gpipe"))


def where_labels(rows: pd.DataFrame) -> pd.Series:
    """Each row's machine in the words of :func:`where_of`, the claims' and captions' style:
    'this machine (NVIDIA H200)' for the live rows' machine, 'recorded on NVIDIA H200 ×2,
    2026-11-22, seed 0' for a recording (a machine is its device and GPU count)."""
    if rows.empty or "device" not in rows.columns or "source" not in rows.columns:
        return pd.Series(where_label(rows) if len(rows) else "", rows.index, dtype=object)
    keys = [k for k in ("device", "n_gpus") if k in rows.columns]
    out = pd.Series("", rows.index, dtype=object)
    for _, part in rows.groupby(keys, sort=False, dropna=False):
        has = set(part["source"])
        # a machine whose rows here are all predicted: its own measured rows were not passed;
        # with a recorded date it is a recording (where_label would call it this machine)
        recorded = "measured" not in has and "recorded" not in has and "recorded_at" in part \
            and part["recorded_at"].notna().any()
        out[part.index] = provenance_label(part) if recorded else where_of(part)
    return out


def is_here(where: pd.Series) -> pd.Series:
    """Which ``where`` labels (:func:`where_labels` or :func:`curve_label`) are this machine."""
    text = where.astype(str)
    return (text == "here") | text.str.startswith("this machine")


def here_first(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with this machine's rows first, the recorded machines after, order kept."""
    if table.empty or "where" not in table.columns:
        return table.reset_index(drop=True)
    return table.sort_values("where", key=lambda w: ~is_here(w), kind="stable",
                             ignore_index=True)


def shown(table: pd.DataFrame, reasons: dict[str, str] | None = None,
          digits: int = 4) -> pd.DataFrame:
    """A table as a reader sees it: floats rounded to ``digits``, whole-number columns as
    integers, and "–" with the column's reason where a cell has no number
    (:func:`results.dashed`)."""
    out = table.copy()
    for col in out.columns:
        if not pd.api.types.is_float_dtype(out[col]):
            continue
        vals = out[col].dropna()
        if len(vals) and (vals == vals.round()).all() and vals.abs().max() < 2**53:
            out[col] = out[col].round().astype("Int64")
        else:
            out[col] = out[col].round(digits)
    return dashed(out, reasons)


def curve_label(rows: pd.DataFrame) -> pd.Series:
    """'here' for this machine's rows, else the recorded machine ('NVIDIA H200 ×4'): one trace
    per source. A machine is its device and GPU count: an H200 ×4 recording beside a live
    1-GPU H200 run is a reference, not 'here' (06's 1F1B caption looked for 1F1B at p=4)."""
    if "device" not in rows.columns or "source" not in rows.columns:
        return pd.Series("here", rows.index)
    count = (rows["n_gpus"] if "n_gpus" in rows.columns else pd.Series(None, rows.index))
    count = count.map(lambda n: "" if pd.isna(n) else f" ×{int(float(n))}")
    machine = rows["device"].astype(str) + count
    here = set(machine[(rows["source"] == "measured") & rows["device"].notna()])
    return pd.Series([("here" if m in here or pd.isna(d) else m)
                      for m, d in zip(machine, rows["device"], strict=True)],
                     index=rows.index, dtype=str)
