"""``crfold experiment table9``: variants, config guard, resume, the report and its plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crfold.cli import main
from crfold.experiment import (
    Run,
    Variant,
    _locked,
    _train_state,
    plan_variants,
    run_config,
    run_experiment,
)
from crfold.experiment_report import MAIN, REPRESENTATION, _comparison, _table

REPO = Path(__file__).resolve().parents[1]
# Small enough for seconds per run on one thread; each class in both splits.
SMALL = [
    "synthetic_train_shapes=40", "synthetic_test_shapes=20", "num_points=64", "latent_dim=16",
    "grid_size=6", "k=8", "batch_size=8", "epochs=2", "log_every=1", "num_threads=1", "lr=1e-3",
]  # fmt: skip


def test_plan_variants_rows_and_overrides():
    rows = plan_variants(["vae+aug", "cr"])
    assert [v.name for v in rows] == ["vae+aug", "cr"]
    assert rows[0].overrides == ("mode=vae+aug",) and rows[0].slug == "vae-aug"
    rows = plan_variants(["cr"], lams=[0, 0.01, 1.0])
    assert [v.name for v in rows] == ["cr", "vae+aug", "cr lam=0.01", "cr lam=1"]
    assert rows[2].overrides == ("mode=cr", "lam=0.01") and rows[2].slug == "cr_lam0.01"
    rows = plan_variants(["vae+aug", "cr"], ablation=True, untrained=True)
    names = [v.name for v in rows]
    assert "cr rotate only" in names and "vae+aug jitter only" in names and names[-1] == "untrained"
    assert len(rows) == 2 + 8 + 1
    rot = next(v for v in rows if v.name == "cr rotate only")
    assert set(rot.overrides) == {
        "mode=cr", "aug_rotate=up", "aug_translate=0", "aug_scale=none", "aug_jitter_sigma=0"
    }  # fmt: skip
    with pytest.raises(ValueError, match="twice"):
        plan_variants(["cr"], lams=[0.1, 0.1])


def test_every_variant_makes_a_valid_config(tmp_path):
    for v in plan_variants(
        ["ae", "vae", "vae+aug", "cr"], lams=[0.3], ablation=True, untrained=True
    ):
        cfg = run_config(None, SMALL, Run(v, 4, tmp_path / v.slug / "seed4"))
        assert cfg.seed == 4 and cfg.run_dir == str(tmp_path / v.slug / "seed4")
    scale_only = next(v for v in plan_variants(["cr"], ablation=True) if v.name == "cr scale only")
    only = run_config(None, [], Run(scale_only, 0, tmp_path))
    assert only.mode == "cr" and only.aug_rotate is None and only.aug_scale == [0.667, 1.5]


def _row(variant, svm, cd, mi=1.0):
    ev = {
        "probe": {"svm": {"accuracy": svm}, "logistic": {"accuracy": svm}},
        "reconstruction": {"chamfer_foldingnet": cd, "chamfer_squared": cd},
        "mutual_information": {"nats": mi},
        "active_units": {"count": 3},
    }
    return {"run": Run(variant, 0, Path(".")), "eval": ev}


def _line(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(start))


def test_comparison_is_a_welch_test_against_the_seed_spread():
    aug, cr = Variant("vae+aug", ()), Variant("cr", ())
    rows = [_row(aug, 0.80, 0.05), _row(aug, 0.81, 0.06), _row(aug, 0.79, 0.05)]
    rows += [_row(cr, 0.90, 0.05), _row(cr, 0.91, 0.06), _row(cr, 0.89, 0.05)]
    text = _comparison(rows, [aug, cr])
    svm = _line(text, "| cr | Linear SVM")
    # a = [90, 91, 89], b = [80, 81, 79]: t = 10 / sqrt(1/3 + 1/3) = 12.25, df = 4
    assert "+10.0" in svm and "t = +12.25, df = 4.0" in svm and "| better (p < 0.05)" in svm
    cd = _line(text, "| cr | Chamfer, Fold")
    assert "t = +0.00" in cd and "no significant difference" in cd
    rows = [
        _row(aug, 0.80, 0.05),
        _row(aug, 0.90, 0.05),
        _row(cr, 0.84, 0.04),
        _row(cr, 0.88, 0.04),
    ]
    text = _comparison(rows, [aug, cr])
    assert "no significant difference (higher)" in _line(text, "| cr | Linear SVM")
    assert "no seed spread: cannot test" in _line(text, "| cr | Chamfer, Fold")
    assert "identical over seeds" in _line(text, "| cr | MI")
    one = _comparison([_row(aug, 0.8, 0.05), _row(cr, 0.9, 0.04)], [aug, cr])
    assert "needs at least 2 seeds" in _line(one, "| cr | Linear SVM")
    assert "No comparison" in _comparison(rows[:2], [aug])
    lam = Variant("cr lam=1", ())
    rows += [_row(lam, 0.70, 0.05), _row(lam, 0.72, 0.05)]
    text = _comparison(rows, [aug, cr, lam])
    lam_svm = _line(text, "| cr lam=1 | Linear SVM")  # every cr row is compared to vae+aug
    assert "| -14.0 | 1.4 / 7.1 | t = -2.75" in lam_svm and "no significant difference" in lam_svm


def test_tables_show_na_for_metrics_that_do_not_apply_and_no_std_for_one_seed():
    ae = Variant("ae", ())
    text = _table([_row(ae, 0.5, 0.1, mi=None)], [ae], MAIN + REPRESENTATION)
    assert "| ae | 50.0 | 0.1000 | 0.1000 | 50.0 | n/a | 3.0 |" in text


def test_a_finished_run_with_another_config_is_refused(tmp_path):
    out = tmp_path / "exp"
    run = Run(Variant("cr", ("mode=cr",)), 0, out / "runs" / "cr" / "seed0")
    cfg = run_config(None, SMALL, run)
    assert _train_state(run, cfg) == "new"
    run.run_dir.mkdir(parents=True)
    cfg.replace(lr=0.5).save(run.run_dir / "config.yaml")
    with pytest.raises(ValueError, match=r"different config \(keys lr\)"):
        _train_state(run, cfg)
    with pytest.raises(ValueError, match=r"different config \(keys lr\)"):  # before any training
        run_experiment(out, None, SMALL, plan_variants(["cr"]), [0], quiet=True)
    cfg.replace(num_threads=2, checkpoint_every=5).save(run.run_dir / "config.yaml")
    assert _train_state(run, cfg) == "new"  # runtime keys may differ
    (run.run_dir / "last.pt").write_bytes(b"")
    assert _train_state(run, cfg) == "partial"
    (run.run_dir / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    assert _train_state(run, cfg) == "partial"
    (run.run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    assert _train_state(run, cfg) == "done"


def test_a_run_is_locked_while_in_use(tmp_path):
    run = Run(Variant("cr", ("mode=cr",)), 0, tmp_path / "runs" / "cr" / "seed0")
    with _locked(run):
        with pytest.raises(RuntimeError, match="another process"):
            with _locked(run):
                pass
    with _locked(run):  # released
        pass


@pytest.mark.slow
def test_table9_end_to_end_reports_and_resumes(tmp_path, capsys):
    out = tmp_path / "exp"
    args = ["experiment", "table9", "--out", str(out), "--seeds", "2", "--jobs", "2", *SMALL]
    assert main(args) == 0
    report = (out / "report.md").read_text()
    for name in ("curves.png", "figure1.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 10_000, name
        assert f"]({name})" in report
    assert "| vae+aug |" in report and "| cr |" in report and "row − vae+aug" in report
    assert "rotation: shift / code dist." in report and "2 seeds (0, 1)" in report
    assert f"crfold experiment table9 --seeds 2 --out {out} --modes vae+aug,cr --jobs 2" in report
    runs = [out / "runs" / v / f"seed{s}" for v in ("vae-aug", "cr") for s in (0, 1)]
    for run in runs:
        ev = json.loads((run / "eval.json").read_text())
        assert ev["checkpoint"] == "last" and ev["step"] == 10
    assert json.loads((runs[0] / "config.yaml").with_name("summary.json").read_text())["step"] == 10
    # seeds differ, variants share the data: the two seeds of a row give different numbers
    e0, e1 = (json.loads((r / "eval.json").read_text()) for r in runs[2:])
    assert e0["reconstruction"] != e1["reconstruction"]

    # a rerun reuses everything: no training, no evaluation, the same numbers
    stamps = {r: (r / "last.pt").stat().st_mtime_ns for r in runs}
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
    assert main(["eval", str(runs[1]), "--which", "last", "--quiet", "--set",
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
    assert "| cr lam=0.5 |" in sweep and "| vae+aug |" in sweep and "--lams 0.5" in sweep
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
