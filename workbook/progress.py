"""Progress bars that leave their end, not their start, in a saved notebook.

A tqdm widget in Jupyter is saved with the text it had when it was first displayed ("0/1000",
"running, 0 s so far"), so an executed notebook read later showed every bar frozen at its
start. Here, in a Jupyter kernel, the bar is displayed under a display id and replaced, when
it closes, by one plain line that says how it ended ("bootstrap: 1000 of 1000 in 2.1 s").
Elsewhere (a terminal, a test) it is tqdm's text bar, cleared at the end, and the same line is
printed. Nothing here imports the rest of the workbook.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator


def in_kernel() -> bool:
    """Running inside a Jupyter kernel (where widgets render), not a terminal or a test."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def end_line(desc: str, done: int, total: int | None, seconds: float) -> str:
    """The line a closed bar leaves: what ran, how far, how long."""
    count = f"{done} of {total}" if total is not None else f"{done}"
    return f"{desc + ': ' if desc else ''}{count} in {seconds:.1f} s"


@contextlib.contextmanager
def bar(total: int | None, desc: str = "", *, bar_format: str | None = None,
        disable: bool = False, end: Callable[[], str] | None = None) -> Iterator:
    """A tqdm bar for ``with``; on leaving, the bar is replaced by the line ``end()`` returns
    (called then, so it can say how long the work took), or by :func:`end_line`'s."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    if disable:
        with tqdm(total=total, disable=True) as off:
            yield off
        return
    if not in_kernel():
        text_bar = tqdm(total=total, desc=desc, bar_format=bar_format, leave=False)
        try:
            yield text_bar
        finally:   # also when the loop stops early or fails: how far it got
            text_bar.close()
            print(end() if end else end_line(desc, text_bar.n, total, time.monotonic() - start))
        return
    from IPython.display import display
    from tqdm.notebook import tqdm as widget_tqdm

    widget = widget_tqdm(total=total, desc=desc, bar_format=bar_format, leave=False,
                         display=False)
    handle = display(widget.container, display_id=True)
    try:
        yield widget
    finally:
        done = widget.n
        widget.close()
        line = end() if end else end_line(desc, done, total, time.monotonic() - start)
        handle.update({"text/plain": line}, raw=True)


def each(iterable: Iterable, *, desc: str = "", total: int | None = None,
         disable: bool = False) -> Iterator:
    """Iterate with a :func:`bar` (``total`` defaults to ``len(iterable)`` where it has one)."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)
    with bar(total, desc, disable=disable) as shown:
        for item in iterable:
            yield item
            shown.update(1)
