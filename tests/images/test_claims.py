"""crfold_images.claims: Welch's tests between rows and the verdict on the paper's orderings."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from crfold_images.claims import Claim, direction_section, pair_test, verdict, welch_table


def test_a_test_is_welchs_and_its_gain_follows_the_metrics_direction():
    values = {"a": [80.0, 81.0, 82.0], "b": [84.0, 86.0, 85.0]}
    t = pair_test(values, "a", "b", higher=False)  # an NLL: a is lower, so a is better
    assert t.diff == pytest.approx(-4.0) and t.gain == pytest.approx(4.0)
    expected = stats.ttest_ind(values["a"], values["b"], equal_var=False).pvalue
    assert t.p == pytest.approx(expected) and t.significant
    assert pair_test(values, "a", "b", higher=True).gain == pytest.approx(-4.0)
    # No spread in either row (also a rounding-only one: std([0.1] * 3) = 1.4e-17), one seed,
    # or no values: no p.
    assert math.isnan(pair_test({"a": [50, 50], "b": [50, 50]}, "a", "b", True).p)
    assert math.isnan(pair_test({"a": [0.7] * 3, "b": [0.1] * 3}, "a", "b", True).p)
    assert math.isnan(pair_test({"a": [1.0], "b": [2.0, 3.0]}, "a", "b", True).p)
    assert math.isnan(pair_test({"a": [None], "b": [2.0, 3.0]}, "a", "b", True).diff)
    with pytest.raises(KeyError, match="'c'"):
        pair_test(values, "a", "c", True)


def test_verdicts_hold_in_the_means_significantly_or_not_at_all():
    claim = Claim("iw_nll", "NLL", False, ("CR", "Aug", "base"))
    clear = {"CR": [80.0, 80.2, 80.1], "Aug": [82.0, 82.1, 82.3], "base": [84.0, 84.2, 84.1]}
    v = verdict(claim, clear)
    assert v.holds and v.significant and len(v.tests) == 3
    assert "NLL (lower is better): CR > Aug > base: **holds**, every pair significant" in v.line
    noisy = {"CR": [80.0, 84.0, 82.0], "Aug": [82.0, 83.0, 84.0], "base": [84.0, 84.2, 84.1]}
    v = verdict(claim, noisy)
    assert v.status == "means" and v.holds and "not significant: CR vs Aug" in v.line
    wrong = {**clear, "CR": [83.0, 83.1, 83.2]}
    v = verdict(claim, wrong)
    assert v.status == "fails" and "**does not hold**: CR not better than Aug" in v.line
    tied = {"CR": [50, 50], "Aug": [50, 50]}
    v = verdict(Claim("au", "AU", True, ("CR", "Aug")), tied)
    assert v.status == "tied" and not v.holds and "**tied**: CR = Aug" in v.line
    v = verdict(claim, clear, flagged=lambda row: "chance" if row == "base" else None)
    assert v.status == "cannot_tell" and "**cannot tell**, flagged: base (chance)" in v.line
    v = verdict(claim, {**clear, "Aug": [None, None]})
    assert v.status == "cannot_tell" and "a row has no values" in v.line
    # One seed, or rows without spread: the means may follow the claim, but nothing is tested.
    v = verdict(claim, {"CR": [80.0], "Aug": [82.0], "base": [84.0]})
    assert v.status == "untested" and v.holds and not v.significant
    assert "**holds in the means**, untested (no p): CR vs Aug, CR vs base, Aug vs base" in v.line
    v = verdict(Claim("au", "AU", True, ("CR", "Aug")), {"CR": [0.7] * 3, "Aug": [0.1] * 3})
    assert v.status == "untested"
    with pytest.raises(ValueError, match="distinct"):
        Claim("au", "AU", True, ("CR", "CR"))


def test_the_welch_table_has_one_column_per_reference_role():
    values = {"probe": {"VAE": [0.8, 0.81], "Aug": [0.85, 0.86], "CR": [0.9, 0.91]}}
    text = welch_table([("Aug", {"base": "VAE"}), ("CR", {"base": "VAE", "+ Aug": "Aug"})],
                       values.get, [("probe", "Acc.", True, 2)])  # fmt: skip
    lines = text.splitlines()
    assert lines[0] == "| Row | Metric | − base | − + Aug |"
    assert lines[2].startswith("| Aug | Acc. | +0.05 (p = ") and lines[2].endswith(" |  |")
    assert lines[3].startswith("| CR | Acc. | +0.10 (p = ")


def test_the_section_counts_verdicts_by_status_and_warns_of_uncorrected_tests():
    claim = Claim("au", "AU", True, ("CR", "base"))
    verdicts = [
        verdict(claim, {"CR": [3.0, 4.0], "base": [1.0, 1.5]}),
        verdict(claim, {"CR": [1.0, 1.0], "base": [1.0, 1.0]}),
        verdict(claim, {"CR": [1.0, 2.0], "base": [3.0, 4.0]}),
    ]
    assert [v.status for v in verdicts] == ["means", "tied", "fails"]
    welch = "| Row | Metric | − base |\n|:---|---:|\n| CR | AU | +1 |\n| CR | MI | +2 |\n"
    text = direction_section("CR beats base", verdicts, welch)
    assert ("The paper: CR beats base. Here, of 3 claims: 1 hold in the means only (some pair "
            "not significant); 1 are tied; 1 do not hold.") in text  # fmt: skip
    assert "The 2 rows below are separate tests, uncorrected" in text and text.endswith(welch)
