"""Notebook 06's views: the formulas behind the sliders, summaries of the ranks' rows, figures,
and the closing claims table (expert-parallel views and the trade-off table: :mod:`.moe_views`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from workbook import registry, results
from workbook.claims import Claim, claims_table
from workbook.config import check_choice, check_range, takes_rows
from workbook.model_parallel.comm import BYTES
from workbook.model_parallel.machines import (
    curve_label,
    largest_world,
    machine_blocks,
    mean_over_ranks,
    pick,
    with_schedule,
)
from workbook.model_parallel.pipeline import bubble_fraction
from workbook.model_parallel.schedules import SCHEDULES
from workbook.model_parallel.tensor import tp_comm_per_layer


def analytic_view(p: int, m: int, tp: int, d_model: int, *, seq_len: int = 2048,
                  micro_batch: int = 1, dtype: str = "bf16") -> pd.DataFrame:
    """What the sliders show: bubble share and bytes moved per layer, for each parallelism.
    Tensor parallelism pays its all-reduces once per micro-batch: its rows say so, and one more
    multiplies by ``m`` so that it compares with the pipeline's bytes per step."""
    check_range("d_model", d_model, 64, 65536)
    check_choice("dtype", dtype, list(BYTES))
    tpc = tp_comm_per_layer(micro_batch, seq_len, d_model, tp, dtype)
    act = micro_batch * seq_len * d_model * BYTES[dtype]
    rows = [
        ("pipeline", "bubble fraction", bubble_fraction(p, m), ""),
        ("pipeline", "p2p bytes per stage boundary per step", 2 * m * act if p > 1 else 0, "B"),
        ("tensor", "all-reduces per layer per micro-batch", tpc["allreduces"], ""),
        ("tensor", "all-reduce payload per layer per micro-batch", tpc["total_payload_bytes"],
         "B"),
        ("tensor", "ring bytes sent per rank per layer per micro-batch",
         tpc["ring_bytes_per_rank"], "B"),
        ("tensor", "ring bytes sent per rank per layer per step (m micro-batches)",
         m * tpc["ring_bytes_per_rank"], "B"),
        ("tensor", "weights per rank (share of a layer)", 1 / tp, ""),
    ]
    return pd.DataFrame([{"parallelism": k, "p": p, "m": m, "tp": tp, "d_model": d_model,
                          "metric": name, "value": float(v), "unit": u, "source": "predicted"}
                         for k, name, v, u in rows])


def bubble_curve(p_values: Sequence[int], m_values: Sequence[int]) -> pd.DataFrame:
    """Predicted bubble fraction on a (p, m) grid, tidy."""
    return pd.DataFrame([{"p": p, "m": m, "metric": "idle_fraction",
                          "value": bubble_fraction(p, m), "unit": "", "source": "predicted"}
                         for p in p_values for m in m_values])


# tp_summary's columns: equality with one device first, then the counts, then the times
_TP_ORDER = ("max_abs_err_output", "max_abs_err_input_grad", "max_abs_err_weight_grad",
             "max_abs_err_torch_tp_mlp", "allreduce_calls", "allreduce_calls_forward",
             "allreduce_payload", "allreduce_payload_forward", "ring_bytes_sent_per_rank",
             "weight_elements_per_rank", "step_ms_one_device", "step_ms_tensor_parallel",
             "allreduce_ms", "comm_share_estimate")


@takes_rows
def tp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, tp), a column per metric, averaged over ranks: the value measured
    (here) or recorded (on the machine ``where`` names), and ``<metric>_predicted`` beside it
    where the formula predicts one; a machine is its device and GPU count ('NVIDIA H200 ×4'),
    this machine first."""
    rows = rows.assign(where=curve_label(rows), kind=rows["source"].where(
        rows["source"] == "predicted", "measured"))
    out = mean_over_ranks(rows, ["where", "tp", "metric", "kind"])
    wide = out.pivot_table(index=["where", "tp"], columns=["metric", "kind"], values="value")
    metrics = [m for m in _TP_ORDER if m in set(out["metric"])]
    order = [(m, k) for m in dict.fromkeys([*metrics, *out["metric"]])
             for k in ("measured", "predicted") if (m, k) in wide.columns]
    wide = wide[order]
    wide.columns = [m if k == "measured" else f"{m}_predicted" for m, k in order]
    wide = wide.reset_index()
    return wide.sort_values("where", key=lambda w: w != "here", kind="stable", ignore_index=True)


@takes_rows
def stage_times(pp: pd.DataFrame) -> pd.DataFrame:
    """Per machine ('here' first), schedule, p and stage (rank), at each machine's largest m:
    forward and backward ms per micro-batch and the CPU share of busy time, rank means.
    Rows recorded before 1F1B existed were GPipe's."""
    ops = with_schedule(pp[pp["metric"].isin(["forward_ms", "backward_ms",
                                              "cpu_share_of_busy"])])
    ops = ops.assign(where=curve_label(ops))
    ops = ops[ops["m"] == ops.groupby("where")["m"].transform("max")]
    keys = ["where", "schedule", "p", "m", "rank"]
    out = ops.groupby([*keys, "metric"])["value"].mean().unstack().rename_axis(columns=None)
    return out.reset_index().sort_values("where", key=lambda w: w != "here", kind="stable",
                                         ignore_index=True)


@takes_rows
def peak_memory_table(pp: pd.DataFrame) -> pd.DataFrame:
    """The largest stage's peak GPU memory (GiB) per machine ('here' first), schedule and p,
    one column per m; empty where no GPU recorded it."""
    mem = with_schedule(pp[pp["metric"] == "peak_memory"])
    if mem.empty:
        return mem
    mem = mem.assign(where=curve_label(mem))
    out = mem.groupby(["where", "schedule", "p", "m"])["value"].max().unstack()
    out.columns = [f"m={int(m)} GiB" for m in out.columns]
    return out.reset_index().sort_values("where", key=lambda w: w != "here", kind="stable",
                                         ignore_index=True)


@takes_rows
def comm_table(d3: pd.DataFrame) -> pd.DataFrame:
    """The 3D run's communication per machine ('here' first), layout and dimension, rank means:
    messages and bytes sent, counted beside the layout's count, and ms inside the calls
    (measured only: no formula predicts a time)."""
    part = d3[d3["metric"].isin(["calls", "bytes_sent", "comm_ms"])]
    part = part.assign(where=curve_label(part), kind=part["source"].where(
        part["source"] == "predicted", "measured"))
    keys = [k for k in ("where", "backend", "layout", "dim") if k in part.columns]
    wide = part.groupby([*keys, "metric", "kind"], dropna=False)["value"].mean().unstack(
        ["metric", "kind"]).dropna(axis=1, how="all")
    order = [(m, k) for m in ("calls", "bytes_sent", "comm_ms") for k in ("predicted",
                                                                          "measured")]
    wide = wide[[c for c in order if c in wide.columns]]
    wide.columns = [f"{m} {k}" for m, k in wide.columns]
    return wide.reset_index().sort_values("where", key=lambda w: w != "here", kind="stable",
                                          ignore_index=True)


def pp_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Idle fraction per (p, m): wall clock, op-duration replay and the formula, rank mean."""
    idle = rows[rows["metric"].isin(["idle_fraction", "idle_fraction_replay"])].copy()
    idle["kind"] = idle["metric"].where(idle["source"] != "predicted", "formula")
    idle["kind"] = idle["kind"].map({"idle_fraction": "wall clock",
                                     "idle_fraction_replay": "op-duration replay",
                                     "formula": "(p-1)/(m+p-1)"})
    out = mean_over_ranks(idle, ["device", "p", "m", "kind", "source"])
    return out.assign(metric="idle_fraction", stages="p=" + out["p"].astype(int).astype(str))


def gpu_rows(name: str) -> pd.DataFrame:
    """Rows recorded on GPUs for experiment ``name``, from one device: the one recorded with
    the most GPUs (latest first on a tie), so that no plot averages two machines. Empty if none.
    """
    registry.get(name)  # an unknown name: one line listing the experiments
    rows = results.load(name)
    rows = rows[pd.to_numeric(rows["n_gpus"], errors="coerce").fillna(0) > 0]
    if rows.empty:
        return rows
    best = rows.sort_values(["n_gpus", "recorded_at"]).iloc[-1]["device"]
    return rows[rows["device"] == best].reset_index(drop=True)


def bubble_explorer():
    """Sliders p, m, tp, d_model -> bubble curve and bytes per layer (pure formulas)."""
    from workbook import plots, widgets

    ms = [1, 2, 4, 8, 16, 32, 64, 128]
    fig = plots.figure("Pipeline bubble (p-1)/(m+p-1)", "micro-batches m", "idle fraction",
                       log_x=True)

    def draw(fig, p: int, m: int, tp: int, d_model: int) -> str:
        if not fig.data:
            fig.add_scatter(name="bubble at this p", mode="lines", line={"dash": "dash"})
            fig.add_scatter(name="your m", mode="markers", marker={"size": 14})
        fig.data[0].update(x=ms, y=[bubble_fraction(p, x) for x in ms])
        fig.data[1].update(x=[m], y=[bubble_fraction(p, m)])
        view = analytic_view(p, m, tp, d_model).set_index("metric")["value"]
        mib = view / 2**20
        return (f"p={p}, m={m}: idle {view['bubble fraction']:.1%} of each step; "
                f"tp={tp}, d_model={d_model}, 1×2048 tokens a micro-batch: "
                f"{view['all-reduces per layer per micro-batch']:.0f} all-reduces and "
                f"{mib['ring bytes sent per rank per layer per micro-batch']:.1f} MiB sent per "
                f"rank per layer per micro-batch, "
                f"{mib['ring bytes sent per rank per layer per step (m micro-batches)']:.1f} MiB "
                f"per layer per step (× m={m}); pipeline sends "
                f"{mib['p2p bytes per stage boundary per step']:.1f} MiB per stage boundary "
                "per step")

    controls = {"p": widgets.slider("stages p", 1, 64, 1, 4),
                "m": widgets.slider("micro-batches m", 1, 128, 1, 8),
                "tp": widgets.slider("tensor-parallel degree", 1, 64, 1, 8),
                "d_model": widgets.slider("d_model", 512, 16384, 512, 4096)}
    return widgets.Explorer(controls, draw, fig)


@takes_rows
def plot_bubble(rows: pd.DataFrame, title: str = "GPipe idle fraction vs micro-batches"):
    from workbook import plots

    rows = with_schedule(rows)
    s = pp_summary(rows[rows["schedule"] == "gpipe"])
    formula = s["source"] == "predicted"  # the same on every machine: one curve per p
    curve = s["stages"] + " " + s["kind"]
    s = s.assign(curve=curve.where(formula, curve + " · " + curve_label(s)))
    if "device" in s.columns:  # the formula named after one machine (this one), never split
        s["device"] = s["device"].where(~formula, pd.concat(
            [s.loc[s["source"] == "measured", "device"], s["device"]]).iloc[0])
    return plots.compare(s[~(formula & s.duplicated(["p", "m", "kind"]))], "m", group="curve",
                         title=title, log_x=True, x_title="micro-batches m",
                         y_title="idle fraction of a step", color="stages")


@takes_rows
def plot_tp_time(rows: pd.DataFrame):
    """Step time of one block vs tensor-parallel degree, and the all-reduce share."""
    from workbook import plots

    t = rows[rows["metric"].isin(["step_ms_one_device", "step_ms_tensor_parallel"])]
    t = t.assign(curve=t["metric"] + " · " + curve_label(t))  # one trace per machine
    t = mean_over_ranks(t, ["tp", "curve", "metric", "source"])
    return plots.compare(t, "tp", group="curve", color="metric", title="One transformer block, "
                         "forward + backward", x_title="tensor-parallel degree", y_title="ms")


def _pp_claims(pp: pd.DataFrame, where: str) -> list[Claim]:
    pp = with_schedule(pp)
    p, m = int(pp["p"].max()), int(pp["m"].max())
    out = []
    for sched in ("gpipe", "1f1b"):
        if not (pp["schedule"] == sched).any():
            continue
        name = "GPipe" if sched == "gpipe" else "1F1B"
        # idle shares of a step: 2 points of idle time is agreement (p = 1 predicts exactly 0)
        out.append(Claim(f"{name} bubble (p={p}, m={m}), op-duration replay", "GPipe paper",
                         bubble_fraction(p, m), pick(pp, "idle_fraction_replay", p=p, m=m,
                                                      schedule=sched),
                         "", where, rel_tol=0.25, abs_tol=0.02))
        if sched == "gpipe":
            out.append(Claim(f"GPipe bubble (p={p}, m={m}), wall clock", "GPipe paper",
                             bubble_fraction(p, m), pick(pp, "idle_fraction", p=p, m=m,
                                                          schedule=sched),
                             "", where, rel_tol=0.25, abs_tol=0.02))
    if not {"gpipe", "1f1b"} <= set(pp["schedule"]):
        return out
    idle = {s: pick(pp, "idle_fraction_replay", p=p, m=m, schedule=s) for s in SCHEDULES}
    stage0 = pp[pp["rank"] == 0] if "rank" in pp.columns else pp
    ratio = (pick(stage0, "peak_activation_bytes", p=p, m=m, schedule="1f1b")
             / pick(stage0, "peak_activation_bytes", p=p, m=m, schedule="gpipe"))
    return out + [
        # predicted: GPipe's idle share measured in the same run; 3 points of a step (or a
        # quarter of it) is the noise of op durations on a shared CPU
        Claim(f"1F1B has GPipe's bubble (p={p}, m={m}): predicted = GPipe's measured idle",
              "Narayanan et al. 2021 (PipeDream-flush)", idle["gpipe"], idle["1f1b"], "", where,
              rel_tol=0.25, abs_tol=0.03),
        Claim(f"GPipe holds all m={m} micro-batches' activations (p={p})", "GPipe paper",
              m, pick(pp, "peak_in_flight", how="max", p=p, m=m, schedule="gpipe"),
              "micro-batches", where, rel_tol=0),
        Claim(f"1F1B holds at most p={p} micro-batches' activations (m={m})",
              "Narayanan et al. 2021", p, pick(pp, "peak_in_flight", how="max", p=p, m=m,
                                                schedule="1f1b"),
              "micro-batches", where, kind="at_most"),
        Claim(f"stage 0 activation bytes, 1F1B / GPipe = min(p, m)/m (p={p}, m={m})",
              "Narayanan et al. 2021", min(p, m) / m, ratio, "", where)]


def _composed_claims(d3: pd.DataFrame, where: str) -> list[Claim]:
    sizes = d3[["dp", "tp", "pp"]].drop_duplicates()
    full = sizes[(sizes > 1).sum(axis=1) == (sizes > 1).sum(axis=1).max()].iloc[0]
    layout = f"dp{int(full.dp)}·tp{int(full.tp)}·pp{int(full.pp)}"
    part = d3[d3["layout"] == layout]
    # float32 rounding of a sum in another order: 1e-4 is far above it and far below a bug
    out = [Claim(f"{layout} gradients equal one process (max |Δ|)", "Megatron-LM 3D", 0.0,
                 pick(part, "max_abs_err_grad", how="max"), "", where, abs_tol=1e-4),
           Claim(f"{layout} loss equals one process (|Δ|)", "Megatron-LM 3D", 0.0,
                 pick(part, "abs_err_loss", how="max"), "", where, abs_tol=1e-4)]
    for dim in ("tp", "pp", "dp"):
        with_dim = d3[d3[dim] > 1]
        if with_dim.empty:
            continue
        lay = with_dim["layout"].iloc[0]
        one = d3[d3["layout"] == lay]
        out.append(Claim(f"{dim.upper()} bytes sent per step, all ranks ({lay})",
                         "count from the layout", pick(one, "bytes_sent", "predicted", "sum",
                                                        dim=dim),
                         pick(one, "bytes_sent", how="sum", dim=dim), "B", where, rel_tol=0))
    return out


@takes_rows
def claims(tp: pd.DataFrame, pp: pd.DataFrame, ep: pd.DataFrame,
           d3: pd.DataFrame | None = None) -> pd.DataFrame:
    """The lecture's and the papers' claims, checked against the rows given: one block per
    device, this machine's live rows first, each row saying where its numbers come from."""
    def within_rounding(err: float, rows: pd.DataFrame) -> float:
        """1.0 if ``err`` is float rounding for the rows' dtype, else 0.0 (NaN: not run)."""
        if math.isnan(err):
            return err
        low = "dtype" in rows and set(rows["dtype"].dropna()) & {"bf16", "fp16"}
        return float(err <= (0.1 if low else 1e-4))

    out, live = [], set()

    def blocks(rows: pd.DataFrame | None) -> list[tuple[str, pd.DataFrame]]:
        found = machine_blocks(rows if rows is not None else pd.DataFrame())
        live.update(where for where, part in found if (part["source"] == "measured").any())
        return found

    for where, part in blocks(tp):
        tp_max = int(part["tp"].max())
        out += [Claim("TP output equals one device (1 = within float rounding)", "Megatron-LM",
                      1.0, within_rounding(pick(part, "max_abs_err_output", tp=tp_max), part),
                      "", where, rel_tol=0),
                Claim(f"TP all-reduces per block per step (tp={tp_max})", "Megatron-LM §3",
                      pick(part, "allreduce_calls", "predicted", tp=tp_max),
                      pick(part, "allreduce_calls", tp=tp_max), "", where, rel_tol=0)]
    for where, part in blocks(pp):
        out += _pp_claims(part, where)
    for where, part in blocks(ep):
        part = largest_world(part)
        cfs = sorted(set(part["capacity_factor"].dropna()))
        # at capacity factor 1 only chance overflows an expert: a share the draw can measure
        # (above 1, the binomial tail predicts ~0; below 1, the capacity forces the drops)
        cf = 1.0 if 1.0 in cfs else cfs[-1]
        # a share of assignments from one draw: half the prediction either way, or 0.001
        out.append(Claim(f"MoE dropped share at capacity factor {cf} (unbiased router)",
                         "Switch Transformer", pick(part, "dropped_fraction", "predicted",
                                                     skew=0.0, capacity_factor=cf),
                         pick(part, "dropped_fraction", skew=0.0, capacity_factor=cf),
                         "", where, rel_tol=0.5, abs_tol=0.001))
        out.append(Claim("EP output equals one device (1 = within float rounding)",
                         "GShard", 1.0, within_rounding(pick(part, "max_abs_err_vs_one_device"),
                                                        part), "", where, rel_tol=0))
    for where, part in blocks(d3):
        out += _composed_claims(part, where)
    wheres = list(dict.fromkeys(c.where for c in out))  # this machine's blocks first
    order = [w for w in wheres if w in live] + [w for w in wheres if w not in live]
    return claims_table(sorted(out, key=lambda c: order.index(c.where)))


@takes_rows
def schedule_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (where, p, schedule, m): idle share (op-duration replay, rank mean) beside the
    formula; micro-batches held (most over the stages) and stage 0's activation MiB, measured
    beside the schedule's count (and, on a GPU, the allocator's peak above the step's start)."""
    pp = with_schedule(rows[rows["status"] == "ok"] if "status" in rows.columns else rows)
    pp = pp.assign(where=curve_label(pp), src=pp["source"].where(
        pp["source"] == "predicted", "measured"))
    keys = ["where", "p", "schedule", "m"]

    def agg(metric: str, src: str, how: str, stage0: bool = False) -> pd.Series:
        part = pp[(pp["metric"] == metric) & (pp["src"] == src)]
        if stage0 and "rank" in part.columns:
            part = part[part["rank"] == 0]
        return part.groupby(keys)["value"].agg(how)

    cols = {"idle_measured": agg("idle_fraction_replay", "measured", "mean"),
            "idle_formula": agg("idle_fraction", "predicted", "mean"),
            "held_measured": agg("peak_in_flight", "measured", "max"),
            "held_predicted": agg("peak_in_flight", "predicted", "max"),
            "stage0_MiB_measured": agg("peak_activation_bytes", "measured", "mean", True) / 2**20,
            "stage0_MiB_predicted": agg("peak_activation_bytes", "predicted", "mean",
                                        True) / 2**20,
            "stage0_alloc_GiB_measured": agg("peak_memory_above_start", "measured", "mean",
                                             True)}
    cols = {k: v for k, v in cols.items() if len(v)}
    if not cols:
        return pd.DataFrame(columns=keys)
    return pd.DataFrame(cols).reset_index().sort_values(
        "where", key=lambda w: w != "here", kind="stable", ignore_index=True)


def _main_p(rows: pd.DataFrame) -> int:
    """The largest p measured here (else recorded): the figures' stage count."""
    if rows.empty:
        return 0
    here = rows[rows["source"] == "measured"] if "source" in rows.columns else rows
    return int((here if len(here) else rows)["p"].max())


@takes_rows
def plot_schedules(rows: pd.DataFrame):
    """Idle share vs m, GPipe beside 1F1B at the largest p (replay of measured op durations,
    and the formula both share); other devices as labelled references."""
    from workbook import plots

    pp = with_schedule(rows)
    pp = pp[pp["metric"].isin(["idle_fraction_replay", "idle_fraction"])]
    pp = pp[(pp["metric"] == "idle_fraction_replay") | (pp["source"] == "predicted")]
    p = _main_p(pp)
    pp = pp[pp["p"] == p].assign(where=curve_label(pp[pp["p"] == p]))
    first = "here" if (pp["where"] == "here").any() else pp["where"].min()
    formula = pp[(pp["source"] == "predicted") & (pp["where"] == first)]
    pp = pd.concat([pp[pp["source"] != "predicted"].assign(
        curve=lambda t: t["schedule"] + " · " + t["where"]),
        formula.assign(curve="(p-1)/(m+p-1)", schedule="(p-1)/(m+p-1)")])
    summary = mean_over_ranks(pp, ["curve", "schedule", "p", "m", "source"])
    return plots.compare(summary, "m", group="curve", log_x=True, color="schedule",
                         title=f"GPipe and 1F1B idle share, p={p}",
                         x_title="micro-batches m", y_title="idle fraction of a step")


@takes_rows
def plot_activations(rows: pd.DataFrame):
    """Stage 0's activation memory vs m: GPipe grows with m, 1F1B stops at p micro-batches."""
    from workbook import plots

    pp = with_schedule(rows)
    pp = pp[pp["metric"] == "peak_activation_bytes"]
    pp = pp[pp["rank"] == 0] if "rank" in pp.columns else pp
    p = _main_p(pp)
    pp = pp[pp["p"] == p]
    pp = pp.assign(value=pp["value"] / 2**20, unit="MiB",
                   curve=pp["schedule"] + " · " + curve_label(pp))
    summary = mean_over_ranks(pp, ["curve", "schedule", "p", "m", "source"])
    return plots.compare(summary, "m", group="curve", log_x=True, color="schedule",
                         title=f"Activations held by stage 0, p={p}",
                         x_title="micro-batches m", y_title="peak activation MiB")


@takes_rows
def schedules_caption(rows: pd.DataFrame) -> str:
    """The 1F1B paragraph's numbers, read from the rows (Markdown)."""
    table = schedule_summary(rows)
    if table.empty or "held_measured" not in table.columns:
        return "*No GPipe/1F1B rows to compare yet.*"
    here = table[table["where"] == ("here" if (table["where"] == "here").any()
                                    else table["where"].iloc[0])]
    here = here[here["p"] == here["p"].max()]
    m = int(here["m"].max())
    row = here[here["m"] == m].set_index("schedule")
    if not {"gpipe", "1f1b"} <= set(row.index):
        return "*No GPipe/1F1B rows to compare yet.*"
    where, p = machine_blocks(rows)[0][0], int(here["p"].max())
    # one stage has no pipe to fill or drain: a zero bubble there says nothing about the schedules
    alone = (" With one stage there is no pipe to fill or drain, so both bubbles are zero by "
             "construction; only the memory tells the schedules apart here.") if p == 1 else ""
    return (f"*{where}:* at p={p} stages and m={m} micro-batches, GPipe "
            f"idled {row.loc['gpipe', 'idle_measured']:.1%} of a step and 1F1B "
            f"{row.loc['1f1b', 'idle_measured']:.1%} (formula "
            f"{row.loc['gpipe', 'idle_formula']:.1%}); GPipe held "
            f"{row.loc['gpipe', 'held_measured']:.0f} micro-batches' activations "
            f"({row.loc['gpipe', 'stage0_MiB_measured']:.1f} MiB on stage 0), 1F1B "
            f"{row.loc['1f1b', 'held_measured']:.0f} "
            f"({row.loc['1f1b', 'stage0_MiB_measured']:.1f} MiB).{alone}")


@takes_rows
def composed_caption(d3: pd.DataFrame) -> str:
    """The 3D paragraph's numbers, read from the rows (Markdown)."""
    blocks = machine_blocks(d3)
    if not blocks:
        return "*No DP × TP × PP rows yet.*"
    where, part = blocks[0]
    layouts = ", ".join(dict.fromkeys(part["layout"]))
    backend = ", ".join(sorted(set(part["backend"].dropna()))) if "backend" in part else ""
    return (f"*{where}:* {int(part['world'].max()) if 'world' in part else '?'} ranks "
            f"({backend}), layouts {layouts}; largest gradient difference from one process "
            f"{pick(part, 'max_abs_err_grad', how='max'):.1e}, loss "
            f"{pick(part, 'abs_err_loss', how='max'):.1e}.")
