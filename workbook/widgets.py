"""Sliders bound to figures, a run button for expensive work, progress bars.

Everything here can be driven from Python, which is how the tests check it:

    explorer = Explorer({"seq_len": slider("seq_len", 128, 16384, 128, 1024)}, draw)
    explorer.set(seq_len=4096)        # the figure's data changes in place
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as w
import plotly.graph_objects as go

from workbook.config import (
    WorkbookError,
    check_choice,
    check_flag,
    check_range,
    check_text,
    check_values,
)


def slider(description: str, low: float, high: float, step: float, value: float, *,
           log: bool = False) -> w.ValueWidget:
    """An int, float or log slider that updates only when released (no storm of reruns).

    A start ``value`` outside ``low``..``high`` is one line here, not a silent clamp.
    """
    check_text("description", description)
    check_range("low", low, -1e300, 1e300)
    check_range("high", high, low, 1e300)
    check_range(description, value, low, high)
    common = {"description": description, "continuous_update": False,
              "style": {"description_width": "initial"}, "layout": {"width": "420px"}}
    if log:
        import math

        return w.FloatLogSlider(value=value, base=10, min=math.log10(low),
                                max=math.log10(high), step=step, **common)
    if all(float(v).is_integer() for v in (low, high, step, value)):
        return w.IntSlider(value=int(value), min=int(low), max=int(high), step=int(step),
                           **common)
    return w.FloatSlider(value=value, min=low, max=high, step=step, **common)


def dropdown(description: str, options: list[Any], value: Any) -> w.Dropdown:
    """A dropdown starting at ``value``, which must be one of ``options``."""
    check_text("description", description)
    check_values("options", options)
    check_choice(description, value, options)
    return w.Dropdown(description=description, options=options, value=value,
                      style={"description_width": "initial"})


def show_in(view: w.Output, fig: go.Figure) -> None:
    """Replace what an Output widget shows with ``fig``'s current state.

    Set as widget state, not through a display id or ``with view: display(...)``: JupyterLab's
    plotly renderer draws an output once and ignores updates to it, and the capture makes a
    notebook runner (nbclient) wait a whole cell timeout for the cell to go idle.
    """
    view.outputs = ({"output_type": "display_data", "metadata": {},
                     "data": fig._repr_mimebundle_()},)


def control_range(control: w.ValueWidget) -> tuple[float, float] | None:
    """A slider's (low, high) in the values it shows (a log slider's bounds are exponents)."""
    if not hasattr(control, "min") or not hasattr(control, "max"):
        return None
    if isinstance(control, w.FloatLogSlider):
        return control.base ** control.min, control.base ** control.max
    return control.min, control.max


def check_control(name: str, control: w.ValueWidget, value: Any) -> None:
    """A one-line ``WorkbookError`` unless ``control`` can take ``value`` as it is.

    ipywidgets would clamp a slider's out-of-range value to its end without a word (noise=99
    became 5.0) and raise a TraitError traceback for a dropdown's unknown option.
    """
    if isinstance(control, w.Dropdown):
        options = list(getattr(control, "_options_values", control.options))
        check_choice(name, value, options)
        # True == 1 and 0 == False to Python: a rank dropdown must not take True for 1
        if any(isinstance(o, bool) for o in options) != isinstance(value, bool):
            shown = ", ".join(repr(o) for o in options)
            raise WorkbookError(f"{name}={value!r} is not allowed; choose one of: {shown}")
    elif (bounds := control_range(control)) is not None:
        numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
        # widgets' range as the reader sees it (a log slider's 1e8, not 10**8.000000001)
        low, high = (float(f"{b:.6g}") for b in bounds)
        if not numeric or not low <= value <= high:  # NaN fails every comparison
            raise WorkbookError(f"{name}={value!r} is out of range; allowed: {low:g} to "
                                f"{high:g}")
        if isinstance(control, w.IntSlider) and not float(value).is_integer():
            raise WorkbookError(f"{name}={value!r} must be a whole number from {low:g} to "
                                f"{high:g}")
    elif isinstance(control, w.Text) and not isinstance(value, str):
        raise WorkbookError(f"{name}={value!r} must be text")


class Explorer:
    """Controls bound to one figure.

    ``draw(fig, **values)`` updates ``fig`` in place (inside ``fig.batch_update()``); it may
    return a string shown under the figure. The figure is then shown again in the explorer's
    output area (``view``), replacing the last drawing. A ``WorkbookError`` is shown as one
    line instead of a traceback, and the figure keeps its last good state.
    """

    def __init__(self, controls: Mapping[str, w.ValueWidget],
                 draw: Callable[..., str | None], fig: go.Figure | None = None) -> None:
        from workbook import plots

        self.controls = dict(controls)
        self.draw = draw
        self.fig = fig if fig is not None else plots.figure()
        self.view = w.Output()
        self.message = w.HTML()
        self.last_error: str | None = None
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.refresh()

    @property
    def values(self) -> dict[str, Any]:
        return {name: control.value for name, control in self.controls.items()}

    def set(self, **values: Any) -> None:
        """Move controls from Python, as a reader would with the mouse."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise WorkbookError(f"no control {unknown}; controls: {', '.join(self.controls)}")
        try:  # all values checked before any is set: a bad one changes nothing
            for name, value in values.items():
                check_control(name, self.controls[name], value)
        except WorkbookError as exc:
            self._show_error(exc)
            raise
        with self.hold():
            for name, value in values.items():
                self.controls[name].value = value
        self.refresh()

    def hold(self):
        """Change several controls with one redraw at the end."""
        explorer = self

        class _Hold:
            def __enter__(self):
                explorer._held = True

            def __exit__(self, *exc):
                explorer._held = False

        return _Hold()

    _held = False

    def _on_change(self, _change: dict) -> None:
        if not self._held:
            self.refresh()

    def refresh(self) -> None:
        try:
            with self.fig.batch_update():
                note = self.draw(self.fig, **self.values)
        except WorkbookError as exc:
            self._show_error(exc)
            return
        self.last_error = None
        self.message.value = note or ""
        self.show()

    def _show_error(self, exc: WorkbookError) -> None:
        """One line under the figure; the figure keeps its last good state."""
        self.last_error = str(exc)
        self.message.value = f"<span style='color:#b00'>⚠ {html.escape(str(exc))}</span>"

    def show(self) -> None:
        """Put the figure's current state into the explorer's output area (``show_in``)."""
        show_in(self.view, self.fig)

    @property
    def widget(self) -> w.Widget:
        box = w.VBox([w.HBox(list(self.controls.values()), layout={"flex_flow": "row wrap"}),
                      self.view, self.message])
        box.add_class("wb-explorer")  # how the browser test finds an explorer on the page
        return box

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


class RunButton:
    """A button for expensive work: runs ``action()`` on click, shows its result or error."""

    def __init__(self, description: str, action: Callable[[], Any]) -> None:
        self.button = w.Button(description=description, button_style="primary")
        self.output = w.Output()
        self.action = action
        self.result: Any = None
        self.button.on_click(lambda _b: self.click())

    def click(self) -> Any:
        self.button.disabled = True
        self.output.clear_output()
        try:
            with self.output:
                self.result = self.action()
                if self.result is not None:
                    from IPython.display import display

                    display(self.result)
        except WorkbookError as exc:
            with self.output:
                print(f"⚠ {exc}")
        finally:
            self.button.disabled = False
        return self.result

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(w.VBox([self.button, self.output]))


def run_or_button(name: str, show: Callable[[Any], Any], *, budget_s: float = 60.0,
                  preset: str | None = None, references: bool = False,
                  preview: Callable[[Any], Any] | None = None) -> Any:
    """An experiment at this machine's preset: run at once (a fresh process, as
    ``registry.live_or_recorded``) when it is expected to take at most ``budget_s``, else a
    Run button that states the expected time, so that Run All stays quick on any machine.
    ``show(rows)`` turns the rows into what the cell displays. Where this machine cannot run it,
    the recorded rows are shown at once. ``references=True``: ``show`` gets
    ``registry.with_references`` of the rows (this machine's first, recorded devices beside),
    which later cells read back with ``registry.shown(name)``.

    Above the button the cell shows ``show`` of no live rows (a ``show`` that adds the
    references, itself or by ``references=True``, draws the recorded rows; one that keeps its
    rows keeps none), or ``preview(recorded rows)`` where given: a ``show`` that stores what
    it gets as this machine's rows must not be handed the ledger. A click's result appears
    below the button."""
    from workbook import registry, results

    check_range("budget_s", budget_s, 0, 86_400)
    check_flag("references", references)
    if references:
        inner = show

        def show(rows):
            return inner(registry.with_references(name, rows))
    registry.get(name)  # an unknown experiment: one line naming the known ones
    chosen = registry.resolve_preset(preset)
    if registry.why_not_here(name, chosen) is not None:
        return show(registry.live_or_recorded(name, chosen))
    seconds, how = registry.expected_seconds(name, chosen)
    if seconds is not None and seconds <= budget_s:
        return show(registry.live_or_recorded(name, chosen))
    eta = "time unknown" if seconds is None else (
        f"about {seconds / 60:.0f} min" if seconds >= 90 else f"about {seconds:.0f} s")
    print(f"{name} ({chosen} preset) takes {eta} here ({how}): press the button to run it.")
    recorded = results.load_shown(name)
    if not recorded.empty:
        # where they come from, said here: not every table below has a device or date column
        print(f"Meanwhile the rows {results.provenance_label(recorded)}; this machine's "
              "appear below the button once it has run:")
    # drawn in the cell's own output, not the button's: a saved notebook keeps it there
    drawn = preview(recorded) if preview is not None else show(recorded.iloc[0:0])
    if drawn is not None:
        from IPython.display import display

        display(drawn)
    return RunButton(f"Run {name} ({chosen}), {eta}",
                     lambda: show(registry.live_or_recorded(name, chosen)))


def progress(iterable, *, desc: str = "", total: int | None = None, disable: bool = False):
    """A progress bar that renders as a widget in Jupyter and as text elsewhere, and leaves
    one line saying how it ended (:mod:`workbook.progress`)."""
    from workbook.progress import each

    return each(iterable, desc=desc, total=total, disable=disable)


def readable_tables() -> None:
    """In a notebook, show every column, every cell and up to 200 rows of a table in full:
    pandas cuts text at 50 characters and hides middle columns and rows ("..."), which hid
    a label's deciding words (07's targets, 09's tokens past the prompt, 01's sources)."""
    import pandas as pd

    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    # rows too, up to a page: 06's tensor-parallel table (81 rows) hid its middle, where this
    # machine's errors stood; a longer table still shows its head and tail
    pd.set_option("display.max_rows", 200)


def one_line_errors() -> None:
    """In a notebook, show a WorkbookError as one line, not a traceback wall."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return
    shell = get_ipython()
    if shell is None:
        return

    def handler(_shell, _etype, value, _tb, tb_offset=None):
        print(f"⚠ {value}")

    shell.set_custom_exc((WorkbookError,), handler)


def __getattr__(name: str) -> Any:
    """``widgets.ExperimentPanel``: it lives in ``workbook.panel``, which builds on this module."""
    if name == "ExperimentPanel":
        from workbook.panel import ExperimentPanel

        return ExperimentPanel
    raise AttributeError(f"module 'workbook.widgets' has no attribute {name!r}")
