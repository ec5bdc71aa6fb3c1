"""One look for every figure, and the rule that a number shows where it came from.

Functions here take tidy rows (see ``workbook.results``) and return a :class:`Figure`: a plain
plotly figure that a notebook shows as plotly's own JSON output (mime type
``application/vnd.plotly.v1+json``), never as a widget. Why not ``FigureWidget``: a widget's
saved state carries the whole plotly.js bundle (about 4.6 MB) per figure, so an executed
notebook grew to 15-35 MB, and a widget view is drawn only while the kernel's widget state is
live. JSON output is small, renders in JupyterLab and in an HTML export (``workbook.export``),
and an explorer redraws it in place by displaying it again (``widgets.Explorer``).

Marker style encodes the source of each number:

* measured here: filled markers, solid line;
* recorded (measured elsewhere, read from the ledger): hollow markers, the device and date in
  the title;
* predicted (a formula): dashed line, no markers;
* datasheet (vendor's peak): dotted line.

Colour encodes the label (a variant, a method, a group), never the source: ``color_for(label)``
gives a label one colour in every figure of a kernel, and a trace added to a :class:`Figure`
without a colour of its own takes ``color_for(label_of(its name))`` ('vanilla (measured)' and
'vanilla (recorded, H100)' are both 'vanilla'), so hand-built traces in notebooks and explorers
follow the same rule.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from workbook.config import takes_rows
from workbook.results import provenance_label, where_label

COLORS: tuple[str, ...] = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                           "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")
LAYOUT = {
    "template": "plotly_white",
    "font": {"family": "Inter, Helvetica, Arial, sans-serif", "size": 13},
    # Title and provenance subtitle at the top, the legend right below them (placed by
    # header_layout from the title's lines), the plot below both: the legend never covers the
    # subtitle, and the margin grows with the legend's rows (plotly's automargin).
    "margin": {"l": 60, "r": 20, "t": 70, "b": 60},
    "title": {"yref": "container", "yanchor": "middle"},
    "legend": {"orientation": "h", "yref": "container", "yanchor": "top", "x": 0},
    "height": 460,
}
# A title line, its first <sup> line, each further <sup> line (plotly spaces the title's lines at
# 1.3 × its 18 px font, measured in Chromium), the gaps: a header of 6 lines with 17 px per line
# ran 21 px into the legend below it (03's figures, 2026-12-05).
_TITLE_PX, _FIRST_SUB_PX, _SUBTITLE_PX, _HEADER_PAD_PX = 20, 14, 23.4, 8
# Characters per title line and per subtitle (<sup>) line before a line wraps: Chromium drew
# 8 px per title character and 5.6 px per subtitle character, and a figure in JupyterLab (a
# 1400 px window, the file browser open) is about 970 px wide; wider lines were cut at the
# figure's right edge (03's sweep labels, 2026-12-05). Each wrapped line past the third makes
# the figure taller, so the plot keeps its height.
TITLE_CHARS, SUBTITLE_CHARS, _HEADER_LINES = 90, 130, 3
# The legend's rows, estimated as Chromium lays them out: plotly gives every entry the width of
# the widest (about 50 px of symbol and gaps + 7 px a character) in a 900 px row, 20 px a row;
# rows past two make the figure taller (07's figures of two machines × 6 methods had 7 rows
# and 170 px left to plot, 2026-12-05).
_LEGEND_ROW_WIDTH_PX, _LEGEND_ENTRY_PX, _LEGEND_CHAR_PX, _LEGEND_ROW_PX = 900, 50, 7, 20


def legend_rows(names: Sequence[str]) -> int:
    """How many rows a horizontal legend of entries ``names`` takes (0 for none)."""
    if not names:
        return 0
    width = _LEGEND_ENTRY_PX + _LEGEND_CHAR_PX * max(len(str(n)) for n in names)
    columns = max(1, int(_LEGEND_ROW_WIDTH_PX // width))
    return math.ceil(len(names) / columns)


_SOURCE_STYLE = {
    "measured": {"mode": "lines+markers", "line": {"dash": "solid"},
                 "marker": {"symbol": "circle", "size": 8}},
    "recorded": {"mode": "lines+markers", "line": {"dash": "solid"},
                 "marker": {"symbol": "circle-open", "size": 9, "line": {"width": 2}}},
    "predicted": {"mode": "lines", "line": {"dash": "dash"}},
    "datasheet": {"mode": "lines", "line": {"dash": "dot"}},
}


PLOTLY_MIME = "application/vnd.plotly.v1+json"
CONFIG = {"displaylogo": False, "responsive": True}


class Figure(go.Figure):
    """A plotly figure that shows itself as plotly JSON, whatever ``plotly.io``'s renderer is.

    ``display(fig)`` sends ``{PLOTLY_MIME: {data, layout, config}, "text/plain": ...}``; JupyterLab
    draws it with plotly's mime renderer, ``workbook.export`` turns it into HTML.
    """

    def _repr_mimebundle_(self, include=None, exclude=None, validate=True, **kwargs):
        spec = json.loads(pio.to_json(self, validate=validate))
        layout = spec.setdefault("layout", {})
        text = wrap_title(self.layout.title.text or "")   # the title as it is now
        lines = text.count("<br>") + 1
        entries = [t.name for t in self.data if t.name and t.showlegend is not False]
        shown = self.layout.showlegend if self.layout.showlegend is not None \
            else len(entries) > 1   # plotly's default: a legend from two traces on
        rows = legend_rows(entries) if shown else 0
        height = (self.layout.height or LAYOUT["height"]) + _SUBTITLE_PX * max(
            0, lines - _HEADER_LINES) + _LEGEND_ROW_PX * max(0, rows - 2)
        for part, place in header_layout(text, height).items():
            layout[part] = {**layout.get(part, {}), **place}
        if text:
            layout["title"]["text"] = text
        layout["height"] = height
        title = self.layout.title.text or "figure"
        return {PLOTLY_MIME: {**spec, "config": CONFIG},
                "text/plain": f"<plotly figure: {title.split('<br>')[0]}, "
                              f"{len(self.data)} traces>"}

    def _ipython_display_(self):
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)

    def add_trace(self, trace, *args, **kwargs):
        """Add ``trace``; a named one without a colour of its own takes its label's colour
        (:func:`color_for` of :func:`label_of` its name), not plotly's next default colour."""
        if isinstance(trace, dict):
            trace = go.Figure(data=[trace]).data[0]
        if trace.name and not has_color(trace):
            color = color_for(label_of(trace.name))
            if "line" in trace and trace.type not in ("bar", "histogram"):
                trace.line.color = color
            if "marker" in trace:
                trace.marker.color = color
        return super().add_trace(trace, *args, **kwargs)


def label_of(name: object) -> str:
    """The label a trace's colour belongs to: its name up to a bracketed note (the source, a
    device, a setting) or a ' · ' (where it ran): 'vanilla (measured)' -> 'vanilla',
    'sdpa_flash (recorded, H100)' -> 'sdpa_flash', 'zero1 (N=2)' -> 'zero1',
    'gpipe · here (measured)' -> 'gpipe'."""
    return str(name).split(" (")[0].split(" · ")[0].strip()


def has_color(trace: go.BaseTraceType) -> bool:
    """Whether ``trace`` sets its own colour (its line's or its markers')."""
    return any(part in trace and trace[part].color is not None for part in ("line", "marker"))


def wrap_title(title: str, title_chars: int = TITLE_CHARS,
               subtitle_chars: int = SUBTITLE_CHARS) -> str:
    """``title`` with each line longer than its limit broken into several (at '; ', else ', ',
    else a space): the title's first line at ``title_chars``, a ``<sup>`` line at
    ``subtitle_chars``. Each ``<sup>`` line comes out closed on its own line. A title with other
    markup (a tag inside a line) is returned as it is."""
    out, small = [], False
    for i, line in enumerate(title.split("<br>")):
        if line.startswith("<sup>"):
            small, line = True, line[len("<sup>"):]
        closes = line.endswith("</sup>")
        line = line.removesuffix("</sup>")
        if "<" in line:
            return title
        limit = subtitle_chars if small or i else title_chars
        out += [f"<sup>{part}</sup>" if small else part for part in _wrap_line(line, limit)]
        small = small and not closes
    return "<br>".join(out)


def _wrap_line(text: str, limit: int) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters where it can be: each cut after the
    last '; ' that leaves a piece of at least half the limit, else the last ', ', else the last
    space (a word longer than the limit stays whole)."""
    pieces = []
    while len(text) > limit:
        for sep in ("; ", ", ", " "):
            cut = text.rfind(sep, 0, limit + 1 - len(sep.rstrip()))
            if cut >= limit // 2 or (sep == " " and cut > 0):
                break
        else:
            break
        head = text[:cut + len(sep.rstrip())]
        pieces.append(head)
        text = text[cut + len(sep):]
    return pieces + [text]


# Where a point's text goes, tried in this order; the box's centre, in label heights and widths
_TEXT_PLACES = (("top center", 0.0, 1.0), ("bottom center", 0.0, -1.0),
                ("middle right", 0.6, 0.0), ("middle left", -0.6, 0.0))


def text_positions(x: Sequence[float], y: Sequence[float], labels: Sequence[str], *,
                   px_per_decade: tuple[float, float] = (130.0, 70.0),
                   char_px: float = 6.5, line_px: float = 16.0,
                   y_top: float | None = None) -> list[str]:
    """A plotly ``textposition`` per point of a log-log scatter, so that no two labels (nor a
    label and another point) overlap: each label takes the first place of top, bottom, right,
    left whose box is free (and stays below ``y_top``, the axis' top, where given: plotly cuts
    text at the axes), else the top. The boxes are estimated in pixels from the axes' pixels
    per decade and the font's character width (a 13 px font: about 6.5 px); a ``<br>`` in a
    label makes it two lines high."""
    px, py = px_per_decade
    points = [(math.log10(a) * px, -math.log10(b) * py) for a, b in zip(x, y, strict=True)]
    ceiling = -math.log10(y_top) * py if y_top else -math.inf
    placed: list[tuple[float, float, float, float]] = []
    out = []
    for (cx, cy), label in zip(points, labels, strict=True):
        lines = str(label).split("<br>")
        w, h = max(map(len, lines)) * char_px, len(lines) * line_px
        choice = _TEXT_PLACES[0][0]
        for place, fx, fy in _TEXT_PLACES:
            box = (cx + fx * w - w / 2 + (8 if fx > 0 else -8 if fx < 0 else 0),
                   cy - fy * (h / 2 + 6) - h / 2)
            box = (box[0], box[1], box[0] + w, box[1] + h)
            clear = box[1] >= ceiling and not any(
                _boxes_meet(box, other) for other in placed) and not any(
                box[0] - 4 < ox < box[2] + 4 and box[1] - 4 < oy < box[3] + 4
                for ox, oy in points if (ox, oy) != (cx, cy))
            if clear:
                choice = place
                break
        else:
            box = (cx - w / 2, cy - h - 6, cx + w / 2, cy - 6)
        placed.append(box)
        out.append(choice)
    return out


def _boxes_meet(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def header_layout(title: str, height: float) -> dict[str, dict[str, float]]:
    """Where the title and the legend go (container fractions): the title's lines (its
    ``<br><sup>`` provenance included) at the top, the legend's first row right below the
    last of them. A figure applies this each time it is shown, so a title set later counts."""
    lines = title.count("<br>") + 1 if title else 0
    block = (_TITLE_PX + (_FIRST_SUB_PX + _SUBTITLE_PX * (lines - 2) if lines > 1 else 0)
             if lines else 0)
    # plotly centres the title's *first* line at y (yanchor "middle"); the others hang below it
    return {"title": {**LAYOUT["title"], "y": 1 - (_HEADER_PAD_PX + _TITLE_PX / 2) / height},
            "legend": {**LAYOUT["legend"], "y": 1 - (2 * _HEADER_PAD_PX + block) / height}}


def figure(title: str = "", x_title: str = "", y_title: str = "", *, log_x: bool = False,
           log_y: bool = False) -> Figure:
    """An empty figure in the workbook's theme."""
    fig = Figure(layout=LAYOUT)
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title)
    fig.update_layout(header_layout(title, LAYOUT["height"]))
    # A log axis over one or two decades labels its minor ticks "2", "5": with one decade
    # number ("100M") in sight the reader cannot tell 200M from 2G, so they are written in full.
    if log_x:
        fig.update_xaxes(type="log", **_FULL_LOG_LABELS)
    if log_y:
        fig.update_yaxes(type="log", **_FULL_LOG_LABELS)
    return fig


try:  # plotly ≥ 5.24 (plotly.js 2.35) has the option; older ones keep the short labels
    _FULL_LOG_LABELS = {"minorloglabels": go.layout.XAxis(minorloglabels="complete").minorloglabels}
except ValueError:
    _FULL_LOG_LABELS = {}


@takes_rows
def title_with_source(title: str, rows: pd.DataFrame) -> str:
    """Append where recorded rows came from; measured-here rows alone need no label, but beside
    recorded ones they are named first ('this machine (NVIDIA H200); recorded on …'), so the
    subtitle never reads as if the figure were only the references'."""
    if "source" in rows.columns and (rows["source"] == "recorded").any():
        label = provenance_label(rows[rows["source"] == "recorded"])
        here = rows[rows["source"] == "measured"]
        if len(here):
            label = f"{where_label(here)}; {label}"
        return f"{title}<br><sup>{label}</sup>"
    return title


@takes_rows
def compare(rows: pd.DataFrame, x: str, *, y: str = "value", group: str | Sequence[str] = (),
            title: str = "", x_title: str | None = None, y_title: str | None = None,
            log_x: bool = False, log_y: bool = False, color: str | None = None) -> Figure:
    """Predicted beside measured: one trace per (group, source), styled by source.

    The colour is the group's label (:func:`color_for`); ``color`` names a column that picks
    it instead (several groups of one variant, e.g. 'gpipe · here' and 'gpipe · H100', share
    the variant's colour and differ in marker shape); a label 'model: vanilla' (a model's
    prediction for vanilla) takes vanilla's colour, dashed. Several machines: one trace each,
    the label's colour, a shape per machine."""
    groups = [group] if isinstance(group, str) else list(group)
    fig = figure(title_with_source(title, rows), x_title or x, y_title or _unit_title(rows, y),
                 log_x=log_x, log_y=log_y)
    if rows.empty:
        fig.add_annotation(text="no rows to show", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
        return fig
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    keys = groups + ["source"] if "source" in ok.columns else groups
    # Recorded rows of several machines (this one live, others as references) are one trace
    # per machine, named by it: a line through an H100's and an H200's points is nobody's.
    machines = "device" in ok.columns and ok["device"].nunique() > 1
    keys = keys + ["device"] if machines else keys
    symbol = machine_symbols(ok["device"]) if machines else {}
    shapes: dict[str, dict[str, str]] = {}  # colour key -> label -> shape, where they share
    parts = list(ok.groupby(keys, dropna=False, sort=False) if keys else [((), ok)])
    formulas = _formula_curves(parts, groups, x, y) if machines else {}
    drawn: set = set()
    for key, part in parts:
        key = key if isinstance(key, tuple) else (key,)
        source = key[len(groups)] if "source" in ok.columns else "measured"
        label = " ".join(str(k) for k in key[:len(groups)]) or str(y)
        curve = (label, source)
        if curve in formulas and not formulas[curve]:
            # a formula that gives every machine the same curve is drawn once, unnamed by any
            if curve in drawn:
                continue
            drawn.add(curve)
        hue = str(part[color].iloc[0]) if color else label.removeprefix("model: ")
        shared = shapes.setdefault(hue, {})
        shape = shared.setdefault(label, MACHINE_SYMBOLS[len(shared) % len(MACHINE_SYMBOLS)])
        style = _SOURCE_STYLE.get(source, _SOURCE_STYLE["measured"])
        marker = {**style.get("marker", {}), "color": color_for(hue)}
        if "symbol" in marker and (color or machines):  # one colour, told apart by shape
            marker["symbol"] = marker["symbol"].replace(
                "circle", shape if color else symbol[key[-1]])
        part = part.sort_values(x)
        name = short_device(key[-1]) if machines and pd.notna(key[-1]) else ""  # a formula:
        # no device
        # no machine name where the label is the machine already, or the curve is everyone's
        where = f", {name}" if name and name not in label and formulas.get(curve, True) else ""
        # the source is not said twice ("peak: datasheet (datasheet)")
        said = ", ".join(p for p in (source if source not in label else "", where[2:]) if p)
        fig.add_scatter(x=part[x], y=part[y], name=f"{label} ({said})" if said else label,
                        line={**style.get("line", {}), "color": color_for(hue)}, marker=marker,
                        mode=style["mode"])
    mark_oom(fig, rows, x, groups, log_x=log_x)
    return fig


def _formula_curves(parts: list, groups: Sequence[str], x: str, y: str) -> dict:
    """For each (label, source) of a prediction (not measured or recorded): False where several
    machines have the very same curve (drawn once, named by none), True otherwise (one trace
    per machine, named: it may hold for that machine only)."""
    curves: dict[tuple[str, str], list] = {}
    for key, part in parts:
        key = key if isinstance(key, tuple) else (key,)
        if len(key) <= len(groups) or key[len(groups)] in ("measured", "recorded"):
            continue
        label = " ".join(str(k) for k in key[:len(groups)]) or str(y)
        data = tuple(map(tuple, part.sort_values(x)[[x, y]].to_numpy().tolist()))
        curves.setdefault((label, key[len(groups)]), []).append(data)
    return {curve: len(datas) == 1 or len(set(datas)) > 1 for curve, datas in curves.items()}


def mark_oom(fig: Figure, rows: pd.DataFrame, x: str, groups: Sequence[str] = (), *,
             log_x: bool = False) -> None:
    """A configuration that ran out of memory has no value to draw: a red ✕ at its ``x`` along
    the bottom of the plot (one row of crosses per group, named in the hover text) and a
    legend entry, never a silent gap where the curve stops (07's vanilla at N = 16384)."""
    if "status" not in rows.columns or x not in rows.columns:
        return
    oom = rows[(rows["status"] == "oom") & rows[x].notna()]
    if oom.empty:
        return
    groups = list(groups)
    for level, (key, part) in enumerate(oom.groupby(groups, dropna=False, sort=False)
                                        if groups else [((), oom)]):
        key = key if isinstance(key, tuple) else (key,)
        label = " ".join(str(k) for k in key)
        at = [a for a in sorted(set(part[x])) if not (log_x and a <= 0)]
        where = [math.log10(a) if log_x else a for a in at]
        for a, pos in zip(at, where, strict=True):
            fig.add_annotation(x=pos, y=0.02 + 0.05 * level, yref="paper", text="✕",
                               showarrow=False, font={"color": OOM_COLOR, "size": 16},
                               hovertext=f"{label + ': ' if label else ''}out of memory at "
                                         f"{x} = {a:g}")
        if label and where:  # a printout has no hover: the row says whose crosses they are
            fig.add_annotation(x=where[0], y=0.02 + 0.05 * level, yref="paper", text=label,
                               showarrow=False, xanchor="right", xshift=-10,
                               font={"color": OOM_COLOR, "size": 11})
    fig.add_scatter(x=[None], y=[None], mode="markers",
                    name="out of memory (crosses along the foot)",
                    marker={"symbol": "x", "size": 10, "color": OOM_COLOR})


def on_top(fig: Figure, prefix: str) -> Figure:
    """Draw the traces named ``prefix…`` last, dashed, with larger open markers: a curve that
    lies exactly on another (06's 1F1B on GPipe's idle share, the lecture's point) stays in
    sight as a ring around the other's points instead of vanishing under them."""
    mine = [t for t in fig.data if (t.name or "").startswith(prefix)]
    for trace in mine:
        trace.line.dash = "dash"
        symbol = trace.marker.symbol or "circle"
        trace.marker.symbol = symbol if symbol.endswith("-open") else f"{symbol}-open"
        trace.marker.size = 13
        trace.marker.line.width = 2
    drawn_last = {id(t) for t in mine}
    fig.data = [t for t in fig.data if id(t) not in drawn_last] + mine
    return fig


MACHINE_SYMBOLS = ("circle", "square", "diamond", "triangle-up", "pentagon", "hexagon")


def machine_symbols(devices: pd.Series) -> dict[object, str]:
    """A marker shape per machine, in the order they appear (this machine's rows come first):
    several machines' curves of one label share its colour and differ in shape."""
    return {d: MACHINE_SYMBOLS[i % len(MACHINE_SYMBOLS)]
            for i, d in enumerate(pd.unique(devices.dropna()))}


def short_device(device: object) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100 80GB HBM3', 'CPU (x86_64, 2 cores)' -> 'CPU': a legend's
    name for a machine."""
    text = str(device)
    return "CPU" if text.startswith("CPU") else text.removeprefix("NVIDIA ")


OOM_COLOR = "#b00"  # an out-of-memory configuration: a red cross in every figure
_COLOR_OF: dict[str, str] = {"oom": OOM_COLOR}  # label -> colour, for this process (a kernel)


def color_for(label: str) -> str:
    """The colour of ``label`` (a variant, a method, a device) in every figure of this kernel:
    'vanilla' is the same colour in all of 07's plots. New labels take the next colour;
    'oom' is always :data:`OOM_COLOR`."""
    label = str(label)
    if label not in _COLOR_OF:
        _COLOR_OF[label] = COLORS[(len(_COLOR_OF) - 1) % len(COLORS)]
    return _COLOR_OF[label]


@contextlib.contextmanager
def fresh_colours() -> Iterator[None]:
    """Inside, labels take colours as in a fresh kernel (the first label the first colour);
    after, every colour given out before is back. A test that builds one notebook's figures
    uses it, so it neither sees nor leaves other tests' labels."""
    saved = dict(_COLOR_OF)
    _COLOR_OF.clear()
    _COLOR_OF["oom"] = OOM_COLOR
    try:
        yield
    finally:
        _COLOR_OF.clear()
        _COLOR_OF.update(saved)


def _unit_title(rows: pd.DataFrame, y: str) -> str:
    if "unit" in rows.columns and rows["unit"].nunique() == 1:
        return f"{y} ({rows['unit'].iloc[0]})"
    return y


def zero_labels(values: Sequence[float]) -> list[str]:
    """A bar's text: '0' on a bar of height zero, nothing on the others, so that a measured
    zero is not read as a missing number (plotly draws no bar for either)."""
    return ["0" if v == 0 else "" for v in values]


@takes_rows
def bars(rows: pd.DataFrame, x: str, *, y: str = "value", group: str = "source",
         title: str = "", y_title: str | None = None, log_y: bool = False,
         color: str | None = None) -> Figure:
    """Grouped bars, e.g. measured vs datasheet per dtype: a colour per group
    (:func:`color_for`; ``color`` names a column that picks it instead, e.g. the machine of
    'measured, H200' and 'datasheet, H200'); a group of predicted or datasheet numbers only
    is hatched, a measured or recorded one solid. Rows of several machines in one group are
    one bar group per machine ('recorded, H100 80GB HBM3', 'recorded, H200')."""
    fig = figure(title_with_source(title, rows), x, y_title or _unit_title(rows, y),
                 log_y=log_y)
    ok = rows[rows["status"] == "ok"] if "status" in rows.columns else rows
    # A group holding several machines' rows (an H100's and an H200's 'recorded' bars) is one
    # bar group per machine, named by it: one bar of two devices' values is nobody's number.
    split = ("device" in ok.columns and group != "device" and len(ok)
             and bool(ok.groupby(group)["device"].nunique().gt(1).any()))
    keys = [group, "device"] if split else group
    for key, part in ok.groupby(keys, sort=False):
        name = f"{key[0]}, {short_device(key[1])}" if split else key
        claimed = "source" in part.columns and set(part["source"]) <= {"predicted", "datasheet"}
        hue = part[color].iloc[0] if color else name
        fig.add_bar(x=part[x].astype(str), y=part[y], name=str(name),
                    text=zero_labels(part[y]), textposition="outside",
                    marker_color=color_for(hue), marker_pattern_shape="/" if claimed else "")
    # a bar's text ('0', 'over') readable: plotly shrinks it to the bar's width otherwise
    fig.update_layout(barmode="group", uniformtext={"minsize": 10, "mode": "show"})
    return fig
