"""The workbook where readers use it: JupyterLab in Chromium, and the HTML export offline.

``make test-browser`` (called by ``make test``). For every notebook: open it in JupyterLab,
Run All (small preset), wait; then no error output, every plotly figure on the page has drawn
marks (line paths, points, bars: not just an empty frame), every explorer's figure changes when
its first control is moved through the page, the saved notebook stays under 3 MB, and its HTML
export draws every figure with the network cut off. Screenshots (the page, each figure, the
export) land in ``artifacts/browser/``; the path is printed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from tests.browser.lab import (
    NOTEBOOKS,
    ROOT,
    chromium,
    jupyterlab,
    offline_figures,
    press_panel,
    run_notebook,
)
from workbook import export
from workbook.plots import PLOTLY_MIME

pytestmark = pytest.mark.browser
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
MAX_SAVED_MB = 3.0


@pytest.fixture(scope="module")
def artifacts() -> Path:
    path = Path(os.environ.get("WORKBOOK_ARTIFACTS", ROOT / "artifacts")) / "browser"
    path.mkdir(parents=True, exist_ok=True)
    print(f"\nbrowser screenshots: {path}")
    return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with jupyterlab(tmp_path_factory.mktemp("lab")) as server:
        yield server


@pytest.fixture(scope="module")
def browser():
    with chromium() as chrome:
        yield chrome


def plotly_outputs(nb) -> int:
    return sum(PLOTLY_MIME in out.get("data", {}) for cell in nb.cells
               for out in cell.get("outputs", []))


@pytest.mark.parametrize("name", NAMES)
def test_run_all_in_jupyterlab(name, lab, browser, artifacts):
    run = run_notebook(browser, lab, name, artifacts)
    assert not run.errors, f"{name}: error output after Run All: {run.errors[:3]}"
    assert not run.blank_figures, (
        f"{name}: figures drawn as empty axes (no line, point or bar): "
        f"{[(f['index'], f['title'][:60]) for f in run.blank_figures]}; see {run.screenshot}")
    assert not run.covered_headers, (
        f"{name}: legend over the title: {[f['title'][:60] for f in run.covered_headers]}")
    assert not run.cut_titles, (
        f"{name}: a title wider than its figure: {[f['title'][:60] for f in run.cut_titles]}")
    dead = [e for e in run.explorers if not e["changed"]]
    assert not dead, f"{name}: moving a control did not change the figure: {dead}"

    saved = lab.root / f"{name}.ipynb"
    size_mb = saved.stat().st_size / 1e6
    assert size_mb < MAX_SAVED_MB, f"{name}: the executed notebook is {size_mb:.1f} MB"
    nb = nbformat.read(saved, as_version=4)
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code"), (
        f"{name}: the saved notebook lacks outputs of some cells (was it saved after Run All?)")

    html = export.to_html(saved, artifacts / f"{name}.html")
    offline = offline_figures(browser, html, artifacts)
    assert len(offline) == plotly_outputs(nb), (
        f"{name}: the export drew {len(offline)} figures of {plotly_outputs(nb)}")
    blank = [f["title"][:60] for f in offline
             if not (f["lines"] or f["points"] or f["bars"] or f["images"] or f["fills"])]
    assert not blank, f"{name}: figures blank in the offline HTML export: {blank}"


def test_export_of_an_nbclient_run_draws_its_explorers_offline(tmp_path, browser, artifacts):
    """nbclient saves widget state: an explorer's last figure must survive into the HTML."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / "00_setup.ipynb", as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    path = tmp_path / "00_setup.ipynb"
    nbformat.write(nb, path)
    assert path.stat().st_size / 1e6 < MAX_SAVED_MB
    states = nb.metadata["widgets"][export.WIDGET_STATE]["state"]
    in_widgets = sum(PLOTLY_MIME in out.get("data", {}) for model in states.values()
                     for out in model.get("state", {}).get("outputs", []))
    assert in_widgets >= 1, "00_setup's roofline explorer must have saved its figure"
    offline = offline_figures(browser, export.to_html(path, artifacts / "00_setup.nbclient.html"))
    assert len(offline) == plotly_outputs(nb) + in_widgets
    assert all(f["lines"] or f["points"] or f["bars"] for f in offline), offline


def test_a_panel_runs_an_experiment_from_the_page(lab, browser, artifacts):
    """07's attention panel on the CPU: its head_dim slider moved and Run pressed through the
    page give a drawn figure and a table row for run 1 with the moved value; nothing before
    Run."""
    seen = press_panel(browser, lab, "07_flash_attention", artifacts)
    assert seen["action"], "the panel offers a slider to move"
    assert seen["figures_before"] == 0, "a panel draws nothing before its first run"
    assert not seen["errors"], seen["errors"][:3]
    assert "run 1: ok in" in seen["text"], f"the run's line under the panel: {seen['text']}"
    assert seen["marks"].get("points", 0) >= 1, f"the run's points are drawn: {seen['marks']}"
    assert str(seen["moved"]) in seen["table"], (
        f"the run used the moved slider ({seen['action']}); its table: {seen['table']}")
