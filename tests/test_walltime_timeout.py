"""A notebook cell that hangs becomes a ``timeout`` row whose saved notebook shows where."""

import asyncio

import nbformat

from workbook import walltime


def test_a_hung_cell_is_interrupted_and_its_traceback_saved(tmp_path, monkeypatch):
    # Seen on the H200 (72ad24de8360): 03 stopped at a deadline with no trace of which line
    # held it. A cell past its timeout is now interrupted, so the traceback lands in the file.
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("import time\n\ndef wait_here():\n"
                                          "    time.sleep(120)\n\nwait_here()")]
    nbformat.write(nb, tmp_path / "hangs.ipynb")
    monkeypatch.setattr(walltime, "NOTEBOOK_DIR", tmp_path)
    cfg = walltime.WalltimeConfig(notebooks=("hangs",), timeout_s=10,
                                  save_dir=str(tmp_path / "out"))
    (row,) = asyncio.run(walltime.run_all(("hangs",), cfg))
    assert row["status"] == "timeout" and "10 s" in row["detail"], row
    assert row["seconds"] < 60
    saved = nbformat.read(tmp_path / "out" / "hangs.ipynb", as_version=4)
    error = [o for o in saved.cells[1].outputs if o.output_type == "error"]
    assert error and error[0].ename == "KeyboardInterrupt"
    assert any("wait_here" in line for line in error[0].traceback)
