"""What notebook 02 shows: formula vs counted, the recorded tables, the calculator, claims
(plotly and ipywidgets are imported inside the view functions: a GPU machine may have neither)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbook import registry, results
from workbook.claims import Claim, claims_table, readable
from workbook.config import WorkbookError, check_range, takes_rows
from workbook.flops.energy import GPT3, V100, predict_run_cost
from workbook.flops.experiments import MFU_PRESETS
from workbook.flops.formulas import (
    ReadableTable,
    flops_per_token,
    gpu_peak_tflops,
    lecture_examples,
    step_flops,
    training_dtype,
    training_time,
)
from workbook.flops.runs import RUN_ORDER, RunSpec, run_labels, step_ratio
from workbook.flops.step import count_step_flops, kernel_times, make_train_step
from workbook.hardware import datasheet, roofline_peaks
from workbook.model import ModelConfig

__all__ = ["formula_vs_counted", "recorded_or_note", "where_of", "ordered_wheres",
           "bf16_rooflines", "mfu_values", "mfu_table", "kernel_values", "kernel_table",
           "sweep_figure", "calculator", "claims", "loss_kernel_table", "top_kernels",
           "energy_table", "gpt3_assumptions", "gpt3_prediction", "energy_claims"]


def formula_vs_counted(cfg: ModelConfig, batch_size: int, seed: int = 0) -> pd.DataFrame:
    """One training step of ``cfg`` (eager, this machine): formula next to FlopCounterMode."""
    check_range("batch_size", batch_size, 1, 1024)
    check_range("seed", seed, 0, 2**31 - 1)
    counted = count_step_flops(cfg, batch_size, seed)
    tokens = batch_size * cfg.seq_len
    per_token = flops_per_token(cfg)
    rows = [("matmuls (6·N per token)", per_token["dense"] * tokens, counted["matmul"]),
            ("attention (12·L·T·d per token)", per_token["attention"] * tokens,
             counted["attention"]),
            ("total", step_flops(cfg, batch_size), counted["total"])]
    frame = pd.DataFrame(rows, columns=["part", "predicted FLOPs", "counted FLOPs"])
    frame["counted / predicted"] = frame["counted FLOPs"] / frame["predicted FLOPs"]
    return ReadableTable(frame)  # fixed notation: 1.46×10⁹ on any device


def recorded_or_note(name: str) -> pd.DataFrame:
    """The ledger's rows of ``name``, printing where they come from (or that there are none)
    and that Run All shows this recording without repeating it (naming the script that
    records it, where one of ``scripts/gpu_*.sh`` does)."""
    registry.get(name)  # an unknown name: one line listing the experiments
    rows = results.load(name)
    generic = {"gpu_record.sh", "gpu_smoke.sh", "gpu_notebooks.sh"}  # they run any experiment
    scripts = sorted(path.name for path in (Path(__file__).parents[2] / "scripts").glob(
        "gpu_*.sh") if name in path.read_text() and path.name not in generic)
    how = (f"scripts/{scripts[0]}" if scripts
           else f"python -m workbook run {name} --preset full --record")
    if rows.empty:
        print(f"{name}: no recorded rows yet; run `{how}` on a GPU.")
    else:
        label = results.provenance_label(rows[rows["source"] == "recorded"])
        print(f"{name}: {len(rows)} rows, {label}. Recorded, not run here: Run All shows "
              f"these rows (`{how}` records them on a GPU).")
    return rows


@takes_rows
def where_of(rows: pd.DataFrame) -> pd.Series:
    """Per row, where it was measured: "this machine (<device>)" for rows measured here,
    "recorded on <device> (<date>)" for the ledger's rows (a device with ``source='recorded'``
    rows)."""
    device = (rows["device"].astype(str) if "device" in rows.columns
              else pd.Series("?", index=rows.index))
    date = (rows["recorded_at"].astype(str).str[:10] if "recorded_at" in rows.columns
            else pd.Series("", index=rows.index))
    # a device with a row read back from the ledger is a reference, all its rows included
    refs = (set(device[rows["source"] == "recorded"]) if "source" in rows.columns else set())
    recorded = device.isin(refs)
    here = "this machine (" + device + ")"
    return here.where(~recorded, "recorded on " + device + " (" + date + ")")


def ordered_wheres(rows: pd.DataFrame) -> list[str]:
    """This machine's label first, then the references, newest first."""
    where = where_of(rows)
    here = sorted({w for w in where if w.startswith("this machine")})
    return here + sorted(set(where) - set(here), key=lambda w: w[-11:-1], reverse=True)


def _pivot_runs(ok: pd.DataFrame, index: str) -> pd.DataFrame:
    """Values by ``index`` (rows) and run (columns); with rows from several places, the
    columns are (where, run), this machine first."""
    ok = ok.assign(run=run_labels(ok), where=where_of(ok))
    wheres = ordered_wheres(ok)
    ladder = [str(RunSpec.parse(r)) for r in MFU_PRESETS["full"].runs]
    order = list(dict.fromkeys(ladder + RUN_ORDER + sorted(set(ok["run"]))))
    if len(wheres) <= 1:
        table = ok.pivot_table(index=index, columns="run", values="value", aggfunc="last")
        return table[[r for r in order if r in table.columns]]
    table = ok.pivot_table(index=index, columns=["where", "run"], values="value",
                           aggfunc="last")
    return table[[(w, r) for w in wheres for r in order if (w, r) in table.columns]]


@takes_rows
def bf16_rooflines(roofline: pd.DataFrame) -> pd.DataFrame:
    """Per GPU in ``roofline`` (00's rows, live and/or recorded): its measured bf16 matmul peak
    (TFLOP/s) and which run it is: the largest matmul measured of it (a small preset's 512³
    does not fill a GPU: no roofline), this machine's live run before a recording of that
    size, else the latest ('recorded on <device>, <date>'); ``size``: its n of n³."""
    cols = ["device", "tflops", "label", "size"]
    need = {"device", "kind", "dtype", "value", "source", "status"}
    if roofline.empty or not need <= set(roofline.columns):
        return pd.DataFrame(columns=cols)
    mm = roofline[(roofline["kind"] == "matmul") & (roofline["dtype"] == "bf16")
                  & roofline["source"].isin(["measured", "recorded"])
                  & (roofline["status"] == "ok")]
    mm = mm.assign(size=mm["size"] if "size" in mm else 0,
                   when=mm["recorded_at"].astype(str) if "recorded_at" in mm else "",
                   live=mm["source"] == "measured")
    out = []
    for device, part in mm.groupby("device", sort=False):
        if str(device).startswith("CPU"):  # MFU is a GPU's measure (no CPU peak to divide by)
            continue
        row = part.sort_values(["size", "live", "when"]).iloc[-1]
        label = ("this machine's live run" if row["live"]
                 else f"recorded on {device}, {str(row['when'])[:10]}")
        out.append({"device": str(device), "tflops": float(row["value"]), "label": label,
                    "size": int(row["size"]) if row["size"] == row["size"] else 0,
                    "live": bool(row["live"]), "when": str(row["when"])})
    out.sort(key=lambda r: r["when"], reverse=True)   # the recordings newest first,
    out.sort(key=lambda r: not r["live"])             # after this machine's live run
    return pd.DataFrame(out, columns=cols + ["live", "when"])[cols]


def _decimals(digits: int):
    """A cell's text: ``digits`` decimals, or three significant digits for a value that would
    read 0.0 (a CPU's TFLOP/s); "–" for no value (NaN, or a peak memory a CPU never measured)."""
    def write(value: float) -> str:
        if not np.isfinite(value) or value == 0:
            return "–"
        return f"{value:,.{digits}f}" if abs(value) >= 10**-digits * 10 else f"{value:.3g}"
    return write


MFU_ROWS = {"step_time": ("step time (ms)", _decimals(2)),
            "tokens_per_s": ("tokens/s", _decimals(0)),
            "achieved_tflops": ("achieved TFLOP/s", _decimals(1)),
            "mfu_datasheet": ("MFU vs datasheet bf16 dense (%)", _decimals(1)),
            "mfu_roofline": ("MFU vs measured bf16 roofline (%)", _decimals(1)),
            "roofline_tflops": ("measured bf16 roofline (TFLOP/s)", _decimals(1)),
            "peak_memory": ("peak memory (GB)", _decimals(2))}


@takes_rows
def mfu_values(rows: pd.DataFrame, roofline: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`mfu_table`'s numbers, unrounded, by metric name (for captions). MFU against the
    measured roofline is computed here, from ``roofline`` (default: the ledger's) by
    :func:`bf16_rooflines`, not read from the run's row: a run recorded before the roofline
    was measured again would otherwise divide by an old peak."""
    if rows.empty:
        return pd.DataFrame()
    ok = rows[rows["metric"].isin(list(MFU_ROWS)) & (rows["status"] == "ok")
              & (rows["metric"] != "mfu_roofline")]
    roofs = bf16_rooflines(results.load("roofline") if roofline is None else roofline)
    peak = dict(zip(roofs["device"], roofs["tflops"], strict=True))
    achieved = ok[ok["metric"] == "achieved_tflops"]
    if len(achieved) and "device" in achieved:
        tflops = achieved["device"].astype(str).map(peak).astype(float)
        ok = pd.concat([ok, achieved.assign(metric="mfu_roofline", unit="%",
                                            value=100 * achieved["value"] / tflops),
                        achieved.assign(metric="roofline_tflops", value=tflops)],
                       ignore_index=True)
    ok = ok[ok["value"].notna()]
    if ok.empty:
        return pd.DataFrame()
    table = _pivot_runs(ok, "metric")
    return table.reindex([k for k in MFU_ROWS if k in table.index])


@takes_rows
def mfu_table(rows: pd.DataFrame, roofline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Step time, tokens/s, TFLOP/s, MFU vs datasheet and vs the measured roofline (and that
    roofline), peak memory: one column per run (per (where, run) when the rows come from
    several places: this machine's first); units in the row labels, each row rounded alike,
    "–" where a run has no value."""
    table = mfu_values(rows, roofline)
    if table.empty:
        return table
    shown = pd.DataFrame({col: [MFU_ROWS[m][1](v) for m, v in table[col].items()]
                          for col in table.columns},
                         index=[MFU_ROWS[m][0] for m in table.index])
    shown.columns = table.columns
    return shown


KERNEL_LABELS = {"step_time": "step time (ms)", "kernels total": "kernels total (ms)",
                 "GPU idle (step - kernels)": "GPU idle: step − kernels (ms)"}


@takes_rows
def kernel_values(rows: pd.DataFrame) -> pd.DataFrame:
    """GPU ms per step by kernel family (rows: ``matmul``, ``attention``, …, ``step_time``,
    ``kernels total``, ``GPU idle (step - kernels)``), per run (columns), unrounded."""
    if rows.empty or not rows["metric"].astype(str).str.startswith("kernel_ms_").any():
        return pd.DataFrame()
    ok = rows[(rows["status"] == "ok") & (rows["metric"].astype(str).str.startswith("kernel_ms_")
                                          | (rows["metric"] == "step_time"))]
    ok = ok.assign(part=ok["metric"].astype(str).str.replace("kernel_ms_", "", regex=False))
    table = _pivot_runs(ok, "part")
    kernels = table.drop(index="step_time", errors="ignore")
    table, kernels = table.loc[:, kernels.notna().any()], kernels.loc[:, kernels.notna().any()]
    table.loc["kernels total"] = kernels.sum()
    if "step_time" in table.index:
        table.loc["GPU idle (step - kernels)"] = table.loc["step_time"] - table.loc["kernels total"]
    return table


@takes_rows
def kernel_table(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`kernel_values` as shown: every cell in ms to two decimals ("–" where a run has
    no kernel of that family), the unit in each row's label ("matmul (ms)")."""
    table = kernel_values(rows)
    if table.empty:
        return table
    shown = table.map(lambda ms: f"{ms:.2f}" if np.isfinite(ms) else "–")
    return shown.rename(index=lambda part: KERNEL_LABELS.get(part, f"{part} (ms)"))


@takes_rows
def sweep_figure(rows: pd.DataFrame, roofline: pd.DataFrame | None = None):
    """Achieved TFLOP/s vs size, the datasheet peak (dotted) and each device's measured bf16
    peak from 00's ``roofline`` rows (dashed, named at its end; never another device's)."""
    from workbook import plots

    ok = rows[rows["status"] == "ok"] if not rows.empty else rows
    achieved = ok[ok["metric"] == "achieved_tflops"].assign(what="achieved")
    peaks = ok[ok["metric"].isin(["peak_datasheet", "peak_roofline"])]
    peaks = peaks.assign(what=peaks["metric"].str.replace("peak_", "peak: "))
    both = pd.concat([achieved, peaks], ignore_index=True)
    fig = plots.compare(both, x="n_params", group="what", log_x=True,
                        title="Training-step FLOP/s by model size (eager, bf16)",
                        x_title="matmul parameters N", y_title="TFLOP/s")
    if roofline is None or roofline.empty or achieved.empty or "device" not in achieved:
        return fig
    span = [achieved["n_params"].min(), achieved["n_params"].max()]
    peaks = {d: roofline_peaks(roofline[roofline["device"] == d]).get("bf16")  # top label
             for d in achieved["device"].unique()}  # above its line, the others under theirs
    for i, (device, peak) in enumerate(sorted(peaks.items(), key=lambda kv: -(kv[1] or 0))):
        if peak:
            at, where = plots.short_device(device), "bottom left" if i else "top left"
            fig.add_scatter(x=span, y=[peak, peak], mode="lines+text", textposition=where,
                            name=f"measured bf16 roofline ({at})", text=["", f"{at}: {peak:.0f}"],
                            line={"dash": "dash", "color": plots.color_for("peak: roofline")})
    return fig


def calculator():
    """The training-time calculator: parameters, tokens, GPU, count, utilisation -> time."""
    from workbook import plots, widgets

    gpus = ["A100", "H100", "H200", "L4", "T4"]
    controls = {
        "n_params": widgets.slider("parameters", 1e8, 2e12, 0.01, 175e9, log=True),
        "n_tokens": widgets.slider("tokens", 1e9, 1e14, 0.01, 300e9, log=True),
        "gpu": widgets.dropdown("GPU", gpus, "A100"),
        "n_gpus": widgets.slider("GPUs", 1, 1e5, 0.01, 10_000, log=True),
        "utilization": widgets.slider("MFU", 0.05, 1.0, 0.01, 0.5),
    }
    fig = plots.figure("Training time vs utilisation (6·N·D / (peak × GPUs × MFU))",
                       "model FLOPs utilisation (MFU)", "days", log_y=True)
    fig.add_scatter(name="this run", mode="lines")
    fig.add_scatter(name="chosen MFU", mode="markers", marker={"size": 12})

    def draw(fig, n_params, n_tokens, gpu, n_gpus, utilization) -> str:
        n_gpus = int(round(n_gpus))
        grid = np.linspace(0.05, 1.0, 96)
        dtype = training_dtype(gpu)
        days = [training_time(n_params, n_tokens, gpu=gpu, n_gpus=n_gpus,
                              utilization=float(u), dtype=dtype)["days"] for u in grid]
        t = training_time(n_params, n_tokens, gpu=gpu, n_gpus=n_gpus, utilization=utilization,
                          dtype=dtype)
        fig.data[0].x, fig.data[0].y = grid, days
        fig.data[1].x, fig.data[1].y = [utilization], [t["days"]]
        return (f"C = 6·N·D = {readable(t['flops'])} FLOPs on {n_gpus:,} × {gpu} "
                f"({gpu_peak_tflops(gpu, dtype):g} TFLOP/s {dtype} dense) at {utilization:.0%} "
                f"MFU: "
                f"{t['seconds']:,.0f} s = {t['hours']:,.1f} h = {t['days']:,.2f} days, "
                f"{t['gpu_hours']:,.0f} GPU-hours")

    return widgets.Explorer(controls, draw, fig)


@takes_rows
def claims(mfu_rows: pd.DataFrame, counted: pd.DataFrame,
           energy_rows: pd.DataFrame | None = None,
           roofline: pd.DataFrame | None = None) -> pd.DataFrame:
    """The lecture's and the issue's claims, checked against this notebook's numbers (rows of
    ``registry.with_references``: this machine's first, the references each on a row of its
    own); every verdict computed by :func:`workbook.claims.verdict`. ``roofline``: 00's rows
    (default: the ledger's), for what a dense bf16 matmul really reaches."""
    ex = lecture_examples().set_index("run")
    gpt3, llama = ex.loc["GPT-3 175B"], ex.loc["Llama 3 405B"]
    h100 = datasheet("H100")
    total = counted.set_index("part").loc["total", "counted / predicted"]
    dense = h100.tflops["bf16"]
    out = [
        Claim("GPT-3: 6·N·D ≈ 3.15×10²³ FLOPs", "lecture", 3.15e23, float(gpt3["flops"]), "FLOPs",
              "6·N·D with N, D as published", rel_tol=0.02),
        Claim("GPT-3 on 10,000 A100 at 50 % ≈ 2.3 days (no restarts, no communication)",
              "lecture", 2.3, float(gpt3["days"]), "days", "training_time()", rel_tol=0.05),
        Claim("Llama 3 405B: 6·N·D ≈ 3.6×10²⁵ FLOPs", "lecture", 3.6e25, float(llama["flops"]),
              "FLOPs", "6·N·D with N, D as published", rel_tol=0.05),
        # The lecture's 1,979 is the 2:4-sparse figure: twice the datasheet's dense peak.
        Claim("H100 BF16 = 1,979 TFLOP/s (the lecture's table)", "lecture", 1979.0, 2 * dense,
              "TFLOP/s", f"{h100.source}, not a measurement: {dense:,.1f} dense, ×2 with "
              "2:4 sparsity (the lecture's figure is the sparse one)", rel_tol=0.05),
        _dense_roofline_claim(bf16_rooflines(results.load("roofline") if roofline is None
                                             else roofline), dense),
        Claim("6·N·D (+ attention) is the FLOPs of a step (counted / predicted)",
              "Kaplan 2020, PaLM", 1.0, float(total), "×", "FlopCounterMode, this machine",
              rel_tol=0.05),
    ]
    out += _mfu_claims(mfu_rows)
    if energy_rows is not None:
        out += energy_claims(energy_rows)
    return claims_table(out)


def _dense_roofline_claim(roofs: pd.DataFrame, dense: float) -> Claim:
    """Dense bf16 training runs at most at the dense peak: the measured bf16 matmul of the
    first GPU in ``roofs`` (this machine's live run first) whose datasheet dense bf16 peak is
    the H100's (an H100 SXM or an H200: the same chip's tensor cores)."""
    text = (f"dense BF16 on an H100-class GPU: at most the datasheet's {dense:,.1f} TFLOP/s, "
            "half the lecture's 1,979 (measured: the bf16 matmul roofline)")
    for _, roof in roofs.iterrows():
        sheet = datasheet(roof["device"])
        if sheet is not None and sheet.tflops.get("bf16") == dense:
            shape = f"{roof['size']}³ matmul" if roof["size"] else "matmul"
            return Claim(text, "NVIDIA datasheet (dense)", dense, float(roof["tflops"]),
                         "TFLOP/s", f"{roof['label']} ({roof['device']}), {shape}"
                         if roof["label"].startswith("this") else
                         f"{roof['label']}, {shape}", kind="at_most")
    return Claim(text, "NVIDIA datasheet (dense)", dense, float("nan"), "TFLOP/s",
                 "no roofline of an H100-class GPU yet", kind="at_most")


def _best_mfu(rows: pd.DataFrame) -> tuple[float, str]:
    """The highest MFU (datasheet) of a non-eager run in ``rows``, and that run."""
    ok = rows[(rows["metric"] == "mfu_datasheet") & (rows["status"] == "ok")]
    ok = ok.assign(run=run_labels(ok))
    ok = ok[~ok["run"].str.startswith("eager")]
    if ok.empty:
        return float("nan"), ""
    best = ok.loc[ok["value"].idxmax()]
    return float(best["value"]), str(best["run"])


def _mfu_claims(mfu_rows: pd.DataFrame) -> list[Claim]:
    """One MFU row and one torch.compile row per place the rows come from (this machine first);
    a place that did not run nanoGPT's shape (a CPU's small preset) is 'not measured' there."""
    target = MFU_PRESETS["full"]
    out = []
    if mfu_rows.empty:
        return [Claim("MFU ≥ 40 % of the bf16 dense peak at nanoGPT's shape (compiled)",
                      "issue (nanoGPT: 38 %)", 40.0, float("nan"), "%", "no rows yet",
                      kind="at_least")]
    where = where_of(mfu_rows)
    for place in ordered_wheres(mfu_rows):
        rows = mfu_rows[where == place]
        shape = rows[(rows["d_model"] == target.d_model) & (rows["n_layers"] == target.n_layers)
                     & (rows["seq_len"] == target.seq_len)]
        mfu, run = _best_mfu(shape)
        note = f"{place}: {run}" if run else f"{place}: not nanoGPT's shape or no GPU peak"
        out.append(Claim("MFU ≥ 40 % of the bf16 dense peak at nanoGPT's shape (compiled)",
                         "issue (nanoGPT: 38 %)", 40.0, mfu, "%", note, kind="at_least"))
        out.append(Claim("torch.compile: a 1.5-2× faster step (eager / compiled, sdpa)",
                         "lecture's summary table", 1.75, step_ratio(shape, "eager:sdpa",
                         "compiled:sdpa"), "×", place, rel_tol=0.25 / 1.75))
    return out


@takes_rows
def loss_kernel_table(rows: pd.DataFrame, top: int | None = None) -> pd.DataFrame:
    """One row per launch of the recorded loss_kernel sweep (the latest measurement of each):
    ms, the bytes it must move, and the bandwidth that implies, with the commit and the device
    that measured it (the kernel changed between commits). Per place (this machine first):
    the baselines (F.cross_entropy, the PyTorch twin), then the kernel's launches, fastest
    first; ``top``: only that many launches per place. Launch settings are integers, "–" for
    a baseline, which has none."""
    if rows.empty:
        return rows
    if top is not None:
        check_range("top", top, 1, 100_000)
    keys = [k for k in ("variant", "block", "warps", "per_sm", "evict", "commit", "device")
            if k in rows]
    ok = rows[rows["status"] == "ok"]
    ok = ok.assign(where=where_of(ok))
    table = ok.pivot_table(index=["where"] + keys, columns="metric", values="value",
                           aggfunc="last", dropna=False).dropna(how="all").reset_index()
    table["GB moved (predicted)"] = table["bytes_moved"] / 1e9
    table = table.rename(columns={"ms": "ms (measured)", "achieved_gbps": "GB/s"})
    table = table.sort_values("ms (measured)", ignore_index=True).round(3)
    table["GB/s"] = table["GB/s"].round().astype("Int64")
    for key in ("block", "warps", "per_sm"):
        if key in table:
            table[key] = pd.to_numeric(table[key], errors="coerce").round().astype("Int64")
    parts = []
    for place in ordered_wheres(ok):
        here = table[table["where"] == place]
        kernel = here["variant"] == "triton_ce"
        parts += [here[~kernel], here[kernel] if top is None else here[kernel].head(top)]
    out = pd.concat(parts, ignore_index=True)[keys + ["ms (measured)", "GB moved (predicted)",
                                                     "GB/s"]]
    out.columns.name = None
    return results.dashed(out)


def top_kernels(run: str = "compiled:causal", cfg: ModelConfig | None = None,
                batch_size: int | None = None, n: int = 20, seed: int = 0) -> pd.DataFrame:
    """The ``n`` longest CUDA kernels of one training step for ``run`` (see :func:`parse_run`),
    at the full MFU preset's shape unless ``cfg``/``batch_size`` are given. GPU only."""
    if not torch.cuda.is_available():
        raise WorkbookError("top_kernels profiles CUDA kernels and needs a GPU")
    preset = MFU_PRESETS["full"]
    step, _ = make_train_step(cfg or preset.model(), batch_size or preset.batch_size,
                              RunSpec.parse(run), seed, torch.device("cuda"))
    for _ in range(3):
        step()   # compile and warm up
    return kernel_times(step).head(n)


# --- energy -------------------------------------------------------------------------------

_ENERGY_METRICS = {"joules_per_token": "J/token", "avg_power_w": "average W",
                   "idle_power_w": "idle W", "tokens_per_s": "tokens/s",
                   "mfu_datasheet": "MFU (% datasheet)"}


@takes_rows
def energy_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per place (this machine first) and run: J/token, average and idle W, tokens/s, MFU as
    the mean over the measured windows, with min-max, and how the energy was read."""
    if rows.empty:
        return pd.DataFrame()
    rows = rows.assign(where=where_of(rows), run=run_labels(rows))
    out = []
    for place in ordered_wheres(rows):
        for run, part in rows[rows["where"] == place].groupby("run", sort=False):
            line = {"where": place, "run": run}
            for metric, label in _ENERGY_METRICS.items():
                vals = part[(part["metric"] == metric) & (part["status"] == "ok")]["value"]
                line[label] = float(vals.mean()) if len(vals) else float("nan")
                if metric == "joules_per_token" and len(vals) > 1:
                    line["J/token min-max"] = f"{vals.min():.4g}–{vals.max():.4g}"
            method = part["method"].dropna() if "method" in part else pd.Series(dtype=object)
            note = part["error"].dropna() if "error" in part else pd.Series(dtype=object)
            line["energy from"] = (str(method.iloc[0]) if len(method)
                                   else str(note.iloc[0]) if len(note) else "")
            out.append(line)
    columns = ["where", "run", "J/token", "J/token min-max", *list(_ENERGY_METRICS.values())[1:],
               "energy from"]
    return ReadableTable(pd.DataFrame(out).reindex(columns=[c for c in columns if any(
        c in line for line in out)]))


def _measured_gpu(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows the GPT-3 estimate rests on: this machine's, where it measured energy; else the
    newest recorded device's (a CPU has no NVML)."""
    if rows.empty:
        return rows
    ok = rows[(rows["metric"] == "joules_per_token") & (rows["status"] == "ok")]
    if ok.empty:
        return ok
    where = where_of(rows)
    for place in ordered_wheres(rows):
        if (where_of(ok) == place).any():
            return rows[where == place]
    return ok.iloc[0:0]


def _ranges(values: pd.Series) -> tuple[float, float]:
    return float(values.min()), float(values.max())


@takes_rows
def gpt3_assumptions(energy_rows: pd.DataFrame) -> pd.DataFrame:
    """Every input of the GPT-3 estimate, per scenario, with its range and where it comes from:
    *this GPU* (its datasheet peak, MFU and power measured by ``energy_per_token``) and
    *GPT-3's V100s* (datasheets and the published run)."""
    lines = []

    def add(scenario, name, low, high, unit, source):
        lines.append({"scenario": scenario, "assumption": name, "low": low, "high": high,
                      "unit": unit, "source": source})

    gpu = _measured_gpu(energy_rows)
    for scenario in _scenarios(gpu):
        add(scenario, "N (parameters)", GPT3["n_params"], GPT3["n_params"], "parameters",
            "Brown et al. 2020")
        add(scenario, "D (training tokens)", GPT3["n_tokens"], GPT3["n_tokens"], "tokens",
            "Brown et al. 2020")
    if not gpu.empty:
        scenario = _scenarios(gpu)[0]
        device = str(gpu["device"].iloc[0])
        sheet = datasheet(device)
        mfu = gpu[(gpu["metric"] == "mfu_datasheet") & (gpu["status"] == "ok")]["value"] / 100
        watts = gpu[(gpu["metric"] == "avg_power_w") & (gpu["status"] == "ok")]["value"]
        where = where_of(gpu).iloc[0]
        peak = sheet.tflops["bf16"] if sheet else float("nan")
        add(scenario, "peak FLOP/s per GPU", peak, peak, "TFLOP/s",
            f"{sheet.source if sheet else 'no datasheet'} (bf16 dense)")
        add(scenario, "MFU", *_ranges(mfu), "fraction", f"measured, {where} (min-max of windows)")
        add(scenario, "power per GPU", *_ranges(watts), "W",
            f"measured by NVML, {where} (board only)")
        add(scenario, "PUE", 1.1, 1.4, "×", "1.1: GPT-3's data centre (Patterson 2021); "
            "1.4: a typical one")
        add(scenario, "grid carbon intensity", 0.2, 0.5, "kg CO₂/kWh",
            "a cleaner to a dirtier grid; GPT-3's was 0.429")
        add(scenario, "price", 2.0, 5.0, "$/GPU-hour", "assumed cloud range, reserved to "
            "on-demand")
    v100 = _scenarios(gpu)[-1]
    add(v100, "peak FLOP/s per GPU", V100["tflops_fp16"], V100["tflops_fp16"], "TFLOP/s",
        "NVIDIA V100 SXM2 datasheet (fp16 tensor)")
    add(v100, "MFU", 0.15, 0.30, "fraction", "assumed: Megatron-LM (2019) reached 30 % of a "
        "V100 on one GPU, less at scale")
    add(v100, "power per GPU", 250.0, 330.0, "W", f"V100 board {V100['tdp_w']:.0f} W; "
        "Patterson 2021 count 330 W with the host's share")
    add(v100, "PUE", GPT3["pue"], GPT3["pue"], "×", "Patterson 2021 (GPT-3's data centre)")
    add(v100, "grid carbon intensity", GPT3["kg_co2_per_kwh"], GPT3["kg_co2_per_kwh"],
        "kg CO₂/kWh", "Patterson 2021 (GPT-3's data centre)")
    add(v100, "price", 1.0, 3.0, "$/GPU-hour", "assumed 2020 cloud V100 range")
    return ReadableTable(lines)


V100_SCENARIO = "GPT-3's V100s (datasheets)"


def _scenarios(gpu: pd.DataFrame) -> list[str]:
    if gpu.empty:
        return [V100_SCENARIO]
    return [str(where_of(gpu).iloc[0]), V100_SCENARIO]


@takes_rows
def gpt3_prediction(energy_rows: pd.DataFrame) -> pd.DataFrame:
    """GPU-hours, MWh, t CO₂ and M$ of GPT-3's training per scenario of
    :func:`gpt3_assumptions`, each low / central / high (:func:`predict_run_cost`)."""
    assumptions = gpt3_assumptions(energy_rows)
    frames = []
    for scenario, part in assumptions.groupby("scenario", sort=False):
        a = part.set_index("assumption")
        pair = {n: (float(a.loc[n, "low"]), float(a.loc[n, "high"])) for n in a.index}
        if any(np.isnan(v).any() for v in pair.values()):
            continue   # e.g. a GPU without a datasheet peak
        out = predict_run_cost(GPT3["n_params"], GPT3["n_tokens"],
                               pair["peak FLOP/s per GPU"], pair["MFU"], pair["power per GPU"],
                               pair["PUE"], pair["grid carbon intensity"], pair["price"])
        frames.append(out.assign(scenario=scenario))
    return ReadableTable(pd.concat(frames, ignore_index=True)[
        ["scenario", "quantity", "low", "central", "high", "unit"]])


@takes_rows
def energy_claims(energy_rows: pd.DataFrame) -> list[Claim]:
    """The lecture's GPT-3 energy, CO₂ and compute cost (Patterson et al. 2021, for GPT-3's
    V100s): checked against the V100 scenario's predicted interval (holds where the lecture's
    figure lies inside it); a current GPU's scenario is no check of that 2020 run but a
    prediction, "the same training on this GPU at its measured MFU would need less", judged
    as a bound (holds where its whole interval lies below the lecture's figure)."""
    prediction = gpt3_prediction(energy_rows)
    lecture = [("energy (GPU power × PUE)", "~1,287 MWh", GPT3["energy_mwh"], "MWh"),
               ("CO₂", "~552 t CO₂", GPT3["co2_t"], "t"),
               ("compute cost", "~$5M", GPT3["compute_usd"] / 1e6, "M$")]
    out = []
    for scenario, part in prediction.groupby("scenario", sort=False):
        p = part.set_index("quantity")
        v100 = scenario == V100_SCENARIO
        for quantity, figure, value, unit in lecture:
            row = p.loc[quantity]
            if v100:
                out.append(Claim(f"GPT-3's training on V100s: {figure} ({quantity}; "
                                 "6·N·D / (peak × MFU) × W × PUE)",
                                 "lecture (Patterson et al. 2021)", value,
                                 float(row["central"]), unit, f"6·N·D prediction, {scenario}",
                                 low=float(row["low"]), high=float(row["high"])))
            else:
                out.append(Claim(f"scenario: the same training on a current GPU, at the MFU "
                                 "and power measured there (where), would need less than the "
                                 f"V100s' {figure} ({quantity})", "prediction", value,
                                 float(row["central"]), unit, f"6·N·D prediction, {scenario}",
                                 low=float(row["low"]), high=float(row["high"]),
                                 kind="at_most"))
    return out
