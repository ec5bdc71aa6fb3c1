"""An executed notebook as one HTML file that draws every figure with no internet.

    python -m workbook.export notebooks/07_flash_attention.ipynb [out.html]

A figure is saved in the notebook as plotly JSON (``plots.PLOTLY_MIME``), which nbconvert does
not draw. Here each one becomes a ``<div>`` and a ``Plotly.newPlot`` call, plotly.js is inlined
once in the page's head (from the installed plotly package, never a CDN), and an explorer
(a widget, saved as widget state by nbclient) becomes a static copy of its last drawing: its
controls' values as text, its figure, its message.
"""

from __future__ import annotations

import html
import itertools
import json
import sys
from pathlib import Path

from workbook.config import WorkbookError
from workbook.plots import PLOTLY_MIME

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def figure_html(spec: dict, ids: itertools.count) -> str:
    """One figure: a div and the script that draws it (JSON made safe inside <script>)."""
    div = f"wb-figure-{next(ids)}"
    height = spec.get("layout", {}).get("height", 420)
    payload = json.dumps(spec).replace("</", "<\\/")
    return (f'<div id="{div}" class="wb-figure" style="width:100%;height:{height}px"></div>'
            f'<script>(function (s) {{ Plotly.newPlot("{div}", s.data, s.layout, s.config); }})'
            f"({payload});</script>")


def output_html(output: dict, ids: itertools.count) -> str:
    """One saved output as HTML, or '' when it has nothing to show."""
    data = output.get("data", {})
    if PLOTLY_MIME in data:
        return figure_html(data[PLOTLY_MIME], ids)
    if "text/html" in data:
        return "".join(data["text/html"])
    if output.get("output_type") == "stream":
        return f"<pre>{html.escape(''.join(output.get('text', '')))}</pre>"
    if "text/plain" in data:
        return f"<pre>{html.escape(''.join(data['text/plain']))}</pre>"
    return ""


def widget_html(model_id: str, state: dict, ids: itertools.count) -> str:
    """A widget's last state as static HTML: boxes, output areas, HTML text, control values."""
    model = state.get(model_id)
    if model is None:
        return ""
    name, st = model.get("model_name", ""), model.get("state", {})
    if name in ("VBoxModel", "HBoxModel", "BoxModel", "GridBoxModel"):
        direction = "row; flex-wrap: wrap" if name == "HBoxModel" else "column"
        parts = [widget_html(child.removeprefix("IPY_MODEL_"), state, ids)
                 for child in st.get("children", [])]
        return (f'<div style="display: flex; flex-direction: {direction}; gap: 12px">'
                f'{"".join(parts)}</div>')
    if name == "OutputModel":
        return "".join(output_html(out, ids) for out in st.get("outputs", []))
    if name in ("HTMLModel", "HTMLMathModel", "LabelModel"):
        return str(st.get("value", ""))
    if "description" in st and ("value" in st or "index" in st):
        labels, index = st.get("_options_labels"), st.get("index")
        value = labels[index] if labels is not None and index is not None else st.get("value")
        return (f'<span class="wb-control">{html.escape(str(st["description"]))}: '
                f"<b>{html.escape(str(value))}</b></span>")
    return ""


def to_html(notebook: str | Path, out: str | Path | None = None) -> Path:
    """Write ``out`` (default: beside the notebook, ``.html``) and return its path."""
    import nbformat
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs

    notebook = Path(notebook)
    if not notebook.is_file():
        raise WorkbookError(f"no notebook at {notebook}")
    nb = nbformat.read(notebook, as_version=4)
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    ids = itertools.count()
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                static = widget_html(data[WIDGET_VIEW].get("model_id", ""), state, ids)
                output["data"] = {"text/html": static or "<i>(an interactive widget)</i>"}
            elif PLOTLY_MIME in data:
                data["text/html"] = figure_html(data.pop(PLOTLY_MIME), ids)
    nb.metadata.pop("widgets", None)  # nothing left for a widget manager from a CDN to draw
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    script = f"<script>{get_plotlyjs()}</script>"
    body = body.replace("</head>", f"{script}\n</head>", 1)
    out = Path(out) if out else notebook.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit("usage: python -m workbook.export NOTEBOOK.ipynb [OUT.html]")
    print(to_html(*sys.argv[1:]))
