"""Presets and input checking shared by every experiment.

A preset picks the size of an experiment: ``small`` runs on a laptop CPU in seconds, ``full``
needs one GPU and a few minutes. ``WORKBOOK_PRESET`` chooses; unset, CUDA means ``full``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
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
    chosen = preset or os.environ.get("WORKBOOK_PRESET") or by_hardware
    if chosen not in PRESETS:
        raise WorkbookError(f"unknown preset {chosen!r}; allowed: {', '.join(PRESETS)}")
    return chosen


def check_range(name: str, value: Any, low: float, high: float) -> None:
    """Raise a one-line error unless ``low <= value <= high``."""
    if not isinstance(value, (int, float)) or not (low <= value <= high):
        raise WorkbookError(f"{name}={value!r} is out of range; allowed: {low} to {high}")


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> None:
    """Raise a one-line error unless ``value`` is one of ``allowed``."""
    options = list(allowed)
    if value not in options:
        shown = ", ".join(repr(o) for o in options)
        raise WorkbookError(f"{name}={value!r} is not allowed; choose one of: {shown}")
