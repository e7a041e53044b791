"""``crfold experiment table9``: variants, mode names, the report and its plots, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from crfold.cli import _command_line, build_parser, main
from crfold.eval.consistency import FAMILIES
from crfold.eval.run import EVAL_VERSION
from crfold.experiments import table9
from crfold.experiments.table9 import (
    Variant,
    plan_runs,
    plan_variants,
    run_config,
    table9_evaluation,
    write_report,
)

REPO = Path(__file__).resolve().parents[2]
# Small enough for seconds per run on one thread; each class in both splits.
SMALL = [
    "synthetic_train_shapes=40", "synthetic_test_shapes=20", "num_points=64", "latent_dim=16",
    "grid_size=6", "k=8", "batch_size=8", "epochs=2", "log_every=1", "num_threads=1", "lr=1e-3",
]  # fmt: skip


def test_plan_variants_rows_and_overrides():
    rows = plan_variants(["aug", "cr"])
    assert [v.name for v in rows] == ["aug", "cr"]
    assert rows[0].overrides == ("mode=aug",) and rows[0].slug == "aug"
    assert rows[0].label == "FoldingNet-VAE + Aug (aug)" and rows[1].label == "CR-FoldingNet (cr)"
    rows = plan_variants(["cr"], lams=[0, 0.01, 1.0])
    assert [v.name for v in rows] == ["cr", "aug", "cr lam=0.01", "cr lam=1"]
    assert rows[2].overrides == ("mode=cr", "lam=0.01") and rows[2].slug == "cr_lam0.01"
    rows = plan_variants(["aug", "cr"], ablation=True, untrained=True)
    names = [v.name for v in rows]
    assert "cr rotate only" in names and "aug jitter only" in names and names[-1] == "untrained"
    assert len(rows) == 2 + 8 + 1
    rot = next(v for v in rows if v.name == "cr rotate only")
    assert set(rot.overrides) == {
        "mode=cr", "aug_rotate=up", "aug_translate=0", "aug_scale=none", "aug_jitter_sigma=0"
    }  # fmt: skip
    assert rot.slug == "cr_rotate_only"
    with pytest.raises(ValueError, match="twice"):
        plan_variants(["cr"], lams=[0.1, 0.1])
    with pytest.raises(ValueError, match="modes"):
        plan_variants(["vea"])


def test_old_mode_names_map_with_a_warning():
    with pytest.warns(DeprecationWarning) as caught:
        rows = plan_variants(["vae+aug", "vae", "cr"])
    assert [str(w.message) for w in caught] == [
        "--modes: 'vae+aug' is the old name of mode 'aug'",
        "--modes: 'vae' is the old name of mode 'base'",
    ]
    assert [v.name for v in rows] == ["aug", "base", "cr"]
    assert [v.slug for v in rows] == ["aug", "base", "cr"]


def test_every_variant_makes_a_valid_config(tmp_path):
    variants = plan_variants(["ae", "base", "aug", "cr"], lams=[0.3], ablation=True, untrained=True)
    runs = plan_runs(tmp_path, None, SMALL, variants, [4])
    assert [r.label for r in runs] == [v.name for v in variants]
    for run, v in zip(runs, variants):
        assert run.run_dir == tmp_path / "runs" / v.slug / "seed4"
        assert run.config.seed == 4 and run.config.run_dir == str(run.run_dir)
    scale_only = next(v for v in plan_variants(["cr"], ablation=True) if v.name == "cr scale only")
    only = run_config(None, [], scale_only, 0, tmp_path)
    assert only.mode == "cr" and only.aug_rotate is None and only.aug_scale == [0.667, 1.5]
    with pytest.raises(ValueError, match="FoldingNet"):
        run_config(None, ["task=images"], Variant("x", ()), 0, tmp_path)


def test_the_evaluation_is_crfold_eval_of_the_chosen_checkpoint(tmp_path):
    ev = table9_evaluation("last")
    assert ev.argv(tmp_path) == ["eval", str(tmp_path), "--which", "last", "--quiet"]
    assert ev.checkpoint == "last.pt" and ev.settings["which"] == "last"
    # an eval.json of an older layout (one probe protocol, no rotated probes) is recomputed
    assert ev.settings["version"] == EVAL_VERSION


def test_the_untrained_row_and_best_pt_are_the_defaults(tmp_path):
    args = build_parser().parse_args(["experiment", "table9", "--out", "x"])
    assert args.untrained is True and args.which == "best"
    assert (
        _command_line(args) == "crfold experiment table9 --seeds 3 --out x --modes aug,cr --jobs 1"
    )
    args = build_parser().parse_args(
        ["experiment", "table9", "--out", "x", "--no-untrained", "--which", "last"]
    )
    assert args.untrained is False
    assert "--no-untrained --which last --jobs 1" in _command_line(args)


def _eval_json(seed: int, raw: float, std: float) -> dict:
    def block(r, s, logistic=False):
        def probes(a):
            return {"svm": {"accuracy": a}, **({"logistic": {"accuracy": a}} if logistic else {})}

        return {"raw": probes(r), "standardized": probes(s)}

    c = {"relative_mu_distance": 0.5 + 0.01 * seed, "kl": 1.0 + seed}
    return {
        "probe": {**block(raw, std, True), "headline": "raw", "C": 1.0},
        "probe_rotated_test": block(raw - 0.05, std - 0.05),
        "probe_rotated_both": {**block(raw, std - 0.02), "test_seed": 11, "train_seed": 12},
        "reconstruction": {"chamfer_foldingnet": 0.1 + 0.01 * seed, "chamfer_squared": 0.2 + seed},
        "mutual_information": {"nats": 1.0 + seed},
        "active_units": {"count": 3 + seed},
        "consistency": {f: c for f in FAMILIES},
        "num_samples": 30,
        "seconds": 1.0,
    }


def test_the_report_has_the_untrained_row_both_protocols_and_the_welch_lines(tmp_path, monkeypatch):
    for name in ("plot_curves", "plot_figure1", "plot_reconstructions"):  # no checkpoints here
        monkeypatch.setattr(table9, name, lambda *a, **k: None)
    variants = plan_variants(["aug", "cr"], untrained=True)
    runs = plan_runs(tmp_path, None, SMALL, variants, [0, 1, 2])
    acc = {"aug": (0.40, 0.76), "cr": (0.42, 0.74), "untrained": (0.11, 0.85)}
    for run in runs:
        run.run_dir.mkdir(parents=True)
        raw, std = acc[run.label]
        ev = _eval_json(run.seed, raw + 0.01 * run.seed, std - 0.01 * run.seed**2)
        (run.run_dir / "eval.json").write_text(json.dumps(ev))
        (run.run_dir / "summary.json").write_text(json.dumps({"seconds": 2.0, "step": 10}))
    text = write_report(tmp_path, runs, variants, which="best", command="crfold experiment x")
    text = text.read_text()
    for row in ("FoldingNet-VAE + Aug (aug)", "CR-FoldingNet (cr)", "untrained encoder (1 step)"):
        assert text.count(f"| {row} |") >= 4, row  # the tables, the comparisons, per seed
    head = "| Model | Linear SVM, raw (%) | Linear SVM, std. (%) | Chamfer, FoldingNet"
    assert head in text
    assert (
        "| Model | SVM, rotated test, raw (%) | SVM, rotated test, std. (%) | SVM, rotated " in text
    )
    assert "| untrained encoder (1 step) | 12.0 ± 1.0 | 83.3 ± 2.1 |" in text
    # Welch: every row against the standardized untrained row, cr against aug under both
    assert "| Row | Metric | row − untrained |" in text and "| Row | Metric | row − aug |" in text
    vs = "| CR-FoldingNet (cr) | Linear SVM, raw (%) vs Linear SVM, std. (%) | -40.3 |"
    assert vs in text and "| FoldingNet-VAE + Aug (aug) | Linear SVM, std. (%) | -9.0 |" in text
    assert (
        "| untrained encoder (1 step) | Linear SVM, raw (%) vs Linear SVM, std. (%) | -71.3 |"
        in text
    )
    assert "| CR-FoldingNet (cr) | Linear SVM, raw (%) | +2.0 |" in text
    assert "| CR-FoldingNet (cr) | Linear SVM, std. (%) | -2.0 |" in text
    # the protocol and what claims are measured against
    assert "Claims that training helps are made against the untrained row under the " in text
    assert "`LinearSVC(C=1, random_state=0)`" in text
    assert "fit on the `train` split and scored on the `test` split (30 shapes)" in text
    assert "**raw**: the codes as they are (FoldingNet's protocol)" in text
    assert "test seed 11, train seed 12" in text and "Evaluated checkpoint: `best.pt`" in text


def test_modes_help_and_old_names_on_the_command_line(capsys, tmp_path):
    with pytest.raises(SystemExit):
        main(["experiment", "table9", "--help"])
    text = capsys.readouterr().out
    assert "--modes MODES" in text and "(default: aug,cr)" in text
    # an old name maps with a warning; a finished run with another config is an error (exit 2)
    run = tmp_path / "exp" / "runs" / "aug" / "seed0"
    run.mkdir(parents=True)
    run_config(None, [*SMALL, "lr=0.5"], Variant("aug", ("mode=aug",)), 0, run).save(
        run / "config.yaml"
    )
    args = ["experiment", "table9", "--out", str(tmp_path / "exp"), "--seeds", "1", *SMALL]
    assert main([*args, "--modes", "vae+aug"]) == 2
    err = capsys.readouterr().err
    assert "warning: --modes: 'vae+aug' is the old name of mode 'aug'" in err
    assert "different config (keys lr)" in err


@pytest.mark.slow
def test_table9_end_to_end_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "exp"
    args = ["experiment", "table9", "--out", str(out), "--seeds", "2", "--jobs", "2", *SMALL]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    for name in ("curves.png", "gradients.png", "figure1.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert f"]({name})" in report
    assert "| FoldingNet-VAE + Aug (aug) |" in report and "| CR-FoldingNet (cr) |" in report
    assert "row − aug" in report and "# Table 9 on this data: FoldingNet-VAE + Aug (aug)" in report
    assert "rotation: shift / code dist." in report and "2 seeds (0, 1)" in report
    assert f"crfold experiment table9 --seeds 2 --out {out} --modes aug,cr --jobs 2" in report
    assert "| untrained encoder (1 step) |" in report and "row − untrained" in report
    assert "Linear SVM, std. (%)" in report and "SVM, rotated test, raw (%)" in report
    runs = [out / "runs" / v / f"seed{s}" for v in ("aug", "cr") for s in (0, 1)]
    for run in runs:
        ev = json.loads((run / "eval.json").read_text())
        assert ev["checkpoint"] == "best" and ev["step"] > 0
        assert set(ev["probe"]) >= {"raw", "standardized"} and "probe_rotated_both" in ev
        assert (run / ".lock").is_file() and not run.with_name(f"{run.name}.lock").exists()
    steps = {json.loads((r / "summary.json").read_text())["step"] for r in runs}
    assert len(steps) == 1 and steps.pop() > 1  # every run the same budget
    # seeds differ, variants share the data: the two seeds of a row give different numbers
    e0, e1 = (json.loads((r / "eval.json").read_text()) for r in runs[2:])
    assert e0["reconstruction"] != e1["reconstruction"]

    # a rerun reuses everything: no training, no evaluation, the same numbers
    stamps = {r: (r / "last.pt").stat().st_mtime_ns for r in runs}
    untrained = json.loads((out / "runs" / "untrained" / "seed0" / "eval.json").read_text())
    assert untrained["step"] == 1
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "train " not in printed and "eval " not in printed and "report" in printed
    assert all((r / "last.pt").stat().st_mtime_ns == t for r, t in stamps.items())
    assert (out / "report.md").read_text().split("## Table 9")[1] == report.split("## Table 9")[1]

    # a partial run (last.pt but no summary) is resumed, not restarted
    (runs[3] / "summary.json").unlink()
    (runs[3] / "eval.json").unlink()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"resume {runs[3]}" in printed and f"eval {runs[3]}" in printed
    assert "train " not in printed

    # an eval.json written with other settings is not reused
    assert main(["eval", str(runs[1]), "--quiet", "--set",
                 "synthetic_test_shapes=12"]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"eval {runs[1]}" in printed and "train " not in printed
    assert json.loads((runs[1] / "eval.json").read_text())["num_samples"] == 20

    # a second report in the same directory reuses the runs and adds rows
    report = (out / "report.md").read_text()
    assert main([*args, "--lams", "0.5", "--name", "sweep"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("train ") == 2  # only the two seeds of the new row
    sweep = (out / "sweep.md").read_text()
    assert "| cr lam=0.5 |" in sweep and "| FoldingNet-VAE + Aug (aug) |" in sweep
    assert "--lams 0.5" in sweep
    assert (out / "sweep_figure1.png").is_file() and "](sweep_curves.png)" in sweep
    assert (out / "report.md").read_text() == report


def _start_and_stop(cmd: list[str], cwd: Path, metrics: Path, lines: int) -> str:
    """Runs the experiment command until metrics.jsonl has ``lines`` lines, then SIGTERM."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= lines):
        assert time.monotonic() < deadline and proc.poll() is None, "training did not go on"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    return out


@pytest.mark.slow
def test_table9_stops_cleanly_on_sigterm_and_resumes(tmp_path):
    out = tmp_path / "exp"
    budget = [a for a in SMALL if not a.startswith("epochs=")] + ["epochs=400"]
    cmd = [sys.executable, "-m", "crfold", "experiment", "table9", "--out", str(out),
           "--seeds", "1", "--modes", "cr", *budget]  # fmt: skip
    run = out / "runs" / "cr" / "seed0"
    printed = _start_and_stop(cmd, tmp_path, run / "metrics.jsonl", 15)
    assert f"train {run}" in printed
    first = json.loads((run / "summary.json").read_text())
    assert first["status"] == "interrupted" and (run / "last.pt").is_file()
    # the same command again continues the run from its last.pt
    printed = _start_and_stop(cmd, tmp_path, run / "metrics.jsonl", first["step"] + 15)
    assert f"resume {run}" in printed
    second = json.loads((run / "summary.json").read_text())
    assert second["status"] == "interrupted" and second["step"] > first["step"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # continued, not restarted


def test_variant_rows_of_their_own():
    from crfold.experiments.table9 import parse_variant, plan_variants

    extra = [parse_variant("cr default: recon=gaussian, beta=1,lam=0.1")]
    assert extra == [("cr default", ("recon=gaussian", "beta=1", "lam=0.1"))]
    rows = plan_variants(["aug", "cr"], extra=extra, untrained=True)
    assert [v.name for v in rows] == ["aug", "cr", "cr default", "untrained"]
    assert (
        rows[2].overrides == ("recon=gaussian", "beta=1", "lam=0.1")
        and rows[2].slug == "cr_default"
    )
    for bad in ("no-colon", "name:", ":lam=1", "name:lam"):
        with pytest.raises(ValueError, match="--variant"):
            parse_variant(bad)
    with pytest.raises(ValueError, match="listed twice"):
        plan_variants(["cr"], extra=[("cr", ("lam=1",))])


@pytest.mark.slow
def test_more_epochs_continue_a_finished_run_as_if_trained_for_them(tmp_path, capsys):
    """epochs may grow (FoldingNet's learning rate is constant): the finished run is resumed, and
    its weights equal those of a run trained for the larger budget from the start."""
    from crfold.io import load_checkpoint

    one = [a for a in SMALL if not a.startswith("epochs=")]
    base = ["experiment", "table9", "--seeds", "1", "--modes", "cr", "--no-untrained"]
    grown, fresh = tmp_path / "grown", tmp_path / "fresh"
    assert main([*base, "--out", str(grown), *one, "epochs=1"]) == 0
    capsys.readouterr()
    assert main([*base, "--out", str(grown), *one, "epochs=2"]) == 0
    run = grown / "runs" / "cr" / "seed0"
    printed = capsys.readouterr().out
    assert f"resume {run}" in printed and f"eval {run}" in printed and "train " not in printed
    assert main([*base, "--out", str(fresh), *one, "epochs=2"]) == 0
    a = load_checkpoint(run / "last.pt")
    b = load_checkpoint(fresh / "runs" / "cr" / "seed0" / "last.pt")
    assert a["step"] == b["step"] > 0
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    assert json.loads((run / "eval.json").read_text())["step"] == b["step"]
    # fewer epochs than the finished run is refused, not a silent reuse
    capsys.readouterr()
    assert main([*base, "--out", str(grown), *one, "epochs=1"]) == 2
    assert "already trained with more epochs than planned" in capsys.readouterr().err
