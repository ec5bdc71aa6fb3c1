"""One model size across the budgets of a sweep: its held-out loss against the tokens it read.

An IsoFLOP sweep trains most sizes at several budgets, each time for about the same number of
steps with a larger batch, so it also measures how each size's loss falls with data. A power
law in D falls by less per e-fold of tokens at every step; where a size's loss falls *faster*
over a middle stretch of tokens than before it, the curves of one budget can straddle that
stretch (its smaller models past it, its larger ones not yet) and bend its IsoFLOP parabola.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from workbook.claims import fixed
from workbook.config import takes_rows
from workbook.scaling_laws.fits import ok_points, pool_of, seed_pools


def _sizes(points: pd.DataFrame) -> list[tuple[float, pd.DataFrame]]:
    """Each model size trained at 3 or more budgets, its points in order of tokens (seeds of
    one point averaged)."""
    out = []
    for n, g in points.groupby("n_params"):
        g = g.groupby("budget", as_index=False)[["n_tokens", "loss"]].mean()
        if len(g) >= 3:
            out.append((float(n), g.sort_values("n_tokens")))
    return out


@takes_rows
def token_slopes(points: pd.DataFrame) -> pd.DataFrame:
    """Per model size (trained at ≥ 3 budgets) and per pair of neighbouring budgets: the
    change of held-out loss per e-fold of tokens (nats; negative: it falls) between them,
    from ``points`` (:func:`~workbook.scaling_laws.fits.ok_points` of one sweep)."""
    rows = []
    for n, g in _sizes(points):
        d, loss = g["n_tokens"].to_numpy(float), g["loss"].to_numpy(float)
        for i in range(len(g) - 1):
            rows.append({"n_params": n, "from_tokens": d[i], "to_tokens": d[i + 1],
                         "slope": (loss[i + 1] - loss[i]) / np.log(d[i + 1] / d[i])})
    return pd.DataFrame(rows, columns=["n_params", "from_tokens", "to_tokens", "slope"])


MARGIN = 0.1  # nats per e-fold: how much faster a later stretch must fall to count as faster


def _main(rows: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The first sweep in :func:`~workbook.scaling_laws.views.sweeps`' order (this machine's,
    then the newest recording) with a size trained at three or more budgets: its label and
    trained points, its seeds pooled where its machine ran its plan under several seeds. The
    small preset's sweep (2 budgets) has none: a recorded full sweep stands in, named."""
    from workbook.scaling_laws.views import sweeps

    found = sweeps(rows)
    pools = seed_pools(found)
    for where, sweep in found:
        label, chosen = pool_of(where, sweep, pools) or (where, sweep)
        points = ok_points(chosen)
        if _sizes(points):
            return label, points
    return "no sweep with a size trained at three or more budgets", pd.DataFrame()


@takes_rows
def tokens_figure(rows: pd.DataFrame):
    """The sizes that trained at three or more budgets in the first sweep that has any
    (:func:`_main`: this machine's, else the newest recording; its seeds pooled where there
    are several): held-out loss against the tokens each read, a line per size."""
    from workbook import plots

    where, points = _main(rows)
    fig = plots.figure(f"One model size across budgets: loss vs tokens read<br><sup>{where}"
                       "</sup>", "tokens read D", "held-out loss (nats/token)", log_x=True)
    for n, g in _sizes(points) if len(points) else []:
        name = f"N = {n:,.0f}"
        fig.add_scatter(x=g["n_tokens"], y=g["loss"], mode="lines+markers", name=name,
                        line={"color": plots.color_for(name)})
    return fig


@takes_rows
def tokens_caption(rows: pd.DataFrame) -> str:
    """:func:`tokens_figure` in words, from the rows: for each size, the stretch of tokens
    over which its loss fell fastest per e-fold, with the stretches before and after it, and
    how many sizes fell faster (by :data:`MARGIN` or more) over a later stretch than over the
    one before it: what a power law in D never does."""
    where, points = _main(rows)
    slopes = token_slopes(points) if len(points) else pd.DataFrame()
    if slopes.empty:
        return "No sweep has a model size trained at three or more budgets yet."
    said, faster = [], 0
    for n, g in slopes.groupby("n_params"):
        g = g.reset_index(drop=True)
        i = int(g["slope"].idxmin())
        steep = g.iloc[i]
        before = g.iloc[i - 1]["slope"] if i > 0 else np.nan
        after = g.iloc[i + 1]["slope"] if i + 1 < len(g) else np.nan
        faster += bool(np.isfinite(before) and steep["slope"] <= before - MARGIN)
        said.append(f"N = {n:,.0f}: fastest {steep['slope']:+.2f} nats per e-fold between "
                    f"{fixed(steep['from_tokens'])} and {fixed(steep['to_tokens'])} tokens"
                    + "".join(f"; {word} it {value:+.2f}" for word, value
                              in (("before", before), ("after", after)) if np.isfinite(value)))
    sizes = slopes["n_params"].nunique()
    return (f"**{where}.** {faster} of {sizes} sizes fell faster (by {MARGIN} nats per e-fold "
            "or more) over a later stretch of tokens than over the one before it: what a power "
            "law in $D$ never does. Where a size does, a budget whose smaller models read past "
            "that stretch and whose larger ones did not favours its smaller models, and its "
            "parabola's minimum moves down the sizes. Every point trained for about the same "
            "number of steps, so the tokens grew with the batch: this view cannot tell more "
            "data from larger batches apart (the next section holds each fixed in turn).\n\n"
            + "\n".join(f"* {line}" for line in said))
