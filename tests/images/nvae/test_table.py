"""crfold nvae table: NVAE, NVAE + Aug and CR-NVAE over seeds with the runner, and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crfold.cli import main as crfold_main
from crfold.experiments.runner import PlannedRun
from crfold_images.nvae.config import load_nvae_config
from crfold_images.nvae.table import ROWS, plan, write_report

from .test_task import TINY, TINY_YAML


def _fake_run(run: PlannedRun, **metrics) -> None:
    run.run_dir.mkdir(parents=True)
    base = {"n_test": 1000, "num_classes": 10, "likelihood": "bernoulli", "num_samples": 50,
            "latent_dims": 2560, "features": "all_pooled", "bpd": 0.3, "neg_elbo": 120.0,
            "rate": 30.0}  # fmt: skip
    (run.run_dir / "eval.json").write_text(json.dumps({**base, **metrics}))
    (run.run_dir / "summary.json").write_text(json.dumps({"seconds": 5.0, "step": 300}))


def test_the_plan_is_every_mode_by_seed_in_run_directories_named_by_the_config(tmp_path):
    base = load_nvae_config(TINY_YAML, TINY)
    runs = plan(base, tmp_path, [0, 1], threads=1)
    assert [r.label for r in runs] == ["NVAE"] * 2 + ["NVAE + Aug"] * 2 + ["CR-NVAE"] * 2
    assert [r.config.mode for r in runs[::2]] == [mode for mode, _ in ROWS]
    assert runs[0].run_dir.parent.parent == tmp_path / "runs" / "random"
    assert runs[0].run_dir.name == "seed0" and runs[0].run_dir.parent.name.startswith("base-")
    assert all(r.config.num_threads == 1 for r in runs)
    # the keys only CR-NVAE reads keep their defaults in the other rows: NVAE and NVAE + Aug
    # runs are shared by tables at other lambdas
    other = plan(base.replace(lam=0.5, lam_warmup=True), tmp_path, [0], None)
    assert other[0].run_dir == runs[0].run_dir and other[1].run_dir == runs[2].run_dir
    assert other[2].run_dir != runs[4].run_dir and other[2].config.lam == 0.5
    assert other[0].config.lam == 0.1 and not other[1].config.lam_warmup
    # seeds share a folder, evaluation settings do not rename it, run-defining keys do
    assert runs[0].run_dir.parent == runs[1].run_dir.parent
    again = plan(base.replace(iw_samples=7, num_threads=3), tmp_path, [0], None)
    assert again[0].run_dir == runs[0].run_dir


def test_the_report_tests_the_rows_and_says_whether_the_paper_holds(tmp_path):
    base = load_nvae_config(TINY_YAML, TINY)
    runs = plan(base, tmp_path, [0, 1, 2], threads=None)
    probe = {"NVAE": (0.80, 0.81, 0.80), "NVAE + Aug": (0.85, 0.86, 0.85),
             "CR-NVAE": (0.90, 0.91, 0.92)}  # fmt: skip
    nll = {"NVAE": (90.0, 90.5, 91.0), "NVAE + Aug": (89.0, 90.0, 91.5),
           "CR-NVAE": (92.0, 93.0, 92.5)}  # fmt: skip
    for r in runs:
        _fake_run(r, probe_accuracy=probe[r.label][r.seed], nll_nats=nll[r.label][r.seed],
                  active_units=100 + r.seed)  # fmt: skip
    summary = write_report(tmp_path, base, runs, [0, 1, 2], "crfold nvae table --seeds 3")
    text = (tmp_path / "nvae_table.md").read_text()
    assert "Command: `crfold nvae table --seeds 3`" in text and "(300 steps)" in text
    assert "| CR-NVAE | 91.0 ± 1.0 |" in text
    assert "Acc. % (higher is better): CR-NVAE > NVAE + Aug > NVAE: **holds**" in text
    assert "IW-NLL (nats) (lower is better): CR-NVAE > NVAE + Aug > NVAE: **does not hold**" in text
    assert "AU (higher is better): CR-NVAE > NVAE: **tied**" in text  # the paper: 226 vs 211
    assert "of 3 claims: 1 hold, every pair significant; 1 are tied; 1 do not hold." in text
    assert "IW-NLL columns are over the first" not in text  # every test image
    assert "| CR-NVAE | Acc. % | +10.7 (p = 0.000) better | +5.7 (p = 0.003) better |" in text
    assert "| NVAE + Aug | rate" not in text  # the rate is shown, not tested: no better side
    assert json.loads((tmp_path / "nvae_table.json").read_text())["seeds"] == [0, 1, 2]
    assert len(summary["rows"]["CR-NVAE"]) == 3


@pytest.mark.slow
def test_the_command_trains_every_run_and_refuses_mode_overrides(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["nvae", "table", "--config", TINY_YAML, "--seeds", "1", "--out", str(out), "--quiet",
            *TINY, "probe=false"]  # fmt: skip
    assert crfold_main([*argv, "mode=cr"]) == 2
    assert "mode and seed are the table's rows" in capsys.readouterr().err
    assert crfold_main(argv) == 0
    text = (out / "nvae_table.md").read_text()
    for _, name in ROWS:
        assert f"| {name} |" in text
    assert "one seed: no spread" in text
    # one seed: no claim is tested, whichever way the means go
    direction = text.split("## The paper's direction")[1].split("## Welch")[0]
    assert "of 3 claims:" in direction and "p = " not in direction
    assert "significant" not in direction.split("\n\n", 2)[2]  # the claim lines
    runs = sorted(Path(out, "runs", "random").glob("*/seed0/eval.json"))
    assert len(runs) == 3
    before = [p.stat().st_mtime_ns for p in runs]
    assert crfold_main(argv) == 0  # finished: nothing trains again
    assert [p.stat().st_mtime_ns for p in runs] == before


@pytest.fixture(autouse=True)
def _no_shared_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
