"""Presets and input checking shared by every experiment.

A preset picks the size of an experiment: ``small`` runs on a laptop CPU in seconds, ``full``
needs one GPU and a few minutes. ``WORKBOOK_PRESET`` chooses; unset, CUDA means ``full``.
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Callable, Iterable
from typing import Any

PRESETS: tuple[str, ...] = ("small", "full")


class WorkbookError(ValueError):
    """A user-facing error: one line that says what is allowed. Never a bug report."""


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False
    return torch.cuda.is_available()


def resolve_preset(preset: str | None = None) -> str:
    """The preset to use: the argument, else ``$WORKBOOK_PRESET``, else by hardware."""
    by_hardware = "full" if cuda_available() else "small"
    # An empty $WORKBOOK_PRESET means unset; an empty argument is a mistake, said as one.
    chosen = preset if preset is not None else (os.environ.get("WORKBOOK_PRESET") or by_hardware)
    if chosen not in PRESETS:
        raise WorkbookError(f"unknown preset {chosen!r}; allowed: {', '.join(PRESETS)}")
    return chosen


def check_range(name: str, value: Any, low: float, high: float) -> None:
    """Raise a one-line error unless ``low <= value <= high``."""
    # numbers.Real takes NumPy's numbers too; True is an int to Python, but not a count here.
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            low <= value <= high):
        raise WorkbookError(f"{name}={value!r} is out of range; allowed: {low} to {high}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a one-line error unless ``value`` is one of ``allowed``."""
    options = list(allowed)
    if value not in options:
        shown = ", ".join(repr(o) for o in options)
        raise WorkbookError(f"{name}={value!r} is not allowed; choose one of: {shown}")


def check_rows(name: str, rows: Any, columns: Iterable[str] = ()) -> None:
    """Raise a one-line error unless ``rows`` is a DataFrame with ``columns`` (when not empty).

    An empty frame passes: "no rows recorded yet" is a normal state that callers show as such.
    """
    import pandas as pd  # here, not at import: ``--help`` must not load pandas

    if not isinstance(rows, pd.DataFrame):
        raise WorkbookError(f"{name} must be a table of rows (a pandas DataFrame, as "
                            f"results.load returns); got {type(rows).__name__}")
    missing = [c for c in columns if c not in rows.columns]
    if len(rows) and missing:
        raise WorkbookError(f"{name} lacks the columns {missing}; needed: {', '.join(columns)}")


def check_values(name: str, values: Any) -> None:
    """Raise a one-line error unless ``values`` is a non-empty list or tuple (not a string)."""
    if not isinstance(values, (list, tuple)) or not values:
        raise WorkbookError(f"{name}={values!r} is not allowed; allowed: a non-empty list of "
                            "values, such as [0.5, 1, 2]")


def check_flag(name: str, value: Any) -> None:
    """Raise a one-line error unless ``value`` is True or False ("no" would count as True)."""
    if not (isinstance(value, bool) or type(value).__name__ == "bool_"):  # NumPy's too
        raise WorkbookError(f"{name}={value!r} is not allowed; allowed: True or False")


def check_text(name: str, value: Any, *, empty: bool = True) -> None:
    """Raise a one-line error unless ``value`` is a string (and, with ``empty=False``, not "")."""
    if not isinstance(value, str) or not (empty or value):
        kind = "text" if empty else "non-empty text"
        raise WorkbookError(f"{name}={value!r} is not allowed; allowed: {kind}")


def takes_rows(func: Callable) -> Callable:
    """Check, before ``func`` runs, each of its arguments annotated ``pd.DataFrame``.

    A notebook passes such tables from ``results.load`` or a live run; anything else (None, an
    experiment's name, a list) is then one line naming what is needed, not an AttributeError
    from inside pandas. A function that cannot work on an empty table (nothing recorded yet)
    says so in one line too; only a failure with every table filled is a bug worth a traceback.
    """
    import functools
    import inspect

    signature = inspect.signature(func)
    tables = {name: str(param.annotation).endswith("| None")  # name: may it be None?
              for name, param in signature.parameters.items()
              if str(param.annotation).removesuffix(" | None") in ("pd.DataFrame", "DataFrame")}

    @functools.wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        given = signature.bind_partial(*args, **kwargs).arguments
        for name, optional in tables.items():
            if name in given and not (optional and given[name] is None):
                check_rows(f"{func.__name__}: {name}", given[name])
        empty = [name for name in tables if len(getattr(given.get(name), "index", [1])) == 0]
        try:
            return func(*args, **kwargs)
        except (AttributeError, KeyError, IndexError, ValueError) as exc:
            if not empty or isinstance(exc, WorkbookError):
                raise
            raise WorkbookError(f"{func.__name__}: no rows in {', '.join(empty)} yet; needed: "
                                "live or recorded rows (`python -m workbook run <experiment> "
                                "--record`)") from None

    return checked
