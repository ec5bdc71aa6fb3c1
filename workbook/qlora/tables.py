"""QLoRA's tables as a reader sees them: a unit in every header, one number of decimals per
column, "–" or "OOM (did not fit)" with its reason instead of NaN, and this machine's rows (or
the latest recording's) first, other machines beside them, labelled by device and date."""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbook import registry
from workbook.config import takes_rows
from workbook.lora import where_column, where_order
from workbook.qlora.experiments import default_rows
from workbook.qlora.vram import VRAM_SIZES
from workbook.results import where_label

OOM = "OOM (did not fit)"

# metric -> its header (unit included), in the order the optimizer table shows them
OPTIMIZER_COLUMNS = {
    "peak": "allocator peak (GB)",
    "optimizer": "optimizer state on the allocator (GB)",
    "paged": "optimizer state paged (GB)",
    "device_used": "device memory in use, driver's view (GB)",
    "fits": "fits under the cap (1 = yes)",
}


def _keys(frame: pd.DataFrame, columns: list[str]) -> set[tuple]:
    return set(frame[columns].itertuples(index=False, name=None))


def _status(frame: pd.DataFrame) -> pd.Series:
    return frame["status"].fillna("ok") if "status" in frame.columns else \
        pd.Series("ok", index=frame.index)


def _did_not_fit(measured: pd.DataFrame) -> pd.Series:
    """Rows saying their configuration did not fit: status 'oom', or a measured ``fits`` of 0
    (under a cap, the sweep records that row even where the oom row itself is not shown)."""
    return (_status(measured) == "oom") | ((measured["metric"] == "fits")
                                           & (measured["value"] == 0))


def _configurations(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of configurations: without ``saving_vs_full``, a ratio between two
    configurations (no optimizer, no cap), which is no configuration of its own."""
    return rows[rows["metric"] != "saving_vs_full"] if "metric" in rows.columns else rows


@takes_rows
def optimizer_table(rows: pd.DataFrame) -> pd.DataFrame:
    """``qlora_vram`` rows of the optimizer sweep at one size: allocator peak, optimizer state
    on the allocator and paged, the driver's view and, under a cap, whether it fit; predicted
    beside measured, per allocator cap, method and optimizer. A configuration that ran out of
    memory reads "OOM (did not fit)" where it measured nothing; without a cap ``fits`` asks
    nothing ("– (no cap)"); 0 GB is no cap, never a cap of 0 GB."""
    part = rows[rows["metric"].isin(list(OPTIMIZER_COLUMNS))]
    part = part[part["optimizer"].notna()] if "optimizer" in part.columns else part.iloc[0:0]
    if part.empty:
        return pd.DataFrame()
    cap = part["cap_gb"].fillna(0.0) if "cap_gb" in part.columns else \
        pd.Series(0.0, index=part.index)
    part = part.assign(cap=cap.map(lambda c: "none" if c == 0 else f"{c:g} GB"))
    index = ["cap", "method", "optimizer"]
    out = part.pivot_table(index=index, columns=["metric", "source"], values="value",
                           aggfunc="mean")   # an oom row's NaN peak leaves its cell empty
    # uncapped rows first, each group in the pivot's order (an argsort, not sort_index's key=,
    # which loses the level's name in the H200 image's pandas: KeyError 'Level cap not found')
    uncapped_last = np.asarray(out.index.get_level_values("cap") != "none")
    out = out.iloc[np.argsort(uncapped_last, kind="stable")]
    measured = part[part["source"] != "predicted"]
    oom = _keys(measured[_did_not_fit(measured)], index)
    failed = _keys(measured[~_status(measured).isin(["ok", "oom"])], index) - oom
    shown = {}
    for metric, header in OPTIMIZER_COLUMNS.items():
        for source in ("predicted", "measured", "recorded"):
            if (metric, source) not in out.columns:
                continue
            cells = []
            for key, value in out[(metric, source)].items():
                if metric == "fits" and key[0] == "none":
                    cells.append("– (no cap)")
                elif value == value:
                    cells.append(f"{int(value)}" if metric == "fits" else f"{value:.2f}")
                elif source != "predicted" and key in oom:
                    cells.append(OOM)
                elif source != "predicted" and key in failed:
                    cells.append("– (the run failed)")
                else:
                    cells.append("– (not in these rows)")
            shown[(header, source)] = cells
    table = pd.DataFrame(shown, index=out.index)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["", "source"])
    return table.rename_axis(index=["allocator cap", "method", "optimizer"])


def _configuration(key: dict) -> str:
    cap = key.get("cap_gb")
    cap = "no cap" if cap is None or cap != cap or cap == 0 else f"a {cap:g} GB allocator cap"
    optimizer = key.get("optimizer")
    optimizer = "adamw" if optimizer is None or optimizer != optimizer else optimizer
    return f"{key.get('size', '?')} {key.get('method', '?')} with {optimizer} under {cap}"


@takes_rows
def fit_caption(rows: pd.DataFrame) -> str:
    """Which measured configurations of ``qlora_vram`` (one machine's rows, every optimizer and
    cap) did not fit or failed, each beside the formula's ``fits`` where it has one (Markdown);
    "every configuration fit" only when none did not: an ``oom`` row, or a measured ``fits`` of
    0 under a cap, counts as not fitting. The ``saving_vs_full`` rows are ratios between
    configurations, not configurations, and are left out of the count."""
    measured = _configurations(rows[rows["source"] != "predicted"]
                               if "source" in rows.columns else rows)
    if measured.empty:
        return "*No measured qlora_vram rows yet (record it on a GPU).*"
    key = [c for c in ("size", "method", "optimizer", "cap_gb") if c in measured.columns]
    configs = measured.drop_duplicates(key)
    status = _status(measured)
    bad = measured[_did_not_fit(measured) | ~status.isin(["ok", "oom"])]
    where = where_label(measured)
    if bad.empty:
        return f"*{where}:* every one of the {len(configs)} configurations fit."
    predicted = rows[(rows["source"] == "predicted") & (rows["metric"] == "fits")]
    lines = []
    for values, group in bad.groupby(key, dropna=False, sort=False):
        at = dict(zip(key, values if isinstance(values, tuple) else (values,), strict=True))
        words = "out of memory" if _did_not_fit(group).any() else \
            f"failed ({', '.join(sorted(set(_status(group)) - {'ok'}))})"
        same = predicted
        for column, value in at.items():
            same = same[same[column].isna()] if value != value else same[same[column] == value]
        if len(same):
            fits = bool(same["value"].iloc[0])
            words += (f"; the formula predicted it would {'fit' if fits else 'not fit'}"
                      f"{'' if fits else ' either'}")
        lines.append(f"* {_configuration(at)}: {words}")
    return (f"*{where}:* {len(bad.drop_duplicates(key))} of the {len(configs)} configurations "
            "did not fit or failed:\n\n" + "\n".join(lines))


@takes_rows
def row_counts(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows per machine: measured (or recorded) and formula rows and the configurations that
    did not fit; this machine first, each recorded machine named with its device and date."""
    columns = ["where", "measured rows", "formula rows", "configurations that did not fit"]
    if rows.empty or "source" not in rows.columns:
        return pd.DataFrame(columns=columns)
    key = [c for c in ("device", "n_gpus") if c in rows.columns]
    config = [c for c in ("size", "method", "optimizer", "cap_gb") if c in rows.columns]
    out = []
    for _, group in (rows.groupby(key, dropna=False, sort=False) if key else [((), rows)]):
        measured = group[group["source"] != "predicted"]
        configs = _configurations(measured)
        out.append({"where": where_label(measured) if len(measured) else "formula only",
                    "measured rows": len(measured),
                    "formula rows": int((group["source"] == "predicted").sum()),
                    "configurations that did not fit":
                        len(configs[_did_not_fit(configs)].drop_duplicates(config))})
    table = pd.DataFrame(out, columns=columns)
    order = where_order(table["where"])
    return table.assign(_at=table["where"].map(order.index)).sort_values(
        "_at", kind="stable").drop(columns="_at").reset_index(drop=True)


@takes_rows
def saving_table(rows: pd.DataFrame) -> pd.DataFrame:
    """peak(full FT) / peak(method), "how many times less VRAM", per size and method: the
    formula, then this machine's measurement (else the latest recording's), then the other
    machines' recordings, each named with its device and date."""
    part = default_rows(rows)
    part = part[part["metric"] == "saving_vs_full"] if "metric" in part.columns else part
    if part.empty:
        return pd.DataFrame()
    part = part.reset_index(drop=True)   # main_rows's labels are positions: the same here
    main = registry.main_rows(part)
    # the formula: this machine's prediction rows, else any machine's for a size it lacks
    formula = pd.concat([main[main["source"] == "predicted"],
                         part[part["source"] == "predicted"]]).drop_duplicates(
        ["size", "method"])
    others = part[(part["source"] != "predicted") & ~part.index.isin(main.index)]
    shown = pd.concat([formula, main[main["source"] != "predicted"], others])
    shown = shown.assign(where=where_column(shown))
    wide = shown.pivot_table(index=["size", "method"], columns="where", values="value")
    present = list(dict.fromkeys(wide.index.get_level_values("size")))
    sizes = [s for s in VRAM_SIZES if s in present] + [s for s in present
                                                        if s not in VRAM_SIZES]
    wide = wide.reindex(sizes, level="size")
    table = wide[list(dict.fromkeys(shown["where"]))].apply(   # Series.map: any pandas
        lambda column: column.map(lambda v: f"{v:.2f}" if v == v else "– (not measured)"))
    table.columns = pd.MultiIndex.from_product(
        [["VRAM saving vs full fine-tuning (×)"], table.columns], names=["", "where"])
    return table


def _seed(rows: pd.DataFrame) -> pd.Series:
    seed = rows["run_seed"] if "run_seed" in rows.columns else pd.Series(np.nan, rows.index)
    fallback = rows["seed"] if "seed" in rows.columns else pd.Series(0, rows.index)
    return seed.fillna(fallback).fillna(0).astype(int)


@takes_rows
def quality_table(quality: pd.DataFrame) -> pd.DataFrame:
    """``qlora_quality`` per method and stage, one block per machine (this machine's first,
    the others named with device, date and seeds): held-out loss as the mean over seeds and
    for the first seed alone (held-out windows depend on the seed: compare machines seed by
    seed), the number of seeds, step time and the frozen base's stored size."""
    part = quality[quality["metric"].isin(["eval_loss", "step_time", "weight_bytes"])]
    part = part[_status(part) == "ok"]
    if part.empty:
        return pd.DataFrame()
    part = part.assign(where=where_column(part), run_seed=_seed(part))
    first = int(part["run_seed"].min())
    shown = {}
    for where in where_order(part["where"]):
        mine = part[part["where"] == where]
        loss = mine[mine["metric"] == "eval_loss"].groupby(["method", "stage"])
        firsts = mine[(mine["metric"] == "eval_loss") & (mine["run_seed"] == first)]
        step = mine[(mine["metric"] == "step_time") & (mine["run_seed"] == first)].groupby(
            ["method", "stage"])["value"].mean()   # run_quality times its first seed only
        size = mine[mine["metric"] == "weight_bytes"].groupby(["method", "stage"])["value"]
        columns = {
            "held-out loss (nats), mean over seeds": loss["value"].mean().map(
                lambda v: f"{v:.4f}"),
            f"held-out loss (nats), seed {first}": firsts.groupby(["method", "stage"])[
                "value"].first().map(lambda v: f"{v:.4f}"),
            "seeds": loss["value"].size().astype(int),
            f"step time (ms), seed {first}": step.map(lambda v: f"{v:.2f}"),
            "frozen base stored (MB)": size.first().map(lambda v: f"{v / 1e6:.3f}"),
        }
        for name, values in columns.items():
            shown[(where, name)] = values
    table = pd.DataFrame(shown)
    reasons = {f"step time (ms), seed {first}": "– (not trained at this stage)",
               "frozen base stored (MB)": "– (the frozen base: see 'before')",
               "seeds": "–"}
    for column in table.columns:
        fill = reasons.get(column[1], "– (not in these rows)")
        table[column] = table[column].astype(object).where(table[column].notna(), fill)
    table.columns = pd.MultiIndex.from_tuples(table.columns, names=["where", ""])
    return table.rename_axis(index=["method", "stage"])
