"""How long each notebook takes, top to bottom, with a given preset: the workbook's budget.

The issue's budget: about 90 s per notebook with ``small`` on 2 CPU cores, about 2 minutes with
``full`` on one H100, under 20 minutes for the whole workbook on a GPU server.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbook.config import WorkbookError
from workbook.registry import Experiment

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
BUDGET_S = {"small": 90.0, "full": 120.0}


@dataclass(frozen=True)
class WalltimeConfig:
    notebooks: tuple[str, ...] = ()      # stems; empty means every notebook
    preset: str = "small"                # the preset the notebooks run with
    timeout_s: int = 900

    def __post_init__(self) -> None:
        known = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
        unknown = sorted(set(self.notebooks) - known)
        if unknown:
            raise WorkbookError(f"no notebook {unknown}; allowed: {', '.join(sorted(known))}")


def run_walltime(cfg: WalltimeConfig, seed: int = 0) -> pd.DataFrame:
    """Execute each notebook in a fresh kernel and time it; a failing notebook is a row."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    names = cfg.notebooks or tuple(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
    rows = []
    os.environ["WORKBOOK_PRESET"] = cfg.preset  # inherited by the kernels started below
    for name in names:
        nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
        client = NotebookClient(nb, timeout=cfg.timeout_s, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
        start, status = time.perf_counter(), "ok"
        try:
            client.execute()
        except CellExecutionError:
            status = "error"
        except TimeoutError:
            status = "timeout"
        seconds = time.perf_counter() - start
        rows.append({"notebook": name, "run_preset": cfg.preset, "metric": "wall_time",
                     "value": seconds, "unit": "s", "source": "measured", "status": status})
        rows.append({"notebook": name, "run_preset": cfg.preset, "metric": "wall_time",
                     "value": BUDGET_S[cfg.preset], "unit": "s", "source": "predicted",
                     "status": "ok"})
    return pd.DataFrame(rows)


EXPERIMENTS = [
    Experiment(
        name="notebook_walltime",
        summary="seconds each notebook takes top to bottom (budget: 90 s small, 120 s full)",
        notebook="00_setup",
        run=run_walltime,
        presets={"small": WalltimeConfig(preset="small"), "full": WalltimeConfig(preset="full")},
        min_gpus={"small": 0, "full": 1},
        timeout_s=3600,
    ),
]
