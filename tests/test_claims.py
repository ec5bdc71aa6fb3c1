import math

from workbook.claims import Claim, claims_table, verdict


def test_verdict_holds_within_tolerance():
    assert verdict(100.0, 110.0) == "holds"


def test_verdict_names_the_factor_and_direction():
    assert verdict(10.0, 5.0) == "off: measured 2× lower"
    assert verdict(10.0, 33.0) == "off: measured 3.3× higher"


def test_verdict_without_measurement():
    assert verdict(1.0, math.nan).startswith("n/a")


def test_verdict_of_an_infinite_number_is_na_not_a_crash():
    """Issue 23: verdict(inf, 1.0) raised ZeroDivisionError."""
    assert verdict(math.inf, 1.0) == "n/a (not a finite number)"
    assert verdict(1.0, -math.inf) == "n/a (not a finite number)"


def test_table_computes_verdicts():
    table = claims_table([Claim("x", "lecture", 2.0, 2.1), Claim("y", "paper", 5.0, 1.0)])
    assert table["verdict"].tolist() == ["holds", "off: measured 5× lower"]
