"""What a config field allows, read from its type hint and its own checks.

A config dataclass states its ranges once, in ``__post_init__`` (``check_range``,
``check_choice``). To build a control that cannot leave them, :func:`read_field` offers the
config an impossible value (far too large, far too small, an unknown choice) and reads the
bounds or the choices from the one-line ``WorkbookError`` it refuses it with. Nothing here
needs a widget: ``workbook.panel`` turns a :class:`FieldControl` into one.

    >>> read_field(MaskingConfig(...), "policies").options
    ('answer_only', 'whole_sequence', 'last_turn')
"""

from __future__ import annotations

import ast
import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Union

from workbook.config import MAY_BE_EMPTY, WorkbookError, check_range, check_values

# A check_range refusal: "seq_len=1000000000000000 is out of range; allowed: 2 to 32768".
_RANGE = re.compile(r"^(?P<name>[^=]+)=.*allowed: (?P<low>\S+) to (?P<high>\S+)$")
# A check_choice refusal: "precision='?' is not allowed; choose one of: 'fp32', 'amp_bf16'".
_CHOICE = re.compile(r"^(?P<name>[^=]+)=.*choose one of: (?P<options>.+)$")
_NOT_A_CHOICE = "\x00not-an-option"


@dataclasses.dataclass(frozen=True)
class FieldControl:
    """What one config field allows, as read from its type hint and its config's checks."""

    field: str
    kind: str                        # "int", "float", "bool" or "choice"
    many: bool                       # the field is a tuple (the control gives one or several)
    low: float | None = None         # numbers: the allowed range
    high: float | None = None
    options: tuple[Any, ...] = ()    # choices (and numbers offered as a list by ``choices=``)
    may_be_empty: bool = False


def _strip(hint: Any) -> tuple[Any, tuple[Any, ...], bool]:
    """A hint without ``Annotated`` marks and ``| None``: (type, marks, may be None)."""
    marks: tuple[Any, ...] = ()
    if typing.get_origin(hint) is Annotated:
        hint, *rest = typing.get_args(hint)
        marks = tuple(rest)
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0], marks, True
    return hint, marks, False


def _rejection(base: Any, name: str, value: Any) -> str | None:
    """The config's one-line refusal of ``name=value`` (None: it accepts it)."""
    try:
        dataclasses.replace(base, **{name: value})
    except WorkbookError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a check the config did not phrase as one line
        return f"{name}={value!r} is not allowed ({type(exc).__name__}: {exc})"
    return None


def _about(message: str, pattern: re.Pattern, name: str) -> re.Match | None:
    """``pattern``'s match if ``message`` is about field ``name`` (``seq_len`` of ``seq_lens``,
    ``policy`` of ``policies``, ``sizes[0]``, ``budget (FLOPs)`` of ``budgets``), else None."""
    found = pattern.match(message)
    if found is None:
        return None
    said = re.sub(r"\[\d+\]$|\s*\(.*\)$", "", found["name"].strip())
    plurals = (said, said + "s", said + "es", said[:-1] + "ies" if said.endswith("y") else said)
    return found if said.isidentifier() and name in plurals else None


def _number(text: str) -> float:
    return float(text.rstrip(";,."))


def read_field(base: Any, field: str, *, choices: Sequence[Any] | None = None,
               limits: tuple[float, float] | None = None) -> FieldControl:
    """What ``field`` of the config ``base`` (a preset's) allows: its kind from the type hint,
    its range or choices from the config's own checks. ``choices`` offers a list of values
    instead (each one the config must accept); ``limits`` narrows a number's range (inside the
    allowed one). A field the config gives no range or choices for is one line asking for
    them."""
    name = type(base).__name__
    fields = {f.name for f in dataclasses.fields(base)}
    if field not in fields:
        raise WorkbookError(f"{name} has no parameter {field!r}; allowed: "
                            f"{', '.join(sorted(fields))}")
    hint, marks, _optional = _strip(typing.get_type_hints(type(base),
                                                          include_extras=True)[field])
    many = typing.get_origin(hint) is tuple
    if many:
        args = typing.get_args(hint)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise WorkbookError(f"{name}.{field} ({hint}) has no control; allowed: "
                                "numbers, flags, choices and lists of them")
        hint = args[0]
    wrap = (lambda v: (v,)) if many else (lambda v: v)
    if choices is not None:
        check_values(f"choices of {field}", list(choices))
        for value in choices:
            if (why := _rejection(base, field, wrap(value))) is not None:
                raise WorkbookError(f"choices of {field}: {why}")
        kind = "bool" if hint is bool else "choice"
        return FieldControl(field, kind, many, options=tuple(choices),
                            may_be_empty=MAY_BE_EMPTY in marks)
    if hint is bool:
        return FieldControl(field, "bool", many, options=(False, True) if many else (),
                            may_be_empty=MAY_BE_EMPTY in marks)
    if hint is str:
        why = _rejection(base, field, wrap(_NOT_A_CHOICE)) or ""
        found = _about(why, _CHOICE, field)
        try:
            options = tuple(ast.literal_eval(f"[{found['options']}]")) if found else ()
        except (ValueError, SyntaxError):
            options = ()
        if not options:
            raise WorkbookError(f"{name}.{field}: its config names no choices; pass "
                                f"choices={{{field!r}: [...]}}")
        return FieldControl(field, "choice", many, options=options,
                            may_be_empty=MAY_BE_EMPTY in marks)
    if hint in (int, float):
        low, high = _allowed_range(base, field, hint, wrap, limits)
        if limits is not None:
            check_range(f"limits of {field}: low", limits[0], low, high)
            check_range(f"limits of {field}: high", limits[1], limits[0], high)
            low, high = hint(limits[0]), hint(limits[1])
        return FieldControl(field, hint.__name__, many, low=low, high=high)
    raise WorkbookError(f"{name}.{field} ({hint}) has no control; allowed: numbers, "
                        "flags, choices and lists of them")


def _allowed_range(base: Any, field: str, kind: type, wrap: Callable,
                   limits: tuple[float, float] | None) -> tuple[float, float]:
    """The config's range for a number: offer it far too much, then far too little, and read
    the bounds from the refusal. Where the config states none, ``limits`` (both ends accepted
    by the config) is the range."""
    if limits is not None:
        if not isinstance(limits, (list, tuple)) or len(limits) != 2:
            raise WorkbookError(f"limits of {field}={limits!r}; allowed: (low, high)")
        for end in limits:
            check_range(f"limits of {field}", end, -1e300, 1e300)
            if (why := _rejection(base, field, wrap(kind(end)))) is not None:
                raise WorkbookError(f"limits of {field}: {why}")
    huge = 10**15 if kind is int else 1e300
    ends: list[float] = []
    for probe in (huge, -huge):
        found = _about(_rejection(base, field, wrap(probe)) or "", _RANGE, field)
        if found:
            low, high = _number(found["low"]), _number(found["high"])
            # A range stated in floats (1e-08 to 1.0) for an int field: the ints inside it.
            if kind is int:
                low, high = math.ceil(low), math.floor(high)
            return low, min(high, 2**53 if kind is int else 1e300)
        ends.append(probe)
    if limits is not None:
        return kind(limits[0]), kind(limits[1])
    raise WorkbookError(f"{field}: its config states no range (it accepts {ends[0]:g}); pass "
                        f"limits={{{field!r}: (low, high)}} checked by the config")
