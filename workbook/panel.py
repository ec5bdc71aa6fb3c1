"""An experiment panel: controls built from an experiment's config, a Run button, and one figure
that gathers every run's measured points beside the prediction for the same settings.

    panel = widgets.ExperimentPanel("memory_breakdown", fields=["batch", "checkpointing"],
                                    x="batch", y="bytes", where={"component": "activations"})
    panel.set(batch=4)      # as a reader moves the slider (a value out of range: one line)
    panel.run()             # as the Run button: a fresh process; the rows join the figure

The controls come from the config dataclass of the experiment (``registry.get(name)``): its type
hints say which control (a number, a flag, a choice, a list), and its own ``__post_init__``
checks say the allowed range or choices: ``allowed.read_field`` offers the config an
out-of-range value and reads the range from the one-line ``WorkbookError`` it refuses it with
(``check_range`` / ``check_choice``). So a control cannot leave what the config allows, and a
value the config refuses for another reason (two fields that must agree) is one line under the
panel.

A run goes through ``registry.run_isolated``: a fresh process, so a run that dies or runs out
of memory comes back as a row with its ``status`` and the kernel holds no GPU memory after it;
the runner's bar counts the seconds against the last run's (the ETA). Nothing is recorded to
the ledger unless asked (the Record button, or ``record=True`` for every run).
"""

from __future__ import annotations

import dataclasses
import html
import math
import time
import typing
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
import pandas as pd

from workbook import plots, registry, results
from workbook.allowed import FieldControl, read_field
from workbook.config import (
    WorkbookError,
    check_choice,
    check_flag,
    check_text,
    check_values,
    resolve_preset,
)
from workbook.widgets import check_control, show_in

_SLIDER_SPAN = 10_000  # wider integer ranges get a bounded number box, not a slider
# The look of a run's points: measured filled, the formula's prediction hollow, oom a red cross.
_MARKERS = {"measured": {"symbol": "circle", "size": 10},
            "predicted": {"symbol": "diamond-open", "size": 12, "line": {"width": 2}}}
_OOM_MARKER = {"symbol": "x", "size": 14, "color": plots.OOM_COLOR}


def _default(spec: FieldControl, value: Any) -> Any:
    """The control's start: the preset's value (a list of numbers starts at its first)."""
    if spec.many and not spec.options:
        return value[0] if value else spec.low
    if spec.many:
        kept = tuple(v for v in value if v in spec.options)
        return kept or spec.options[:1]
    if spec.options and value not in spec.options:
        return spec.options[0]
    return value


def make_control(spec: FieldControl, value: Any) -> w.ValueWidget:
    """The widget for one field, starting at ``value`` (what the preset holds)."""
    common = {"description": spec.field, "style": {"description_width": "initial"}}
    value = _default(spec, value)
    if spec.many and spec.options:
        return w.SelectMultiple(options=list(spec.options), value=tuple(value),
                                rows=min(len(spec.options), 6), **common)
    if spec.kind == "bool" and not spec.options:
        return w.Checkbox(value=bool(value), indent=False, **common)
    if spec.options:
        return w.Dropdown(options=list(spec.options), value=value, **common)
    if spec.kind == "int":
        low, high = int(spec.low), int(spec.high)
        if high - low <= _SLIDER_SPAN:
            return w.IntSlider(value=int(value), min=low, max=high, continuous_update=False,
                               layout={"width": "360px"}, **common)
        return w.BoundedIntText(value=int(value), min=low, max=high,
                                layout={"width": "240px"}, **common)
    return w.BoundedFloatText(value=float(value), min=spec.low, max=spec.high, step=None,
                              layout={"width": "240px"}, **common)


@dataclasses.dataclass
class PanelRun:
    """One press of Run: the settings, the rows that came back, and how long it took."""

    number: int
    settings: dict[str, Any]         # every control's value, as the config takes it
    overrides: dict[str, Any]        # those that differ from the preset (``--set``)
    rows: pd.DataFrame
    seconds: float
    recorded: bool = False

    @property
    def status(self) -> str:
        """'ok', 'oom', or the mix ('3 ok + 1 oom') of its measured rows (a prediction is
        always 'ok')."""
        if "status" not in self.rows:
            return "ok"
        measured = self.rows[self.rows.get("source", "measured") != "predicted"]
        counts = measured["status"].value_counts()
        if set(counts.index) <= {"ok"}:
            return "ok"
        return " + ".join(f"{n} {s}" if len(counts) > 1 else str(s)
                          for s, n in counts.items())

    @property
    def error(self) -> str:
        """The first failure's message, on one line ('' when every row is ok)."""
        if "error" not in self.rows:
            return ""
        failed = self.rows[self.rows["status"] != "ok"]["error"].dropna().astype(str)
        return failed.iloc[0].splitlines()[0][:240] if len(failed) else ""


class ExperimentPanel:
    """Controls for ``fields`` of an experiment's config, a Run button, a progress bar, and a
    figure of ``y`` (a metric, or several) against ``x`` (a field or a row column) that keeps
    every run; a table lists the runs.

    ``where`` keeps the rows whose columns hold the given values (``{"mode": "fwd"}``);
    ``view(rows) -> rows`` may change the rows before they are drawn (a unit, a derived
    metric); ``group`` colours points by a row column (a variant, a method). ``choices`` offers
    a list of values for a field and ``limits`` narrows a number's range; both are checked
    against the config. ``preset`` is this machine's (``config.resolve_preset``): the controls
    start at its values, so a GPU starts at ``full``, made quick by the experiment's
    ``panel_start`` for that preset (``registry.panel_start``: one size, one variant, fewer
    repeats) and ``start`` (more overrides of the same kind, checked against the config). A
    start field that is not a control holds for every run; the controls still reach the
    preset's full ranges. ``record=True`` records every run to the ledger; otherwise only the
    Record button does.
    """

    def __init__(self, experiment: str, fields: Sequence[str], *, y: str | Sequence[str],
                 x: str | None = None, group: str | None = None,
                 where: dict[str, Any] | None = None,
                 view: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                 choices: dict[str, Sequence[Any]] | None = None,
                 limits: dict[str, tuple[float, float]] | None = None,
                 start: dict[str, Any] | None = None,
                 preset: str | None = None, seed: int = 0, record: bool = False,
                 title: str = "") -> None:
        self.experiment = registry.get(experiment)
        self.name = experiment
        check_values("fields", list(fields) if isinstance(fields, (list, tuple)) else fields)
        self.preset = resolve_preset(preset)
        registry.check_seed(seed)
        check_flag("record", record)
        metrics = [y] if isinstance(y, str) else list(y) if isinstance(y, (list, tuple)) else y
        check_values("y", metrics)
        for metric in metrics:
            check_text("y", metric, empty=False)
        for what, given in (("choices", choices), ("limits", limits), ("start", start)):
            if given is not None and not isinstance(given, dict):
                raise WorkbookError(f"{what}={given!r} is not allowed; allowed: a dict of "
                                    "field: values")
        extra = set(choices or {}) | set(limits or {})
        if extra - set(fields):
            raise WorkbookError(f"choices/limits for {sorted(extra - set(fields))}, which are "
                                f"not among fields {list(fields)}")
        if group is not None:
            check_text("group", group, empty=False)
        if where is not None and not isinstance(where, dict):
            raise WorkbookError(f"where={where!r} is not allowed; allowed: a dict of column: "
                                "value")
        if view is not None and not callable(view):
            raise WorkbookError(f"view={view!r} is not allowed; allowed: a function of rows")
        self.x = x if x is not None else fields[0]
        check_text("x", self.x, empty=False)
        self.y, self.group, self.view, self.seed = metrics, group, view, seed
        self.where = dict(where or {})
        self.record_each = record
        self.title = title or f"{experiment}: {', '.join(metrics)} against {self.x}"
        # Where the controls start: the preset with the experiment's panel start and ``start``
        # applied (checked here, one line if refused); the ranges stay the preset's own.
        self.start = {**registry.panel_start(experiment, self.preset), **(start or {})}
        first = self.experiment.config(self.preset, **self.start)
        base = self.experiment.presets[self.preset]
        self.specs = {f: read_field(base, f, choices=(choices or {}).get(f),
                                    limits=(limits or {}).get(f)) for f in fields}
        self.controls = {f: make_control(s, getattr(first, f)) for f, s in self.specs.items()}
        self.runs: list[PanelRun] = []
        self.last_error: str | None = None

        self.run_button = w.Button(description="Run", button_style="primary", icon="play")
        self.record_button = w.Button(description="Record", icon="save",
                                      tooltip="add this panel's runs to the ledger")
        self.run_button.on_click(lambda _b: self._click(self.run))
        self.record_button.on_click(lambda _b: self._click(self.record))
        self.progress_area = w.Output()
        self.message = w.HTML()
        self.view_area = w.Output()
        self.table_area = w.HTML()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.unavailable = registry.why_not_here(experiment, self.preset)
        if self.unavailable:  # e.g. a GPU-only experiment on a CPU: one line, Run is off
            self.unavailable = self.unavailable.replace(
                "Recorded rows are shown instead.", "Run is off on this machine.")
            self.run_button.disabled = True
        self._say(self.unavailable or self._ready_line())
        self._widget: w.Widget | None = None

    # ------------------------------------------------------------------ values and checks

    @property
    def values(self) -> dict[str, Any]:
        """What each control shows now."""
        return {f: c.value for f, c in self.controls.items()}

    def overrides(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """The controls' values as the config takes them (a list field's one value as a
        tuple)."""
        values = self.values if values is None else values
        out = {}
        for field, value in values.items():
            spec = self.specs[field]
            out[field] = (tuple(value) if spec.options else (value,)) if spec.many else value
        return out

    @property
    def held(self) -> dict[str, Any]:
        """The start's overrides of fields that are not controls: every run keeps them."""
        return {k: v for k, v in self.start.items() if k not in self.controls}

    def run_overrides(self, values: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a run passes on as ``--set``: the held start fields and the controls that differ
        from the preset."""
        base = self.experiment.presets[self.preset]
        moved = {k: v for k, v in self.overrides(values).items() if getattr(base, k) != v}
        return {**self.held, **moved}

    def config(self, values: dict[str, Any] | None = None) -> Any:
        """The config a run would use, checked (a refusal is one ``WorkbookError``)."""
        return self.experiment.config(self.preset, **self.held, **self.overrides(values))

    def set(self, **values: Any) -> None:
        """Move controls from Python, as a reader would with the mouse. A value a control
        cannot take, or that the config refuses, is one line under the panel and a
        ``WorkbookError``; then no control moves."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            self._fail(WorkbookError(f"no control {unknown}; allowed: "
                                     f"{', '.join(self.controls)}"))
        try:
            wanted = {f: self._checked(f, v) for f, v in values.items()}
            self.config({**self.values, **wanted})
        except WorkbookError as exc:
            self._fail(exc)
        self._holding = True
        try:
            for field, value in wanted.items():
                self.controls[field].value = value
        finally:
            self._holding = False
        self._on_change(None)

    _holding = False

    def _checked(self, field: str, value: Any) -> Any:
        """``value`` as ``field``'s control holds it, or a one-line error."""
        spec, control = self.specs[field], self.controls[field]
        if spec.many and not spec.options and isinstance(value, (list, tuple)):
            if len(value) != 1:  # the control gives one value; the config gets it as a list
                raise WorkbookError(f"{field}={value!r}: allowed: one value (this panel runs "
                                    "one at a time)")
            value = value[0]
        if isinstance(control, w.SelectMultiple):
            if not isinstance(value, (list, tuple)) or (not value and not spec.may_be_empty):
                raise WorkbookError(f"{field}={value!r} is not allowed; allowed: a non-empty "
                                    f"list of {', '.join(map(repr, spec.options))}")
            for item in value:  # True == 1 to Python: a list of flags takes no 1, and no flag
                check_choice(field, item, spec.options)
                if any(isinstance(o, bool) for o in spec.options) != isinstance(item, bool):
                    raise WorkbookError(f"{field}={item!r} is not allowed; choose one of: "
                                        f"{', '.join(map(repr, spec.options))}")
            return tuple(value)
        if isinstance(control, w.Checkbox):
            check_flag(field, value)
            return bool(value)
        check_control(field, control, value)
        return value

    def _on_change(self, _change: dict | None) -> None:
        """A control moved (mouse or ``set``): say at once if the config refuses the mix."""
        if self._holding:
            return
        try:
            if not self.unavailable:
                self.config()
                for field, control in self.controls.items():
                    if (isinstance(control, w.SelectMultiple) and not control.value
                            and not self.specs[field].may_be_empty):
                        raise WorkbookError(f"{field}: choose at least one value")
        except WorkbookError as exc:
            self._show_error(exc)
            self.run_button.disabled = True
            return
        self.last_error = None
        self.run_button.disabled = bool(self.unavailable)
        self._say(self.unavailable or self._ready_line())

    # ---------------------------------------------------------------------------- running

    def run(self) -> pd.DataFrame:
        """What the Run button does: the current settings in a fresh process (the runner's
        bar counts the seconds), then the rows join the figure and the table. Returns them."""
        if self.unavailable:
            self._fail(WorkbookError(self.unavailable))
        try:
            settings = self.overrides()
            for field, control in self.controls.items():  # a value typed past the checks
                self._checked(field, control.value)
            self.config()
        except WorkbookError as exc:
            self._fail(exc)
        number = len(self.runs) + 1
        self.run_button.disabled = True
        self._say(f"run {number}: running {self.settings_text(settings)} in a fresh "
                  "process ...")
        # Only what differs from the preset is an override (as ``--set``): the preset's own
        # settings then find its last duration here (the bar's ETA) and its ledger rows.
        changed = self.run_overrides()
        start = time.monotonic()
        failed: Exception | None = None
        try:
            with self.progress_area:  # the runner's bar (its ETA: the last run here) shows here
                try:
                    rows = registry.run_isolated(self.name, self.preset, self.seed, changed,
                                                 record=self.record_each)
                except Exception as exc:  # noqa: BLE001 - an Output area in a live IPython
                    failed = exc          # swallows what leaves it: carry it out by hand
        finally:
            self.run_button.disabled = False
            self.progress_area.clear_output()
        if isinstance(failed, WorkbookError):
            self._fail(failed)
        if failed is not None:
            raise failed
        seconds = time.monotonic() - start
        rows = rows.assign(run=number)
        done = PanelRun(number, settings, changed, rows, seconds, recorded=self.record_each)
        self.runs.append(done)
        self.redraw()
        line = f"run {number}: {done.status} in {seconds:.1f} s ({len(rows)} rows)"
        if done.error:
            line += f": {done.error}"
        self._say(line + (", recorded" if done.recorded else ""))
        missing = [f"{what}={column!r}" for what, column in (("x", self.x), ("group", self.group))
                   if column and column not in rows.columns and column not in settings]
        if missing and (rows["status"] == "ok").any():  # known only now: say it, keep the run
            self._show_error(WorkbookError(
                f"{', '.join(missing)} is neither a field nor a column of the rows; allowed: "
                f"{', '.join(c for c in rows.columns if c not in ('value', 'run'))}"))
        return rows

    def record(self) -> list[int]:
        """What the Record button does: add this panel's unrecorded runs to the ledger (each
        with its settings, as ``--set`` would). Returns the run numbers recorded."""
        todo = [r for r in self.runs if not r.recorded]
        if not todo:
            self._say("nothing new to record: press Run first" if not self.runs
                      else "every run of this panel is recorded already")
            return []
        for run in todo:
            results.record(self.name, run.rows.drop(columns="run"), preset=self.preset,
                           seed=self.seed, overrides=run.overrides)
            run.recorded = True
        self.redraw()
        numbers = [r.number for r in todo]
        self._say(f"recorded run(s) {', '.join(map(str, numbers))} to "
                  f"{results.ledger_path(self.name)}")
        return numbers

    def _click(self, action: Callable[[], Any]) -> None:
        """A button's handler: a WorkbookError is already one line under the panel; anything
        else (a bug) is one line there too, not a traceback lost in JupyterLab's log."""
        try:
            action()
        except WorkbookError:
            pass
        except Exception as exc:  # noqa: BLE001 - a callback's exception has no cell to show in
            self._show_error(WorkbookError(f"{type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------- what it shows

    @property
    def rows(self) -> pd.DataFrame:
        """Every run's rows, with the ``run`` they came from."""
        if not self.runs:
            return pd.DataFrame(columns=["run", "metric", "value", "source", "status"])
        return pd.concat([r.rows for r in self.runs], ignore_index=True)

    @property
    def table(self) -> pd.DataFrame:
        """One line per run: its settings, status, seconds and whether it is recorded."""
        lines = [{"run": r.number, **{f: self._shown(v) for f, v in r.settings.items()},
                  "status": r.status, "seconds": round(r.seconds, 1), "rows": len(r.rows),
                  "recorded": "yes" if r.recorded else "no", "error": r.error}
                 for r in self.runs]
        return pd.DataFrame(lines)

    def plotted(self) -> pd.DataFrame:
        """The rows the figure draws: ``where`` and ``view`` applied, ``x`` filled in from a
        run's settings where a row lacks it (a failed run's row names its settings only)."""
        rows = self.rows
        for column, wanted in self.where.items():  # a failed run's row lacks the column: kept
            held = rows[column] if column in rows.columns else pd.Series(None, index=rows.index)
            rows = rows[(held == wanted) | (held.isna() & (rows["status"] != "ok"))]
        if self.view is not None and len(rows):
            rows = self.view(rows.copy())
        if not len(rows):
            return rows
        settings = {r.number: r.settings for r in self.runs}
        own = rows[self.x] if self.x in rows.columns else pd.Series(math.nan, index=rows.index)
        from_settings = rows["run"].map(lambda n: self._first(settings[n].get(self.x)))
        return rows.assign(**{self.x: own.where(own.notna(), from_settings)})

    def figure(self) -> plots.Figure:
        """Measured points (filled) beside the prediction (hollow) for every run; a run or a
        configuration that ran out of memory is a red cross at the prediction (or the axis)."""
        rows = self.plotted()
        unit = ""
        if len(rows) and "unit" in rows.columns:
            units = rows[rows["metric"].isin(self.y)]["unit"].dropna().unique()
            unit = f" ({units[0]})" if len(units) == 1 and units[0] else ""
        fig = plots.figure(self.title, self.x, ", ".join(self.y) + unit)
        if not len(rows):
            return fig
        ok = rows[(rows["status"] == "ok") & rows["metric"].isin(self.y)]
        keys = [k for k in (self.group, "metric", "source") if k and k in ok.columns]
        for key, part in ok.groupby(keys, sort=False, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            named = dict(zip(keys, key, strict=True))
            source = named.get("source", "measured")
            label = " ".join(self._label(k, named[k]) for k in keys if k != "source" and (
                k != "metric" or len(self.y) > 1 or not self.group)) or self.y[0]
            color = plots.color_for(label)
            marker = {**_MARKERS.get(source, _MARKERS["measured"]), "color": color}
            fig.add_scatter(x=part[self.x], y=part["value"], mode="markers",
                            name=f"{label} ({source})", marker=marker,
                            customdata=part["run"], hovertemplate="run %{customdata}: "
                            "%{x}, %{y}<extra>" + html.escape(source) + "</extra>")
        oom = rows[rows["status"] == "oom"]
        if len(oom):
            fig.add_scatter(x=oom[self.x], y=[self._oom_height(rows, r) for _, r in
                                              oom.iterrows()],
                            mode="markers", name="oom (did not fit)", marker=_OOM_MARKER,
                            customdata=oom["run"],
                            hovertemplate="run %{customdata}: out of memory at %{x}<extra>"
                                          "</extra>")
        return fig

    def _oom_height(self, rows: pd.DataFrame, row: pd.Series) -> float:
        """Where a failed configuration's cross goes: at its prediction if there is one (same
        run, same x), else at the bottom of what is drawn."""
        predicted = rows[(rows["run"] == row["run"]) & (rows[self.x] == row[self.x]) &
                         rows["metric"].isin(self.y)]
        if "source" in predicted.columns:
            predicted = predicted[predicted["source"] == "predicted"]
        value = pd.to_numeric(predicted["value"], errors="coerce").dropna()
        if len(value):
            return float(value.iloc[0])
        drawn = pd.to_numeric(rows[(rows["status"] == "ok") & rows["metric"].isin(self.y)]
                              ["value"], errors="coerce").dropna()
        return float(drawn.min()) if len(drawn) else 0.0

    def redraw(self) -> None:
        """Show the figure and the table of runs (as widget state, see ``widgets.show_in``)."""
        if self.runs:
            show_in(self.view_area, self.figure())
            self.table_area.value = self.table.to_html(index=False, border=0)

    @property
    def widget(self) -> w.Widget:
        if self._widget is None:
            buttons = w.HBox([self.run_button, self.record_button])
            controls = w.HBox(list(self.controls.values()), layout={"flex_flow": "row wrap"})
            self._widget = w.VBox([controls, buttons, self.progress_area, self.message,
                                   self.view_area, self.table_area])
            self._widget.add_class("wb-panel")  # how the browser test finds a panel
        return self._widget

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------------- helpers

    def _ready_line(self) -> str:
        seconds, how = registry.expected_seconds(self.name, self.preset, self.run_overrides())
        eta = (f"a run takes about {seconds:.0f} s ({how})" if seconds is not None else
               "how long a run takes is known once it has run here")
        return f"{self.name}, {self.preset} preset: set the controls and press Run; {eta}."

    def _say(self, line: str) -> None:
        self.message.value = f"<span>{html.escape(line)}</span>"

    def _show_error(self, exc: WorkbookError) -> None:
        self.last_error = str(exc)
        self.message.value = f"<span style='color:#b00'>⚠ {html.escape(str(exc))}</span>"

    def _fail(self, exc: WorkbookError) -> typing.NoReturn:
        self._show_error(exc)
        raise exc

    @staticmethod
    def _label(column: str, value: Any) -> str:
        """A group's name in the legend: 'tiled', or 'checkpointing=True' for a flag/number."""
        if isinstance(value, str) or column == "metric":
            return str(value)
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{column}={shown}"

    @staticmethod
    def _first(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return value[0] if len(value) == 1 else ", ".join(map(str, value))
        return value

    @classmethod
    def _shown(cls, value: Any) -> Any:
        return cls._first(value) if isinstance(value, (list, tuple)) else value

    @classmethod
    def settings_text(cls, settings: dict[str, Any]) -> str:
        return ", ".join(f"{k}={cls._shown(v)}" for k, v in settings.items())
