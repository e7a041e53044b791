"""Data paths: shipped configs name data relative to ``$CRFOLD_DATA``; eval resolves ``--data``."""

from __future__ import annotations

from pathlib import Path

import pytest

from crfold.cli import main
from crfold.config import DATA_ENV, load_config, resolve_data_path
from crfold.eval.run import evaluate_run

REPO = Path(__file__).resolve().parents[2]
MODELNET = "modelnet40_1024/modelnet40_1024_f16.npz"
CONFIGS = ["table9_modelnet10", "modelnet40_cpu", "demo", "shapenet_paper"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_do_not_point_at_the_shared_folder(name):
    path = REPO / "configs" / f"{name}.yaml"
    text = path.read_text()
    assert "../shared" not in text
    cfg = load_config(path)
    if cfg.data != "synthetic":
        assert not Path(cfg.data).is_absolute(), cfg.data
        assert "CRFOLD_DATA=/path/to/data" in text and "data=PATH" in text


def test_no_shipped_config_selects_on_the_test_split():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        cfg = load_config(path)
        if cfg.task == "foldingnet":
            assert cfg.val_split != cfg.probe_split and cfg.val_split != "test", path.name


@pytest.mark.parametrize("name", ["table9_modelnet10", "modelnet40_cpu"])
def test_modelnet_configs_find_the_sample_under_crfold_data(shared_data, name):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    assert cfg.data == MODELNET
    assert resolve_data_path(cfg.data) == shared_data / MODELNET


def test_eval_data_is_looked_up_under_crfold_data(trained_run, shared_data, monkeypatch, capsys):
    monkeypatch.chdir(trained_run.parent)  # the relative path does not exist from here
    subset = ["to_up=y", "classes_subset=[modelnet10]"]
    res = evaluate_run(trained_run, data=MODELNET, overrides=subset, families=("jitter",),
                       write=False)  # fmt: skip
    assert res["data"] == MODELNET and res["num_samples"] == 908  # ModelNet10's test split
    assert res["probe"]["raw"]["svm"]["n_train"] == 3991
    monkeypatch.delenv(DATA_ENV)
    assert main(["eval", str(trained_run), "--quiet", "--data", MODELNET]) == 2
    err = capsys.readouterr().err
    assert f"data: {MODELNET} does not exist" in err and DATA_ENV in err
