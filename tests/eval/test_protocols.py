"""Issue 14: both probe protocols side by side, the rotated probes, no selection on the test split."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from crfold.cli import main
from crfold.eval.encode import encode_dataset, encode_rotated, load_run, open_split, up_rotations
from crfold.eval.run import check_selection, evaluate_run, probe_run, probe_suite
from crfold.io import load_checkpoint, save_checkpoint

# More shapes than the run was trained on (data keys may change at evaluation): 6 and 3 a class.
MORE_SHAPES = ["synthetic_train_shapes=60", "synthetic_test_shapes=30"]


def _copy_run(src, dst, scale: float = 1.0, **config):
    """best.pt and last.pt of ``src`` in ``dst``, the mu head times ``scale``, config keys set."""
    dst.mkdir()
    for which in ("best", "last"):
        state = load_checkpoint(src / f"{which}.pt")
        for key in ("encoder.mu.weight", "encoder.mu.bias"):
            state["model"][key] = state["model"][key] * scale
        state["config"] = {**state["config"], **config}
        save_checkpoint(dst / f"{which}.pt", state)
    return dst


def test_probe_suite_on_codes_of_a_tiny_scale():
    """Codes = a common offset (the mu head's bias) + a tiny class signal, as an untrained
    encoder's: separable once standardized, constant predictions raw."""
    rng = np.random.default_rng(0)
    centres, offset = 3.0 * rng.normal(size=(3, 8)), rng.normal(size=8)
    y_tr, y_te = np.repeat(np.arange(3), 20), np.repeat(np.arange(3), 10)
    x_tr = offset + 1e-4 * (centres[y_tr] + 0.3 * rng.normal(size=(60, 8)))  # variance ~1e-8
    x_te = offset + 1e-4 * (centres[y_te] + 0.3 * rng.normal(size=(30, 8)))
    res = probe_suite((x_tr, y_tr), (x_te, y_te), (x_tr, y_tr), (x_te[::-1], y_te[::-1]), C=1.0)
    assert set(res) == {"probe", "probe_rotated_test", "probe_rotated_both"}
    raw, std = res["probe"]["raw"], res["probe"]["standardized"]
    assert std["svm"]["accuracy"] == 1.0 and std["logistic"]["accuracy"] == 1.0
    assert raw["svm"]["accuracy"] < 0.5 and not raw["svm"]["standardize"]
    # the rotated-test SVM is the plain one scored on other test codes (here: reversed)
    assert res["probe_rotated_test"]["standardized"]["svm"]["accuracy"] == 1.0
    assert set(res["probe_rotated_both"]["raw"]) == {"svm"}


def test_both_protocols_are_reported_and_differ_on_codes_of_a_tiny_scale(trained_run, tmp_path):
    """A run whose codes are those of the trained run times 1e-4 (variances ~1e-9, like an
    untrained encoder's): standardized, the probes do not change; raw, LinearSVC is at chance."""
    tiny = _copy_run(trained_run, tmp_path / "tiny", scale=1e-4)
    kw = dict(which="last", overrides=MORE_SHAPES, families=("jitter",), write=False)
    ref, res = evaluate_run(trained_run, **kw), evaluate_run(tiny, **kw)
    model, cfg = load_run(tiny, "last")
    mu, _ = encode_dataset(model, open_split(cfg.replace(synthetic_test_shapes=30), "test"))
    assert float(mu.var(0).max()) < 1e-6
    for key in ("probe", "probe_rotated_test", "probe_rotated_both"):
        assert set(res[key]) >= {"raw", "standardized"}
        std, raw = res[key]["standardized"]["svm"], res[key]["raw"]["svm"]
        assert std["standardize"] and not raw["standardize"] and raw["n_test"] == 30
        assert std["accuracy"] == ref[key]["standardized"]["svm"]["accuracy"], key
        assert raw["accuracy"] <= 0.1 + 1e-9, key  # 10 classes: chance
    assert res["probe"]["standardized"]["svm"]["accuracy"] > res["probe"]["raw"]["svm"]["accuracy"]
    assert res["probe"]["raw"]["logistic"]["accuracy"] <= 0.1 + 1e-9
    assert res["probe"]["headline"] == "raw"  # probe_standardize: false (the default)


def test_up_rotations_are_seeded_rotations_about_the_up_axis():
    a, b, c = up_rotations(5, "z", 3), up_rotations(5, "z", 3), up_rotations(5, "z", 4)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert torch.allclose(a[:, 2, 2], torch.ones(5)) and torch.allclose(
        a[:, 2, :2], torch.zeros(5, 2)
    )
    torch.testing.assert_close(a @ a.transpose(1, 2), torch.eye(3).expand(5, 3, 3))
    assert torch.allclose(torch.linalg.det(a), torch.ones(5))


def test_encode_rotated_is_seeded_and_independent_of_the_batch_size(trained_run):
    model, cfg = load_run(trained_run, "last")
    test = open_split(cfg, "test")
    mu, labels = encode_rotated(model, test, "y", seed=7, batch_size=3)
    mu2, labels2 = encode_rotated(model, test, "y", seed=7, batch_size=10)
    torch.testing.assert_close(mu, mu2, rtol=1e-5, atol=1e-6)
    assert torch.equal(labels, labels2) and torch.equal(labels, test.labels)
    other, _ = encode_rotated(model, test, "y", seed=8)
    plain, _ = encode_dataset(model, test)
    assert not torch.allclose(mu, other) and not torch.allclose(mu, plain)
    # shape i is rotated by up_rotations(...)[i]
    rot = up_rotations(len(test), "y", 7)
    x = torch.stack([test[i][0] for i in range(len(test))]) @ rot.transpose(1, 2)
    with torch.no_grad():
        torch.testing.assert_close(mu, model.encode(x).mu, rtol=1e-5, atol=1e-6)


def test_rotated_probes_are_present_and_seeded(trained_run):
    kw = dict(which="last", families=("jitter",), write=False)
    a, b = evaluate_run(trained_run, seed=5, **kw), evaluate_run(trained_run, seed=5, **kw)
    c = evaluate_run(trained_run, seed=6, **kw)
    for key in ("probe_rotated_test", "probe_rotated_both"):
        assert a[key] == b[key]  # same seed, same numbers
        assert a[key]["test_seed"] != c[key]["test_seed"]
        assert "axis='up'" in a[key]["rotation"] and "up='y'" in a[key]["rotation"]
        for protocol in ("raw", "standardized"):
            assert 0.0 <= a[key][protocol]["svm"]["accuracy"] <= 1.0
    both = a["probe_rotated_both"]
    assert both["train_seed"] != both["test_seed"] == a["probe_rotated_test"]["test_seed"]
    assert a["probe"] == c["probe"]  # the plain probes do not depend on the seed
    p1 = probe_run(trained_run, which="last", write=False, seed=5)
    assert p1["probe_rotated_both"] == a["probe_rotated_both"]


def test_which_best_is_refused_for_a_run_selected_on_its_probe_split(trained_run, tmp_path, capsys):
    old = _copy_run(trained_run, tmp_path / "old", val_split="test")  # an older run's config
    for call in (evaluate_run, probe_run):
        with pytest.raises(ValueError, match="val_split == probe_split.*--which last"):
            call(old, write=False)
    assert main(["eval", str(old), "--quiet"]) == 2
    assert "--which last" in capsys.readouterr().err
    assert main(["probe", str(old), "--quiet"]) == 2
    assert "selected on 'test'" in capsys.readouterr().err
    assert not (old / "eval.json").exists() and not (old / "probe.json").exists()
    assert probe_run(old, which="last", write=False)["checkpoint"] == "last"  # no selection
    # best.pt chosen on the test split is fine for a probe scored on another split or data
    _, cfg = load_run(trained_run)
    ok = cfg.replace(val_split="test", probe_split="val")
    check_selection(ok, ok, "best")
    check_selection(ok.replace(probe_split="test"), ok.replace(probe_split="test"), "last")
    with pytest.raises(ValueError, match="--which last"):
        check_selection(ok, ok.replace(probe_split="test"), "best")


def test_a_run_selected_on_another_split_may_use_best(trained_run, tmp_path):
    _, cfg = load_run(trained_run)
    assert cfg.val_split in ("holdout", "val") and cfg.probe_split == "test"
    check_selection(cfg, cfg, "best")
    shutil.copy(trained_run / "best.pt", tmp_path / "best.pt")
    assert probe_run(tmp_path, write=False)["checkpoint"] == "best"


def test_a_holdout_probe_is_fit_on_the_kept_part_only(tiny_config, tmp_path):
    """probe_split=holdout scores the validation part of train and fits on the rest: no shape
    is both fitted and scored; training may validate on that holdout (best.pt is then refused)."""
    from crfold.train import train
    from crfold.train.foldingnet import probe_splits, training_splits

    cfg = tiny_config(tmp_path / "run", "val_split=holdout", "probe_split=holdout",
                      "val_fraction=0.25", "synthetic_train_shapes=20")  # fmt: skip
    fit, scored = probe_splits(cfg)
    kept, held = training_splits(cfg)
    assert torch.equal(fit.points, kept.points) and torch.equal(scored.points, held.points)
    assert len(fit) + len(scored) == 20 and len(scored) > 0
    fitted = {tuple(p.flatten()[:6].tolist()) for p in fit.points}
    assert not any(tuple(p.flatten()[:6].tolist()) in fitted for p in scored.points)
    test_cfg = cfg.replace(probe_split="test")
    fit_t, scored_t = probe_splits(test_cfg)
    assert len(fit_t) == 20 and len(scored_t) == 8  # the whole train split against test
    # a run validated and probed on the same holdout: training works, best.pt is refused
    assert train(cfg, quiet=True)["status"] == "completed"
    with pytest.raises(ValueError, match="--which last"):
        probe_run(tmp_path / "run", write=False)
    res = probe_run(tmp_path / "run", which="last", write=False)
    assert res["test_split"] == "holdout" and 0 <= res["standardized"]["svm"]["accuracy"] <= 1
    # val_split == probe_split is still refused for a split of the data (test, val)
    with pytest.raises(ValueError, match="also the probe split"):
        training_splits(cfg.replace(val_split="test", probe_split="test"))
