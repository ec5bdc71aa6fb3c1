"""workbook.progress: a bar leaves how it ended, in a terminal and in a saved notebook."""

from __future__ import annotations

import nbformat
import pytest

from workbook import progress


def test_outside_a_kernel_the_end_line_is_printed(capsys):
    assert not progress.in_kernel()
    assert list(progress.each(range(4), desc="steps")) == [0, 1, 2, 3]
    out = capsys.readouterr().out
    assert "steps: 4 of 4 in " in out, out


def test_a_disabled_bar_says_nothing(capsys):
    assert list(progress.each(range(3), desc="quiet", disable=True)) == [0, 1, 2]
    assert "quiet" not in capsys.readouterr().out


def test_a_bar_ended_early_says_how_far_it_got(capsys):
    for i in progress.each(range(10), desc="cut"):
        if i == 2:
            break
    import gc
    gc.collect()   # the generator's close runs the end
    assert "cut: 2 of 10 in " in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_a_saved_notebook_keeps_the_end_not_the_start():
    """Executed as JupyterLab would (a kernel, widgets): the saved output is the end line, where
    a tqdm widget used to leave its first text, '0%| 0/1000'."""
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from workbook.progress import each\n"
        "total = sum(each(range(50), desc='bootstrap'))\n"
        "from workbook.progress import bar\n"
        "with bar(5, 'run', end=lambda: 'run: ended after 0 s') as b:\n"
        "    b.update(5)")])
    nbclient.NotebookClient(nb, timeout=100, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    texts = [o.get("data", {}).get("text/plain", "") for o in outputs]
    assert any(t.startswith("bootstrap: 50 of 50 in ") for t in texts), texts
    assert "run: ended after 0 s" in texts, texts
    assert not any("0%" in t or "0/50" in t for t in texts), texts
