"""crfold.experiments.report: mean ± std cells, tables, Welch comparisons (any task's rows)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from crfold.experiments.report import comparison, load_results, per_seed, probe_accuracy, table
from crfold.experiments.runner import PlannedRun
from crfold.experiments.table9 import (
    MAIN,
    REPRESENTATION,
    SVM,
    Variant,
    cr_comparison,
    plan_variants,
    untrained_comparison,
)


def _row(label, svm, cd, mi=1.0, seed=0):
    """A run of an older eval.json: one probe protocol (raw), flat ``probe`` entries."""
    ev = {
        "probe": {"svm": {"accuracy": svm}, "logistic": {"accuracy": svm}},
        "reconstruction": {"chamfer_foldingnet": cd, "chamfer_squared": cd},
        "mutual_information": {"nats": mi},
        "active_units": {"count": 3},
    }
    return {"label": label, "seed": seed, "eval": ev, "summary": {"seconds": 2.0}}


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


AUG, CR = Variant("aug", ("mode=aug",)), Variant("cr", ("mode=cr",))


def test_comparison_is_a_welch_test_against_the_seed_spread():
    rows = [_row("aug", 0.80, 0.05), _row("aug", 0.81, 0.06), _row("aug", 0.79, 0.05)]
    rows += [_row("cr", 0.90, 0.05), _row("cr", 0.91, 0.06), _row("cr", 0.89, 0.05)]
    text = cr_comparison(rows, [AUG, CR])
    assert "| Row | Metric | row − aug | seed std row / aug |" in text
    svm = _line(text, "| CR-FoldingNet (cr) | Linear SVM")
    # a = [90, 91, 89], b = [80, 81, 79]: t = 10 / sqrt(1/3 + 1/3) = 12.25, df = 4
    assert "+10.0" in svm and "t = +12.25, df = 4.0" in svm and "| better (p < 0.05)" in svm
    cd = _line(text, "| CR-FoldingNet (cr) | Chamfer, Fold")
    assert "t = +0.00" in cd and "no significant difference" in cd
    rows = [_row("aug", 0.80, 0.05), _row("aug", 0.90, 0.05)]
    rows += [_row("cr", 0.84, 0.04), _row("cr", 0.88, 0.04)]
    text = cr_comparison(rows, [AUG, CR])
    assert "no significant difference (higher)" in _line(text, "| CR-FoldingNet (cr) | Linear SVM")
    assert "no seed spread: cannot test" in _line(text, "| CR-FoldingNet (cr) | Chamfer, Fold")
    assert "identical over seeds" in _line(text, "| CR-FoldingNet (cr) | MI")
    one = cr_comparison([_row("aug", 0.8, 0.05), _row("cr", 0.9, 0.04)], [AUG, CR])
    assert "needs at least 2 seeds" in _line(one, "| CR-FoldingNet (cr) | Linear SVM")
    assert "No comparison" in cr_comparison(rows[:2], [AUG])
    lam = Variant("cr lam=1", ())
    rows += [_row("cr lam=1", 0.70, 0.05), _row("cr lam=1", 0.72, 0.05)]
    text = cr_comparison(rows, [AUG, CR, lam])
    lam_svm = _line(text, "| cr lam=1 | Linear SVM")  # every cr row is compared to aug
    assert "| -14.0 | 1.4 / 7.1 | t = -2.75" in lam_svm and "no significant difference" in lam_svm


def test_generic_comparison_takes_any_labels():
    rows = [_row("a", 0.5, 0.1), _row("a", 0.6, 0.1), _row("b", 0.7, 0.1), _row("b", 0.8, 0.1)]
    text = comparison(rows, [("b", "Model B")], ("a", "A"), MAIN[:1])
    assert "| Model B | Linear SVM, raw (%) | +20.0 |" in text and "row − A" in text


def test_tables_show_na_for_metrics_that_do_not_apply_and_no_std_for_one_seed():
    ae = Variant("ae", ())
    text = table([_row("ae", 0.5, 0.1, mi=None)], [(ae.name, ae.label)], MAIN + REPRESENTATION)
    # an older eval.json has one protocol: the other is n/a
    assert "| FoldingNet (ae) | 50.0 | n/a | 0.1000 | 0.1000 | 50.0 | n/a | n/a | 3.0 |" in text
    text = table([_row("cr", 0.5, 0.1), _row("cr", 0.7, 0.1)], [("cr", "cr")], MAIN[:1])
    assert "| cr | 60.0 ± 14.1 |" in text
    seeds = per_seed([_row("cr", 0.5, 0.1, seed=4)], {"cr": "CR"}, MAIN[:1])
    assert "| CR | 4 | 50.0 | 2 |" in seeds


def test_load_results_reads_each_runs_files_and_names_a_missing_one(tmp_path, tiny_config):
    run = PlannedRun(tmp_path / "r", tiny_config(None, "seed=2"), "cr")
    run.run_dir.mkdir()
    (run.run_dir / "summary.json").write_text(json.dumps({"seconds": 1.0, "step": 2}))
    with pytest.raises(FileNotFoundError, match="eval.json: missing"):
        load_results([run])
    (run.run_dir / "eval.json").write_text(json.dumps({"num_samples": 3}))
    (row,) = load_results([run])
    assert (row["label"], row["seed"], row["eval"], row["run"]) == (
        "cr",
        2,
        {"num_samples": 3},
        run,
    )


def _probes(raw, std, rot=None):
    """The eval.json probe entries of issue 14: both protocols, rotated SVMs."""
    rot = (raw, std) if rot is None else rot

    def block(r, s, logistic=False):
        out = {"raw": {"svm": {"accuracy": r}}, "standardized": {"svm": {"accuracy": s}}}
        if logistic:
            out["raw"]["logistic"], out["standardized"]["logistic"] = (
                {"accuracy": r},
                {"accuracy": s},
            )
        return out

    return {
        "probe": {**block(raw, std, logistic=True), "headline": "raw", "C": 1.0},
        "probe_rotated_test": block(*rot),
        "probe_rotated_both": block(*rot),
    }


def _new_row(label, raw, std, seed=0, rot=None):
    ev = {
        **_probes(raw, std, rot),
        "reconstruction": {"chamfer_foldingnet": 0.1 + seed, "chamfer_squared": 0.1 + seed},
        "mutual_information": {"nats": 1.0 + seed},
        "active_units": {"count": 3},
    }
    return {"label": label, "seed": seed, "eval": ev, "summary": {"seconds": 2.0}}


def test_probe_accuracy_reads_both_layouts():
    new = _new_row("cr", 0.42, 0.74, rot=(0.2, 0.3))["eval"]
    assert probe_accuracy("probe", "raw")(new) == 42.0
    assert probe_accuracy("probe", "standardized", "logistic")(new) == 74.0
    assert probe_accuracy("probe_rotated_both", "standardized")(new) == 30.0
    assert probe_accuracy("probe_rotated_test", "raw", "logistic")(new) is None
    old = _row("cr", 0.5, 0.1)["eval"]  # flat, standardize absent: the raw protocol
    assert probe_accuracy("probe", "raw")(old) == 50.0
    assert probe_accuracy("probe", "standardized")(old) is None
    assert probe_accuracy("probe_rotated_test", "raw")(old) is None
    old["probe"]["svm"]["standardize"] = True
    assert probe_accuracy("probe", "standardized")(old) == 50.0
    assert probe_accuracy("probe", "raw")(old) is None


def test_every_row_is_compared_with_the_standardized_untrained_row():
    rows = [_new_row("untrained", r, s, i) for i, (r, s) in enumerate([(0.11, 0.85), (0.10, 0.84),
                                                                      (0.12, 0.86)])]  # fmt: skip
    rows += [_new_row("cr", r, s, i) for i, (r, s) in enumerate([(0.42, 0.74), (0.44, 0.75),
                                                               (0.43, 0.73)])]  # fmt: skip
    variants = plan_variants(["cr"], untrained=True)
    text = untrained_comparison(rows, variants)
    assert "| Row | Metric | row − untrained |" in text
    raw = _line(text, "| CR-FoldingNet (cr) | Linear SVM, raw (%) vs Linear SVM, std. (%) |")
    assert "| -42.0 |" in raw and "worse (p < 0.05)" in raw  # 43 - 85
    std = _line(text, "| CR-FoldingNet (cr) | Linear SVM, std. (%) |")
    assert "| -11.0 |" in std and "p = " in std
    rot = _line(text, "| CR-FoldingNet (cr) | SVM, rotated test, raw (%) vs SVM, rotated test, s")
    assert "| -42.0 |" in rot
    # the untrained row's raw probes against its standardized ones; never std. against itself
    own = _line(text, "| untrained encoder (1 step) | Linear SVM, raw (%) vs")
    assert "| -74.0 |" in own
    assert "| untrained encoder (1 step) | Linear SVM, std. (%) |" not in text
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == 1 + 6 + 3
    assert "No comparison" in untrained_comparison(rows[3:], plan_variants(["cr"]))
    # cr against aug under both protocols, whichever way it falls
    rows += [_new_row("aug", r, s, i) for i, (r, s) in enumerate([(0.40, 0.76), (0.41, 0.77),
                                                                (0.45, 0.78)])]  # fmt: skip
    text = cr_comparison(rows, plan_variants(["aug", "cr"]))
    assert "| +1.0 |" in _line(text, "| CR-FoldingNet (cr) | Linear SVM, raw (%) |")
    assert "| -3.0 |" in _line(text, "| CR-FoldingNet (cr) | Linear SVM, std. (%) |")
    assert "SVM, rotated train+test, std. (%)" in text and "Logistic, raw (%)" in text
    assert [c[0] for c in SVM][:2] == ["Linear SVM, raw (%)", "Linear SVM, std. (%)"]


def test_gradient_ratios_plot_the_diagnostics_and_skip_terms_that_are_off(tmp_path):
    from crfold.experiments.plots import plot_gradient_ratios

    def run(name: str, lam_r: float, diagnostics: bool = True) -> Path:
        d = tmp_path / name
        d.mkdir()
        recs = [{"kind": "train", "epoch": 1, "step": 1, "loss": 1.0}]
        if diagnostics:
            recs += [{"kind": "diagnostics", "epoch": 1, "step": s, "grad_recon": 10.0,
                      "grad_kl": 1.0, "grad_consistency": lam_r} for s in (1, 200, 400)]  # fmt: skip
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        return d

    path = tmp_path / "gradients.png"
    # aug's lam*R is 0 (off): no point on a log axis, and no warning about it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_gradient_ratios([("aug", run("aug", 0.0)), ("cr", run("cr", 0.1))], path)
    assert path.stat().st_size > 5_000
    assert not plot_gradient_ratios([("off", run("off", 0.1, diagnostics=False))], path)
