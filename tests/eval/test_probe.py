"""Tests of the linear probes (crfold.probe, re-exported by crfold.metrics)."""

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

from crfold import metrics
from crfold.probe import logistic_probe, svm_probe

PROBES = [svm_probe, logistic_probe]


def _clusters(n_per_class=30, n_classes=4, dim=16, spread=0.3, seed=0):
    """Linearly separable codes: tight clusters around well-separated class centres."""
    rng = np.random.default_rng(seed)
    centres = 5.0 * rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), n_per_class)
    feats = centres[labels] + spread * rng.normal(size=(labels.size, dim))
    return feats.astype(np.float32), labels


def test_metrics_reexports_the_probes():
    assert metrics.svm_probe is svm_probe and metrics.logistic_probe is logistic_probe


@pytest.mark.parametrize("probe", PROBES)
def test_probe_separates_separable_codes(probe):
    x_tr, y_tr = _clusters(seed=0)
    x_te, y_te = _clusters(n_per_class=20, seed=0)
    out = probe(x_tr, y_tr, x_te, y_te)
    assert out["accuracy"] == 1.0 and out["mean_class_accuracy"] == 1.0
    assert out["per_class_accuracy"] == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
    assert (out["n_train"], out["n_test"], out["C"], out["standardize"]) == (120, 80, 1.0, False)
    assert out["converged"] is True
    assert out["probe"] == ("svm" if probe is svm_probe else "logistic")


@pytest.mark.parametrize("probe", PROBES)
def test_probe_is_at_chance_on_random_labels(probe):
    rng = np.random.default_rng(1)
    x_tr, x_te = rng.normal(size=(300, 8)), rng.normal(size=(600, 8))
    y_tr, y_te = rng.integers(0, 2, 300), rng.integers(0, 2, 600)
    acc = probe(x_tr, y_tr, x_te, y_te)["accuracy"]
    assert 0.4 < acc < 0.6


@pytest.mark.parametrize("probe", PROBES)
def test_per_class_accuracy_counts_each_test_class(probe):
    x_tr, y_tr = _clusters(n_classes=3, seed=2)
    x_te = np.stack([x_tr[0], x_tr[0], x_tr[30], x_tr[31]])  # class 2 absent from test
    y_te = np.array([0, 1, 1, 1])  # the first is right, the second is wrong, then right, right
    out = probe(x_tr, y_tr, x_te, y_te)
    assert out["per_class_accuracy"] == {0: 1.0, 1: pytest.approx(2 / 3)}
    assert out["accuracy"] == 0.75
    assert out["mean_class_accuracy"] == pytest.approx((1 + 2 / 3) / 2)


@pytest.mark.parametrize("probe", PROBES)
def test_standardize_rescues_a_tiny_informative_feature(probe):
    # The label lives in a feature of scale 1e-3 beside a noise feature of scale 100: the
    # regularized fit on raw features cannot afford the huge weight it needs; standardized, it can.
    rng = np.random.default_rng(3)

    def make(n):
        y = rng.integers(0, 2, n)
        signal = (2 * y - 1) * 1e-3 + 1e-4 * rng.normal(size=n)
        return np.stack([signal, 100 * rng.normal(size=n)], axis=1), y

    (x_tr, y_tr), (x_te, y_te) = make(200), make(200)
    raw = probe(x_tr, y_tr, x_te, y_te, C=0.01)
    std = probe(x_tr, y_tr, x_te, y_te, C=0.01, standardize=True)
    assert raw["accuracy"] < 0.8 and raw["standardize"] is False
    assert std["accuracy"] > 0.95 and std["standardize"] is True


@pytest.mark.parametrize("probe", PROBES)
def test_scaler_is_fit_on_train_only(probe):
    # Test codes all shifted far to one side: scaled with train statistics they land in one
    # class (accuracy 1/2); a scaler refit on the test split would undo the shift (accuracy 1).
    y = np.array([0, 1] * 50)
    x_tr = (2.0 * y - 1)[:, None] + 0.1 * np.random.default_rng(4).normal(size=(100, 1))
    out = probe(x_tr, y, x_tr + 10.0, y, standardize=True)
    assert out["accuracy"] == 0.5


@pytest.mark.parametrize("probe", PROBES)
def test_probe_accepts_tensors_and_column_labels(probe):
    x_tr, y_tr = _clusters(seed=5)
    x_te, y_te = _clusters(n_per_class=10, seed=5)
    ref = probe(x_tr, y_tr, x_te, y_te)
    out = probe(
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr)[:, None],
        torch.from_numpy(x_te).double(),
        torch.from_numpy(y_te).int(),
    )
    assert out == ref


def test_svm_reports_non_convergence():
    x_tr, y_tr = _clusters(seed=6, spread=3.0)
    with pytest.warns(ConvergenceWarning):
        out = svm_probe(x_tr, y_tr, x_tr, y_tr, max_iter=1)
    assert out["converged"] is False and out["max_iter"] == 1


@pytest.mark.parametrize("probe", PROBES)
def test_probe_rejects_bad_input(probe):
    x, y = _clusters(n_per_class=5, seed=7)
    nan = x.copy()
    nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="train_feats contains NaN"):
        probe(nan, y, x, y)
    with pytest.raises(ValueError, match="test_feats contains NaN"):
        probe(x, y, nan, y)
    with pytest.raises(ValueError, match="train_feats must be a non-empty 2-D"):
        probe(x[:, :, None], y, x, y)
    with pytest.raises(ValueError, match="test_feats must have 16 columns"):
        probe(x, y, x[:, :5], y)
    with pytest.raises(ValueError, match=r"train_labels must have shape \(20,\)"):
        probe(x, y[:-1], x, y)
    with pytest.raises(ValueError, match="test_labels must hold integer"):
        probe(x, y, x, y.astype(np.float32))
    with pytest.raises(ValueError, match="at least 2 classes"):
        probe(x, np.zeros_like(y), x, y)
    with pytest.raises(ValueError, match="C must be > 0"):
        probe(x, y, x, y, C=0.0)
    with pytest.raises(ValueError, match="train_labels must be a torch.Tensor"):
        probe(x, list(y), x, y)
