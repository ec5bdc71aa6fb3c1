import math

import pandas as pd
import pytest

from workbook import claims
from workbook.claims import NO_INTERVAL, Claim, claims_table, verdict
from workbook.config import WorkbookError


def test_verdict_holds_within_tolerance():
    assert verdict(100.0, 110.0) == "holds"


def test_verdict_names_the_factor_and_direction():
    assert verdict(10.0, 5.0) == "off: measured 2× lower"
    assert verdict(10.0, 33.0) == "off: measured 3.3× higher"


def test_verdict_without_measurement():
    assert verdict(1.0, math.nan).startswith("n/a")


def test_verdict_of_an_infinite_number_is_one_line_not_a_crash():
    """Issue 23: verdict(inf, 1.0) raised ZeroDivisionError; now one line naming what is
    allowed (issue 20's contract for every public function)."""
    import pytest

    from workbook.config import WorkbookError

    for args in ((math.inf, 1.0), (1.0, -math.inf)):
        with pytest.raises(WorkbookError, match="allowed: a finite number"):
            verdict(*args)


def test_table_computes_verdicts():
    table = claims_table([Claim("x", "lecture", 2.0, 2.1), Claim("y", "paper", 5.0, 1.0)])
    assert table["verdict"].tolist() == ["holds", "off: measured 5× lower"]


def test_an_interval_decides_where_the_measurement_has_one():
    # Chinchilla's a = 0.49 against a bootstrap interval: inside holds, outside is off.
    assert verdict(0.49, 0.45, interval=(0.35, 0.51)) == "holds (0.49 inside [0.35, 0.51])"
    assert verdict(0.73, 0.45, interval=(0.35, 0.51)) == (
        "off: 0.73 lies above the measured [0.35, 0.51]")
    # the ratio alone would have said "holds" (0.45 is within 15 % of 0.49)
    assert verdict(0.49, 0.45) == "holds"
    assert verdict(0.49, 0.45, interval=(0.40, 0.47)).startswith("off")


def test_a_zero_prediction_is_judged_by_its_stated_absolute_tolerance():
    # 06: GPipe's bubble at p = 1 is 0; a measured 0.000335 is agreement, not "one side is zero"
    assert verdict(0.0, 0.000335, rel_tol=0.25, abs_tol=0.02) == "holds (|Δ| = 0.00034 ≤ 0.02)"
    assert verdict(0.0, 0.05, rel_tol=0.25, abs_tol=0.02) == "off: |Δ| = 0.05 > 0.02"


def test_bounds_and_signs():
    assert verdict(40.0, 41.2, kind="at_least") == "holds (41.2 ≥ 40)"
    assert verdict(40.0, 38.2, kind="at_least") == "missed: 38.2 < 40"
    assert verdict(600.0, 412.0, kind="at_most") == "holds (412 ≤ 600)"
    assert verdict(1.0, -1.0) == "wrong (opposite signs)"


def test_table_states_each_claims_rule():
    table = claims_table([Claim("a", "paper", 0.49, 0.45, low=0.35, high=0.51),
                          Claim("t", "issue", 600.0, 700.0, "s", kind="at_most"),
                          Claim("x", "lecture", 2.0, 2.1)])
    assert table["holds if"].tolist() == [
        "claimed value inside the measured interval", "≤ 600", "within 15%"]
    assert table["verdict"].tolist()[1] == "missed: 700 > 600"
    assert {"low", "high"} <= set(table.columns)
    # the rule as the verdict applies it: a tight tolerance in its own digits, and no ratio
    # against a prediction of zero (only the absolute tolerance judges there)
    rules = claims_table([Claim("tight", "paper", 2.0, 2.0, rel_tol=0.001),
                          Claim("zero", "lecture", 0.0, 3e-4, rel_tol=0.15, abs_tol=1e-3),
                          Claim("exact", "lecture", 5.0, 5.0, rel_tol=0.0)])["holds if"]
    assert rules.tolist() == ["within 0.1%", "within ±0.001", "equal"]


def test_where_label_names_this_machine_or_the_recording():
    import pandas as pd

    from workbook.results import where_label

    live = pd.DataFrame({"source": ["measured"], "device": ["NVIDIA H200"]})
    assert where_label(live) == "this machine (NVIDIA H200)"
    rec = pd.DataFrame({"source": ["recorded"], "device": ["NVIDIA H100"], "n_gpus": [1],
                        "recorded_at": ["2026-11-22T10:00:00Z"], "seed": [0]})
    assert where_label(rec) == "recorded on NVIDIA H100 ×1, 2026-11-22, seed 0"
    assert where_label(pd.DataFrame()) == "no rows yet"


def test_a_direction_claim_inside_its_noise_is_inconclusive():
    # Issue 19: 09's "answer-only gives more exact answers: holds" rested on 0.695 vs 0.691,
    # one seed, 256 items. With the noise stated, that gap is no verdict either way.
    assert verdict(0.691, 0.695, abs_tol=0.08, kind="at_least") == (
        "inconclusive: |Δ| = 0.004 ≤ 0.08 (within noise)")
    assert verdict(0.5, 0.7, abs_tol=0.08, kind="at_least") == "holds (by 0.2 > 0.08)"
    assert verdict(0.5, 0.3, abs_tol=0.08, kind="at_least") == "wrong: the other way, by 0.2"
    assert verdict(0.51, 0.48, abs_tol=0.01, kind="at_most") == "holds (by 0.03 > 0.01)"
    row = claims_table([Claim("a beats b", "lecture", 0.691, 0.695, abs_tol=0.08,
                              kind="at_least")]).iloc[0]
    assert row["holds if"] == "above 0.691 by more than 0.08 (noise)"


def test_claims_table_shows_where_in_full_and_numbers_in_fixed_notation():
    # Issue 19: the `where` column was cut at 50 characters ("2026-11-..."), and 3.15e+23
    # is not how a reader writes a number.
    from workbook.claims import readable

    where = "recorded on NVIDIA H100 80GB HBM3 ×1, 2026-11-22, seed 0 (a long provenance)"
    table = claims_table([Claim("GPT-3 FLOPs", "lecture", 3.15e23, 3.14e23, "FLOPs", where),
                          Claim("ratio", "lecture", 2.0, 0.000335),
                          Claim("tiny", "lecture", 1.0, 0.0000335)])
    html = table._repr_html_()
    assert where in html and "3.15×10²³" in html and "e+23" not in html
    # one number, one way in table and verdict: fixed down to 10⁻⁴ (11's -8.28×10⁻⁴ beside
    # a verdict's 0.00083), powers of ten below; rounded as printed (3.645e25 gave 3.64×10²⁵)
    assert "0.000335" in html and "3.35×10⁻⁵" in html
    assert readable(3.645e25) == "3.65×10²⁵" and readable(-8.28e-4) == "-0.000828"
    assert type(table[table["verdict"] == "holds"]).__name__ == "ClaimsTable"
    assert [readable(v) for v in (1979, 0.0956, 4194304, math.nan)] == [
        "1,979", "0.0956", "4,194,304", ""]


def test_a_bound_with_an_interval_holds_only_when_the_whole_interval_clears_it():
    # Issue 19: "answer-only beats whole-sequence" judged on the paired difference over seeds
    # (its 95 % interval), against 0: inside is no verdict, either side is one.
    import pytest

    from workbook.config import WorkbookError

    assert verdict(0.0, 0.004, interval=(-0.07, 0.08), kind="at_least") == (
        "inconclusive: 0 inside [-0.07, 0.08] (the data cannot tell)")
    assert verdict(0.0, 0.05, interval=(0.01, 0.09), kind="at_least") == (
        "holds ([0.01, 0.09] lies above 0)")
    assert verdict(0.0, -0.05, interval=(-0.09, -0.01), kind="at_least") == (
        "wrong: the other way ([-0.09, -0.01] lies below 0)")
    assert verdict(0.0, -0.05, interval=(-0.09, -0.01), kind="at_most") == (
        "holds ([-0.09, -0.01] lies below 0)")
    # the interval decides, not the measured mean alone (0.05 ≥ 0 would say "holds")
    assert verdict(0.0, 0.05, kind="at_least").startswith("holds")
    assert verdict(0.0, 0.05, interval=(-0.01, 0.11), kind="at_least").startswith("inconclusive")
    # without an interval a bound is judged as before
    assert verdict(40.0, 41.2, kind="at_least") == "holds (41.2 ≥ 40)"
    with pytest.raises(WorkbookError, match="low <= high"):
        verdict(0.0, 0.05, interval=(0.09, 0.01), kind="at_least")
    row = claims_table([Claim("a beats b", "lecture", 0.0, 0.05, low=0.01, high=0.09,
                              kind="at_least")]).iloc[0]
    assert row["holds if"] == "the measured interval lies wholly above 0"
    assert row["verdict"] == "holds ([0.01, 0.09] lies above 0)"


def test_a_large_or_tiny_bound_reads_in_fixed_notation():
    from workbook.claims import fixed, readable

    assert verdict(0.0, 3e-5, interval=(1e-5, 5e-5), kind="at_least") == (
        "holds ([1×10⁻⁵, 5×10⁻⁵] lies above 0)")
    assert [fixed(v) for v in (0.0123, 2.5e9, 41.2, 999.6, -3.4e-5)] == [
        "0.0123", "2.5×10⁹", "41.2", "1,000", "-3.4×10⁻⁵"]
    # an ordinary number in fixed notation, never 1.23×10³ or 1.2e+03 (issue 19)
    assert [fixed(v) for v in (1234.5, 123456.0, -2048.0, 0.00456, 9.99e6)] == [
        "1,234", "123,456", "-2,048", "0.00456", "9,990,000"]
    assert [readable(v) for v in (9999.7, 999.7, 0.001)] == ["10,000", "999.7", "0.001"]
    # every rule's numbers: a budget of 4 TB, a tiny zero-prediction gap, a large factor
    assert verdict(4e12, 3.2e12, kind="at_most") == "holds (3.2×10¹² ≤ 4×10¹²)"
    assert verdict(0.0, 3.4e-5, abs_tol=1e-4) == "holds (|Δ| = 3.4×10⁻⁵ ≤ 0.0001)"
    assert verdict(1.0, 2.5e4) == "off: measured 25,000× higher"
    assert verdict(600.0, 1234.5, kind="at_most") == "missed: 1,234 > 600"


def test_claims_table_text_shows_where_in_full():
    where = "recorded on NVIDIA H100 80GB HBM3 ×1, 2026-11-22, seed 0,1,2 (a long provenance)"
    text = repr(claims_table([Claim("GPT-3 FLOPs", "lecture", 3.15e23, 3.14e23, "FLOPs",
                                    where)]))
    assert where in text and "3.15×10²³" in text and "..." not in text


def test_the_prose_under_a_claims_table_is_printed_from_it():
    table = claims_table([Claim("HBM traffic 10x lower", "paper", 10.0, 9.1, "×", "this machine"),
                          Claim("speed-up", "lecture", 5.0, float("nan"), "×", "nowhere")])
    text = claims.caption(table)
    assert text.splitlines()[0] == ("* **HBM traffic 10x lower**: holds. Measured 9.1 × "
                                    "against 10 × (this machine).")
    assert "Not measured (nowhere)" in text.splitlines()[1]
    with pytest.raises(WorkbookError, match="allowed: a claims_table"):
        claims.caption(pd.DataFrame({"x": [1]}))


def test_a_zero_prediction_with_a_stated_tolerance_is_judged_by_it():
    # 06: a one-stage pipeline's wall-clock idle is 0 by the formula; 0.067 measured on a busy
    # CPU is off by the claim's ±0.02, not "one side is zero".
    assert verdict(0.0, 0.067, abs_tol=0.02) == "off: |Δ| = 0.067 > 0.02"
    assert verdict(0.0, 0.01, abs_tol=0.02) == "holds (|Δ| = 0.01 ≤ 0.02)"
    assert verdict(0.0, 0.067) == "wrong (one side is zero)"  # no tolerance stated


def test_a_claim_that_needs_an_interval_has_no_verdict_without_one():
    one_seed = Claim("A beats B", "lecture", 0.0, -0.03, "nats", "here", kind="at_most",
                     needs_interval=True)
    seeds = Claim("A beats B", "lecture", 0.0, -0.03, "nats", "here", kind="at_most",
                  low=-0.05, high=-0.01, needs_interval=True)
    table = claims_table([one_seed, seeds])
    assert table["verdict"].iloc[0] == NO_INTERVAL
    assert verdict(0.0, -0.03, kind="at_most", needs_interval=True) == NO_INTERVAL
    assert table["verdict"].iloc[1].startswith("holds")
    assert "interval" in table["holds if"].iloc[0] and "needs_interval" not in table.columns
    with pytest.raises(WorkbookError, match="needs_interval"):
        Claim("x", "y", 0.0, 1.0, needs_interval="yes")


def test_claim_words_are_escaped_in_html():
    table = claims_table([Claim("stage 1 < stage 0 <b>", "paper: None < ZeRO-1", 1.0, 1.0)])
    html = table._repr_html_()
    assert "None &lt; ZeRO-1" in html and "&lt;b&gt;" in html and "<b>" not in html


def test_a_near_miss_of_a_tight_tolerance_says_how_near():
    """'off: measured 1× higher' read as a contradiction: the difference is printed instead."""
    assert claims.verdict(100, 100.5, rel_tol=0.001) == "off: |Δ| = 0.5, 0.5% higher"
    assert claims.verdict(100, 250) == "off: measured 2.5× higher"
    # 08's loss-scale row: 0.891 against 1.0 had read "1.1× lower", hiding an 11 % shortfall
    assert claims.verdict(1.0, 0.891, rel_tol=0.05) == "off: |Δ| = 0.11, 10.9% lower"
    assert claims.verdict(100, 149, rel_tol=0.1) == "off: |Δ| = 49, 49.0% higher"
    assert claims.verdict(100, 160, rel_tol=0.1) == "off: measured 1.6× higher"


def test_a_claim_without_an_interval_shows_a_dash_not_a_blank():
    # 04's and 10's claims tables on the H200: low/high blank in 8 of 10 rows read as lost values
    table = claims.claims_table([
        claims.Claim("with interval", "src", 1.0, 1.0, "x", "here", low=0.9, high=1.1),
        claims.Claim("without", "src", 1.0, 1.0, "x", "here")])
    text, html = repr(table), table._repr_html_()
    assert "–" in text.splitlines()[2] and "0.9" in text.splitlines()[1]
    assert html.count(">–<") == 2


def test_readable_tables_shows_the_middle_of_a_long_table():
    import pandas as pd

    from workbook import widgets
    with pd.option_context("display.max_rows", 60):
        widgets.readable_tables()
        assert pd.get_option("display.max_rows") >= 100, "06's 81-row table was cut in the middle"


def test_dashed_says_what_is_missing_and_leaves_the_numbers():
    import pandas as pd

    from workbook import results
    table = pd.DataFrame({"a": [1.0, float("nan")], "b": [2.0, 3.0]})
    shown = results.dashed(table, {"a": "– (not published)"})
    assert shown["a"].tolist() == [1.0, "– (not published)"] and shown["b"].tolist() == [2.0, 3.0]
    assert table["a"].isna().sum() == 1, "the table itself keeps its NaN to compute on"
    assert results.dashed(table.fillna(0)).equals(table.fillna(0))


def test_a_bound_no_outcome_could_clear_says_so():
    # 10's over-refusal: 24 requests, none refused before or after, still bound the change at
    # 0.107, above the 0.1 the claim allows: inconclusive, and why
    from workbook.claims import Claim, judge

    stuck = Claim("no more refusals", "test", 0.1, 0.0, "share", low=-0.107, high=0.107,
                  kind="at_most", best_bound=0.107)
    assert judge(stuck).startswith("inconclusive: this test cannot resolve 0.1; even its "
                                   "best case bounds it at 0.107"), judge(stuck)
    enough = Claim("no more refusals", "test", 0.1, 0.0, "share", low=-0.107, high=0.107,
                   kind="at_most", best_bound=0.05)
    assert judge(enough) == "inconclusive: 0.1 inside [-0.107, 0.107] (the data cannot tell)"
    worse = Claim("no more refusals", "test", 0.1, 0.5, "share", low=0.3, high=0.7,
                  kind="at_most", best_bound=0.107)
    assert judge(worse).startswith("wrong"), "a clear miss is shown whatever the best case"
    low_side = Claim("gains", "test", 0.0, 0.01, "share", low=-0.02, high=0.04,
                     kind="at_least", best_bound=-0.01)
    assert "cannot resolve 0" in judge(low_side)
