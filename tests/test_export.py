"""Figures as plotly JSON output, explorers redrawn through widget state, the offline export."""

from __future__ import annotations

import nbformat
import pandas as pd

from workbook import export, plots, walltime, widgets
from workbook.pretraining import LiveCurve


def _rows() -> pd.DataFrame:
    return pd.DataFrame({"x": [1, 2, 3], "value": [3.0, 1.0, 2.0], "source": "measured",
                         "status": "ok"})


def test_a_figure_shows_itself_as_plotly_json_not_as_a_widget():
    bundle = plots.compare(_rows(), "x", title="demo<br>sub")._repr_mimebundle_()
    assert set(bundle) == {plots.PLOTLY_MIME, "text/plain"}
    spec = bundle[plots.PLOTLY_MIME]
    assert len(spec["data"]) == 1 and spec["layout"]["title"]["text"].startswith("demo")
    assert bundle["text/plain"] == "<plotly figure: demo, 1 traces>"


def test_an_explorer_puts_each_drawing_into_its_output_area():
    def draw(fig, scale):
        if not fig.data:
            fig.add_scatter()
        fig.data[0].x, fig.data[0].y = [0, 1], [0, scale]
        return f"scale {scale}"

    explorer = widgets.Explorer({"scale": widgets.slider("scale", 1, 10, 1, 2)}, draw)
    (first,) = explorer.view.outputs
    explorer.set(scale=7)
    (second,) = explorer.view.outputs
    assert first["data"][plots.PLOTLY_MIME]["data"][0]["y"] != \
        second["data"][plots.PLOTLY_MIME]["data"][0]["y"], "the output must follow the control"
    assert "wb-explorer" in explorer.widget._dom_classes, "the browser test finds it by class"


def test_live_curve_replaces_its_drawing_at_each_validation_point():
    curve = LiveCurve(every_s=3600)  # after the first drawing only validation points redraw
    curve.add({"split": "train", "step": 1, "loss": 5.0})
    first = curve.view.outputs
    curve.add({"split": "train", "step": 2, "loss": 4.5})
    assert curve.view.outputs == first, "a train point within every_s must not redraw"
    curve.add({"split": "val", "step": 2, "loss": 4.0})
    (shown,) = curve.view.outputs
    traces = shown["data"][plots.PLOTLY_MIME]["data"]
    assert [len(t["x"]) for t in traces] == [2, 1], "every point so far must be in the drawing"


def _executed_notebook() -> nbformat.NotebookNode:
    fig = plots.compare(_rows(), "x", title="in a cell")._repr_mimebundle_()
    in_widget = plots.compare(_rows(), "x", title="in an explorer")._repr_mimebundle_()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("fig", outputs=[nbformat.v4.new_output(
        "display_data", data=fig)]),
                nbformat.v4.new_code_cell("explorer", outputs=[nbformat.v4.new_output(
                    "display_data", data={export.WIDGET_VIEW: {"model_id": "box"},
                                          "text/plain": "VBox()"})])]
    state = {"box": {"model_name": "VBoxModel", "state": {"children": [
        "IPY_MODEL_dd", "IPY_MODEL_out", "IPY_MODEL_msg"]}},
        "dd": {"model_name": "DropdownModel", "state": {
            "description": "GPU", "_options_labels": ["A100", "T4"], "index": 1}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [
            {"output_type": "display_data", "data": in_widget, "metadata": {}}]}},
        "msg": {"model_name": "HTMLModel", "state": {"value": "<b>note under it</b>"}}}
    nb.metadata["widgets"] = {export.WIDGET_STATE: {"state": state}}
    return nb


def test_export_draws_cell_figures_and_explorers_with_plotly_inlined(tmp_path):
    path = tmp_path / "demo.ipynb"
    nbformat.write(_executed_notebook(), path)
    text = export.to_html(path).read_text()
    assert text.count('class="wb-figure"') == 2, "one div per figure, the explorer's included"
    assert "Plotly.newPlot" in text and "GPU: <b>T4</b>" in text and "note under it" in text
    head = text[:text.index("</head>")]
    assert "plotly.js v" in head or "Plotly" in head, "plotly.js must be inlined in the head"
    assert 'src="https://cdn.plot.ly' not in text, "no figure may need the internet"


def test_walltime_counts_one_line_errors_and_tracebacks_as_failures():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("ok", outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="fine\n")]),
                nbformat.v4.new_code_cell("bad", outputs=[nbformat.v4.new_output(
                    "stream", name="stdout", text="⚠ seq_len=3; allowed: 128 to 16384\n")]),
                nbformat.v4.new_code_cell("worse", outputs=[nbformat.v4.new_output(
                    "error", ename="KeyError", evalue="'device'", traceback=[])])]
    found = walltime.notebook_errors(nb)
    assert found[0].startswith("cell 1: ⚠ seq_len=3") and found[1] == "cell 2: KeyError: 'device'"


def test_tree_memory_counts_the_processes_a_kernel_starts():
    # notebook_walltime's peak_memory sums the PSS of the kernel and its children (the runner's
    # fresh processes): a child holding 200 MB must show up in its parent's tree.
    import os
    import subprocess
    import sys
    import time

    before = walltime.tree_memory_bytes(os.getpid())
    child = subprocess.Popen([sys.executable, "-c",
                              "import sys, time; b = bytearray(200_000_000); "
                              "print('ready', flush=True); time.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        grown = walltime.tree_memory_bytes(os.getpid()) - before
    finally:
        child.kill()
        child.wait()
    assert grown > 150e6, f"a child holding 200 MB added only {grown / 1e6:.0f} MB to the tree"


def test_a_label_keeps_its_colour_across_figures():
    # Issue 19: one colour per variant across a notebook's figures.
    import pandas as pd

    first = pd.DataFrame({"x": [1, 2, 1, 2], "value": [1.0, 2.0, 3.0, 4.0],
                          "variant": ["vanilla", "vanilla", "flash", "flash"],
                          "source": "measured", "status": "ok"})
    second = first[first["variant"] == "flash"]  # flash alone, first in its figure
    a = plots.compare(first, "x", group="variant")
    b = plots.compare(second, "x", group="variant")
    colour = {t.name: t.line.color for t in a.data}
    assert b.data[0].line.color == colour["flash (measured)"] != colour["vanilla (measured)"]
    bars = plots.bars(first, "x", group="variant")
    assert {t.name: t.marker.color for t in bars.data}["flash"] == colour["flash (measured)"]
