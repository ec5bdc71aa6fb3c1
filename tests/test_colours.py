"""One colour per label across a notebook's figures (issue 19).

For each notebook, its figures are built from the recorded ledger rows (data/results, nothing is
run) by the view functions its cells call, explorers and the ExperimentPanel included; every
trace's label (``plots.label_of`` its name: 'vanilla (measured)' and 'vanilla (recorded, H100)'
are both 'vanilla') must have one colour in all of them, and no trace may be left to plotly's
default colours (which follow a trace's position in its figure, not its label). The source
(measured, recorded, predicted) is the line or marker style, never the colour.
"""

from __future__ import annotations

import functools
from collections import defaultdict

import pandas as pd
import pytest
import torch

from workbook import plots, registry, results, widgets
from workbook.panel import PanelRun


@pytest.fixture(autouse=True)
def kernel():
    """Each test's labels are coloured as in a fresh kernel and forgotten after."""
    with plots.fresh_colours():
        yield


def live_like(name: str) -> pd.DataFrame:
    """The ledger's rows of the most recently recorded machine, as if measured here: what a
    notebook draws on that machine (its rows the numbers, the other devices beside them)."""
    rows = results.load(name, ok_only=True)
    if rows.empty or "device" not in rows.columns:
        return rows.iloc[0:0]
    latest = rows.loc[rows["recorded_at"].astype(str).idxmax(), "device"]
    mine = rows[rows["device"] == latest]
    return mine.assign(source=mine["source"].replace("recorded", "measured"))


def shown(name: str) -> pd.DataFrame:
    """What ``registry.with_references(name, live)`` gives a notebook (this machine's rows, the
    other devices' beside them), without leaving them in this process's ``registry.shown``."""
    live, recorded = live_like(name), results.load(name, ok_only=True)
    if live.empty or "device" not in recorded.columns:
        return recorded
    others = recorded[~recorded["device"].isin(set(live["device"]))]
    return pd.concat([live, others], ignore_index=True)


def panel_figure(name: str, **kwargs) -> plots.Figure:
    """The panel's accumulating figure with the recorded rows as its one run."""
    panel = widgets.ExperimentPanel(name, **kwargs)
    rows = results.load(name)
    panel.runs.append(PanelRun(1, {}, {}, rows.assign(run=1), 0.0))
    return panel.figure()


def nb00():
    from workbook import hardware, walltime

    rows = shown("roofline")
    ledger = results.load("notebook_walltime")
    return [hardware.roofline_bars(rows), hardware.roofline_explorer(rows).fig,
            walltime.figure(ledger, "wall_time"), walltime.figure(ledger, "peak_memory")]


def nb01():
    from workbook import data_scale, pretraining

    curve = results.load("pretraining_curve")
    curve = curve[curve["metric"] == "loss"]
    transfer = shown("transfer_learning")
    others = transfer[transfer["source"] == "recorded"]
    return [data_scale.scale_figure(data_scale.scale_rows()), pretraining.LiveCurve().fig,
            plots.compare(curve, x="step", group="split", log_y=True),
            pretraining.transfer_figure(transfer, "t"), pretraining.transfer_figure(others, "t")]


def nb02():
    from workbook import flops, hardware

    return [hardware.roofline_bars(shown("roofline")),   # 02's cell 8
            flops.sweep_figure(results.load("flops_sweep")), flops.calculator().fig]


def nb03():
    from workbook import scaling_laws as sl

    rows = shown("scaling_isoflop")
    return [sl.allocation_explorer().fig, sl.overtraining_explorer().fig,
            sl.isoflop_figure(live_like("scaling_isoflop")), sl.isoflop_figure(rows),
            sl.frontier_figure(rows, sl.fit_summary(rows)),
            panel_figure("scaling_isoflop", fields=["budgets", "sizes_per_budget"],
                         x="n_params", y="val_loss", group="budget")]


def nb04():
    from workbook import memory

    fit = results.load("memory_fit")
    return [memory.memory_explorer().fig, memory.plot_breakdown(shown("memory_breakdown")),
            panel_figure("memory_breakdown", fields=["batch", "seq_lens", "checkpointing"],
                         x="batch", y="bytes", where={"component": "activations"},
                         group="checkpointing"),
            memory.plot_seq_sweep(shown("memory_seq_sweep")),
            memory.plot_fit(fit[fit["checkpointing"].astype(str) == "False"])]


def nb05():
    from workbook import zero

    tables = zero.recorded_tables(shown("zero_stages"))
    figs = [zero.formula_explorer().fig,
            zero.plot_model_states(zero.model_state_table(live_like("zero_stages"))),
            panel_figure("zero_stages", fields=["variants", "d_model", "micro_batch"],
                         x="variant", y="total_bytes"),
            zero.plot_scaling(tables), zero.plot_comm(tables[tables["n_ranks"] > 1])]
    return figs + [zero.plot_model_states(part) for _, part in
                   tables.groupby(["device", "n_ranks", "source"], sort=False)]


def nb06():
    from workbook import model_parallel as mp

    pp, ep = shown("pipeline_bubble"), shown("expert_parallel")
    return [mp.bubble_explorer().fig, mp.plot_tp_time(shown("tensor_parallel")),
            mp.plot_bubble(pp),
            panel_figure("pipeline_bubble", fields=["n_microbatches", "micro_batch"], x="m",
                         y="idle_fraction", where={"rank": 0}, group="schedule"),
            mp.plot_schedules(pp), mp.plot_activations(pp), mp.plot_routing(ep),
            mp.plot_drops(ep)]


def nb07():
    from workbook import attention

    traffic, timing = shown("attention_traffic"), shown("attention_timing")
    recompute = shown("attention_recompute")
    tflops = timing.query("metric == 'throughput' and head_dim == 128 and not causal")
    figs = [attention.size_explorer().fig]
    for rows in (traffic.query("metric == 'hbm_bytes' and mode == 'fwd'"),
                 traffic.query("metric == 'hbm_bytes' and mode == 'fwd+bwd'"),
                 tflops.query("mode == 'fwd'"), tflops.query("mode == 'fwd+bwd'"),
                 timing.query("metric == 'extra_peak_memory' and mode == 'fwd+bwd'"),
                 recompute.query("metric == 'saved_bytes'"),
                 recompute.query("metric == 'extra_peak_memory'")):
        figs.append(plots.compare(rows, x="seq_len", group="variant", log_x=True))
    return figs + [panel_figure("attention_timing", fields=["variants", "seq_lens", "head_dim"],
                                x="seq_len", y="time", group="variant",
                                where={"mode": "fwd+bwd"})]


def nb08():
    from workbook import precision

    gen = torch.Generator().manual_seed(0)  # gradients' shapes only matter, not one step's
    grads = {k: torch.randn(4096, generator=gen) * s
             for k, s in (("logit_grad", 1e-6), ("hidden_grad", 1e-8), ("weight_grad", 1e-4))}
    under = registry.main_rows(shown("precision_underflow"))
    stagnation = registry.main_rows(shown("precision_stagnation")).query("part == 'training'")
    training = registry.main_rows(shown("precision_training"))
    roofline = registry.main_rows(shown("roofline"))
    sweep = precision.stagnation_sweep(torch.randn(4096, generator=gen), grads["weight_grad"],
                                       (1e-5, 1e-4, 1e-3))
    return [precision.format_explorer("0.1").fig,
            precision.histogram_figure(precision.log2_histogram(grads),
                                       precision.format_lines()),
            precision.loss_scale_explorer(grads).fig,
            precision.scaler_figure(under.query("part == 'gradscaler'")),
            panel_figure("precision_underflow", fields=["log2_scales", "batch_size"],
                         x="log2_scale", y=["share_zero", "share_subnormal"], group="format",
                         where={"part": "underflow", "scaling": "fixed",
                                "kind": "hidden_grad"}),
            plots.compare(sweep, x="lr", group="mode", log_x=True),
            plots.compare(stagnation[stagnation["metric"] == "loss"], x="step", group="mode"),
            plots.compare(training[(training["metric"] == "loss")], x="step", group="mode"),
            precision.matmul_figure(roofline),
            precision.scaler_figure(training[training["mode"] == "fp16_gradscaler"])]


def nb09():
    # the masking explorer's bars are coloured per token by role (prompt, response), not by a
    # label; it needs the chat tokenizer and is left out here
    from workbook import sft

    rows = shown("sft_masking")
    return [sft.curves_figure(rows, m, m) for m in ("answer_loss", "prompt_loss",
                                                    "exact_match")] + [
        panel_figure("sft_masking", fields=["policies", "steps", "lr"], x="step",
                     y="answer_loss", group="policy", view=sft.mean_over_seeds)]


def nb10():
    from workbook import evaluation

    tt, dpo, mid = shown("test_task_training"), shown("dpo_alignment"), shown("mid_training")
    m = evaluation.shown_numbers(mid).query("metric.str.endswith('_loss')")
    m = m.groupby(["replay", "metric", "step", "source"], as_index=False)["value"].mean()
    return [evaluation.leaderboard_explorer(seed=0).fig,
            plots.bars(evaluation.shown_numbers(tt).query(
                "metric in ['benchmark_exact_match', 'general_exact_match']"),
                x="variant", group="metric"),
            evaluation.dpo_figure(dpo),
            plots.compare(m.assign(curve=m["metric"] + ", replay " + m["replay"].astype(str)),
                          x="step", group="curve")]


def nb11():
    from workbook import lora

    params = plots.figure("trainable parameters")  # cell 7's hand-built bars, one per model
    for name in ("workbook base", "Llama-2-7B shape"):
        params.add_bar(name=name)
    sweeps = shown("lora_sweep")
    sweeps = sweeps[sweeps["status"].fillna("ok") == "ok"]
    sweeps["where"] = sweeps["source"].map({"measured": "this machine"}).fillna(
        sweeps["device"].astype(str))
    rank = sweeps[(sweeps.sweep == "rank") & (sweeps.method == "lora")]
    counts = rank[rank.metric == "trainable_params"].drop_duplicates(["rank", "source"])
    targets = sweeps[(sweeps.sweep == "targets") & (sweeps.metric == "eval_loss")]
    return [params, plots.compare(counts, "rank", group="method", log_x=True),
            *[plots.compare(rank[rank.metric == m], "rank", group="where", log_x=True)
              for m in ("eval_loss", "step_time", "peak_memory")],
            plots.bars(targets, "targets", group="where"),
            panel_figure("lora_sweep", fields=["ranks", "lr"], x="rank", y="eval_loss",
                         where={"sweep": "rank"}, group="method")] + (
        [lora.lr_figure(advice)] if len(advice := shown("lora_advice")) else [])


def nb12():
    from workbook import qlora

    normal = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    use = pd.concat([qlora.bin_occupancy(normal, f) for f in ("nf4", "int4")])
    use["code index"] = use.groupby("format").cumcount()
    error = plots.figure("quantisation error")  # cells 9 and 20: hand-built traces
    error.add_bar(name="relative RMSE")
    vram = plots.figure("VRAM by method")
    for comp in qlora.COMPONENTS:
        vram.add_bar(name=comp)
    vram.add_scatter(name="measured peak", mode="markers", marker={"color": "black"})
    return [plots.bars(use, "code index", y="share", group="format"), error, vram,
            panel_figure("qlora_vram", fields=["methods", "rank", "seq_len"], x="method",
                         y="peak")]


NOTEBOOKS = {"00_setup": nb00, "01_pretraining": nb01, "02_flops": nb02,
             "03_scaling_laws": nb03, "04_memory": nb04, "05_data_parallel_zero": nb05,
             "06_model_parallel": nb06, "07_flash_attention": nb07, "08_mixed_precision": nb08,
             "09_sft": nb09, "10_evaluation_alignment": nb10, "11_lora": nb11, "12_qlora": nb12}


def colours(fig) -> list[tuple[str, object]]:
    """(label, colour) of every trace: its line's or markers' colour; a bar chart coloured
    per bar (one colour per variant on the x axis) gives each bar's x label its colour."""
    found = []
    for trace in fig.data:
        marker = trace.marker.color if "marker" in trace else None
        line = trace.line.color if "line" in trace else None
        color = line if line is not None else marker
        if isinstance(color, (list, tuple)) and trace.x is not None and all(
                isinstance(x, str) for x in trace.x):
            found += [(plots.label_of(x), c) for x, c in zip(trace.x, color, strict=True)]
        elif not isinstance(color, (list, tuple)):
            found.append((plots.label_of(trace.name), color))
    return found


def test_every_notebook_has_its_figures_here():
    from pathlib import Path

    names = {p.stem for p in Path(__file__).parents[1].joinpath("notebooks").glob("*.ipynb")}
    assert names == set(NOTEBOOKS)


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS))
def test_a_label_has_one_colour_in_all_of_a_notebooks_figures(notebook, capsys):
    figures = NOTEBOOKS[notebook]()
    seen: dict[str, set] = defaultdict(set)
    for fig in figures:
        for label, color in colours(fig):
            assert color is not None, (
                f"{notebook}: trace {label!r} in {fig.layout.title.text!r} has plotly's "
                "default colour; give it plots.color_for(label)")
            seen[label].add(color)
    assert sum(len(f.data) for f in figures) > len(figures), f"{notebook}: figures drew traces"
    mixed = {label: sorted(map(str, c)) for label, c in seen.items() if len(c) > 1}
    assert not mixed, f"{notebook}: a label with more than one colour: {mixed}"
    # a variant on another machine is the variant's colour ('answer_only NVIDIA H200' is
    # 'answer_only'): the machine is a marker shape, never a colour of its own
    for label, color in seen.items():
        for device in devices():
            variant = label.removesuffix(f" {device}").removesuffix(",")
            if variant != label and variant in seen:
                assert seen[variant] == color, (
                    f"{notebook}: {label!r} is coloured apart from {variant!r}")


@functools.cache
def devices() -> frozenset[str]:
    """Every machine named in the ledger, as rows and legends name it."""
    found = set()
    for path in results.results_dir().glob("*.csv"):
        rows = results.load(path.stem)
        if "device" in rows.columns:
            found |= {str(d) for d in rows["device"].dropna().unique()}
    return frozenset(found | {plots.short_device(d) for d in found})


def test_fresh_colours_start_at_the_first_and_give_back_the_old_ones():
    before = plots.color_for("colour-test-kept")
    with plots.fresh_colours():
        assert plots.color_for("colour-test-new") == plots.COLORS[0]
        assert plots.color_for("colour-test-kept") == plots.COLORS[1], "forgotten inside"
    assert plots.color_for("colour-test-kept") == before, "given back after"


def test_a_trace_without_a_colour_takes_its_labels():
    fig = plots.figure("t")
    fig.add_bar(x=["a"], y=[1], name="colour-test-x (measured)")
    fig.add_scatter(x=[1], y=[1], name="colour-test-x (formula)", mode="lines")
    fig.add_scatter(x=[1], y=[1], name="colour-test-y", line={"color": "black"})
    want = plots.color_for("colour-test-x")
    assert fig.data[0].marker.color == want and fig.data[1].line.color == want
    assert fig.data[2].line.color == "black", "a colour of its own stays"
    assert plots.color_for("colour-test-y") != want
    assert plots.color_for("oom") == plots.OOM_COLOR
    assert [plots.label_of(n) for n in ("sdpa_flash (recorded, H100)", "zero1 (N=2)",
                                        "gpipe · here (measured)", "answer_only")] == [
        "sdpa_flash", "zero1", "gpipe", "answer_only"]
    assert all(plots.has_color(t) for t in fig.data)
    assert not plots.has_color(go_scatter(name="no colour"))
    assert plots.machine_symbols(pd.Series(["B", "A", "B", None])) == {"B": "circle",
                                                                      "A": "square"}


def go_scatter(**kwargs):
    import plotly.graph_objects as go

    return go.Scatter(x=[1], y=[1], **kwargs)


def test_a_figure_built_without_color_for_fails_the_check():
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_scatter(x=[1], y=[1], name="vanilla (measured)")
    assert colours(fig) == [("vanilla", None)]


@pytest.mark.parametrize("title", ["One line", "Two<br><sup>recorded on H100, 2026-11-22</sup>",
                                   "Three<br><sup>a</sup><br><sup>b</sup>"])
def test_the_legend_sits_below_the_title_and_its_provenance(title):
    fig = plots.figure("set later")  # a view may set its title after the figure is made
    fig.update_layout(title=title)
    for i in range(8):
        fig.add_scatter(x=[1], y=[i], name=f"variant {i} (measured)")
    layout = fig._repr_mimebundle_()[plots.PLOTLY_MIME]["layout"]
    height, lines = layout["height"], title.count("<br>") + 1
    assert layout["legend"]["yref"] == layout["title"]["yref"] == "container"
    assert layout["legend"]["orientation"] == "h" and layout["legend"]["yanchor"] == "top"
    title_px = (1 - layout["title"]["y"]) * height  # the middle of the title's lines
    legend_px = (1 - layout["legend"]["y"]) * height  # the top of the legend's first row
    assert legend_px - title_px >= 8 * lines, "the legend starts below the subtitle's line"
    assert legend_px < height / 4, "right below the title, above the plot"


def test_compare_colours_by_label_and_marks_source_and_machine_by_style():
    row = {"seq_len": 1024, "value": 1.0, "status": "ok"}
    rows = pd.DataFrame([
        {**row, "variant": "cmp-vanilla", "source": "measured", "device": "GPU A"},
        {**row, "variant": "cmp-vanilla", "source": "recorded", "device": "GPU B"},
        {**row, "variant": "model: cmp-vanilla", "source": "predicted", "device": "GPU A"},
        {**row, "variant": "cmp-triton", "source": "measured", "device": "GPU A"}])
    fig = plots.compare(rows, x="seq_len", group="variant")
    drawn = {t.name: t for t in fig.data}
    here, there = drawn["cmp-vanilla (measured, GPU A)"], drawn["cmp-vanilla (recorded, GPU B)"]
    model = drawn["model: cmp-vanilla (predicted, GPU A)"]
    assert here.line.color == there.line.color == model.line.color, "one colour for vanilla"
    assert drawn["cmp-triton (measured, GPU A)"].line.color != here.line.color
    assert here.marker.symbol == "circle" and there.marker.symbol == "square-open", (
        "filled here, hollow recorded, a shape per machine")
    assert model.line.dash == "dash" and model.mode == "lines", "a prediction is dashed"


def test_bars_hatch_a_datasheet_group_and_keep_its_colour():
    rows = pd.DataFrame([{"dtype": "bf16", "value": v, "source": s, "status": "ok"}
                         for v, s in ((790.0, "measured"), (989.0, "datasheet"))])
    fig = plots.bars(rows, "dtype", group="source")
    measured, datasheet = fig.data
    assert measured.marker.pattern.shape == "" and datasheet.marker.pattern.shape == "/"
    assert measured.marker.color == plots.color_for("measured")
    assert datasheet.marker.color == plots.color_for("datasheet")


def test_00_names_a_machine_alike_in_its_bars_and_its_roofline_explorer():
    from workbook import hardware

    rows = shown("roofline")
    labels = hardware.device_labels(rows)
    assert set(labels) == set(rows["device"].dropna())
    mine = rows.loc[rows["source"] == "measured", "device"].iloc[0]  # live_like's machine
    assert labels[mine].startswith("this machine"), labels
    assert list(hardware.roofline_by_device(rows)) == [
        labels[d] for d in rows.assign(live=rows["source"] != "measured")
        .sort_values("live", kind="stable")["device"].unique()]
    alone = pd.DataFrame([{"device": "GPU X", "source": "datasheet"}])
    assert hardware.device_labels(alone) == {"GPU X": "GPU X"}
    bars = {t.name: t.marker for t in hardware.roofline_bars(rows).data}
    here = [n for n in bars if n.startswith("this machine")][0]
    sheet = "datasheet" + here.removeprefix("this machine")
    assert bars[here].color == bars[sheet].color, "a machine's datasheet bars in its colour"
    assert bars[sheet].pattern.shape == "/" and bars[here].pattern.shape == ""


def test_a_formula_shared_by_every_machine_is_one_unnamed_trace():
    """07's traffic plots drew each model line twice, '(predicted, H200)' and '(predicted, H100
    80GB HBM3)' with the same points; 11 named a trace 'NVIDIA H100 80GB HBM3 (recorded, H100
    80GB HBM3)'."""
    from workbook import plots

    def rows(device, source, ys, label="vanilla"):
        return pd.DataFrame({"n": [1, 2], "value": ys, "source": source, "status": "ok",
                             "device": device, "variant": label})

    both = pd.concat([rows("NVIDIA H200", "measured", [1.0, 2.0]),
                      rows("NVIDIA H200", "predicted", [1.5, 2.5]),
                      rows("NVIDIA H100 80GB HBM3", "recorded", [1.2, 2.2]),
                      rows("NVIDIA H100 80GB HBM3", "predicted", [1.5, 2.5]),
                      rows("NVIDIA H200", "predicted", [9.0, 9.5], "roof"),
                      rows("NVIDIA H100 80GB HBM3", "predicted", [7.0, 7.5], "roof")])
    names = [t.name for t in plots.compare(both, "n", group="variant").data]
    assert names.count("vanilla (predicted)") == 1, names
    assert "vanilla (measured, H200)" in names and "vanilla (recorded, H100 80GB HBM3)" in names
    # a prediction that differs by machine keeps one trace per machine, each named
    assert {"roof (predicted, H200)", "roof (predicted, H100 80GB HBM3)"} <= set(names)
    by_machine = pd.concat([rows("NVIDIA H200", "measured", [1.0, 2.0]),
                            rows("NVIDIA H100 80GB HBM3", "recorded", [1.2, 2.2])])
    by_machine["where"] = by_machine["device"]
    names = [t.name for t in plots.compare(by_machine, "n", group="where").data]
    assert "NVIDIA H100 80GB HBM3 (recorded)" in names, names
