"""The experiment panel (``widgets.ExperimentPanel``), driven from Python as a reader drives it.

A tiny fake experiment, registered here, checks what the panel makes of a config (controls,
ranges and choices read from its checks), of a run (rows, the table, the figure's traces that
keep every run) and of a configuration that does not fit (a red cross). Its runs go through
``registry.execute`` in this process: the fresh process is the runner's own business, and one
real experiment at the small preset goes through it at the end.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import ipywidgets as w
import pandas as pd
import pytest

from workbook import registry, results
from workbook.allowed import read_field
from workbook.config import WorkbookError, check_choice, check_range, resolve_preset
from workbook.panel import ExperimentPanel

NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class FakeConfig:
    size: int
    scale: float
    mode: str
    fast: bool
    widths: tuple[int, ...]
    kinds: tuple[str, ...]
    free: int = 3  # no range check: a panel needs limits= for it

    def __post_init__(self) -> None:
        check_range("size", self.size, 1, 64)
        check_range("scale", self.scale, 0.5, 4.0)
        check_choice("mode", self.mode, ("a", "b"))
        for width in self.widths:
            check_range("width", width, 1, 100)
        for kind in self.kinds:
            check_choice("kind", kind, ("x", "y", "z"))
        if self.size * self.scale > 100:
            raise WorkbookError(f"size × scale = {self.size * self.scale:g} must stay at most "
                                "100; allowed: a smaller size or scale")


def run_fake(cfg: FakeConfig, seed: int) -> pd.DataFrame:
    """Bytes predicted as size × width × scale, measured 10 % above; over 256 does not fit."""
    rows = []
    for width in cfg.widths:
        for kind in cfg.kinds:
            predicted = cfg.size * width * cfg.scale
            common = {"size": cfg.size, "width": width, "kind": kind, "metric": "bytes",
                      "unit": "B"}
            rows.append({**common, "value": predicted, "source": "predicted", "status": "ok"})
            if cfg.size * width > 256:
                rows.append({**common, "value": math.nan, "source": "measured",
                             "status": "oom", "error": "CUDA out of memory (fake)"})
            else:
                rows.append({**common, "value": 1.1 * predicted, "source": "measured",
                             "status": "ok"})
    return pd.DataFrame(rows)


PRESETS = {"small": FakeConfig(size=2, scale=1.0, mode="a", fast=False, widths=(4, 8),
                               kinds=("x", "y")),
           "full": FakeConfig(size=8, scale=2.0, mode="b", fast=True, widths=(16,),
                              kinds=("x",))}
SMALL = PRESETS["small"]


@pytest.fixture
def fake(monkeypatch, ledger_dir):
    """``panel_fake`` in the registry; runs in this process (``registry.execute``)."""
    monkeypatch.setitem(registry.experiments(), "panel_fake", registry.Experiment(
        name="panel_fake", summary="a panel test", notebook="none", run=run_fake,
        presets=PRESETS, min_gpus={"small": 0, "full": 0}))

    def in_process(name, preset=None, seed=0, overrides=None, *, record=False, echo=False):
        rows = registry.execute(name, preset, seed, overrides)
        if record:
            results.record(name, rows, preset=resolve_preset(preset), seed=seed,
                           overrides=overrides)
        return rows

    monkeypatch.setattr(registry, "run_isolated", in_process)
    return "panel_fake"


def panel_of(fake, **kwargs) -> ExperimentPanel:
    return ExperimentPanel(fake, fields=["size", "scale", "mode", "fast", "widths", "kinds"],
                           x="size", y="bytes", group="kind", preset="small", **kwargs)


def traces(fig) -> dict[str, tuple]:
    return {t.name: (tuple(t.x), tuple(t.y), t.marker.symbol) for t in fig.data}


# ----------------------------------------------------------------------------- controls


def test_controls_come_from_the_config_and_start_at_the_preset(fake):
    panel = panel_of(fake)
    c = panel.controls
    assert isinstance(c["size"], w.IntSlider) and (c["size"].min, c["size"].max) == (1, 64), (
        "size's range is its config's check_range(1, 64)")
    assert isinstance(c["scale"], w.BoundedFloatText)
    assert (c["scale"].min, c["scale"].max) == (0.5, 4.0)
    assert isinstance(c["mode"], w.Dropdown) and list(c["mode"].options) == ["a", "b"]
    assert isinstance(c["fast"], w.Checkbox)
    assert isinstance(c["widths"], w.IntSlider) and c["widths"].max == 100, (
        "a list of numbers is one value at a time, in the range of its elements")
    assert isinstance(c["kinds"], w.SelectMultiple)
    assert list(c["kinds"].options) == ["x", "y", "z"]
    assert panel.values == {"size": 2, "scale": 1.0, "mode": "a", "fast": False, "widths": 4,
                            "kinds": ("x", "y")}, "the small preset's values (widths: its first)"
    assert panel.overrides()["widths"] == (4,), "the config gets the one value as a list"
    full = ExperimentPanel(fake, fields=["size", "kinds"], y="bytes", preset="full")
    assert full.values == {"size": 8, "kinds": ("x",)}, "a GPU's panel starts at full"


def test_a_field_without_a_range_needs_limits_the_config_accepts(fake):
    """allowed.read_field reads what the config states; limits/choices the config must accept."""
    with pytest.raises(WorkbookError, match=r"free: its config states no range.*limits="):
        read_field(SMALL, "free")
    spec = read_field(SMALL, "free", limits=(1, 9))
    assert (spec.low, spec.high) == (1, 9)
    narrowed = read_field(SMALL, "size", limits=(2, 16))
    assert (narrowed.low, narrowed.high) == (2, 16)
    with pytest.raises(WorkbookError, match=r"limits of size: size=99 is out of range; allowed"):
        read_field(SMALL, "size", limits=(2, 99))
    with pytest.raises(WorkbookError, match=r"choices of widths: width=500 is out of range"):
        read_field(SMALL, "widths", choices=[4, 500])
    offered = ExperimentPanel(fake, fields=["widths"], y="bytes", preset="small",
                              choices={"widths": [4, 8, 64]})
    assert isinstance(offered.controls["widths"], w.SelectMultiple)
    assert offered.values["widths"] == (4, 8), "starts at the preset's widths"


@pytest.mark.parametrize(("values", "expected"), [
    ({"size": 65}, r"size=65 is out of range; allowed: 1 to 64"),
    ({"size": NAN}, r"size=nan is out of range"),
    ({"size": 2.5}, r"size=2.5 must be a whole number"),
    ({"size": True}, r"size=True is out of range"),
    ({"scale": INF}, r"scale=inf is out of range; allowed: 0.5 to 4"),
    ({"mode": "c"}, r"mode='c' is not allowed; choose one of: 'a', 'b'"),
    ({"fast": "yes"}, r"fast='yes' is not allowed; allowed: True or False"),
    ({"kinds": []}, r"kinds=\[\] is not allowed; allowed: a non-empty list"),
    ({"kinds": ["w"]}, r"kinds='w' is not allowed; choose one of"),
    ({"widths": [4, 8]}, r"allowed: one value"),
    ({"size": 60, "scale": 2.0}, r"size × scale = 120 must stay at most 100"),
    ({"nope": 1}, r"no control \['nope'\]"),
])
def test_a_value_the_config_refuses_is_one_line_and_moves_nothing(fake, values, expected):
    panel = panel_of(fake)
    before = panel.values
    with pytest.raises(WorkbookError, match=expected) as caught:
        panel.set(**values)
    assert "\n" not in str(caught.value)
    assert panel.last_error == str(caught.value) and "⚠" in panel.message.value, (
        "the error is the one line under the panel")
    assert panel.values == before, "a refused value moves no control (no silent clamp)"
    panel.set(size=3)
    assert panel.last_error is None and "⚠" not in panel.message.value


def test_a_mix_typed_past_set_turns_run_off_until_it_is_fixed(fake):
    panel = panel_of(fake)
    panel.controls["size"].value = 60
    panel.controls["scale"].value = 2.0  # as the mouse does: each alone is in range
    assert panel.run_button.disabled and "must stay at most 100" in panel.message.value
    with pytest.raises(WorkbookError, match="must stay at most 100"):
        panel.run()
    assert panel.runs == [], "nothing ran"
    panel.set(scale=1.0)
    assert not panel.run_button.disabled


# ------------------------------------------------------------------------------- runs


def test_runs_accumulate_in_the_figure_and_the_table(fake, ledger_dir):
    panel = panel_of(fake)
    panel.set(kinds=["x"], widths=8)
    first = panel.run()
    assert set(first["source"]) == {"measured", "predicted"} and set(first["run"]) == {1}
    panel.set(size=4)
    panel.run_button.click()  # the button's handler, as a reader presses it
    assert len(panel.runs) == 2
    drawn = traces(panel.figure())
    assert drawn["x (measured)"][:2] == ((2, 4), (17.6, 35.2)), (
        "each run adds its measured point; the first stays")
    assert drawn["x (predicted)"][:2] == ((2, 4), (16.0, 32.0)), (
        "beside the prediction for the same settings")
    assert drawn["x (measured)"][2] == "circle" and drawn["x (predicted)"][2] == "diamond-open"
    table = panel.table
    assert list(table["run"]) == [1, 2] and list(table["size"]) == [2, 4]
    assert list(table["widths"]) == [8, 8] and list(table["status"]) == ["ok", "ok"]
    assert (table["seconds"] >= 0).all() and list(table["recorded"]) == ["no", "no"]
    assert "<table" in panel.table_area.value and panel.view_area.outputs, "both shown"
    assert "run 2: ok in" in panel.message.value, "the message states the measured seconds"
    assert results.load(fake).empty, "nothing reaches the ledger unless asked"


def test_oom_configurations_are_red_crosses_at_their_prediction(fake):
    panel = panel_of(fake)
    panel.set(size=40, widths=8, kinds=["y"])  # 40 × 8 = 320 > 256: does not fit
    rows = panel.run()
    assert (rows["status"] == "oom").any()
    panel.set(size=16)  # 128: fits
    panel.run()
    drawn = traces(panel.figure())
    assert drawn["oom (did not fit)"] == ((40,), (320.0,), "x"), (
        "the failed configuration is marked at its predicted value")
    assert drawn["y (measured)"][:2] == ((16,), (pytest.approx(140.8),))
    assert list(panel.table["status"]) == ["oom", "ok"]
    assert "CUDA out of memory (fake)" in panel.table["error"].iloc[0]
    assert "run 2: ok" in panel.message.value


def test_record_only_when_asked(fake, ledger_dir):
    panel = panel_of(fake)
    panel.run()
    assert results.load(fake).empty
    assert panel.record() == [1] and len(results.load(fake)) == len(panel.runs[0].rows)
    assert panel.record() == [] and "recorded already" in panel.message.value
    assert list(panel.table["recorded"]) == ["yes"]
    each = panel_of(fake, record=True)
    each.set(size=5)
    each.run()
    assert set(results.load(fake)["size"]) == {2, 5}, "record=True records every run"


def test_an_experiment_that_needs_a_gpu_says_so_and_turns_run_off(fake, monkeypatch):
    monkeypatch.setattr(registry, "gpu_count", lambda: 0)
    exp = registry.experiments()[fake]
    monkeypatch.setitem(registry.experiments(), fake, registry.Experiment(
        **{**exp.__dict__, "min_gpus": {"small": 1, "full": 1}}))
    panel = panel_of(fake)
    assert panel.run_button.disabled
    assert panel.message.value.count("needs a GPU") == 1 and "Run is off" in panel.message.value
    with pytest.raises(WorkbookError, match="needs a GPU"):
        panel.run()


def test_a_bug_in_a_run_is_one_line_under_the_panel_not_a_lost_traceback(fake, monkeypatch):
    panel = panel_of(fake)

    def broken(*_args, **_kwargs):
        raise KeyError("deliberate")

    monkeypatch.setattr(registry, "run_isolated", broken)
    panel.run_button.click()  # a button's callback: its traceback would land in Lab's log
    assert panel.last_error == "KeyError: 'deliberate'" and not panel.run_button.disabled


def test_a_panel_is_one_widget_found_by_its_class(fake):
    panel = panel_of(fake)
    assert "wb-panel" in panel.widget._dom_classes
    assert not panel.view_area.outputs, "no empty figure before the first run"


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"fields": []}, "fields"), ({"fields": "size"}, "fields"),
    ({"fields": ["nope"]}, r"no parameter 'nope'"), ({"y": []}, "y"), ({"y": 3}, "y"),
    ({"x": ""}, "x"), ({"group": 3}, "group"), ({"seed": -1}, "seed"),
    ({"record": "yes"}, "record"), ({"where": ["kind"]}, "where"),
    ({"choices": {"mode": ["a"]}}, r"not among fields"), ({"preset": "big"}, "unknown preset"),
    ({"choices": ["a"]}, r"choices=\['a'\] is not allowed"), ({"view": 3}, "view"),
])
def test_bad_panel_arguments_are_one_line(fake, kwargs, expected):
    args = {"fields": ["size"], "y": "bytes", "preset": "small", **kwargs}
    with pytest.raises(WorkbookError, match=expected) as caught:
        ExperimentPanel(fake, **args)
    assert "\n" not in str(caught.value)


# --------------------------------------------------------------------- a real experiment


def test_a_real_experiment_runs_in_a_fresh_process_at_the_small_preset(ledger_dir):
    """memory_breakdown at the small preset, through the runner: activations measured beside
    the formula, one point per run."""
    panel = ExperimentPanel("memory_breakdown", fields=["batch", "checkpointing"], x="batch",
                            y="bytes", where={"component": "activations"},
                            group="checkpointing", preset="small")
    assert panel.controls["batch"].max == 1024, "memory_breakdown checks batch 1 to 1024"
    panel.set(batch=1, checkpointing=[True])
    rows = panel.run()
    assert (rows["status"] == "ok").all(), rows.get("error")
    drawn = traces(panel.figure())
    assert set(drawn) == {"checkpointing=True (measured)", "checkpointing=True (predicted)"}
    assert drawn["checkpointing=True (measured)"][0] == (1,)
    assert drawn["checkpointing=True (measured)"][1][0] > 0
    assert panel.table["seconds"].iloc[0] > 0 and results.load("memory_breakdown").empty


def test_panel_walltime_presses_each_notebooks_panel_and_times_it(ledger_dir):
    """The issue-18 budget is measured, not assumed: the notebook's own panel cell is built
    and Run once; the row carries the panel's measured seconds beside the 30 s budget."""
    from workbook import walltime

    assert [c for c, _ in walltime.panel_cells("08_mixed_precision")]  # 08 builds one
    rows = walltime.run_panel_walltime(walltime.PanelConfig(notebooks=("08_mixed_precision",)))
    measured = rows[rows["source"] == "measured"]
    assert list(measured["panel"]) == ["precision_underflow"]
    assert measured["status"].tolist() == ["ok"] and (measured["value"] > 0).all()
    assert rows.loc[rows["source"] == "predicted", "value"].tolist() == [walltime.PANEL_BUDGET_S]
    with pytest.raises(WorkbookError, match="allowed: 00_setup"):
        walltime.PanelConfig(notebooks=("99_nothing",))
    assert results.load("panel_walltime").empty  # nothing recorded unless asked


def test_panel_walltime_records_each_panel_as_it_ends(ledger_dir):
    """record_each: a panel's rows are in the ledger once its Run ends, so a GPU call stopped
    at its deadline keeps the panels already timed (the whole run returns the same rows)."""
    from workbook import walltime

    rows = walltime.run_panel_walltime(walltime.PanelConfig(
        notebooks=("08_mixed_precision",), record_each="small"))
    kept = results.load("panel_walltime")
    assert len(kept) == len(rows) == 2 and set(kept["preset"]) == {"small"}
    assert kept["value"].tolist() == pytest.approx(rows["value"].tolist())
    with pytest.raises(WorkbookError, match="record_each"):
        walltime.PanelConfig(record_each="medium")


def test_panel_walltime_keeps_a_run_whose_points_include_an_oom(ledger_dir, monkeypatch):
    """An oom point is part of a panel's figure, not a failed Run: the Run's seconds are an ok
    row (12's qlora_vram panel on the H200 draws one oom point), and the mix is in its detail.
    Before, its status was the mix, and the ledger let the ok budget row replace it."""
    from workbook import walltime, widgets

    original = widgets.ExperimentPanel.run

    def run_with_one_oom(panel):
        rows = original(panel)
        done = panel.runs[-1]
        first = done.rows.index[done.rows["source"] != "predicted"][0]
        done.rows.loc[first, "status"] = "oom"
        return rows

    monkeypatch.setattr(widgets.ExperimentPanel, "run", run_with_one_oom)
    rows = walltime.run_panel_walltime(walltime.PanelConfig(
        notebooks=("08_mixed_precision",), record_each="small"))
    kept = results.load("panel_walltime")
    timed = kept[kept["detail"] != "budget"]
    assert len(kept) == len(rows) == 2 and timed["status"].tolist() == ["ok"]
    assert timed["detail"].str.contains(r"points: \d+ ok \+ 1 oom").all()


# ------------------------------------------------------------- a quick start on a GPU (issue 18)


@pytest.fixture
def started(monkeypatch, ledger_dir):
    """``panel_started``: the fake experiment with a panel start on ``full`` (a control moved,
    a field that is no control held) and the start's typical seconds; the overrides of every
    run are kept in ``calls``."""
    calls: list[dict] = []
    monkeypatch.setitem(registry.experiments(), "panel_started", registry.Experiment(
        name="panel_started", summary="a panel start test", notebook="none", run=run_fake,
        presets=PRESETS, min_gpus={"small": 0, "full": 0}, typical_s={"full": 60},
        panel_start={"full": {"size": 4, "scale": 1.0}}, panel_s={"full": 7}))

    def in_process(name, preset=None, seed=0, overrides=None, *, record=False, echo=False):
        calls.append(dict(overrides or {}))
        return registry.execute(name, preset, seed, overrides)

    monkeypatch.setattr(registry, "run_isolated", in_process)
    return calls


def test_a_panel_starts_from_the_experiments_start_and_holds_its_other_fields(started):
    panel = ExperimentPanel("panel_started", fields=["size", "kinds"], x="size", y="bytes",
                            preset="full")
    assert panel.values == {"size": 4, "kinds": ("x",)}, "size from the start, kinds the preset's"
    assert (panel.controls["size"].min, panel.controls["size"].max) == (1, 64), (
        "the controls still reach the config's whole range")
    assert panel.held == {"scale": 1.0}, "scale is no control: every run keeps the start's"
    rows = panel.run()
    assert started[-1] == {"scale": 1.0, "size": 4}, "the overrides the run used"
    measured = rows[(rows["source"] == "measured") & (rows["status"] == "ok")]
    assert measured["value"].tolist() == [pytest.approx(1.1 * 4 * 16 * 1.0)], (
        "size 4 and scale 1.0 (the preset's scale is 2.0)")
    panel.set(size=8, kinds=["x", "y"])  # size back at the preset's 8: no override for it
    panel.run()
    assert started[-1] == {"scale": 1.0, "kinds": ("x", "y")}
    assert panel.runs[-1].overrides == started[-1], "what the ledger would get with Record"
    assert list(panel.table["size"]) == [4, 8]


def test_the_ready_line_states_the_expected_seconds_of_the_start(started):
    panel = ExperimentPanel("panel_started", fields=["size"], y="bytes", preset="full")
    assert "a run takes about 7 s (typical of the panel's start" in html.unescape(
        panel.message.value), "the start's panel_s"
    panel.set(size=30)
    assert "a run takes about 60 s (typical; not yet timed" in html.unescape(
        panel.message.value), "other settings: the preset's typical time"
    assert registry.expected_seconds("panel_started", "full", {"size": 4, "scale": 1.0,
                                                               "mode": "b"})[0] == 7, (
        "an override equal to the preset's own value is the same configuration")
    small = ExperimentPanel("panel_started", fields=["size"], y="bytes", preset="small")
    assert small.values == {"size": 2} and small.held == {}, "no start for small: the preset"
    assert "how long a run takes is known once it has run here" in small.message.value, (
        "no typical time for small: said so, not a made-up number")


def test_a_start_argument_adds_overrides_checked_like_any_other(started):
    panel = ExperimentPanel("panel_started", fields=["size"], y="bytes", preset="full",
                            start={"mode": "a", "size": 2})
    assert panel.values == {"size": 2} and panel.held == {"scale": 1.0, "mode": "a"}
    panel.run()
    assert started[-1] == {"scale": 1.0, "mode": "a", "size": 2}
    for start, expected in (({"size": 99}, r"size.*1.*64"), ({"nope": 1}, "no parameter"),
                            (["size"], "start=")):
        with pytest.raises(WorkbookError, match=expected) as caught:
            ExperimentPanel("panel_started", fields=["size"], y="bytes", preset="full",
                            start=start)
        assert "\n" not in str(caught.value)


NOTEBOOK_PANELS = ["03_scaling_laws", "04_memory", "05_data_parallel_zero",
                   "06_model_parallel", "07_flash_attention", "08_mixed_precision", "09_sft",
                   "11_lora", "12_qlora"]


@pytest.mark.parametrize("notebook", NOTEBOOK_PANELS)
def test_every_notebook_panel_starts_small_and_valid_on_a_gpu(notebook, monkeypatch):
    """Each notebook's own panel cell, built as on a GPU (full preset): its start passes the
    config's checks, a Run uses exactly that configuration, the ready line states the start's
    expected seconds, and every control keeps the full preset's
    range or choices, or offers values from inside that range (11's ranks up to the model's
    width)."""
    from workbook import walltime
    from workbook.allowed import read_field

    monkeypatch.setenv("WORKBOOK_PRESET", "full")
    monkeypatch.setattr(registry, "why_not_here", lambda *a, **k: None)  # as on a GPU
    (cell, source), = walltime.panel_cells(notebook)
    space = walltime.panel_space(notebook)
    exec(compile(source, f"{notebook}:{cell}", "exec"), space)
    panel, = [v for v in space.values() if isinstance(v, ExperimentPanel)]
    exp = registry.get(panel.name)
    start = registry.panel_start(panel.name, "full")
    assert start, f"{panel.name} has no panel start for the full preset"
    assert panel.config() == exp.config("full", **start), "the default Run is the start"
    seconds, how = registry.expected_seconds(panel.name, "full", panel.run_overrides())
    assert how.startswith("typical of the panel's start")
    # the estimate is stated, not judged: a typed panel_s under the budget would prove
    # nothing; the budget is met by panel_walltime's rows measured on the GPU
    assert 0 < seconds < 10 * walltime.PANEL_BUDGET_S
    assert f"about {seconds:.0f} s" in panel.message.value
    assert "full" in exp.typical_s, "an estimate for the full preset on a fresh machine"
    full = exp.presets["full"]
    for field, spec in panel.specs.items():
        own = read_field(full, field)
        if spec != own:  # a panel may only narrow a range to a list of values the config takes
            assert own.low is not None and spec.options, f"{field}: the full preset's range"
            assert spec == read_field(full, field, choices=spec.options), field
            assert all(own.low <= v <= own.high for v in spec.options), field
        preset = getattr(full, field)  # each of the preset's own values, with the start held
        for value in (preset if spec.many and not spec.options else [preset]):
            assert panel.config({**panel.values, field: value}) is not None


def test_every_declared_panel_start_is_a_preset_the_config_accepts():
    from workbook import walltime
    from workbook.config import PRESETS as PRESET_NAMES

    declared = {n: e for n, e in registry.experiments().items() if e.panel_start or e.panel_s}
    assert len(declared) >= 9, "the nine notebook panels' experiments"
    for name, exp in declared.items():
        assert set(exp.panel_start) <= set(PRESET_NAMES) and set(exp.panel_s) <= set(
            exp.panel_start), name
        for preset in exp.panel_start:
            assert registry.panel_start(name, preset) == dict(exp.panel_start[preset])
            assert 0 < exp.panel_s[preset] < 10 * walltime.PANEL_BUDGET_S, name  # stated


def test_a_declared_start_the_config_refuses_is_one_line(monkeypatch):
    monkeypatch.setitem(registry.experiments(), "panel_bad_start", registry.Experiment(
        name="panel_bad_start", summary="a bad start", notebook="none", run=run_fake,
        presets=PRESETS, min_gpus={"small": 0, "full": 0},
        panel_start={"full": {"size": 999}}))
    assert registry.panel_start("panel_bad_start", "small") == {}, "no start: the preset"
    with pytest.raises(WorkbookError, match=r"size.*64") as caught:
        registry.panel_start("panel_bad_start", "full")
    assert "\n" not in str(caught.value)


def test_every_notebook_panel_was_measured_on_a_gpu_within_the_budget():
    """Issue 18's performance line, read from the ledger: each notebook's panel has a recorded
    GPU row of its default Run, ok and within 30 s (load and compile included). A notebook
    that gains a panel, or a start re-measured over budget, fails here until it is measured."""
    from workbook import walltime

    rows = results.load("panel_walltime")
    timed = rows[(rows["source"] == "recorded") & (rows["detail"] != "budget")
                 & (pd.to_numeric(rows["n_gpus"], errors="coerce") > 0)]
    with_panel = [p.stem for p in walltime.NOTEBOOK_DIR.glob("*.ipynb")
                  if walltime.panel_cells(p.stem)]
    assert len(with_panel) >= 9, "issue 18: a panel in at least nine notebooks"
    for notebook in with_panel:
        last = timed[timed["notebook"] == notebook].sort_values("recorded_at").tail(1)
        assert len(last), f"{notebook}: its panel has no GPU row (panel_walltime)"
        assert last["status"].tolist() == ["ok"], f"{notebook}: {last['error'].tolist()}"
        assert last["value"].iloc[0] <= walltime.PANEL_BUDGET_S, notebook
