"""Tests for crfold_images.experiments: the tables' grids and a 1-epoch smoke run on digits."""

from __future__ import annotations

import json

import pytest

from crfold_images.config import ImageConfig
from crfold_images.experiments import build_grid, cell_config, main, run_dir_of, run_key


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
    assert [c.overrides.get("lam") for c in t4] == [None, 0.001, 0.01, 0.1, 1.0]
    t5 = build_grid("table5", ["mnist"], ["vae"])
    assert [c.overrides["augment"] for c in t5] == ["rotate", "translate", "scale", "all"]
    t6 = build_grid("table6", ["mnist"], ["vae"])
    assert [c.overrides["mode"] for c in t6] == ["base", "aug", "triplet", "cr"]
    with pytest.raises(ValueError, match="models"):
        build_grid("table1", ["mnist"], ["vqvae"])


def test_identical_cells_share_a_run_directory(tmp_path):
    base = ImageConfig(epochs=3)
    cr1 = build_grid("table1", ["digits"], ["vae"])[2]
    cr4 = build_grid("table4", ["digits"], ["vae"])[3]  # lambda = 0.1 set explicitly
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


def test_one_epoch_table_smoke_on_the_embedded_default(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["table6", "--out", str(out), "--seeds", "1", "--epochs", "1", "--max-train", "64",
            "--width", "0.0625", "--eval-samples", "4", "--set", "eval_max_images=16",
            "--set", "probe_max_train=120", "--set", "samples_grid=4", "--set", "arch=mlp",
            "--set", "num_threads=1",
            "--quiet"]  # fmt: skip
    assert main([*argv, "--jobs", "2"]) == 0  # the 4 runs train in 2 processes
    text = (out / "table6.md").read_text()
    for row in ("| VAE |", "| VAE + augmentations |", "| VAE + triplet loss |", "| CR-VAE |"):
        assert row in text
    assert "S = 4" in text and "1 epochs" in text
    for name in ("table6.json", "table6_bars.png", "table6_samples.png"):
        assert (out / name).stat().st_size > 0
    runs = sorted((out / "runs" / "digits").iterdir())
    assert len(runs) == 4
    # Rerun (in-process): every finished cell is skipped, the report is rewritten identically.
    assert main(argv) == 0
    rewritten = (out / "table6.md").read_text()
    assert "--jobs" not in rewritten  # the report names the command that wrote it
    assert rewritten.split("\n", 2)[2] == text.split("\n", 2)[2]
    result = json.loads((runs[0] / "seed0" / "eval.json").read_text())
    assert result["epochs"] == 1 and (runs[0] / "seed0" / "config.yaml").is_file()
    assert main(["--help-config"]) == 0 and "eval_samples" in capsys.readouterr().out


def test_crfold_images_tables_is_the_same_command(tmp_path, capsys):
    from crfold.cli import main as crfold_main

    out = tmp_path / "out"
    argv = ["table6", "--out", str(out), "--seeds", "1", "--epochs", "1", "--max-train", "32",
            "--width", "0.0625", "--eval-samples", "2", "--set", "eval_max_images=8",
            "--set", "probe_max_train=64", "--set", "samples_grid=2", "--set", "arch=mlp",
            "--set", "latent_dim=4", "--quiet"]  # fmt: skip
    assert crfold_main(["images", "tables", *argv]) == 0
    text = (out / "table6.md").read_text()
    assert "Command: `crfold images tables table6" in text and "| CR-VAE |" in text
    assert main(argv) == 0  # the module's CLI: every run is finished, nothing retrains
    again = (out / "table6.md").read_text()
    assert "Command: `python -m crfold_images.experiments table6" in again
    assert again.split("\n", 2)[2] == text.split("\n", 2)[2]
    with pytest.raises(SystemExit):
        crfold_main(["images", "tables", "--help-config"])
    assert "probe_max_train" in capsys.readouterr().out
