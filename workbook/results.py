"""The results ledger: ``data/results/<experiment>.csv``, one row per (configuration, metric).

Columns, in order: the experiment's parameter columns, then ``metric, value, unit, source,
status``, then provenance ``device, n_gpus, torch, cuda, preset, seed, recorded_at, commit``.

``source`` says where a number comes from: ``measured`` (this run), ``predicted`` (a formula),
``datasheet`` (a vendor's published peak) or ``recorded`` (read back from this ledger).
``status`` is ``ok`` or why there is no number (``oom``, ``timeout``, ``crash``, ``error``,
``unsupported``, ``skipped``). Writes are atomic, and a failed row never replaces a good one.

Several processes may record into one ledger at once (two notebooks, a script and a notebook):
:func:`record` holds an exclusive lock (``fcntl.flock`` on the sidecar ``.NAME.lock``) around
read, merge and rename, so no writer's rows are lost; a writer killed mid-write leaves at most
a ``.NAME-*.csv`` temporary file, which the next writer removes under the same lock.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import re
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; one writer at a time is on you
    fcntl = None  # type: ignore[assignment]

import pandas as pd

from workbook.config import WorkbookError, check_flag, check_text, takes_rows

VALUE_COLUMNS: tuple[str, ...] = ("metric", "value", "unit", "source", "status")
PROVENANCE_COLUMNS: tuple[str, ...] = (
    "device", "n_gpus", "torch", "cuda", "preset", "seed", "recorded_at", "commit",
)
# Beside a row, never its key: free text, and an outcome kept as a column (07's `kernels`, how
# many kernels a run launched: a re-run that launched 6 instead of 5 kept the old rows beside
# the new ones, two recordings of one configuration under one label)
NOTE_COLUMNS: tuple[str, ...] = ("error", "detail", "kernels")
SOURCES: tuple[str, ...] = ("measured", "predicted", "datasheet", "recorded")
RUN_METRIC = "run"  # runner.failure_row's metric: the whole run failed, before any configuration
_NAME = re.compile(r"^[a-z0-9_]+$")


def results_dir() -> Path:
    """Where the ledger lives; ``$WORKBOOK_RESULTS`` overrides (tests use a temp dir)."""
    env = os.environ.get("WORKBOOK_RESULTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data" / "results"


def ledger_path(experiment: str) -> Path:
    if not _NAME.match(experiment):
        raise WorkbookError(f"experiment name {experiment!r} must be lower_snake_case")
    return results_dir() / f"{experiment}.csv"


def git_commit() -> str:
    """The commit the code came from. The device machine has no .git: it gets WORKBOOK_COMMIT."""
    if os.environ.get("WORKBOOK_COMMIT"):
        return os.environ["WORKBOOK_COMMIT"]
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
            text=True, timeout=10, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "workbook"], cwd=root, capture_output=True,
            text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def provenance(preset: str, seed: int | None) -> dict[str, object]:
    """Who measured: filled automatically, never typed in."""
    import torch

    if torch.cuda.is_available():
        device, n_gpus = torch.cuda.get_device_name(0), torch.cuda.device_count()
    else:
        device, n_gpus = f"CPU ({platform.machine()}, {os.cpu_count()} cores)", 0
    return {
        "device": device,
        "n_gpus": n_gpus,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "preset": preset,
        "seed": seed,
        "recorded_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
    }


@takes_rows
def tidy(rows: pd.DataFrame) -> pd.DataFrame:
    """Check the value columns and put the columns in ledger order (params first)."""
    missing = [c for c in ("metric", "value") if c not in rows.columns]
    if missing:
        raise WorkbookError(f"result rows lack columns {missing}; every row needs metric, value")
    rows = rows.copy()
    for col, default in (("unit", ""), ("source", "measured"), ("status", "ok")):
        if col not in rows.columns:
            rows[col] = default
        rows[col] = rows[col].fillna(default)
    bad = sorted(set(rows["source"]) - set(SOURCES))
    if bad:
        raise WorkbookError(f"unknown source {bad}; allowed: {', '.join(SOURCES)}")
    fixed = set(VALUE_COLUMNS) | set(PROVENANCE_COLUMNS)
    params = [c for c in rows.columns if c not in fixed]
    tail = [c for c in PROVENANCE_COLUMNS if c in rows.columns]
    return rows[params + list(VALUE_COLUMNS) + tail]


def param_columns(rows: pd.DataFrame) -> list[str]:
    fixed = set(VALUE_COLUMNS) | set(PROVENANCE_COLUMNS)
    return [c for c in rows.columns if c not in fixed]


def _cell(value: object) -> str:
    """A cell as key text: NaN -> '', 2.0 -> '2' (a CSV round trip turns ints with gaps into
    floats; the key must not change because of it)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _key(frame: pd.DataFrame, columns: list[str]) -> pd.Series:
    present = [c for c in columns if c in frame.columns]
    if not present:
        return pd.Series([""] * len(frame), index=frame.index, dtype=object)
    cells = frame[present].astype(object)
    return cells.apply(lambda row: "|".join(_cell(v) for v in row), axis=1)


def merge(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``new`` replace rows of ``old`` with the same configuration, metric, source,
    device, GPU count and preset, except that a failed row never replaces a good one. Other
    rows are kept: a 2-GPU run and an 8-GPU run of the same configuration both stay in the
    ledger, and so do a measured point and the prediction beside it (an ``oom`` point is never
    taken for a failed copy of its formula row), and so do two seeds of one configuration (a
    second seed is a replicate, not a newer copy: on the H200 at 2c77e70ee442 a seed-1 run of
    ``scaling_batch_tokens`` replaced its seed-0 rows while seed was left out of the key)."""
    if old.empty:
        return new.reset_index(drop=True)
    columns = list(dict.fromkeys(list(old.columns) + list(new.columns)))
    old, new = old.reindex(columns=columns), new.reindex(columns=columns)
    # An error message or a note is not part of a configuration's identity: not in the key.
    key_cols = [c for c in param_columns(new) if c not in NOTE_COLUMNS] + [
        "metric", "source", "device", "n_gpus", "preset", "seed"]
    old_key, new_key = _key(old, key_cols), _key(new, key_cols)
    good_old = set(old_key[old["status"].astype(str) == "ok"])
    new_ok = new["status"].astype(str) == "ok"
    keep_new = new_ok | ~new_key.isin(good_old)
    replaced = set(new_key[keep_new])
    kept_old = old[~old_key.isin(replaced)]
    return pd.concat([kept_old, new[keep_new]], ignore_index=True)


def write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write through a temporary file in the same folder, then rename: never a torn ledger."""
    write_text_atomic(path, frame.to_csv(index=False))


def write_text_atomic(path: Path, text: str) -> None:
    """A text file written through a temporary file in the same folder, then renamed.

    The file keeps its mode (a new one gets the usual ``0666 & ~umask``): ``mkstemp`` makes
    its file ``0600``, which the rename would otherwise hand to the ledger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=path.suffix)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` has, or those a new file gets under this umask."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux lets us (``os.umask`` sets it,
    and another thread could create a file in between)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def lock_path(path: Path) -> Path:
    """The sidecar file :func:`ledger_lock` locks: ``.NAME.lock`` beside ``NAME.csv``. Never
    deleted: removing a lock file while another process waits on it would split the lock."""
    return path.parent / f".{path.stem}.lock"


@contextmanager
def ledger_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for the ledger ``path`` (blocks while another writer holds it).

    ``flock`` belongs to the open file: a writer that dies, even by ``kill -9``, releases it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files a killed writer of ``path`` left (``.NAME-*.csv``). Call it
    only under :func:`ledger_lock`: then no live writer of this ledger has one open."""
    stale = sorted(path.parent.glob(f".{path.stem}-*{path.suffix}"))
    for tmp in stale:
        tmp.unlink(missing_ok=True)
    return stale


def _override_cells(overrides: Mapping[str, Any] | None) -> dict[str, str]:
    """Overrides as ledger cells, the way ``runner.failure_row`` writes them (lists as JSON)."""
    cells = {}
    for key, value in dict(overrides or {}).items():
        if isinstance(value, (list, tuple)):
            cells[key] = json.dumps(list(value))
        elif isinstance(value, (str, int, float, bool)):
            cells[key] = _cell(value)
    return cells


def drop_answered_failures(old: pd.DataFrame, new: pd.DataFrame,
                           overrides: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """``old`` without the whole-run failure rows (metric ``run``: a timeout, a crash) that
    ``new``, a run with good rows, answers: same device, GPU count, preset and overrides.

    Such a row has no configuration columns to match on (the run died before any), so
    :func:`merge` alone would keep it beside the good rows for ever."""
    if old.empty or "metric" not in old.columns or not (new["status"] == "ok").any():
        return old
    failed = (old["metric"].astype(str) == RUN_METRIC) & (old["status"].astype(str) != "ok")
    for col in ("device", "n_gpus", "preset"):
        if col in old.columns and col in new.columns:
            failed &= old[col].map(_cell) == _cell(new[col].iloc[0])
    wanted = _override_cells(overrides)
    params = [c for c in param_columns(old) if c not in NOTE_COLUMNS and c != "name"]

    def same_overrides(row: pd.Series) -> bool:
        given = {c: _cell(row[c]) for c in params if _cell(row[c]) != ""}
        return given == wanted

    answered = failed & old.apply(same_overrides, axis=1) if failed.any() else failed
    return old[~answered].reset_index(drop=True)


def record(experiment: str, rows: pd.DataFrame, *, preset: str, seed: int | None,
           overrides: Mapping[str, Any] | None = None) -> Path:
    """Add ``rows`` to the experiment's ledger with provenance filled in; returns the path.

    ``overrides`` (what ``--set`` changed) lets a good run replace the failure row an earlier
    run with the same overrides left. Safe with several writers at once (see the module)."""
    path = ledger_path(experiment)
    if rows.empty:
        raise WorkbookError(f"nothing to record for {experiment!r}: the run returned no rows")
    stamped = tidy(rows)
    if (stamped["source"] == "recorded").any():
        raise WorkbookError("rows read back from the ledger cannot be recorded again")
    from workbook.hardware import GPU_MEMORY_CAP_ENV, gpu_memory_cap_gb

    if gpu_memory_cap_gb() is not None and "gpu_memory_cap_gb" not in stamped.columns:
        # The device column names the whole card: the ledger would take rows measured under
        # an emulated smaller one (oom where the card has room) for that card's numbers.
        raise WorkbookError(f"{experiment}: not recorded, {GPU_MEMORY_CAP_ENV} is set; allowed: "
                            "record without the cap, or rows with a gpu_memory_cap_gb column")
    prov = provenance(preset, seed)
    for col, value in prov.items():
        if col not in stamped.columns or col in ("device", "n_gpus", "torch", "cuda",
                                                  "recorded_at", "commit"):
            stamped[col] = value
        else:
            stamped[col] = stamped[col].fillna(value)
    with ledger_lock(path):
        remove_stale_temps(path)
        old = read_ledger(path) if path.exists() else pd.DataFrame()
        old = drop_answered_failures(old, stamped, overrides)
        write_atomic(tidy(merge(old, stamped)), path)
    return path


def read_ledger(path: Path | str) -> pd.DataFrame:
    """A ledger CSV as written: the commit stays text (a hash of digits and one 'e', such as
    892e020, would otherwise come back as the float 8.92e+22 and be written back so)."""
    return pd.read_csv(path, dtype={"commit": str})


def load(experiment: str, *, device: str | None = None, ok_only: bool = False) -> pd.DataFrame:
    """Recorded rows of an experiment; empty if none were recorded.

    Measured rows come back with ``source='recorded'``: they were measured, but not here, not
    now. Predicted and datasheet rows keep their source.
    """
    check_text("experiment", experiment, empty=False)
    if device is not None:
        check_text("device", device, empty=False)
    check_flag("ok_only", ok_only)
    path = ledger_path(experiment)
    if not path.exists():
        return pd.DataFrame(columns=list(VALUE_COLUMNS) + list(PROVENANCE_COLUMNS))
    frame = read_ledger(path)
    if device is not None:
        frame = frame[frame["device"].astype(str).str.contains(device, case=False, regex=False)]
    if ok_only:
        frame = frame[frame["status"] == "ok"]
    frame = frame.copy()
    frame.loc[frame["source"] == "measured", "source"] = "recorded"
    return frame.reset_index(drop=True)


# What a reader is shown of a recorded run: its points, an out-of-memory configuration (a
# point on the figure: the boundary of what fits) and a variant this machine does not support
# (a "–" with its reason); a run that failed or timed out is not a result.
SHOWN_STATUSES = ("ok", "oom", "unsupported")


def load_shown(experiment: str) -> pd.DataFrame:
    """:func:`load`'s rows whose status is one a reader is shown (:data:`SHOWN_STATUSES`)."""
    frame = load(experiment)
    return frame[frame["status"].isin(SHOWN_STATUSES)].reset_index(drop=True)


@takes_rows
def preset_of(frame: pd.DataFrame, default: str = "small") -> str:
    """The preset rows were run with (their ``preset`` column), else ``default``."""
    if "preset" in frame.columns and frame["preset"].notna().any():
        return str(frame["preset"].dropna().iloc[0])
    return default


@takes_rows
def latest_device(frame: pd.DataFrame, default: str = "") -> str:
    """The device of the most recently recorded row (the one tables list first), else the
    first row's when none is dated, else ``default`` (no rows, or no device column)."""
    if frame.empty or "device" not in frame.columns:
        return default
    when = pd.to_datetime(frame.get("recorded_at", pd.Series(None, index=frame.index)),
                          errors="coerce", utc=True)
    row = when.idxmax() if when.notna().any() else frame.index[0]
    return str(frame.at[row, "device"])


@takes_rows
def where_label(frame: pd.DataFrame) -> str:
    """Where a claims row's numbers come from: 'this machine (NVIDIA H200)' for rows measured
    here, else :func:`provenance_label` of the recorded ones."""
    if frame.empty:
        return "no rows yet"
    if "source" in frame.columns and (frame["source"] == "recorded").any():
        return provenance_label(frame[frame["source"] == "recorded"])
    devices = frame["device"].dropna().unique() if "device" in frame.columns else []
    return f"this machine ({', '.join(map(str, devices))})" if len(devices) else "this machine"


def _seed_order(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


@takes_rows
def provenance_label(frame: pd.DataFrame) -> str:
    """'recorded on NVIDIA H100 80GB HBM3 ×1, 2026-11-22 (seed 0)': for plot titles."""
    if frame.empty or "device" not in frame.columns:
        return "measured on this machine"
    parts = []
    # A run over several seeds keeps each in a column of its own (run_seed, train_seed); its
    # `seed` is only the run's first. The rows' seeds are those, where present.
    seed_col = next((c for c in ("run_seed", "train_seed") if c in frame.columns
                     and frame[c].notna().any()), "seed")
    # Rows a view derived keep the device but may drop the other provenance columns.
    frame = frame.assign(**{c: frame[c] if c in frame.columns else None
                            for c in ("n_gpus", "recorded_at")},
                         seed=frame[seed_col] if seed_col in frame.columns else None)
    # the latest recording first, as the tables and claims put it (not the devices' names)
    when = pd.to_datetime(frame["recorded_at"], errors="coerce", utc=True)
    latest = when.groupby([frame["device"], frame["n_gpus"]], dropna=False).transform("max")
    frame = frame.assign(_latest=latest).sort_values(   # undated machines last
        "_latest", ascending=False, kind="stable", na_position="last")
    for (device, n_gpus), group in frame.groupby(["device", "n_gpus"], dropna=False, sort=False):
        dates = sorted({str(d)[:10] for d in group["recorded_at"].dropna()})
        seeds = sorted({_cell(s) for s in group["seed"].dropna()}, key=_seed_order)
        when = dates[0] if len(dates) == 1 else f"{dates[0]}…{dates[-1]}" if dates else "?"
        seed = f", seed{'s' if len(seeds) > 1 else ''} {','.join(seeds)}" if seeds else ""
        # a CPU's 0 GPUs is no count to state ('CPU (x86_64, 2 cores), 2026-11-22', not '×0')
        gpus = pd.to_numeric(pd.Series([n_gpus]), errors="coerce").iloc[0]
        count = f" ×{int(gpus)}" if gpus > 0 else ""  # NaN and 0 (a CPU) state no count
        parts.append(f"{device}{count}, {when}{seed}")
    return "recorded on " + "; ".join(parts)


@takes_rows
def dashed(table: pd.DataFrame, reasons: Mapping[Any, str] | None = None) -> pd.DataFrame:
    """``table`` as a reader sees it: a missing cell reads "–" (or its column's reason from
    ``reasons``, "– (none below stage 2)") instead of NaN, which reads as a value lost. The
    columns with a gap become text: compute on ``table``, show ``dashed(table)``."""
    out = table.copy()
    for column in out.columns[out.isna().any()]:
        fill = (reasons or {}).get(column, "–")
        out[column] = out[column].astype(object).where(out[column].notna(), fill)
    return out
