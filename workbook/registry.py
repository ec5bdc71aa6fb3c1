"""The experiments the workbook can run, and the one way to run each.

Each topic module declares its experiments in a module-level list ``EXPERIMENTS``; this module
finds them. An experiment is a function ``run(config, seed) -> DataFrame`` plus a frozen
config dataclass per preset. Running one headless (``python -m workbook run NAME``), from a
notebook, or from a test all go through :func:`execute`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import re
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from workbook import results
from workbook.config import (
    PRESETS,
    WorkbookError,
    check_fields,
    check_range,
    resolve_preset,
    takes_rows,
)


@dataclass(frozen=True)
class Experiment:
    """One headless experiment.

    ``run(config, seed)`` returns tidy rows; ``presets`` maps ``small``/``full`` to a frozen
    config; ``min_gpus`` says how many GPUs each preset needs (0: runs on a CPU).
    """

    name: str
    summary: str
    notebook: str
    run: Callable[[Any, int], pd.DataFrame]
    presets: Mapping[str, Any]
    min_gpus: Mapping[str, int] = field(default_factory=lambda: {"small": 0, "full": 1})
    timeout_s: int = 900
    # About how long one run of each preset takes where it is meant to run (small: 2 CPU cores,
    # full: one recent GPU), read off recorded runs. Only a fallback for the first run on a
    # machine: after that, this machine's own last duration is used (expected_seconds).
    typical_s: Mapping[str, float] = field(default_factory=dict)
    # Where an ``ExperimentPanel`` of this experiment starts, per preset: overrides applied to
    # the preset (one size, one variant, fewer repeats) so that a panel's first Run is quick
    # (issue 18: <= 30 s on one GPU, load and compile included); its controls still reach the
    # preset's full ranges. ``panel_s``: about how long that start run takes (a fallback, as
    # ``typical_s``). Both are checked against the config by tests/test_panel.py.
    panel_start: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    panel_s: Mapping[str, float] = field(default_factory=dict)
    # ``run`` measures nothing itself: it starts a fresh process (``workbook.runner``) for each
    # configuration. ``run_isolated`` then runs it in the caller's process: a child of its own
    # would only import everything in order to start the others (~5 s on a GPU machine).
    dispatches: bool = False
    # Compiles what a run of the preset compiles (its Triton kernels), small and measuring
    # nothing; returns how many shapes it ran. ``workbook prepare`` runs it on a GPU
    # (:func:`warm_up`), so the notebook's first run loads binaries from the disk cache
    # instead of waiting for the compiler.
    warm_up: Callable[[Any], int] | None = None

    def config(self, preset: str | None = None, /, **overrides: Any) -> Any:
        """The preset's config with ``overrides`` applied and checked, before anything runs:
        each value by its field's type hint (``config.check_fields``), then by the config's
        own range checks. Every refusal is one line naming the field and what is allowed.

        ``preset`` is positional-only: a config may have a field of that name too (the base
        model's preset of ``lora_merge``), which ``preset=`` in ``overrides`` then sets."""
        base = self.presets[resolve_preset(preset)]
        names = {f.name for f in dataclasses.fields(base)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            hint = " (the experiment's own preset is --preset)" if "preset" in unknown else ""
            raise WorkbookError(f"{self.name} has no parameter {unknown}; allowed: "
                                f"{', '.join(sorted(names))}{hint}")
        checked = check_fields(type(base), overrides)
        try:
            return dataclasses.replace(base, **checked)  # __post_init__ range checks run here
        except WorkbookError:
            raise
        except Exception as exc:  # noqa: BLE001 - a value the range checks did not foresee
            shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
            raise WorkbookError(f"{self.name}: {shown} is not allowed "
                                f"({type(exc).__name__}: {exc}); defaults: {base}") from None


_NOT_EXPERIMENT_MODULES = frozenset({"__main__", "export", "panel", "plots", "widgets"})


@cache
def experiments() -> dict[str, Experiment]:
    """All experiments, by name, collected from the package's modules."""
    import workbook

    found: dict[str, Experiment] = {}
    for info in pkgutil.iter_modules(workbook.__path__):
        # Plumbing that declares no experiments and needs notebook-only packages (plotly,
        # ipywidgets), which a headless GPU box need not have.
        if info.name.startswith("_") or info.name in _NOT_EXPERIMENT_MODULES:
            continue
        try:
            module = importlib.import_module(f"workbook.{info.name}")
        except Exception as exc:  # noqa: BLE001 - one broken topic must not hide the others
            # tests/test_foundation.py imports every module, so this never passes CI silently.
            warnings.warn(f"workbook.{info.name} failed to import ({exc}); its experiments "
                          "are not listed", stacklevel=2)
            continue
        for exp in getattr(module, "EXPERIMENTS", ()):
            if exp.name in found:
                raise RuntimeError(f"experiment {exp.name!r} is declared twice")
            if set(exp.presets) != set(PRESETS):
                raise RuntimeError(f"experiment {exp.name!r} needs presets {PRESETS}")
            found[exp.name] = exp
    return dict(sorted(found.items()))


def get(name: str) -> Experiment:
    table = experiments()
    if name not in table:
        raise WorkbookError(f"unknown experiment {name!r}; allowed: {', '.join(table)}")
    return table[name]


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def why_not_here(name: str, preset: str | None = None) -> str | None:
    """None if the experiment's preset can run on this machine, else the plain reason."""
    exp, chosen = get(name), resolve_preset(preset)
    need, have = exp.min_gpus[chosen], gpu_count()
    if need > have:
        what = "a GPU" if need == 1 else f"{need} GPUs"
        return (f"{name} with preset {chosen!r} needs {what}; this machine has {have}. "
                f"Recorded rows are shown instead.")
    return None


def warm_up(preset: str | None = None) -> dict[str, float]:
    """Run every experiment's ``warm_up`` that can run here: seconds per experiment that
    compiled something. One that fails says so in a warning and is skipped: its notebook
    then compiles for itself, as it would have without the warm-up."""
    chosen, seconds = resolve_preset(preset), {}
    for name, exp in experiments().items():
        if exp.warm_up is None or why_not_here(name, chosen):
            continue
        start = time.monotonic()
        try:
            if exp.warm_up(exp.config(chosen)):
                seconds[name] = round(time.monotonic() - start, 1)
        except Exception as exc:  # noqa: BLE001 - a warm-up saves time; it never costs a run
            warnings.warn(f"{name}: warm-up skipped ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})", stacklevel=2)
    return seconds


def execute(name: str, preset: str | None = None, seed: int = 0,
            overrides: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run an experiment here, in this process, and return its tidy rows."""
    exp, chosen = get(name), resolve_preset(preset)
    reason = why_not_here(name, chosen)
    if reason:
        raise WorkbookError(reason)
    cfg = exp.config(chosen, **dict(overrides or {}))
    check_seed(seed)
    rows = exp.run(cfg, seed)
    if rows.empty:  # said plainly, not as tidy's "result rows lack columns"
        raise WorkbookError(f"{name} produced no rows with {dict(overrides or {})}; "
                            "allowed: a configuration that measures something")
    rows = rows.assign(preset=chosen, seed=seed) if "seed" not in rows else rows.assign(
        preset=chosen)
    return results.tidy(rows)


def run_isolated(name: str, preset: str | None = None, seed: int = 0,
                 overrides: Mapping[str, Any] | None = None, *, record: bool = False,
                 echo: bool = False) -> pd.DataFrame:
    """:func:`execute` in a fresh process (clean memory, a crash is a row); optionally record.

    Failed rows are recorded only where no good row exists (``results.merge``).
    """
    from workbook import runner

    exp, chosen = get(name), resolve_preset(preset)
    exp.config(chosen, **dict(overrides or {}))  # bad input fails here, in one line
    check_seed(seed)
    reason = why_not_here(name, chosen)
    if reason:
        raise WorkbookError(reason)
    from workbook.hardware import detect

    key = f"{name}|{chosen}|{detect().name}|{json.dumps(dict(overrides or {}), sort_keys=True)}"
    start = time.monotonic()
    spec = {"name": name, "preset": chosen, "seed": seed, "overrides": dict(overrides or {})}
    if exp.dispatches:  # its children are the fresh processes
        rows = _dispatch(spec)
    else:
        rows = runner.call("workbook.registry:execute", spec, timeout_s=exp.timeout_s,
                           echo=echo, progress=None if echo else f"{name} ({chosen})",
                           expected_s=run_durations().get(key))
    if "status" in rows and (rows["status"] == "ok").any():
        _remember_duration(key, time.monotonic() - start)
    if record:
        results.record(name, rows, preset=chosen, seed=seed, overrides=overrides)
    return rows


def _dispatch(spec: dict[str, Any]) -> pd.DataFrame:
    """:func:`execute` of a dispatching experiment here; a failure is a row, as a child's is."""
    from workbook import runner

    try:
        return execute(**spec)
    except Exception as exc:  # noqa: BLE001 - as runner's child: every failure becomes a row
        return runner.failure_row(spec, *runner.failure_of(exc))


def check_seed(seed: Any) -> None:
    """A seed every generator takes (NumPy's refuses negatives and anything above 2**32 - 1)."""
    check_range("seed", seed, 0, 2**32 - 1)


def run_durations_path():
    from workbook.data import cache_dir

    return cache_dir() / "run_durations.json"


def run_durations() -> dict[str, float]:
    """How long each (experiment, preset, device, overrides) took last time it ran here."""
    try:
        return json.loads(run_durations_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember_duration(key: str, seconds: float) -> None:
    table = {**run_durations(), key: round(seconds, 1)}
    try:
        results.write_text_atomic(run_durations_path(), json.dumps(table, indent=0))
    except OSError:  # a read-only checkout still runs; it only shows no estimate next time
        pass


def expected_seconds(name: str, preset: str | None = None,
                     overrides: Mapping[str, Any] | None = None) -> tuple[float | None, str]:
    """How long a run of ``name`` will take here, and where that estimate comes from: this
    machine's last run of the same settings, else the experiment's typical time (for a panel's
    start settings, ``panel_s``), else unknown (``None``)."""
    exp, chosen = get(name), resolve_preset(preset)
    from workbook.hardware import detect

    key = f"{name}|{chosen}|{detect().name}|{json.dumps(dict(overrides or {}), sort_keys=True)}"
    if key in run_durations():
        return run_durations()[key], "its last run on this machine"
    start = exp.panel_start.get(chosen)
    if start and chosen in exp.panel_s and _same_config(exp, chosen, overrides, start):
        return float(exp.panel_s[chosen]), ("typical of the panel's start; not yet timed "
                                            "in this checkout")
    if chosen in exp.typical_s:
        return float(exp.typical_s[chosen]), "typical; not yet timed in this checkout"
    return None, "not yet timed in this checkout"


def _same_config(exp: Experiment, preset: str, one: Mapping[str, Any] | None,
                 other: Mapping[str, Any] | None) -> bool:
    """Whether two sets of overrides give the same config of ``preset`` (an override equal to
    the preset's own value counts as none; a set the config refuses matches nothing)."""
    try:
        return exp.config(preset, **dict(one or {})) == exp.config(preset, **dict(other or {}))
    except WorkbookError:
        return False


def panel_start(name: str, preset: str | None = None) -> dict[str, Any]:
    """The overrides an ``ExperimentPanel`` of ``name`` starts from on ``preset`` (empty: the
    preset itself), checked against the config (a refusal is one ``WorkbookError``)."""
    exp, chosen = get(name), resolve_preset(preset)
    start = dict(exp.panel_start.get(chosen, {}))
    exp.config(chosen, **start)
    return start


RECORD_ENV = "WORKBOOK_RECORD"


def recording() -> bool:
    """Whether live runs in notebooks go into the ledger too (``$WORKBOOK_RECORD=1``); never
    under an emulated smaller card (``results.record`` would refuse their rows)."""
    from workbook.hardware import gpu_memory_cap_gb

    return os.environ.get(RECORD_ENV, "") == "1" and gpu_memory_cap_gb() is None


def live_or_recorded(name: str, preset: str | None = None, seed: int = 0,
                     **overrides: Any) -> pd.DataFrame:
    """What a notebook shows: a live run where this machine can, else the recorded rows.

    Prints one line saying which, so the reader always knows the source of the numbers.
    """
    check_range("seed", seed, 0, 2**31 - 1)  # before a child process is started for nothing
    chosen = resolve_preset(preset)
    get(name).config(chosen, **overrides)  # a bad value is refused here too, not ignored
    reason = why_not_here(name, chosen)
    if reason is None:
        print(f"{name}: running the {chosen!r} preset live on this machine.")
        # $WORKBOOK_RECORD=1 (scripts/gpu_notebooks.sh) records what a Run All measures, so one
        # GPU Run-All leaves that device's rows in the ledger; a reader's run records nothing.
        live = run_isolated(name, chosen, seed, overrides, record=recording())
        # Live rows carry the same provenance columns as recorded ones (device first of all),
        # so a table or figure can put this machine's rows beside the ledger's.
        here = results.provenance(chosen, seed)
        return live.assign(**{k: v for k, v in here.items() if k not in live.columns})
    recorded = results.load_shown(name)
    print(reason if not recorded.empty else reason.replace(
        "Recorded rows are shown instead.", "No recorded rows exist yet."))
    return recorded


_SHOWN: dict[str, pd.DataFrame] = {}  # what this kernel last showed per experiment


def shown(name: str) -> pd.DataFrame:
    """The rows a notebook last showed for ``name`` in this kernel (:func:`with_references`:
    live rows with the recorded devices beside), else the ledger's rows. Later cells (a claims
    table) read this, so they use this machine's numbers once a Run button has run them."""
    get(name)  # an unknown experiment: one line naming the known ones
    return _SHOWN[name] if name in _SHOWN else results.load_shown(name)


@takes_rows
def main_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The block of ``rows`` a claims table judges: this machine's live rows where there are
    some, else the most recently recorded machine's (device and GPU count), never a mix of
    devices (a mean of an H100 and an H200 is nobody's number)."""
    if rows.empty or "device" not in rows.columns:
        return rows
    rows = rows.reset_index(drop=True)  # a concatenation's repeated labels: one row per label
    key = ["device", "n_gpus"] if "n_gpus" in rows.columns else ["device"]
    live = rows["source"] == "measured" if "source" in rows.columns else None
    if live is not None and live.any():  # this machine: its measured and predicted rows
        mine = rows.loc[live.idxmax(), key].astype(str)
        same = (rows[key].astype(str) == mine).all(axis=1)
        return rows[same & (rows["source"] != "recorded")]
    when = rows["recorded_at"].astype(str) if "recorded_at" in rows.columns else None
    latest = rows.loc[when.idxmax()] if when is not None else rows.iloc[-1]
    same = (rows[key].astype(str) == latest[key].astype(str)).all(axis=1)
    return rows[same]


@takes_rows
def machine_blocks(rows: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """``rows`` split by machine (device and GPU count), each with its where-label
    (:func:`workbook.results.where_label`): first the block :func:`main_rows` judges (this
    machine's, else the latest recording), then every other recorded machine, the latest
    first. The per-machine tables of 07, 08 and 10 are built on it."""
    if rows.empty:
        return []
    rows = rows.reset_index(drop=True)
    if "device" not in rows.columns:
        return [(results.where_label(rows), rows)]
    main = main_rows(rows)
    rest = rows.drop(index=main.index)
    key = ["device", "n_gpus"] if "n_gpus" in rest.columns else ["device"]
    # a recorded machine's block keeps its predicted rows too (a formula at that machine's
    # shape or cache size); a machine with predictions only is no recorded machine
    others = [part for _, part in rest.groupby(key, dropna=False, sort=False)
              if "source" in part.columns and (part["source"] == "recorded").any()]
    if "recorded_at" in rest.columns:
        others.sort(key=lambda part: str(part["recorded_at"].astype(str).max()), reverse=True)
    return [(results.where_label(part), part) for part in (main, *others) if len(part)]


@takes_rows
def with_references(name: str, live: pd.DataFrame) -> pd.DataFrame:
    """The rows a notebook shows, by one rule: rows measured on this machine (``live``, from
    :func:`live_or_recorded`) are *the* numbers; the ledger's rows from other devices come
    beside them as references (``source='recorded'``, device and date on every row). Recorded
    rows of this machine (same device and GPU count) are left out: its live rows replace them."""
    _SHOWN[name] = rows = _with_references(name, live)
    return rows


def _with_references(name: str, live: pd.DataFrame) -> pd.DataFrame:
    recorded = results.load_shown(name)
    here = live[live["source"] == "measured"] if "source" in live.columns else live.iloc[0:0]
    if here.empty:  # nothing ran here: the recorded rows are all there is
        return recorded if not recorded.empty else live
    if "device" not in here.columns or recorded.empty:
        return pd.concat([live, recorded], ignore_index=True)
    # A recording machine is its device *and* its GPU count: a 1-GPU H200 run replaces the
    # recorded H200 ×1 rows, and the H200 ×4 rows stay beside it as references.
    key = ["device", "n_gpus"] if "n_gpus" in here.columns and "n_gpus" in recorded else ["device"]
    mine = set(here[key].astype(str).itertuples(index=False, name=None))
    theirs = recorded[key].astype(str).itertuples(index=False, name=None)
    others = recorded[[k not in mine for k in theirs]]
    return pd.concat([live, others], ignore_index=True)


def shown_as(name: str) -> str:
    """What ``name``'s notebook does with it on a machine that can run it, read from the
    notebook's code: runs it in Run All, puts up a Run button, or only shows recorded rows
    (then: the script that records them). 00's plan said "can run here" for experiments no
    notebook ever runs (01's pretraining curve, 02's FLOP sweep and loss kernel)."""
    exp, root = get(name), Path(__file__).resolve().parent.parent
    try:
        cells = json.loads((root / "notebooks" / f"{exp.notebook}.ipynb").read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return "can run here"
    code = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]

    def calls(function: str) -> list[str]:  # the cells with function("name", … on any line
        return [cell for cell in code if re.search(rf'{function}\(\s*"{name}"', cell)]

    live = [cell for f in ("live_or_recorded", "notebook_rows", "gpu_rows") for cell in calls(f)]
    if any("RunButton(" not in cell for cell in live):
        return "live in Run All"
    # a call inside a RunButton's callback (04's largest fit) runs when pressed, not in Run All
    if live:
        return "Run button (runs when pressed)"
    if calls("run_or_button"):
        return "Run button (at once if ≤ 1 min here)"
    generic = {"gpu_record.sh", "gpu_smoke.sh"}   # scripts that name every experiment
    scripts = sorted(p.name for p in (root / "scripts").glob("gpu_*.sh") if p.name not in generic
                     and re.search(rf"\b{name}\b", p.read_text()))
    return "recorded; script: " + (f"scripts/{scripts[0]}" if scripts
                                   else f"python -m workbook run {name} --record")


def plan(preset: str | None = None) -> pd.DataFrame:
    """For every experiment: can this machine run it (and in about how many seconds with its
    default settings, from its last run here or a typical time; '– (not yet timed)' where
    neither exists), or does it show recorded rows (from where)?"""
    chosen = resolve_preset(preset)
    rows = []
    for name, exp in experiments().items():
        reason = why_not_here(name, chosen)
        recorded = results.load(name)
        pairs = zip(recorded.get("device", []), recorded.get("n_gpus", []), strict=True)
        devices = ", ".join(sorted({f"{d} ×{int(n)}" if n == n and n else str(d)
                                    for d, n in pairs}))
        seconds = expected_seconds(name, chosen)[0] if reason is None else None
        # a reason, not NaN, where there is no time: recorded only, or never timed here
        expected = ("– (recorded only)" if reason is not None else "– (not yet timed)"
                    if seconds is None else round(seconds))
        rows.append({"notebook": exp.notebook, "experiment": name,
                     "here": shown_as(name) if reason is None else "recorded only",
                     "expected s": expected,
                     "preset": chosen, "GPUs needed": exp.min_gpus[chosen],
                     "recorded on": devices or "-"})
    return pd.DataFrame(rows).sort_values(["notebook", "experiment"], ignore_index=True)
