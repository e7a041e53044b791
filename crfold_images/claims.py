"""The paper's direction, tested: Welch's t-tests between table rows and one verdict per claim.

A table's rows hold one value per seed for each metric. The paper reads its tables as
orderings ("CR-VAE > VAE + Aug > VAE in probe accuracy"); a :class:`Claim` states one such
ordering (rows best first) and :func:`verdict` says whether the means here follow it, and
whether every step of it is significant (Welch's two-sided t-test, p < :data:`ALPHA`).
:func:`welch_table` lays out the tests of rows against their references (base, + Aug).

>>> values = {"CR": [0.92, 0.93, 0.92], "Aug": [0.91, 0.915, 0.91], "base": [0.9, 0.89, 0.895]}
>>> claim = Claim("probe_accuracy", "probe %", True, ("CR", "Aug", "base"))
>>> verdict(claim, values).holds
True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from crfold.experiments.report import no_spread, welch
from crfold_images.report import markdown_table

__all__ = [
    "ALPHA",
    "STATUSES",
    "Claim",
    "Test",
    "Verdict",
    "direction_section",
    "pair_test",
    "verdict",
    "welch_table",
]

ALPHA = 0.05  # significance level of every test in the image reports


@dataclass(frozen=True)
class Claim:
    """An ordering the paper reads in a table: ``order`` holds row names, best first.

    Attributes:
        metric: the key of the values (an eval.json key such as ``probe_accuracy``).
        name: the metric as shown (``"probe %"``).
        higher: whether higher is better (False for an NLL).
        order: the rows, best first; every row must be better than each row after it.
    """

    metric: str
    name: str
    higher: bool
    order: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.order) < 2 or len(set(self.order)) != len(self.order):
            raise ValueError(f"order: expected >= 2 distinct rows, got {self.order}")


@dataclass(frozen=True)
class Test:
    """Row ``a`` against row ``b`` on one metric: the difference of the means over seeds
    (a - b), ``gain`` (the difference signed so that > 0 means ``a`` is better), Welch's p
    (NaN when it cannot be computed: fewer than 2 seeds in a row, or no spread in either)."""

    a: str
    b: str
    diff: float
    gain: float
    p: float

    @property
    def significant(self) -> bool:
        return not math.isnan(self.p) and self.p < ALPHA

    def text(self, digits: int = 2) -> str:
        """``"+1.23 (p = 0.004)"``."""
        p = "p n/a" if math.isnan(self.p) else f"p = {self.p:.3f}"
        return f"{self.diff:+.{digits}f} ({p})"


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)


def pair_test(values: Mapping[str, Sequence[float | None]], a: str, b: str, higher: bool) -> Test:
    """Welch's test of row ``a`` against row ``b`` (missing or non-finite values left out).

    Raises:
        KeyError: a row without values (named).
    """
    for row in (a, b):
        if row not in values:
            raise KeyError(f"row {row!r}: no values (rows: {sorted(values)})")
    va, vb = _finite(values[a]), _finite(values[b])
    if va.size == 0 or vb.size == 0:
        return Test(a, b, math.nan, math.nan, math.nan)
    diff = float(va.mean() - vb.mean())
    p = math.nan
    spread = [not no_spread(float(v.std()), float(v.mean())) for v in (va, vb)]
    if va.size >= 2 and vb.size >= 2 and any(spread):
        p = welch(va, vb)[2]
    return Test(a, b, diff, diff if higher else -diff, p)


STATUSES = {  # Verdict.status -> how the report's summary counts it
    "significant": "hold, every pair significant",
    "means": "hold in the means only (some pair not significant)",
    "untested": "hold in the means, untested (1 seed or no spread: no p)",
    "tied": "are tied",
    "fails": "do not hold",
    "cannot_tell": "cannot be told (a row flagged or without values)",
}


@dataclass(frozen=True)
class Verdict:
    """What the values say about a claim.

    Attributes:
        status: a key of :data:`STATUSES`: ``significant`` (every step of the ordering holds in
            the means and every pair, each row against each row after it, has p < ALPHA),
            ``means`` (it holds in the means, some pair is not significant), ``untested`` (it
            holds in the means, some pair has no p: one seed, or no spread in either row),
            ``tied`` (equal means break it), ``fails``, ``cannot_tell`` (a row is flagged or has
            no values).
        tests: every pair, in the claim's order.
        line: one sentence for the report.
    """

    status: str
    tests: tuple[Test, ...]
    line: str

    @property
    def holds(self) -> bool:
        """Every step of the ordering holds in the means."""
        return self.status in ("significant", "means", "untested")

    @property
    def significant(self) -> bool:
        return self.status == "significant"


def verdict(
    claim: Claim,
    values: Mapping[str, Sequence[float | None]],
    flagged: Callable[[str], str | None] | None = None,
) -> Verdict:
    """Whether ``values`` ({row: per-seed values}) follow ``claim``.

    Args:
        claim: the ordering.
        values: the per-seed values of every row of the claim.
        flagged: row -> the flag of its mean (:mod:`crfold_images.caveats`), or None; a
            flagged row makes the claim untestable ("cannot tell").
    """
    order = claim.order
    tests = tuple(
        pair_test(values, order[i], order[j], claim.higher)
        for i in range(len(order))
        for j in range(i + 1, len(order))
    )
    steps = [t for t in tests if order.index(t.b) == order.index(t.a) + 1]
    better = "higher" if claim.higher else "lower"
    stated = f"{claim.name} ({better} is better): {' > '.join(order)}"
    flags = {row: flagged(row) for row in order} if flagged is not None else {}
    bad = {row: f for row, f in flags.items() if f}
    detail = "; ".join(f"{t.a} vs {t.b} {t.text()}" for t in tests)
    if bad:
        why = ", ".join(f"{row} ({f})" for row, f in bad.items())
        return Verdict("cannot_tell", tests, f"{stated}: **cannot tell**, flagged: {why}")
    if any(math.isnan(t.gain) for t in tests):
        return Verdict("cannot_tell", tests, f"{stated}: **cannot tell**, a row has no values")
    if all(t.gain > 0 for t in steps):
        untested = [f"{t.a} vs {t.b}" for t in tests if math.isnan(t.p)]
        weak = [f"{t.a} vs {t.b}" for t in tests if not math.isnan(t.p) and not t.significant]
        if untested:
            status = "untested"
            reading = f"**holds in the means**, untested (no p): {', '.join(untested)}"
        elif weak:
            status, reading = "means", f"**holds in the means**, not significant: {', '.join(weak)}"
        else:
            status, reading = "significant", "**holds**, every pair significant"
    else:
        broken = [t for t in steps if t.gain <= 0]
        status = "tied" if all(t.gain == 0 for t in broken) else "fails"
        what = ", ".join(f"{t.a} {'=' if t.gain == 0 else 'not better than'} {t.b}"
                         for t in broken)  # fmt: skip
        reading = f"**{'tied' if status == 'tied' else 'does not hold'}**: {what}"
    return Verdict(status, tests, f"{stated}: {reading} ({detail})")


def direction_section(reading: str, verdicts: Sequence[Verdict], welch: str) -> str:
    """The report sections of a table's claims and tests: "The paper's direction" (a summary
    line counting the verdicts by status, then one line per claim) and "Welch's t-tests
    against base and + Aug" (``welch``, a :func:`welch_table`).

    Args:
        reading: the paper's reading of the table, in words.
        verdicts: one per claim.
        welch: the markdown table of the tests.
    """
    counts = [(n, text) for status, text in STATUSES.items()
              if (n := sum(v.status == status for v in verdicts))]  # fmt: skip
    tally = "; ".join(f"{n} {text}" for n, text in counts) or "no claims"
    tests = welch.count("\n") - 2
    return "".join([
        f"\n## The paper's direction\n\nThe paper: {reading}. Here, of {len(verdicts)} "
        f"claims: {tally}.\n\n",
        "\n".join(f"- {v.line}" for v in verdicts),
        "\n\n## Welch's t-tests against base and + Aug\n\n",
        "Difference of the means over seeds (row − reference) and Welch's two-sided p; "
        f"'better' / 'worse' where p < {ALPHA}. The {tests} rows below are separate tests, "
        f"uncorrected: at p < {ALPHA} about 1 in 20 true nulls reads as a difference.\n\n",
        welch,
    ])  # fmt: skip


def welch_table(
    comparisons: Sequence[tuple[str, Mapping[str, str]]],
    values: Callable[[str], Mapping[str, Sequence[float | None]]],
    metrics: Sequence[tuple[str, str, bool, int]],
) -> str:
    """A markdown table of rows against their references (base, + Aug), per metric.

    Args:
        comparisons: ``(row, {role: reference row})``, e.g.
            ``("CR-VAE", {"base": "VAE", "+ Aug": "VAE + Aug"})``; one column per role.
        values: metric key -> {row: per-seed values}.
        metrics: ``(key, name, higher is better, digits)``.

    Each cell reads ``diff (p = ...)``: the difference of the means over seeds (row minus
    reference) and Welch's two-sided p; a significant one (p < ALPHA) is marked "better" or
    "worse".
    """
    roles = list(dict.fromkeys(role for _, refs in comparisons for role in refs))
    rows = []
    for row, refs in comparisons:
        for key, name, higher, digits in metrics:
            vals = values(key)
            if row not in vals:
                continue
            cells = []
            for role in roles:
                ref = refs.get(role)
                if ref is None or ref not in vals:
                    cells.append("")
                    continue
                t = pair_test(vals, row, ref, higher)
                mark = (" better" if t.gain > 0 else " worse") if t.significant else ""
                cells.append("n/a" if math.isnan(t.diff) else t.text(digits) + mark)
            rows.append([row, name, *cells])
    header = ["Row", "Metric"] + [f"− {role}" for role in roles]
    return markdown_table(header, rows)
