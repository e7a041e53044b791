"""The pieces of an experiment's report, for any task: results of the runs, mean ± std tables.

A spec reads its runs with :func:`load_results` (each run's ``eval.json`` and ``summary.json``)
and lays out tables of columns ``(header, getter, format, higher_is_better)``, a getter reading
a number from a run's ``eval.json`` dict (None: the metric does not apply to that run):

>>> rows = load_results(runs)                            # doctest: +SKIP
>>> order = [("aug", "FoldingNet-VAE + Aug (aug)"), ("cr", "CR-FoldingNet (cr)")]
>>> table(rows, order, [("SVM raw (%)", probe_accuracy("probe", "raw"), ".1f", True)])
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..train.engine import EVAL_FILE, SUMMARY_FILE

__all__ = [
    "Column",
    "cell",
    "compare",
    "comparison",
    "load_results",
    "no_spread",
    "per_seed",
    "probe_accuracy",
    "stats",
    "table",
    "train_seconds",
    "welch",
]

Getter = Callable[[dict[str, Any]], float | None]
Column = tuple[str, Getter, str, bool]  # (header, value from eval.json, format, higher is better)
Order = Sequence[tuple[str, str]]  # (run label, row name shown) in table order


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (the run has not finished or been evaluated; "
                                "rerun the experiment)") from None  # fmt: skip
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc


def load_results(runs: Sequence[Any], evaluated: bool = True) -> list[dict[str, Any]]:
    """One dict per run: ``{"run", "label", "seed", "eval", "summary"}``.

    Args:
        runs: :class:`crfold.experiments.runner.PlannedRun` (anything with ``run_dir``,
            ``label`` and ``seed``).
        evaluated: read ``eval.json`` too (else ``"eval"`` is None).

    Raises:
        FileNotFoundError: a run without its summary.json (or eval.json), named.
    """
    rows = []
    for run in runs:
        rows.append({
            "run": run,
            "label": run.label,
            "seed": run.seed,
            "eval": _read_json(run.run_dir / EVAL_FILE) if evaluated else None,
            "summary": _read_json(run.run_dir / SUMMARY_FILE),
        })  # fmt: skip
    return rows


def probe_accuracy(key: str, protocol: str, probe: str = "svm") -> Getter:
    """Getter of a probe's accuracy in percent from an eval.json dict; None where absent.

    Args:
        key: the entry, "probe", "probe_rotated_test" or "probe_rotated_both".
        protocol: "raw" or "standardized" (:data:`crfold.eval.probe.PROTOCOLS`).
        probe: "svm" or "logistic".

    Reads the layout ``{key: {protocol: {probe: {"accuracy"}}}}`` and the older flat one
    (``{"probe": {probe: {"accuracy", "standardize"}}}``, one protocol per file: the other one
    and the rotated probes are then None).
    """

    def get(e: dict[str, Any]) -> float | None:
        block = e.get(key)
        if not isinstance(block, dict):
            return None
        if protocol in block:
            res = block[protocol].get(probe)
        elif key == "probe" and probe in block:  # an eval.json from before both protocols
            res = block[probe]
            if bool(res.get("standardize", False)) != (protocol == "standardized"):
                res = None
        else:
            res = None
        return None if res is None else 100 * res["accuracy"]

    return get


def stats(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the values; NaN where undefined (no
    values, a None among them - a metric that does not apply - or, for the std, one value)."""
    if not values or any(v is None for v in values):
        return math.nan, math.nan
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def cell(mean: float, std: float, fmt: str) -> str:
    """``mean ± std`` in ``fmt``; no ± part for a NaN std; "n/a" for a NaN mean."""
    if math.isnan(mean):
        return "n/a"
    return f"{mean:{fmt}}" + ("" if math.isnan(std) else f" ± {std:{fmt}}")


def _values(rows: list[dict[str, Any]], label: str, get: Getter) -> list[float | None]:
    return [get(r["eval"]) for r in rows if r["label"] == label]


def table(rows: list[dict[str, Any]], order: Order, columns: Sequence[Column]) -> str:
    """A markdown table: one line per row of ``order``, mean ± std over its runs per column."""
    lines = ["| Model | " + " | ".join(c[0] for c in columns) + " |",
             "|" + "---|" * (len(columns) + 1)]  # fmt: skip
    for label, shown in order:
        cells = [cell(*stats(_values(rows, label, get)), fmt) for _, get, fmt, _ in columns]
        lines.append(f"| {shown} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def train_seconds(summary: dict[str, Any]) -> float:
    """Training time of a run over all its processes (older summaries: the last process)."""
    return float(summary.get("total_seconds", summary["seconds"]))


def per_seed(rows: list[dict[str, Any]], shown: dict[str, str], columns: Sequence[Column]) -> str:
    """A markdown table of every run: row name, seed, each column, training seconds."""
    lines = ["| Model | seed | " + " | ".join(c[0] for c in columns) + " | train s |",
             "|" + "---|" * (len(columns) + 3)]  # fmt: skip
    for r in rows:
        cells = [cell(stats([get(r["eval"])])[0], math.nan, fmt) for _, get, fmt, _ in columns]
        lines.append(f"| {shown.get(r['label'], r['label'])} | {r['seed']} | "
                     + " | ".join(cells) + f" | {train_seconds(r['summary']):.0f} |")  # fmt: skip
    return "\n".join(lines)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Welch's t statistic of mean(a) - mean(b), its degrees of freedom and two-sided p."""
    from scipy import stats as st

    with warnings.catch_warnings():  # one row constant over seeds (e.g. at chance): still valid
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        res = st.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.df), float(res.pvalue)


def no_spread(std: float, mean: float) -> bool:
    """A seed spread that is rounding only (identical values whose float mean is inexact)."""
    return std <= 1e-9 * max(1.0, abs(mean))


def compare(a: list, b: list, fmt: str, higher: bool) -> tuple[str, str, str] | None:
    """(difference, Welch's test, reading) of the values of row a against row b; None when
    the metric does not apply."""
    (ma, sa), (mb, sb) = stats(a), stats(b)
    if math.isnan(ma) or math.isnan(mb):
        return None
    diff = ma - mb
    if math.isnan(sa) or math.isnan(sb):
        return f"{diff:+{fmt}}", "n/a", "n/a: needs at least 2 seeds per row"
    if no_spread(sa, ma) and no_spread(sb, mb):
        reading = "identical over seeds" if diff == 0 else "no seed spread: cannot test"
        return f"{diff:+{fmt}}", "n/a", reading
    t, df, p = welch(a, b)
    test = f"t = {t:+.2f}, df = {df:.1f}, p = {p:.3f}"
    if p < 0.05:
        reading = f"{'better' if (diff > 0) == higher else 'worse'} (p < 0.05)"
    else:
        reading = f"no significant difference ({'higher' if diff > 0 else 'lower'})"
    return f"{diff:+{fmt}}", test, reading


def comparison(
    rows: list[dict[str, Any]],
    candidates: Order,
    baseline: tuple[str, str],
    columns: Sequence[Column],
    against: Sequence[Column] | None = None,
) -> str:
    """Each candidate row against the baseline row, per column: the difference of the means over
    seeds, the seed spreads, and Welch's t-test of the difference.

    Args:
        rows: :func:`load_results` rows.
        candidates: (label, shown name) of the rows compared.
        baseline: (label, shown name) of the row they are compared with.
        columns: the metrics.
        against: the baseline's metric each column is compared with, one per column (e.g. the
            standardized probe of the baseline for the raw probe of a row); None: the same
            column. A comparison of the baseline row with itself on the same metric is left out.
    """
    base, base_name = baseline
    against = columns if against is None else against
    if len(against) != len(columns):
        raise ValueError(f"against: expected {len(columns)} columns, got {len(against)}")
    out = []
    for label, shown in candidates:
        for (header, get, fmt, higher), (base_header, base_get, _, _) in zip(columns, against):
            if label == base and header == base_header:
                continue
            a, b = _values(rows, label, get), _values(rows, base, base_get)
            res = compare(a, b, fmt, higher)
            if res is not None:
                metric = header if header == base_header else f"{header} vs {base_header}"
                spread = f"{cell(stats(a)[1], math.nan, fmt)} / {cell(stats(b)[1], math.nan, fmt)}"
                out.append(f"| {shown} | {metric} | {res[0]} | {spread} | {res[1]} | {res[2]} |")
    head = [f"| Row | Metric | row − {base_name} | seed std row / {base_name} | Welch's t-test "
            "| reading |", "|---|---|---|---|---|---|"]  # fmt: skip
    return "\n".join(head + out)
