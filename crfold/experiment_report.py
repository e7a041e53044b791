"""The report of ``crfold experiment table9``: markdown tables (mean +- std over seeds) and plots.

``report.md`` holds the Table-9-style table (linear-SVM accuracy and Chamfer), the representation
metrics (logistic probe, MI, active units), the latent consistency per transform family, the
per-seed numbers, a computed comparison of CR against the "+ Aug" baseline (Welch's t-test over
seeds), the budget, and three figures (:mod:`crfold.experiment_plots`): training curves, the
Figure-1 analogue and reconstructions.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import atomic_write_text
from .eval_run import EVAL_FILE, FAMILIES
from .experiment_plots import plot_curves, plot_figure1, plot_reconstructions

__all__ = ["format_eval", "write_report"]

Getter = Callable[[dict[str, Any]], float]
# (column label, value from eval.json, format, higher is better)
MAIN: list[tuple[str, Getter, str, bool]] = [
    ("Linear SVM acc. (%)", lambda e: 100 * e["probe"]["svm"]["accuracy"], ".1f", True),
    ("Chamfer, FoldingNet (sqrt, max)", lambda e: e["reconstruction"]["chamfer_foldingnet"],
     ".4f", False),
    ("Chamfer, squared sum", lambda e: e["reconstruction"]["chamfer_squared"], ".4f", False),
]  # fmt: skip
REPRESENTATION: list[tuple[str, Getter, str, bool]] = [
    ("Logistic acc. (%)", lambda e: 100 * e["probe"]["logistic"]["accuracy"], ".1f", True),
    ("MI (nats)", lambda e: e["mutual_information"]["nats"], ".2f", True),
    ("Active units", lambda e: e["active_units"]["count"], ".1f", True),
]


def _family(name: str, key: str) -> Getter:
    return lambda e: e["consistency"][name][key]


CONSISTENCY = [(f"{f}: shift / code dist.", _family(f, "relative_mu_distance"), ".3f", False)
               for f in FAMILIES] + [
               (f"{f}: KL (nats)", _family(f, "kl"), ".3f", False) for f in FAMILIES]  # fmt: skip


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else f"{value:{fmt}}"


def format_eval(res: dict[str, Any]) -> str:
    """A few human lines of an eval.json dict (what ``crfold eval`` prints)."""
    rec, probe = res["reconstruction"], res["probe"]
    lines = [
        f"{res['run_dir']} ({res['checkpoint']}.pt, step {res['step']}, mode {res['mode']}): "
        f"{res['num_samples']} shapes of {res['split']}",
        f"  Chamfer FoldingNet {rec['chamfer_foldingnet']:.5f}, "
        f"squared {rec['chamfer_squared']:.5f}",
        f"  probes ({res['train_split']} -> {res['split']}): SVM {probe['svm']['accuracy']:.4f}, "
        f"logistic {probe['logistic']['accuracy']:.4f}",
        f"  MI {_num(res['mutual_information']['nats'], '.3f')} nats "
        f"(B = {res['mutual_information']['batch_size']}), active units "
        f"{res['active_units']['count']}/{res['active_units']['latent_dim']}",
        "  latent consistency (mean KL(q(z|t(x)) || q(z|x)), shift / mean code distance):",
    ]
    for name, c in res["consistency"].items():
        lines.append(
            f"    {name:<12} KL {_num(c['kl'], '.4g'):>10}   "
            f"shift/dist {c['relative_mu_distance']:.4f}"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- tables
def _load_results(runs: list) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        ev = json.loads((run.run_dir / EVAL_FILE).read_text())
        summary = json.loads((run.run_dir / "summary.json").read_text())
        rows.append({"run": run, "eval": ev, "summary": summary})
    return rows


def _stats(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1) of the values; NaN where undefined (no
    values, a None among them - a metric that does not apply - or, for the std, one value)."""
    if not values or any(v is None for v in values):
        return math.nan, math.nan
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def _cell(mean: float, std: float, fmt: str) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:{fmt}}" + ("" if math.isnan(std) else f" ± {std:{fmt}}")


def _table(rows: list[dict[str, Any]], variants: list, columns: list) -> str:
    head = "| Model | " + " | ".join(c[0] for c in columns) + " |"
    lines = [head, "|" + "---|" * (len(columns) + 1)]
    for v in variants:
        evals = [r["eval"] for r in rows if r["run"].variant == v]
        cells = [_cell(*_stats([get(e) for e in evals]), fmt) for _, get, fmt, _ in columns]
        lines.append(f"| {v.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _seconds(summary: dict[str, Any]) -> float:
    """Training time of a run over all its processes (older summaries: the last process)."""
    return float(summary.get("total_seconds", summary["seconds"]))


def _per_seed(rows: list[dict[str, Any]]) -> str:
    cols = [*MAIN, *REPRESENTATION]
    lines = ["| Model | seed | " + " | ".join(c[0] for c in cols) + " | train s |",
             "|" + "---|" * (len(cols) + 3)]  # fmt: skip
    for r in rows:
        cells = [_cell(_stats([get(r["eval"])])[0], math.nan, fmt) for _, get, fmt, _ in cols]
        lines.append(f"| {r['run'].variant.name} | {r['run'].seed} | " + " | ".join(cells)
                     + f" | {_seconds(r['summary']):.0f} |")  # fmt: skip
    return "\n".join(lines)


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Welch's t statistic of mean(a) - mean(b), its degrees of freedom and two-sided p."""
    from scipy import stats

    res = stats.ttest_ind(a, b, equal_var=False)
    return float(res.statistic), float(res.df), float(res.pvalue)


def _compare(a: list, b: list, fmt: str, higher: bool) -> tuple[str, str, str] | None:
    """(difference, Welch's test, reading) of the values of row a against row b; None when
    the metric does not apply."""
    (ma, sa), (mb, sb) = _stats(a), _stats(b)
    if math.isnan(ma) or math.isnan(mb):
        return None
    diff = ma - mb
    if math.isnan(sa) or math.isnan(sb):
        return f"{diff:+{fmt}}", "n/a", "n/a: needs at least 2 seeds per row"
    if sa == 0 and sb == 0:
        reading = "identical over seeds" if diff == 0 else "no seed spread: cannot test"
        return f"{diff:+{fmt}}", "n/a", reading
    t, df, p = _welch(a, b)
    test = f"t = {t:+.2f}, df = {df:.1f}, p = {p:.3f}"
    if p < 0.05:
        reading = f"{'better' if (diff > 0) == higher else 'worse'} (p < 0.05)"
    else:
        reading = f"no significant difference ({'higher' if diff > 0 else 'lower'})"
    return f"{diff:+{fmt}}", test, reading


def _comparison(rows: list[dict[str, Any]], variants: list, baseline: str = "vae+aug") -> str:
    """Every CR row (name starting with "cr") against the "+ Aug" baseline, per metric:
    difference of the means over seeds and Welch's t-test."""
    base = next((v for v in variants if v.name == baseline), None)
    crs = [v for v in variants if v.name.startswith("cr")]
    if base is None or not crs:
        return f"(No comparison: the table needs a `cr` row and the `{baseline}` row.)"
    out = []
    for v in crs:
        for label, get, fmt, higher in [*MAIN, *REPRESENTATION]:
            a = [get(r["eval"]) for r in rows if r["run"].variant == v]
            b = [get(r["eval"]) for r in rows if r["run"].variant == base]
            res = _compare(a, b, fmt, higher)
            if res is not None:
                spread = (
                    f"{_cell(_stats(a)[1], math.nan, fmt)} / {_cell(_stats(b)[1], math.nan, fmt)}"
                )
                out.append(f"| {v.name} | {label} | {res[0]} | {spread} | {res[1]} | {res[2]} |")
    head = [f"| Row | Metric | row − {baseline} | seed std row / {baseline} | Welch's t-test "
            "| reading |", "|---|---|---|---|---|---|"]  # fmt: skip
    return "\n".join(head + out)


# ----------------------------------------------------------------------------- report
def _budget(rows: list[dict[str, Any]], config: str | None, overrides: list[str]) -> str:
    from .config import load_config

    cfg = load_config(config, overrides)
    train_s = [_seconds(r["summary"]) for r in rows]
    eval_s = [r["eval"]["seconds"] for r in rows]
    steps = sorted({r["summary"]["step"] for r in rows})
    return "\n".join([
        f"- Data: `{cfg.data}` (classes_subset={cfg.classes_subset}, to_up={cfg.to_up}), "
        f"{cfg.num_points} points per shape; train on `{cfg.train_split}`, evaluate on "
        f"`{cfg.probe_split}` ({rows[0]['eval']['num_samples']} shapes).",
        f"- Model: FoldingNet-VAE, latent {cfg.latent_dim}, k {cfg.k}, grid {cfg.grid_size}² = "
        f"{cfg.grid_size**2} output points, obs_scale {cfg.obs_scale}, β {cfg.beta}, λ {cfg.lam} "
        "(per row where the row sets it).",
        f"- Budget per run: {cfg.epochs} epochs, batch {cfg.batch_size}, Adam lr {cfg.lr}, "
        f"steps {', '.join(map(str, steps))}; threads per run {cfg.num_threads}.",
        f"- Time: training {np.mean(train_s):.0f} s per run on average "
        f"({sum(train_s) / 60:.1f} min in all), evaluation {np.mean(eval_s):.0f} s per run.",
        f"- Augmentation t (the pair of vae+aug and cr): rotate {cfg.aug_rotate} "
        f"±{cfg.aug_degrees:g}°, scale {cfg.aug_scale}, translate ±{cfg.aug_translate}, jitter "
        f"σ {cfg.aug_jitter_sigma} (clip {cfg.aug_jitter_clip}).",
    ])  # fmt: skip


def write_report(
    out: Path,
    runs: list,
    *,
    config: str | None,
    overrides: list[str],
    which: str,
    name: str = "report",
    command: str = "crfold experiment table9",
) -> Path:
    """Writes ``<out>/<name>.md`` and its plots ``<name>_curves.png``, ``<name>_figure1.png``,
    ``<name>_reconstructions.png`` (without the prefix for the default name, "report").

    Args:
        out: the experiment directory.
        runs: the experiment's runs (:class:`crfold.experiment.Run`), all evaluated.
        config, overrides: what every run was trained with (for the budget lines).
        which: the checkpoint that was evaluated.
        name: the report's name (several reports can share one experiment directory).
        command: the command line that re-runs the experiment (quoted in the report).

    Returns:
        The path of the report.
    """
    rows = _load_results(runs)
    variants = list(dict.fromkeys(r.variant for r in runs))
    seeds = sorted({r.seed for r in runs})
    first = [next(r for r in runs if r.variant == v) for v in variants]
    prefix = "" if name == "report" else f"{name}_"
    figures = {k: f"{prefix}{k}.png" for k in ("curves", "figure1", "reconstructions")}
    plot_curves([(r["run"].variant.name, r["run"].run_dir) for r in rows], out / figures["curves"])
    plot_figure1(first, which, out / figures["figure1"])
    plot_reconstructions(first, which, out / figures["reconstructions"])
    text = [
        "# Table 9 on this data: FoldingNet-VAE + Aug vs CR-FoldingNet",
        "",
        f"Written by `crfold experiment table9` on {time.strftime('%Y-%m-%d %H:%M')}; "
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) per row, mean ± sample std "
        f"(n − 1). Evaluated checkpoint: `{which}.pt`. Re-run (resumes, reuses finished runs):",
        "",
        f"    {command}",
        "",
        "## Table 9 (linear SVM on the codes, reconstruction Chamfer)",
        "",
        _table(rows, variants, MAIN),
        "",
        "## CR against the + Aug baseline (vae+aug)",
        "",
        "Difference of the means over seeds, and Welch's two-sided t-test of it (unequal "
        "variances). With 3 seeds a row, only differences of several seed standard deviations "
        'reach p < 0.05; "no significant difference" is not evidence of equality.',
        "",
        _comparison(rows, variants),
        "",
        "## Representation",
        "",
        _table(rows, variants, REPRESENTATION),
        "",
        "## Latent consistency under held-out transforms (lower: more invariant)",
        "",
        "Mean ||mu(t(x)) − mu(x)|| divided by the mean distance between codes of different "
        "shapes, and mean KL(q(z|t(x)) || q(z|x)); transforms in `eval.json` of each run.",
        "",
        _table(rows, variants, CONSISTENCY[: len(FAMILIES)]),
        "",
        _table(rows, variants, CONSISTENCY[len(FAMILIES) :]),
        "",
        "## Budget",
        "",
        _budget(rows, config, overrides),
        "",
        "## Figures",
        "",
        f"![training curves]({figures['curves']})",
        "",
        f"![Figure 1 analogue]({figures['figure1']})",
        "",
        f"![reconstructions]({figures['reconstructions']})",
        "",
        "## Per seed",
        "",
        _per_seed(rows),
        "",
    ]
    path = out / f"{name}.md"
    atomic_write_text(path, "\n".join(text))
    return path
