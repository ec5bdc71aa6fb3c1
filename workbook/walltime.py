"""How long each notebook takes, top to bottom, with a given preset: the workbook's budget.

A notebook runs as a reader's "Run All" runs it: one fresh kernel, every cell in order, stop at
the first error. A notebook *fails* if a cell raises, or prints the workbook's one-line error
(``⚠ …``, see ``widgets.one_line_errors``), which a reader sees as a failure too.

Budget: about 90 s per notebook with ``small`` on 2 CPU cores, about 2 minutes with ``full`` on
one GPU; at most 2 GB of memory for the kernel and the processes it starts (Binder's limit).
``scripts/gpu_notebooks.sh`` runs this on the GPU machine and records the rows.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pandas as pd

from workbook.config import (
    MAY_BE_EMPTY,
    ProjectPath,
    WorkbookError,
    check_choice,
    check_range,
    takes_rows,
)
from workbook.hardware import gpu_memory_cap_gb
from workbook.registry import Experiment

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
BUDGET_S = {"small": 90.0, "full": 120.0}
MEMORY_BUDGET_GB = 2.0  # Binder gives a notebook 2 GB; the small preset must fit in it


@dataclass(frozen=True)
class WalltimeConfig:
    notebooks: Annotated[tuple[str, ...], MAY_BE_EMPTY] = ()  # stems; empty: every notebook
    preset: str = "small"                # the preset the notebooks run with
    timeout_s: int = 900                 # per cell, as nbclient counts it
    parallel: int = 1                    # notebooks at once (each its own kernel); 1 = honest
    deadline_s: int = 0                  # no notebook starts after this many seconds; 0 = none
    save_dir: ProjectPath = ""           # write the executed notebooks here ('' = nowhere)

    def __post_init__(self) -> None:
        known = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
        unknown = sorted(set(self.notebooks) - known)
        if unknown:
            raise WorkbookError(f"no notebook {unknown}; allowed: {', '.join(sorted(known))}")
        check_choice("preset", self.preset, ("small", "full"))
        check_range("timeout_s", self.timeout_s, 10, 7200)
        check_range("parallel", self.parallel, 1, 8)
        check_range("deadline_s", self.deadline_s, 0, 86400)


def notebook_errors(nb) -> list[str]:
    """What a reader would call an error: tracebacks, and the workbook's one-line ⚠ errors."""
    found = []
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {index}: {out.get('ename')}: {out.get('evalue', '')[:200]}")
            text = out.get("text", "") if out.get("output_type") == "stream" else ""
            if any(line.lstrip().startswith("⚠") for line in text.splitlines()):
                found.append(f"cell {index}: {text.strip()[:200]}")
    return found


def cell_seconds(nb) -> list[tuple[int, float]]:
    """Each code cell's execution time from nbclient's timing metadata, slowest first."""
    times = []
    for index, cell in enumerate(nb.cells):
        timing = cell.get("metadata", {}).get("execution", {})
        start, end = timing.get("iopub.execute_input"), timing.get("shell.execute_reply")
        if start and end:
            parse = _dt.datetime.fromisoformat
            seconds = (parse(end.replace("Z", "+00:00"))
                       - parse(start.replace("Z", "+00:00"))).total_seconds()
            times.append((index, seconds))
    return sorted(times, key=lambda pair: -pair[1])


def tree_memory_bytes(pid: int) -> int:
    """Memory of a process and all its descendants: the sum of their PSS (proportional set
    size: a page shared by k processes counts 1/k in each), which is what a container's memory
    limit (Binder's 2 GB) charges; RSS would count torch's libraries once per process."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except psutil.Error:  # it ended between the listing and the read
            continue
    return total


async def _watch_memory(client, peak: dict, every_s: float = 0.5) -> None:
    """Sample the kernel's process tree (the kernel and the runner's fresh processes) until
    cancelled; the largest sum lands in ``peak['bytes']``."""
    while True:
        km = getattr(client, "km", None)
        pid = getattr(getattr(km, "provisioner", None), "pid", None)
        if pid:
            peak["bytes"] = max(peak["bytes"], tree_memory_bytes(pid))
        await asyncio.sleep(every_s)


async def _run_one(name: str, cfg: WalltimeConfig) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    # A cell past its timeout is interrupted, so the saved notebook shows where it hung.
    client = NotebookClient(nb, timeout=cfg.timeout_s, kernel_name="python3",
                            record_timing=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    start, status, detail = time.perf_counter(), "ok", ""
    peak = {"bytes": 0}
    watcher = asyncio.ensure_future(_watch_memory(client, peak))
    try:
        await client.async_execute()
    except CellTimeoutError as exc:
        status, detail = "timeout", str(exc).splitlines()[0][:200]
    except CellExecutionError as exc:
        last = str(exc).strip().splitlines()[-1][:200]
        # the interrupt after a cell's timeout ends it as KeyboardInterrupt: still a timeout
        status, detail = ("timeout", f"a cell passed {cfg.timeout_s} s and was interrupted"
                          ) if "KeyboardInterrupt" in last else ("error", last)
    except Exception as exc:  # a dead kernel, a missing kernelspec: still a row
        status, detail = "crash", f"{type(exc).__name__}: {exc}"[:200]
    finally:
        watcher.cancel()
    seconds = time.perf_counter() - start
    detail = re.sub(r"\x1b\[[0-9;]*m", "", detail)  # nbclient's message carries colour codes
    errors = notebook_errors(nb)
    if status == "ok" and errors:
        status, detail = "error", errors[0]
    size_mb = float("nan")
    if cfg.save_dir:
        path = Path(cfg.save_dir) / f"{name}.ipynb"
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, path)
        size_mb = path.stat().st_size / 1e6
    slowest = cell_seconds(nb)[:3]
    return {"notebook": name, "seconds": seconds, "status": status, "detail": detail,
            "size_mb": size_mb, "peak_gb": peak["bytes"] / 1e9 if peak["bytes"] else float("nan"),
            "slowest": "; ".join(f"cell {i}: {s:.1f} s" for i, s in slowest)}


async def run_all(names: tuple[str, ...], cfg: WalltimeConfig) -> list[dict]:
    """Every notebook, ``parallel`` at a time; at ``deadline_s`` the running ones are stopped
    (their kernels shut down) and become ``timeout`` rows, the unstarted ones ``skipped``."""
    gate, began = asyncio.Semaphore(cfg.parallel), time.monotonic()

    async def guarded(name: str) -> dict:
        async with gate:
            left = cfg.deadline_s - (time.monotonic() - began) if cfg.deadline_s else None
            if left is not None and left <= 0:
                return {"notebook": name, "seconds": float("nan"), "status": "skipped",
                        "detail": f"not started: past the {cfg.deadline_s} s deadline",
                        "size_mb": float("nan"), "slowest": ""}
            start = time.perf_counter()
            stopped = {"notebook": name, "status": "timeout", "size_mb": float("nan"),
                       "slowest": "", "detail": f"stopped at the {cfg.deadline_s} s deadline"}
            try:
                result = await asyncio.wait_for(_run_one(name, cfg), left)
            except (asyncio.TimeoutError, TimeoutError):
                result = {**stopped, "seconds": time.perf_counter() - start}
            if left is not None and result["seconds"] >= left - 1:  # its kernel was stopped
                result = {**stopped, "seconds": result["seconds"]}
            print(f"{name}: {result['status']} in {result['seconds']:.0f} s "
                  f"({result['slowest']}) {result['detail']}", flush=True)
            return result

    return list(await asyncio.gather(*(guarded(name) for name in names)))


def run_walltime(cfg: WalltimeConfig, seed: int = 0) -> pd.DataFrame:
    """Execute each notebook in a fresh kernel and time it; a failing notebook is a row."""
    names = cfg.notebooks or tuple(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
    os.environ["WORKBOOK_PRESET"] = cfg.preset  # inherited by the kernels started below
    if cfg.parallel > 1:  # kernels side by side share the cores instead of oversubscribing
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2)
                                                          // cfg.parallel)))
    # The kernels inherit $WORKBOOK_GPU_MEMORY_GB and the runner caps their fresh processes.
    cap = gpu_memory_cap_gb()
    rows = []
    for result in asyncio.run(run_all(names, cfg)):
        common = {"notebook": result["notebook"], "run_preset": cfg.preset,
                  "parallel": cfg.parallel, "gpu_memory_cap_gb": cap}
        rows.append({**common, "metric": "wall_time", "value": result["seconds"], "unit": "s",
                     "source": "measured", "status": result["status"],
                     "detail": result["detail"] or result["slowest"]})
        if result["size_mb"] == result["size_mb"]:
            rows.append({**common, "metric": "executed_size", "value": result["size_mb"],
                         "unit": "MB", "source": "measured", "status": result["status"],
                         "detail": ""})
        if result.get("peak_gb", float("nan")) == result.get("peak_gb"):
            rows.append({**common, "metric": "peak_memory", "value": result["peak_gb"],
                         "unit": "GB", "source": "measured", "status": result["status"],
                         "detail": "kernel + its processes, sum of PSS"})
        rows.append({**common, "metric": "wall_time", "value": BUDGET_S[cfg.preset], "unit": "s",
                     "source": "predicted", "status": "ok", "detail": "budget"})
        if cfg.preset == "small":  # Binder's limit is the small preset's; a GPU run has none
            rows.append({**common, "metric": "peak_memory", "value": MEMORY_BUDGET_GB,
                         "unit": "GB", "source": "predicted", "status": "ok",
                         "detail": "budget (Binder's limit)"})
    return pd.DataFrame(rows)


def run_labels(rows: pd.DataFrame) -> pd.Series:
    """One label per recorded run: 'H200, full', 'H200 ≤24 GB, full' (a memory cap), or
    'budget, small' for the budget rows."""
    device = rows["device"].astype(str).str.replace("NVIDIA ", "", regex=False)
    cap = rows.get("gpu_memory_cap_gb", pd.Series(float("nan"), index=rows.index))
    capped = cap.map(lambda gb: f" ≤{gb:g} GB" if gb == gb and gb is not None else "")
    label = device + capped + ", " + rows["run_preset"].astype(str)
    return label.where(rows["source"] != "predicted", "budget, " + rows["run_preset"].astype(str))


def latest_runs(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The latest ``metric`` row of each notebook per run (:func:`run_labels`, in a ``run``
    column): what the figure draws and the caption adds up."""
    part = rows[rows["metric"] == metric]
    return part.assign(run=run_labels(part)).drop_duplicates(["notebook", "run"], keep="last")


@takes_rows
def figure(rows: pd.DataFrame, metric: str = "wall_time"):
    """Each notebook's latest recorded ``wall_time`` (s) or ``peak_memory`` (GB) per run,
    beside its budget. A notebook that failed or was stopped has no bar for that run."""
    from workbook import plots

    check_choice("metric", metric, ("wall_time", "peak_memory"))
    part = latest_runs(rows, metric)
    if metric == "peak_memory":  # the 2 GB budget is Binder's, for the small preset only
        part = part[(part["source"] != "predicted") | (part["run_preset"] == "small")]
    title = {"wall_time": "Notebook wall time, Run All in a fresh kernel",
             "peak_memory": "Peak memory of the kernel and its processes, Run All"}[metric]
    # no device column: a run's label names its machine, and the budget is the preset's on any
    # machine (its rows' device, from whichever ran last, split every bar group by device)
    fig = plots.bars(part.sort_values("notebook").drop(columns="device", errors="ignore"),
                     "notebook", group="run", title=title,
                     y_title={"wall_time": "seconds", "peak_memory": "GB"}[metric])
    # a bar past its preset's budget says so (00 on the H200: 07's 180 s beside 120 s)
    limit = part[part["source"] == "predicted"].groupby("run_preset")["value"].max()
    runs = part[part["source"] != "predicted"]
    preset_of = dict(zip(runs["run"], runs["run_preset"].astype(str), strict=True))
    for trace in fig.data:
        preset = preset_of.get(trace.name)
        if preset in limit:
            trace.text = [t or ("over" if v > limit[preset] else "")
                          for t, v in zip(trace.text, trace.y, strict=True)]
            trace.textangle = -90  # upright, it ran into the next bar
    top = part["value"].max() if len(part) else float("nan")
    if top > 0:  # room above the tallest bar for its word
        fig.update_yaxes(range=[0, 1.2 * top])
    return fig


@takes_rows
def caption(rows: pd.DataFrame) -> str:
    """Markdown, one line per recorded run (device, cap, preset): how many notebooks, their
    seconds in all, and which went over the budget or did not end ``ok``, from the same
    latest rows as :func:`figure`."""
    part = latest_runs(rows, "wall_time")
    if part.empty:
        return "*No notebook_walltime rows yet.*"
    budget = part[part["source"] == "predicted"].groupby("run_preset")["value"].max()
    lines = []
    for run, runs in part[part["source"] != "predicted"].groupby("run", sort=False):
        ok = runs[runs["status"] == "ok"]
        limit = budget.get(str(runs["run_preset"].iloc[0]), float("nan"))
        over = ok[ok["value"] > limit].sort_values("notebook") if limit == limit else ok.iloc[:0]
        text = (f"**{run}**: {len(ok)} of {len(runs)} notebooks ok, "
                f"{ok['value'].sum():,.0f} s in all")
        if limit == limit:
            text += (f"; over the {limit:g} s budget: " + ", ".join(
                f"{r.notebook} ({r.value:,.0f} s)" for r in over.itertuples())
                if len(over) else f"; each within the {limit:g} s budget")
        failed = runs[runs["status"] != "ok"]
        if len(failed):
            text += "; not ok: " + ", ".join(f"{r.notebook} ({r.status})"
                                             for r in failed.itertuples())
        lines.append(text + ".")
    return "\n\n".join(lines)


# ------------------------------------------------------------------ rerunning one cell


@dataclass(frozen=True)
class RerunConfig:
    """Rerun measuring cells in one kernel, as a reader moving a slider does: does the kernel
    keep memory from earlier runs? Each target is ``"<notebook>:<cell index>"``."""

    targets: tuple[str, ...] = ("00_setup:5", "08_mixed_precision:9")
    times: int = 10                      # reruns of the target cell after the first run
    preset: str = "small"
    timeout_s: int = 600                 # per cell

    def __post_init__(self) -> None:
        known = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
        for target in self.targets:
            name, _, cell = target.partition(":")
            if name not in known or not cell.isdigit():
                raise WorkbookError(f"target {target!r}: want '<notebook>:<cell index>', "
                                    f"allowed notebooks: {', '.join(sorted(known))}")
        check_range("times", self.times, 1, 100)
        check_choice("preset", self.preset, ("small", "full"))
        check_range("timeout_s", self.timeout_s, 10, 7200)


_PROBE = ("import sys as _s; _t = _s.modules.get('torch'); "
          "print(_t.cuda.memory_allocated(), _t.cuda.memory_reserved()) "
          "if _t is not None and _t.cuda.is_initialized() else print(0, 0)")


def gpu_used_mb() -> float:
    """Memory in use on GPU 0 as the driver counts it (every process, CUDA contexts
    included), from nvidia-smi; NaN without one. Read from outside the kernel, so measuring
    adds nothing to what is measured."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return float("nan")
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,"
                          "nounits", "-i", "0"], capture_output=True, text=True, timeout=30)
    try:
        return float(out.stdout.strip().splitlines()[0])
    except (ValueError, IndexError):
        return float("nan")


async def _rerun_one(target: str, cfg: RerunConfig) -> list[dict]:
    import nbformat
    from nbclient import NotebookClient

    name, _, cell = target.partition(":")
    index = int(cell)
    nb = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    if index >= len(nb.cells) or nb.cells[index].cell_type != "code":
        raise WorkbookError(f"{target}: cell {index} is not a code cell of {name}")
    client = NotebookClient(nb, timeout=cfg.timeout_s, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    rows: list[dict] = []
    probe = nbformat.v4.new_code_cell(_PROBE)
    nb.cells.append(probe)                            # nbclient stores outputs by index
    async with client.async_setup_kernel():
        for i in range(index):                       # the cells a reader ran before
            if nb.cells[i].cell_type == "code":
                await client.async_execute_cell(nb.cells[i], i)
        pid = client.km.provisioner.pid
        for run in range(cfg.times + 1):              # run 0 is the first run, then the reruns
            start = time.perf_counter()
            await client.async_execute_cell(nb.cells[index], index)
            seconds = time.perf_counter() - start
            probe.outputs = []
            await client.async_execute_cell(probe, len(nb.cells) - 1)
            text = "".join(o.get("text", "") for o in probe.outputs).split()
            allocated, reserved = (float(v) / 2**20 for v in text[:2]) if len(text) >= 2 \
                else (float("nan"), float("nan"))
            common = {"notebook": name, "cell": index, "run": run, "run_preset": cfg.preset,
                      "source": "measured", "status": "ok"}
            rows += [{**common, "metric": m, "value": v, "unit": u} for m, v, u in (
                ("gpu_used", gpu_used_mb(), "MiB"), ("kernel_allocated", allocated, "MiB"),
                ("kernel_reserved", reserved, "MiB"),
                ("kernel_host_memory", tree_memory_bytes(pid) / 2**20, "MiB"),
                ("cell_time", seconds, "s"))]
            print(f"{target} run {run}: {seconds:.1f} s, GPU in use {rows[-5]['value']:.0f} MiB, "
                  f"kernel allocated {allocated:.0f} MiB", flush=True)
    return rows


def run_rerun_memory(cfg: RerunConfig, seed: int = 0) -> pd.DataFrame:
    """Each target cell run once, then ``times`` more times in the same kernel; after each run
    the GPU memory in use (driver), the kernel's allocated/reserved CUDA memory and its host
    memory. ``growth`` rows: last rerun minus the first run (predicted: 0)."""
    os.environ["WORKBOOK_PRESET"] = cfg.preset
    rows = []
    for target in cfg.targets:
        rows += asyncio.run(_rerun_one(target, cfg))
    frame = pd.DataFrame(rows)
    growth = []
    for (name, cell, metric), part in frame[frame["unit"] == "MiB"].groupby(
            ["notebook", "cell", "metric"], sort=False):
        part = part.sort_values("run")
        common = {"notebook": name, "cell": cell, "run": cfg.times, "run_preset": cfg.preset,
                  "metric": f"{metric}_growth", "unit": "MiB", "status": "ok"}
        growth += [{**common, "source": "measured",
                    "value": part["value"].iloc[-1] - part["value"].iloc[0]},
                   {**common, "source": "predicted", "value": 0.0}]
    return pd.concat([frame, pd.DataFrame(growth)], ignore_index=True)


# ------------------------------------------------------------------ a panel's default run

PANEL_BUDGET_S = 30.0  # issue 18: a panel's default run on the GPU, load and compile included


@dataclass(frozen=True)
class PanelConfig:
    """Build every ``widgets.ExperimentPanel`` a notebook creates (from its own cell) and press
    Run once at the controls' start values, as a reader does; the seconds are the panel's."""

    notebooks: Annotated[tuple[str, ...], MAY_BE_EMPTY] = ()  # stems; empty: every notebook
    preset: str = "small"
    # a preset name: record each panel's rows as soon as its Run ends, so a call stopped at its
    # deadline keeps the panels already timed ("": only the whole run, by --record)
    record_each: str = ""

    def __post_init__(self) -> None:
        known = {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}
        unknown = sorted(set(self.notebooks) - known)
        if unknown:
            raise WorkbookError(f"no notebook {unknown}; allowed: {', '.join(sorted(known))}")
        check_choice("preset", self.preset, ("small", "full"))
        check_choice("record_each", self.record_each, ("", "small", "full"))


def panel_cells(notebook: str) -> list[tuple[int, str]]:
    """(cell index, source) of each code cell of ``notebook`` that builds an ExperimentPanel."""
    import nbformat

    nb = nbformat.read(NOTEBOOK_DIR / f"{notebook}.ipynb", as_version=4)
    return [(i, c.source) for i, c in enumerate(nb.cells)
            if c.cell_type == "code" and "ExperimentPanel(" in c.source]


def panel_space(notebook: str) -> dict:
    """The names a panel cell of ``notebook`` uses: the notebook's own import lines run (09's
    panel takes ``view=sft.mean_over_seeds``), nothing else of it."""
    import nbformat

    nb = nbformat.read(NOTEBOOK_DIR / f"{notebook}.ipynb", as_version=4)
    lines = [line for c in nb.cells if c.cell_type == "code" for line in c.source.splitlines()
             if line.startswith(("import ", "from workbook"))]
    space: dict = {}
    exec(compile("\n".join(lines), f"{notebook}:imports", "exec"), space)  # the notebook's
    return space


def run_panel_walltime(cfg: PanelConfig, seed: int = 0) -> pd.DataFrame:
    """Seconds of each panel's Run at its start values (the panel's own measured seconds),
    beside the budget; a run that fails is a row with its one-line error. With
    ``record_each``, each panel's two rows go into the ledger as soon as its Run ends."""
    from workbook import registry, results, widgets

    os.environ["WORKBOOK_PRESET"] = cfg.preset
    names = cfg.notebooks or tuple(sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")))
    rows = []
    for notebook in names:
        for cell, source in panel_cells(notebook):
            space = {"widgets": widgets, **panel_space(notebook)}
            exec(compile(source, f"{notebook}:{cell}", "exec"), space)  # the notebook's cell
            for panel in [v for v in space.values() if isinstance(v, widgets.ExperimentPanel)]:
                expected, _how = registry.expected_seconds(panel.name, cfg.preset,
                                                           panel.run_overrides())
                common = {"notebook": notebook, "cell": cell, "panel": panel.name,
                          "run_preset": cfg.preset, "metric": "run_time", "unit": "s",
                          "expected_s": expected}
                try:
                    panel.run()
                    done = panel.runs[-1]  # detail: the controls and the start's held fields
                    detail = panel.settings_text({**panel.held, **done.settings})
                    # The Run's seconds are good when any point was measured; its points'
                    # mix ('12 ok + 1 oom': an oom is a point of the figure) goes beside them
                    points = done.rows[done.rows.get("source", "measured") != "predicted"]
                    timed = "status" not in points or (points["status"] == "ok").any()
                    rows.append({**common, "value": done.seconds, "source": "measured",
                                 "status": "ok" if timed else done.status,
                                 "error": done.error or "", "detail": detail if
                                 done.status == "ok" else f"{detail}; points: {done.status}"})
                except Exception as exc:  # noqa: BLE001 - one panel's failure is its row
                    line = str(exc) if isinstance(exc, WorkbookError) else (
                        f"{type(exc).__name__}: {exc}")
                    rows.append({**common, "value": float("nan"), "source": "measured",
                                 "status": "error", "error": line.splitlines()[0] if line
                                 else "", "detail": ""})
                rows.append({**common, "value": PANEL_BUDGET_S, "source": "predicted",
                             "status": "ok", "error": "", "detail": "budget"})
                if cfg.record_each:
                    results.record("panel_walltime", pd.DataFrame(rows[-2:]),
                                   preset=cfg.record_each, seed=seed)
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
    Experiment(
        name="rerun_memory",
        summary="memory a kernel keeps when a measuring cell is rerun 10 times (predicted: 0)",
        notebook="00_setup",
        run=run_rerun_memory,
        presets={"small": RerunConfig(preset="small"),
                 "full": RerunConfig(targets=("08_mixed_precision:9", "06_model_parallel:9",
                                              "07_flash_attention:15"),
                                     preset="full")},
        min_gpus={"small": 0, "full": 1},
        timeout_s=3600,
    ),
    Experiment(
        name="panel_walltime",
        summary="seconds of each ExperimentPanel's Run at its start values (budget 30 s on a GPU)",
        notebook="00_setup",
        run=run_panel_walltime,
        presets={"small": PanelConfig(notebooks=("08_mixed_precision",), preset="small"),
                 "full": PanelConfig(preset="full")},
        min_gpus={"small": 0, "full": 1},
        timeout_s=3600,
    ),
]
