"""crfold_images.caveats: which numbers are flagged, and the sentences every evaluation carries."""

from __future__ import annotations

import math

import pytest

from crfold_images.caveats import (
    CEILING_MARGIN,
    FLAG_TEXT,
    caveats,
    chance_accuracy,
    flag,
    flags,
    probe_at_chance,
    standing_caveats,
)
from crfold_images.report import format_caveats, marked

MNIST = {"num_classes": 10, "n_test": 10_000, "mi_batch_size": 10_000, "likelihood": "bernoulli"}


def test_probe_at_or_below_chance_is_flagged_with_two_standard_errors_of_margin():
    assert chance_accuracy(10) == pytest.approx(0.1)
    margin = 2 * math.sqrt(0.1 * 0.9 / 10_000)  # 0.006
    assert probe_at_chance(0.1, 10, 10_000) and probe_at_chance(0.05, 10, 10_000)
    assert probe_at_chance(0.1 + 0.99 * margin, 10, 10_000)
    assert not probe_at_chance(0.1 + 1.01 * margin, 10, 10_000)
    assert flag("probe_accuracy", 0.101, MNIST) == "chance"
    assert flag("probe_accuracy", 0.9, MNIST) is None
    # few test images: a wider margin (0.25 + 2 * sqrt(0.1875 / 40) = 0.387 for 4 classes)
    assert flag("probe_accuracy", 0.38, {"num_classes": 4, "n_test": 40}) == "chance"
    assert flag("probe_accuracy", 0.40, {"num_classes": 4, "n_test": 40}) is None
    assert flag("probe_accuracy", 0.1, {}) is None  # no classes known: nothing to say
    with pytest.raises(ValueError, match="num_classes"):
        chance_accuracy(1)


def test_mi_at_or_below_zero_or_at_its_ceiling_is_flagged():
    assert flag("mi", 0.0, MNIST) == "chance" and flag("mi", -0.3, MNIST) == "chance"
    assert flag("mi", 5.0, MNIST) is None
    ceiling = math.log(10_000)
    assert flag("mi", ceiling - CEILING_MARGIN / 2, MNIST) == "ceiling"
    assert flag("mi", ceiling + 0.02, MNIST) == "ceiling"  # one draw's noise can overshoot
    assert flag("mi", ceiling - 2 * CEILING_MARGIN, MNIST) is None
    assert flag("mi", 3.0, {"mi_batch_size": 20}) == "ceiling"  # log 20 = 3.0
    assert flag("mi", 3.0, {}) is None  # B unknown: only the sign is checked


def test_no_active_unit_and_gaussian_densities_are_flagged():
    assert flag("au", 0, MNIST) == "collapsed" and flag("active_units", 0, {}) == "collapsed"
    assert flag("au", 3, MNIST) is None
    assert flag("iw_nll", 85.0, MNIST) is None
    assert flag("iw_nll", -1200.0, {"likelihood": "gaussian"}) == "density"
    assert flag("neg_elbo", 90.0, {"likelihood": "logistic"}) is None
    assert flag("consistency_kl", 0.0, MNIST) is None  # not a metric that can be at chance
    assert flag("mi", float("nan"), MNIST) is None and flag("mi", None, MNIST) is None


def test_flags_and_caveats_of_a_too_short_run():
    result = {**MNIST, "mi": -0.02, "au": 0, "probe_accuracy": 0.098, "iw_nll": 540.0,
              "rate": 0.01, "n_test": 10_000}  # fmt: skip
    assert flags(result) == {"probe_accuracy": "chance", "mi": "chance", "au": "collapsed"}
    lines = caveats(result)
    assert lines[0] == "probe_accuracy = 0.098: " + FLAG_TEXT["chance"]
    assert FLAG_TEXT["chance"] == "at/below chance: run too short to show anything"
    assert any("log B = 9.21 nats" in c and "124.5" in c for c in lines)
    assert any(c.startswith("rate = E[KL(q(z|x) || p(z))]") for c in lines)
    assert lines[len(flags(result)) :] == standing_caveats(result)
    text = format_caveats({"caveats": lines})
    assert text.startswith("what these numbers can and cannot show:\n  - probe_accuracy")
    assert format_caveats({"caveats": []}) == "" and format_caveats({}) == ""


def test_a_healthy_run_has_only_standing_caveats_and_colour_ones_speak_of_bits_per_dim():
    good = {**MNIST, "mi": 7.5, "au": 30, "probe_accuracy": 0.95, "iw_nll": 90.0}
    assert flags(good) == {}
    assert caveats(good) == standing_caveats(good) and len(caveats(good)) == 1  # the MI's
    colour = {"likelihood": "logistic", "data_dims": 3072, "iw_nll": 9000.0}
    assert any("bits/dim" in c and "3072" in c for c in caveats(colour))
    assert not any("bits/dim" in c for c in caveats({**colour, "likelihood": "bernoulli"}))
    assert caveats({}, seeds=1) == ["one seed: no spread, differences between rows may be noise"]


def test_cells_carry_their_flag():
    assert marked("10.1 ± 0.2", "chance") == "10.1 ± 0.2 (chance)"
    assert marked("10.1 ± 0.2", None) == "10.1 ± 0.2" and marked("-", "chance") == "-"
