"""Presets and input checking shared by every experiment.

A preset picks the size of an experiment: ``small`` runs on a laptop CPU in seconds, ``full``
needs one GPU and a few minutes. ``WORKBOOK_PRESET`` chooses; unset, CUDA means ``full``.
"""

from __future__ import annotations

import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Union

PRESETS: tuple[str, ...] = ("small", "full")
PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Marks a config field can carry in its type hint (``Annotated[...]``), read by check_fields.
MAY_BE_EMPTY = "may be empty"          # a list field whose empty value means something
PROJECT_PATH = "a path inside the project"
ProjectPath = Annotated[str, PROJECT_PATH]  # a file or folder an override may name: no escape


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
    """Raise a one-line error unless ``low <= value <= high`` (a finite number, not a bool)."""
    # bool is an int to Python, and NaN fails every comparison quietly: both are refused here.
    # numbers.Real takes NumPy's numbers too.
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not (low <= value <= high):
        raise WorkbookError(f"{name}={value!r} is out of range; allowed: {low} to {high}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a one-line error unless ``value`` is one of ``allowed``."""
    options = list(allowed)
    if value not in options:
        shown = ", ".join(repr(o) for o in options)
        raise WorkbookError(f"{name}={value!r} is not allowed; choose one of: {shown}")


# ----------------------------------------------------------------- config fields by type hint


def check_fields(config_type: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (overrides of a config dataclass, e.g. from ``--set``) checked against the
    fields' type hints and returned as the types the config holds (JSON lists become tuples).

    Ranges are the config's own ``__post_init__`` checks; this adds what those cannot see:
    ``true`` is not an integer, ``1.5`` is not an integer, ``[]`` is not a list of sizes,
    NaN is not a number, and a path stays inside the project.
    """
    hints = typing.get_type_hints(config_type, include_extras=True)
    return {name: check_value(name, value, hints[name]) if name in hints else value
            for name, value in values.items()}


def check_value(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` names, or a one-line error naming what is allowed."""
    hint, marks = _strip_annotated(hint)
    checked = _as_type(name, value, hint, marks)
    if PROJECT_PATH in marks and checked:
        checked = project_path(name, checked)
    return checked


def project_path(name: str, value: str) -> str:
    """A path (relative ones count from the project's root) as an absolute path, or a one-line
    error if it leaves the project: an override never writes elsewhere on the machine.

    ``$WORKBOOK_OUT`` names one more folder allowed (the device tool's output folder, where a
    recording script keeps a checkpoint that must survive the call being cut off)."""
    roots = [PROJECT_ROOT.resolve()]
    if os.environ.get("WORKBOOK_OUT"):
        roots.append(Path(os.environ["WORKBOOK_OUT"]).expanduser().resolve())
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else roots[0] / path).resolve()
    if not any(resolved.is_relative_to(root) for root in roots):
        raise WorkbookError(f"{name}={value!r} is outside the project; allowed: a path inside "
                            f"{roots[0]} (relative paths count from there)")
    return str(resolved)


def describe(hint: Any, marks: tuple[Any, ...] = ()) -> str:
    """What a type hint allows, in words: 'an integer', 'a list of numbers (at least one)'."""
    hint, more = _strip_annotated(hint)
    marks = marks + more
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else describe(a) for a in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        least = "" if MAY_BE_EMPTY in marks else " (at least one)"
        return f"a list of {_plural(args[0])}{least}"
    if origin is tuple:
        return f"a list of exactly {len(args)}: " + ", ".join(describe(a) for a in args)
    return {bool: "true or false", int: "an integer", float: "a finite number",
            str: "a string"}.get(hint, getattr(hint, "__name__", str(hint)))


def _plural(hint: Any) -> str:
    words = {bool: "true/false values", int: "integers", float: "finite numbers",
             str: "strings"}
    return words.get(hint) or f"({describe(hint)})"


def _strip_annotated(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if typing.get_origin(hint) is Annotated:
        base, *marks = typing.get_args(hint)
        return base, tuple(marks)
    return hint, ()


def _as_type(name: str, value: Any, hint: Any, marks: tuple[Any, ...]) -> Any:
    """The recursive part of check_value: one branch per kind of hint the configs use."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    wrong = WorkbookError(f"{name}={value!r} has the wrong type; allowed: "
                          f"{describe(hint, marks)}")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _as_type(name, value, option, ())
            except WorkbookError:
                continue
        raise wrong
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong
        if len(args) == 2 and args[1] is Ellipsis:
            if not value and MAY_BE_EMPTY not in marks:
                raise WorkbookError(f"{name}={value!r} is empty; allowed: "
                                    f"{describe(hint, marks)}")
            return tuple(_as_type(f"{name}[{i}]", v, args[0], ()) for i, v in enumerate(value))
        if len(value) != len(args):
            raise wrong
        return tuple(_as_type(f"{name}[{i}]", v, a, ())
                     for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if hint is bool:
        if not isinstance(value, bool):
            raise wrong
        return value
    # numbers.Integral / Real: NumPy's scalars count too (a value taken from an array).
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise wrong
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise wrong
        if not math.isfinite(value):
            raise WorkbookError(f"{name}={value!r} is not a finite number; allowed: "
                                f"{describe(hint)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise wrong
        return value
    return value  # a hint this checker does not know (Any): the config's own checks decide


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
    """Raise a one-line error unless ``values`` is a non-empty list, tuple or range (not a
    string)."""
    if not isinstance(values, (list, tuple, range)) or not values:
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
