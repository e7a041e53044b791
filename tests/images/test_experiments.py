"""crfold_images.experiments: the tables' grids, their plans on the experiment runner, and
1-epoch runs on digits (trained, skipped on rerun, extended by more --epochs)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from crfold_images.config import ImageConfig
from crfold_images.experiments import (
    build_grid,
    cell_config,
    main,
    plan_table,
    plots_name,
    run_dir_of,
    run_key,
    threads_per_run,
)


def test_grids_follow_the_papers_tables():
    t1 = build_grid("table1", ["mnist", "omniglot"], ["vae", "iwae", "beta0.5", "beta10"])
    assert len(t1) == 24
    labels = [c.label for c in t1[:12]]
    assert labels[:6] == ["VAE", "VAE + Aug", "CR-VAE", "IWAE", "IWAE + Aug", "CR-IWAE"]
    assert labels[6:9] == ["β-VAE (0.5)", "β-VAE (0.5) + Aug", "β-CR-VAE (0.5)"]
    beta_cr = t1[11]
    assert beta_cr.overrides == {"objective": "vae", "beta": 10.0, "mode": "cr"}
    # beta-CR-VAE's lambda is 0.1 * beta unless set (the paper's choice).
    assert cell_config(ImageConfig(), beta_cr, {}, 0).resolved_lam() == pytest.approx(1.0)
    t4 = build_grid("table4", ["mnist"], ["vae"])
    assert [c.overrides.get("lam") for c in t4] == [None, None, 0.001, 0.01, 0.1, 1.0]
    # Tables 4 and 5 carry table1's VAE and VAE + Aug rows: every row is tested against them.
    assert [c.overrides["mode"] for c in t4[:2]] == ["base", "aug"]
    t5 = build_grid("table5", ["mnist"], ["vae"])
    assert [c.label for c in t5[:2]] == ["VAE", "VAE + Aug"] and t5[:2] == t1[:2]
    assert [c.overrides.get("augment") for c in t5[2:]] == ["rotate", "translate", "scale", "all"]
    t6 = build_grid("table6", ["mnist"], ["vae"])
    assert [c.overrides["mode"] for c in t6] == ["base", "aug", "triplet", "cr"]
    # tables 1-3 are one grid: one set of plots
    assert build_grid("table2", ["mnist"], ["vae"]) == build_grid("table3", ["mnist"], ["vae"])
    assert {plots_name(t) for t in ("table1", "table2", "table3")} == {"tables1-3"}
    assert plots_name("table6") == "table6"
    with pytest.raises(ValueError, match="models"):
        build_grid("table1", ["mnist"], ["vqvae"])


def test_identical_cells_share_a_run_directory(tmp_path):
    base = ImageConfig(epochs=3)
    cr1 = build_grid("table1", ["digits"], ["vae"])[2]
    cr4 = build_grid("table4", ["digits"], ["vae"])[4]  # lambda = 0.1 set explicitly
    cr6 = build_grid("table6", ["digits"], ["vae"])[3]
    dirs = {run_dir_of(tmp_path, cell_config(base, c, {}, 1)) for c in (cr1, cr6)}
    assert len(dirs) == 1 and next(iter(dirs)).name == "seed1"
    assert run_dir_of(tmp_path, cell_config(base, cr4, {}, 1)) != next(iter(dirs))  # 0.1 vs None
    other = run_dir_of(tmp_path, cell_config(base.replace(width=0.5), cr1, {}, 1))
    assert other not in dirs
    longer = run_dir_of(tmp_path, cell_config(base.replace(epochs=9), cr1, {}, 1))
    assert longer in dirs  # more epochs extend the same run
    resumable = base.replace(num_threads=2, eval_samples=7, amp="bf16", run_dir="x")
    assert run_dir_of(tmp_path, cell_config(resumable, cr1, {}, 1)) in dirs
    moved = run_dir_of(tmp_path, cell_config(base, cr1, {"digits": "elsewhere"}, 1))
    assert moved in dirs  # the same data moved elsewhere is the same run
    assert (
        run_dir_of(tmp_path, cell_config(base.replace(weight_decay=1e-6), cr1, {}, 1)) not in dirs
    )
    assert set(run_key(base)).isdisjoint({"seed", "data_root", "epochs", "num_threads"})
    # A key added later (lam_per_dim) leaves the names of runs at its default alone: the hash
    # is the one of the keys the config had before it ...
    cfg = cell_config(base, cr1, {}, 1)
    skip = {*cfg.RESUMABLE, "seed", "data_root", "lam_per_dim"}
    before = {k: v for k, v in cfg.to_dict().items() if k not in skip}
    digest = hashlib.sha1(json.dumps(before, sort_keys=True).encode()).hexdigest()[:8]
    assert run_dir_of(tmp_path, cfg).parent.name == f"vae-b1-cr-{digest}"
    # ... and names another run when set.
    per_dim = cell_config(base.replace(lam_per_dim=True), cr1, {}, 1)
    assert run_key(per_dim)["lam_per_dim"] is True and run_dir_of(tmp_path, per_dim) not in dirs


def test_threads_per_run_split_the_cpus_between_jobs(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert threads_per_run(ImageConfig(), 1) is None  # one run at a time: torch's default
    assert threads_per_run(ImageConfig(), 3) == 2
    assert threads_per_run(ImageConfig(), 16) == 1
    assert threads_per_run(ImageConfig(num_threads=5), 3) == 5  # set: kept


def test_the_grid_is_a_plan_of_the_runner(tmp_path):
    base = ImageConfig(epochs=1)
    cells = build_grid("table1", ["digits", "digits"], ["vae", "vae"])  # listed twice: once
    assert len(cells) == 3
    plan = plan_table(tmp_path, base, cells, {}, [0, 1], threads=2)
    assert [len(runs) for runs in plan] == [2, 2, 2]
    run = plan[2][1]
    assert run.label == "digits: CR-VAE" and run.seed == 1 and run.config.num_threads == 2
    assert run.run_dir == run_dir_of(tmp_path, cell_config(base, cells[2], {}, 1))


def test_a_run_trained_with_another_config_is_an_error_before_training(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["table6", "--out", str(out), "--seeds", "1", "--epochs", "1", "--quiet"]
    cell = build_grid("table6", ["digits"], ["vae"])[3]
    cfg = cell_config(ImageConfig(epochs=1), cell, {}, 0)
    run_dir = run_dir_of(out, cfg)
    run_dir.mkdir(parents=True)
    cfg.replace(seed=5).save(run_dir / "config.yaml")  # not the run seed0 names
    assert main(argv) == 2
    assert "different config (keys seed)" in capsys.readouterr().err
    assert list(out.glob("runs/*/*/*")) == [run_dir]  # nothing trained


def _mtimes(out):
    return {p: p.stat().st_mtime_ns for p in out.glob("runs/*/*/*/last.pt")}


def test_tables_train_with_the_runner_skip_finished_runs_and_extend_them(tmp_path, capsys):
    from crfold.cli import main as crfold_main

    out = tmp_path / "out"
    argv = ["table6", "--out", str(out), "--seeds", "1", "--max-train", "64", "--width", "0.0625",
            "--eval-samples", "4", "--set", "eval_max_images=16", "--set", "probe_max_train=120",
            "--set", "samples_grid=4", "--set", "arch=mlp", "--set", "latent_dim=4"]  # fmt: skip
    # 4 runs, 2 child processes at a time (num_threads: cpu_count // 2 each)
    assert crfold_main(["images", "tables", *argv, "--epochs", "1", "--jobs", "2", "--quiet"]) == 0
    text = (out / "table6.md").read_text()
    assert "Command: `crfold images tables table6" in text and "--jobs 2" in text
    for row in ("| VAE |", "| VAE + augmentations |", "| VAE + triplet loss |", "| CR-VAE |"):
        assert row in text
    assert "S = 4" in text and "1 epochs" in text
    for name in ("table6.json", "table6_bars.png", "table6_samples.png"):
        assert (out / name).stat().st_size > 0
    runs = sorted(d / "seed0" for d in (out / "runs" / "digits").iterdir() if d.is_dir())
    assert len(runs) == 4
    assert all((r.parent / "seed0.log").is_file() for r in runs)  # the children's output
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert all(f"num_threads: {threads}" in (r / "config.yaml").read_text() for r in runs)
    first = json.loads((runs[0] / "eval.json").read_text())
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert first["epochs"] == 1 and first["train_seconds"] == summary["total_seconds"]
    report = json.loads((out / "table6.json").read_text())
    cell = next(c for c in report["cells"] if c["run_dirs"] == [str(runs[0])])
    assert cell["results"] == [first]  # the report's numbers are the runs' eval.json
    # Rerun (the module's CLI, one job): every run is finished, nothing trains or evaluates;
    # the report is rewritten identically but for the command that wrote it.
    trained = _mtimes(out)
    assert main([*argv, "--epochs", "1"]) == 0
    said = capsys.readouterr().out
    assert "4 runs, 4 already finished, 0 to train" in said
    assert not any(f"] {word} " in said for word in ("train", "resume", "eval"))  # runner lines
    assert _mtimes(out) == trained
    again = (out / "table6.md").read_text()
    assert "Command: `python -m crfold_images.experiments table6" in again
    assert "--jobs" not in again
    assert again.split("\n", 4)[4] == text.split("\n", 4)[4]  # but for the command line
    # More --epochs: the finished runs are resumed from their last epoch, in the same directories.
    assert main([*argv, "--epochs", "2", "--jobs", "2"]) == 0
    said = capsys.readouterr().out
    assert "4 runs, 0 already finished" in said and said.count("] resume ") == 4
    assert sorted(d / "seed0" for d in (out / "runs" / "digits").iterdir() if d.is_dir()) == runs
    longer = json.loads((runs[0] / "eval.json").read_text())
    assert longer["epochs"] == 2 and longer["steps"] == 2 * first["steps"]
    assert "--resume" in (runs[0].parent / "seed0.log").read_text()
    assert "2 epochs" in (out / "table6.md").read_text()
    # Fewer epochs than the runs have: an error before anything trains.
    assert main([*argv, "--epochs", "1", "--quiet"]) == 2
    assert "more epochs than planned" in capsys.readouterr().err


def test_help_config_lists_the_keys(capsys):
    from crfold.cli import main as crfold_main

    assert main(["--help-config"]) == 0 and "eval_samples" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        crfold_main(["images", "tables", "--help-config"])
    assert "probe_max_train" in capsys.readouterr().out


def _result(**values):
    base = {"num_classes": 10, "n_test": 10_000, "mi_batch_size": 10_000, "likelihood": "bernoulli"}
    return {**base, **values}


def test_tables_mark_what_shows_nothing_and_say_what_the_numbers_cannot_show():
    from crfold_images.experiments import _caveat_section, _main_table

    cells = build_grid("table1", ["mnist"], ["vae"])  # VAE, VAE + Aug, CR-VAE
    short = _result(mi=-0.01, au=0, probe_accuracy=0.1, iw_nll=540.0, rate=0.0)
    results = {
        0: [short, _result(mi=0.004, au=0, probe_accuracy=0.099, iw_nll=541.0, rate=0.01)],
        1: [_result(mi=4.0, au=12, probe_accuracy=0.9, iw_nll=95.0, rate=20.0)] * 2,
        2: [_result(mi=9.21, au=30, probe_accuracy=0.95, iw_nll=94.0, rate=30.0)] * 2,
    }
    t1 = _main_table("table1", cells, results)
    assert "| VAE | -0.0 ± 0.0 (chance) | 0.0 ± 0.0 (collapsed) |" in t1  # mean MI -0.003
    assert "| VAE + Aug | 4.0 ± 0.0 | 12.0 ± 0.0 |" in t1
    assert "9.2 ± 0.0 (ceiling)" in t1  # at log B = 9.21: models cannot differ in it
    t2 = _main_table("table2", cells, results)
    assert "| VAE | 9.9 ± 0.1 (chance) |" in t2 and "| VAE + Aug | 90.0 ± 0.0 |" in t2
    text = _caveat_section([c.label for c in cells], results, seeds=2)
    assert "- VAE: probe % = 9.9 ± 0.1 (chance)" in text
    assert "- (chance): at/below chance: run too short to show anything" in text
    assert "- (ceiling): at the MI estimator's ceiling log B" in text
    assert "log B = 9.21 nats" in text and "rate = E[KL" in text and "one seed" not in text
    fine = {i: [_result(mi=4.0, au=12, probe_accuracy=0.9, iw_nll=95.0)] for i in range(3)}
    text = _caveat_section([c.label for c in cells], fine, seeds=1)
    assert "No cell is at chance" in text and "one seed: no spread" in text


def test_colour_nll_is_also_reported_in_bits_per_dimension():
    from crfold_images.experiments import _main_table

    cells = build_grid("table3", ["celeba", "mnist"], ["vae"])
    colour = _result(likelihood="logistic", iw_nll=8517.0, iw_nll_bpd=4.0, data_dims=3072)
    grey = _result(iw_nll=90.0, iw_nll_bpd=0.166, data_dims=784)
    results = {i: [colour if c.dataset == "celeba" else grey] for i, c in enumerate(cells)}
    header = _main_table("table3", cells, results).splitlines()[0]
    assert header == "| Method | celeba NLL | celeba bpd | mnist NLL |"


def _runs(**per_seed):
    """Three seeds of results: {metric: (v0, v1, v2)} -> [eval.json-like dicts]."""
    return [_result(**{k: v[s] for k, v in per_seed.items()}) for s in range(3)]


def test_reports_test_rows_against_base_and_aug_and_say_whether_the_paper_holds():
    from crfold_images.experiments import _direction_section, comparisons

    cells = build_grid("table2", ["mnist"], ["vae", "iwae"])
    tags = [c.label for c in cells]
    against, claims = comparisons("table2", cells, tags)
    assert ("CR-VAE", {"base": "VAE", "+ Aug": "VAE + Aug"}) in against
    assert ("VAE + Aug", {"base": "VAE"}) in against and all(t != "VAE" for t, _ in against)
    assert [c.order for c in claims] == [("CR-VAE", "VAE + Aug", "VAE"),
                                         ("CR-IWAE", "IWAE + Aug", "IWAE")]  # fmt: skip
    results = {  # VAE: CR > Aug > base clearly; IWAE: Aug below base
        0: _runs(probe_accuracy=(0.80, 0.81, 0.80)),
        1: _runs(probe_accuracy=(0.85, 0.86, 0.85)),
        2: _runs(probe_accuracy=(0.90, 0.91, 0.90)),
        3: _runs(probe_accuracy=(0.80, 0.81, 0.80)),
        4: _runs(probe_accuracy=(0.70, 0.71, 0.72)),
        5: _runs(probe_accuracy=(0.82, 0.80, 0.83)),
    }
    text = _direction_section("table2", cells, tags, results)
    assert "Here, of 2 claims: 1 hold, every pair significant; 1 do not hold." in text
    assert "Acc. % (higher is better): CR-VAE > VAE + Aug > VAE: **holds**" in text
    assert "CR-IWAE > IWAE + Aug > IWAE: **does not hold**: IWAE + Aug not better than IWAE" in text
    assert "| CR-VAE | Acc. % | +10.0 (p = " in text and "better |" in text
    # A flagged row (at chance) makes its claim untestable, whatever the values.
    results[0] = _runs(probe_accuracy=(0.10, 0.10, 0.11))
    text = _direction_section("table2", cells, tags, results)
    assert "**cannot tell**, flagged: VAE (chance)" in text and "1 cannot be told" in text
    # A claim over the MI at its log B ceiling cannot be told either (table1).
    t1 = build_grid("table1", ["mnist"], ["vae"])
    capped = {i: _runs(mi=(9.21, 9.20, 9.21), au=(40, 41, 42)) for i in range(3)}
    text = _direction_section("table1", t1, [c.label for c in t1], capped)
    assert "MI (higher is better): CR-VAE > VAE + Aug > VAE: **cannot tell**, flagged: " in text


def test_ablation_tables_read_their_own_claims():
    from crfold_images.experiments import comparisons

    t4 = build_grid("table4", ["mnist"], ["vae"])
    against, claims = comparisons("table4", t4, [c.label for c in t4])
    # the paper's Table 4: small lambdas beat the VAE, 0.1 beats + Aug, lambda = 1 is worse than
    # the VAE in MI and NLL (its AU is 47 > 36); no probe claims (the paper's has no probe)
    by_order = {}
    for c in claims:
        by_order.setdefault(c.order, set()).add(c.metric)
    assert by_order == {
        ("CR-VAE λ=0.1", "VAE + Aug", "VAE"): {"mi", "au", "iw_nll"},
        ("CR-VAE λ=0.01", "VAE"): {"mi", "au", "iw_nll"},
        ("CR-VAE λ=0.001", "VAE"): {"mi", "au", "iw_nll"},
        ("VAE", "CR-VAE λ=1"): {"mi", "iw_nll"},
    }
    assert ("CR-VAE λ=1", {"base": "VAE", "+ Aug": "VAE + Aug"}) in against
    t5 = build_grid("table5", ["mnist"], ["vae"])
    orders = {c.order for c in comparisons("table5", t5, [c.label for c in t5])[1]}
    assert orders == {("All", "Rotations only"), ("All", "Translations only"),
                      ("All", "Scaling only")}  # fmt: skip
    t6 = build_grid("table6", ["mnist"], ["vae"])
    against, claims = comparisons("table6", t6, [c.label for c in t6])
    assert {c.order for c in claims} == {("CR-VAE", "VAE + augmentations", "VAE + triplet loss")}
    assert ("VAE + triplet loss", {"base": "VAE", "+ Aug": "VAE + augmentations"}) in against
    assert {c.metric for c in claims} == {"mi", "au", "iw_nll"}  # the paper's Table 6 has no probe
