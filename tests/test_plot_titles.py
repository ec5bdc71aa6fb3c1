"""Figure text. Titles: long lines wrap (a line wider than the figure is cut at its edge in the
browser), each wrapped line past the third makes the figure taller, nothing is lost. Point
labels: each where it covers no other."""
import re

from workbook import plots

LONG = ("circle: recorded on NVIDIA H100 80GB HBM3 ×1, 2026-12-05, seed 2, full preset, "
        "per-size recipe, one batch per budget (its largest size's), a 30-point plan over 6 "
        "budgets; the fit over 6 budgets")


def _visible(title: str) -> list[str]:
    return [re.sub(r"</?sup>", "", line) for line in title.split("<br>")]


def test_long_subtitle_lines_wrap_without_losing_a_word():
    title = f"IsoFLOP profiles<br><sup>{LONG}</sup><br><sup>short</sup>"
    wrapped = plots.wrap_title(title)
    lines = wrapped.split("<br>")
    assert len(lines) > 3
    assert all(len(line) <= plots.SUBTITLE_CHARS for line in _visible(wrapped)[1:])
    assert " ".join(_visible(wrapped)).split() == " ".join(_visible(title)).split()
    # every subtitle piece is a <sup> line of its own, opened and closed
    assert all(line.startswith("<sup>") and line.endswith("</sup>") for line in lines[1:])
    # the cut prefers '; ' (the line breaks after it), then ', '
    assert any(line.endswith(";</sup>") or line.endswith(",</sup>") for line in lines[1:-1])


def test_a_sup_block_over_several_lines_is_closed_on_each():
    title = f"Loss<br><sup>one<br>{LONG}</sup>"
    lines = plots.wrap_title(title).split("<br>")
    assert lines[0] == "Loss" and lines[1] == "<sup>one</sup>"
    assert all(line.startswith("<sup>") and line.endswith("</sup>") for line in lines[1:])


def test_short_titles_and_other_markup_stay_as_they_are():
    for title in ("", "Loss", "Loss<br><sup>this machine</sup>", f"<b>{LONG}</b>"):
        assert plots.wrap_title(title) == title
    # one word longer than the limit cannot be cut
    assert plots.wrap_title("x" * 200) == "x" * 200


def test_a_figure_with_wrapped_lines_grows_and_puts_its_legend_below_them():
    # three lines fit the usual height; each line past them adds its own height
    short = plots.figure("Loss<br><sup>this machine</sup><br><sup>recorded on an H200</sup>")
    tall = plots.figure(f"Loss<br><sup>{LONG}</sup><br><sup>{LONG}</sup>")
    bundle = {name: fig._repr_mimebundle_()[plots.PLOTLY_MIME]["layout"]
              for name, fig in (("short", short), ("tall", tall))}
    assert bundle["short"]["height"] == plots.LAYOUT["height"]
    lines = bundle["tall"]["title"]["text"].count("<br>") + 1
    assert lines >= 5
    assert bundle["tall"]["height"] > plots.LAYOUT["height"]
    # the legend sits at the same distance below a taller header: the plot keeps its height
    below = {name: (1 - layout["legend"]["y"]) * layout["height"]
             for name, layout in bundle.items()}
    assert below["tall"] > below["short"]
    plot_px = {name: layout["height"] - below[name] for name, layout in bundle.items()}
    assert abs(plot_px["tall"] - plot_px["short"]) < 1


def test_point_labels_go_where_they_cover_no_other_label():
    """03's published models: 'GPT-3 175B' and 'Gopher 280B' sit 0.2 decades apart at one
    token count, and every label above its point ran into its neighbour's."""
    from workbook.scaling_laws.laws import placement

    models = placement("20 tokens/param")
    text = [f"{m}<br>{r:.0f} tok/param" for m, r in
            zip(models["model"], models["tokens_per_param"], strict=True)]
    where = dict(zip(models["model"], plots.text_positions(models["n_params"],
                                                           models["n_tokens"], text),
                     strict=True))
    assert where["GPT-3 175B"] != where["Gopher 280B"]
    assert where["Llama 2 70B"] != where["Chinchilla 70B"]
    # one point alone keeps the top; two on top of each other cannot both have it
    assert plots.text_positions([1e9], [1e9], ["a"]) == ["top center"]
    assert len(set(plots.text_positions([1e9, 1.1e9], [1e9, 1e9], ["abc", "def"]))) == 2


def test_a_bar_of_zero_says_0_and_a_missing_one_says_nothing():
    import pandas as pd

    rows = pd.DataFrame({"variant": ["base", "sft", "base"], "metric": ["a", "a", "b"],
                         "value": [0.0, 0.25, float("nan")], "status": "ok"})
    fig = plots.bars(rows, x="variant", group="metric")
    assert [list(t.text) for t in fig.data] == [["0", ""], [""]]


def test_a_long_legend_makes_the_figure_taller_not_the_plot_smaller():
    names = [f"{m} (recorded, {d})" for d in ("H100 80GB HBM3", "H200")
             for m in ("vanilla", "sdpa_math", "sdpa_efficient", "sdpa_flash", "sdpa_cudnn",
                       "triton")]
    assert plots.legend_rows(names) == 6 and plots.legend_rows([]) == 0
    assert plots.legend_rows(["a", "b"]) == 1

    def height(n_traces: int) -> float:
        fig = plots.figure("t")
        for name in names[:n_traces]:
            fig.add_scatter(x=[1], y=[1], name=name)
        return fig._repr_mimebundle_()[plots.PLOTLY_MIME]["layout"]["height"]

    assert height(4) == plots.LAYOUT["height"]          # two rows: the usual height
    assert height(12) == plots.LAYOUT["height"] + 4 * 20
