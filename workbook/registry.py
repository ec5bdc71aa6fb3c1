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
import pkgutil
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pandas as pd

from workbook import results
from workbook.config import PRESETS, WorkbookError, check_range, resolve_preset


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

    def config(self, preset: str | None = None, **overrides: Any) -> Any:
        """The preset's config with ``overrides`` applied and checked."""
        base = self.presets[resolve_preset(preset)]
        names = {f.name for f in dataclasses.fields(base)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise WorkbookError(f"{self.name} has no parameter {unknown}; allowed: "
                                f"{', '.join(sorted(names))}")
        # JSON (the CLI's --set, the runner's transport) has lists where configs hold tuples.
        overrides = {k: _as_tuples(v) if isinstance(getattr(base, k), tuple) else v
                     for k, v in overrides.items()}
        try:
            return dataclasses.replace(base, **overrides)  # __post_init__ range checks run here
        except (TypeError, ValueError) as exc:
            if isinstance(exc, WorkbookError):
                raise
            shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
            raise WorkbookError(f"{self.name}: {shown} has the wrong type ({exc}); defaults: "
                                f"{base}") from None


_NOT_EXPERIMENT_MODULES = frozenset({"__main__", "export", "plots", "widgets"})


def _as_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_as_tuples(v) for v in value)
    return value


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


def execute(name: str, preset: str | None = None, seed: int = 0,
            overrides: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Run an experiment here, in this process, and return its tidy rows."""
    exp, chosen = get(name), resolve_preset(preset)
    reason = why_not_here(name, chosen)
    if reason:
        raise WorkbookError(reason)
    cfg = exp.config(chosen, **dict(overrides or {}))
    rows = exp.run(cfg, seed)
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
    reason = why_not_here(name, chosen)
    if reason:
        raise WorkbookError(reason)
    from workbook.hardware import detect

    key = f"{name}|{chosen}|{detect().name}|{json.dumps(dict(overrides or {}), sort_keys=True)}"
    start = time.monotonic()
    rows = runner.call("workbook.registry:execute",
                       {"name": name, "preset": chosen, "seed": seed,
                        "overrides": dict(overrides or {})},
                       timeout_s=exp.timeout_s, echo=echo,
                       progress=None if echo else f"{name} ({chosen})",
                       expected_s=_durations().get(key))
    if "status" in rows and (rows["status"] == "ok").any():
        _remember_duration(key, time.monotonic() - start)
    if record:
        results.record(name, rows, preset=chosen, seed=seed)
    return rows


def _durations_path():
    from workbook.data import cache_dir

    return cache_dir() / "run_durations.json"


def _durations() -> dict[str, float]:
    """How long each (experiment, preset, device, overrides) took last time it ran here."""
    try:
        return json.loads(_durations_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember_duration(key: str, seconds: float) -> None:
    table = {**_durations(), key: round(seconds, 1)}
    try:
        results.write_text_atomic(_durations_path(), json.dumps(table, indent=0))
    except OSError:  # a read-only checkout still runs; it only shows no estimate next time
        pass


def live_or_recorded(name: str, preset: str | None = None, seed: int = 0,
                     **overrides: Any) -> pd.DataFrame:
    """What a notebook shows: a live run where this machine can, else the recorded rows.

    Prints one line saying which, so the reader always knows the source of the numbers.
    """
    check_range("seed", seed, 0, 2**31 - 1)  # before a child process is started for nothing
    chosen = resolve_preset(preset)
    reason = why_not_here(name, chosen)
    if reason is None:
        print(f"{name}: running the {chosen!r} preset live on this machine.")
        live = run_isolated(name, chosen, seed, overrides)
        # Live rows carry the same provenance columns as recorded ones (device first of all),
        # so a table or figure can put this machine's rows beside the ledger's.
        here = results.provenance(chosen, seed)
        return live.assign(**{k: v for k, v in here.items() if k not in live.columns})
    recorded = results.load(name)
    print(reason if not recorded.empty else reason.replace(
        "Recorded rows are shown instead.", "No recorded rows exist yet."))
    return recorded


def plan(preset: str | None = None) -> pd.DataFrame:
    """For every experiment: will this machine run it live, or show recorded rows (from where)?"""
    chosen = resolve_preset(preset)
    rows = []
    for name, exp in experiments().items():
        reason = why_not_here(name, chosen)
        recorded = results.load(name)
        pairs = zip(recorded.get("device", []), recorded.get("n_gpus", []), strict=True)
        devices = ", ".join(sorted({f"{d} ×{n}" for d, n in pairs}))
        rows.append({"notebook": exp.notebook, "experiment": name,
                     "here": "live" if reason is None else "recorded",
                     "preset": chosen, "GPUs needed": exp.min_gpus[chosen],
                     "recorded on": devices or "-"})
    return pd.DataFrame(rows).sort_values(["notebook", "experiment"], ignore_index=True)
