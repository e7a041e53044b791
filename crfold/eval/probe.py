"""Linear probes on frozen codes: the FoldingNet linear-SVM protocol and a logistic regression.

Fit on the posterior means mu(x) of the train split, score on the test split
(docs/design.md#probe). Both probes are deterministic (``random_state=0``) and optionally
standardize the features with a StandardScaler fit on the train split only. Also available as
``crfold.metrics.svm_probe`` / ``crfold.metrics.logistic_probe`` (and, deprecated, from
``crfold.probe``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["logistic_probe", "svm_probe"]


def _features(x: Any, name: str) -> np.ndarray:
    """(N, D) float64 numpy array from a tensor or array, ValueError naming ``name`` otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (N, D) array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _labels(y: Any, name: str, n: int) -> np.ndarray:
    """(N,) int64 labels from (N,) or (N, 1) integer tensors/arrays (the HDF5 layout is (N, 1))."""
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    if not isinstance(y, np.ndarray):
        raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(y).__name__}")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) or ({n}, 1), got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def _run_probe(
    estimator: Any,
    kind: str,
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    standardize: bool,
) -> dict[str, Any]:
    """Validate, optionally standardize, fit ``estimator`` on train, score on test."""
    x_tr = _features(train_feats, "train_feats")  # (N_train, D)
    x_te = _features(test_feats, "test_feats")  # (N_test, D)
    if x_te.shape[1] != x_tr.shape[1]:
        raise ValueError(
            f"test_feats must have {x_tr.shape[1]} columns like train_feats, got {x_te.shape[1]}"
        )
    y_tr = _labels(train_labels, "train_labels", x_tr.shape[0])  # (N_train,)
    y_te = _labels(test_labels, "test_labels", x_te.shape[0])  # (N_test,)
    if np.unique(y_tr).size < 2:
        raise ValueError("train_labels must contain at least 2 classes")
    if standardize:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x_tr)
        x_tr, x_te = scaler.transform(x_tr), scaler.transform(x_te)
    estimator.fit(x_tr, y_tr)
    pred = estimator.predict(x_te)  # (N_test,)
    correct = pred == y_te
    per_class = {int(c): float(correct[y_te == c].mean()) for c in np.unique(y_te)}
    max_iter = int(estimator.max_iter)
    return {
        "probe": kind,
        "accuracy": float(correct.mean()),
        "per_class_accuracy": per_class,
        "mean_class_accuracy": float(np.mean(list(per_class.values()))),
        "C": float(estimator.C),
        "standardize": bool(standardize),
        "n_train": int(x_tr.shape[0]),
        "n_test": int(x_te.shape[0]),
        "max_iter": max_iter,
        "converged": bool(np.max(estimator.n_iter_) < max_iter),
    }


def svm_probe(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    C: float = 1.0,
    standardize: bool = False,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Linear-SVM probe, the FoldingNet protocol: ``LinearSVC(random_state=0, C=C)``.

    Fitting time grows quickly with C on un-standardized features (10,000 x 512 codes: ~170 s
    on one core at C=1, ~13 s at C=0.01); standardizing or a smaller C converges faster.

    Args:
        train_feats: (N_train, D) features (posterior means), tensor or array, finite.
        train_labels: (N_train,) or (N_train, 1) integer class indices, >= 2 classes.
        test_feats: (N_test, D) features.
        test_labels: (N_test,) or (N_test, 1) integer class indices.
        C: inverse regularization strength.
        standardize: scale features by a StandardScaler fit on the train split only.
        max_iter: liblinear's iteration cap (sklearn's default 1000); ``converged`` in the
            result says whether it was reached (sklearn also warns).

    Returns:
        A dict: ``probe`` ("svm"), ``accuracy`` (fraction of test examples), ``per_class_accuracy``
        ({class index: accuracy} over classes present in the test split),
        ``mean_class_accuracy``, ``C``, ``standardize``, ``n_train``, ``n_test``, ``max_iter``,
        ``converged``.

    Raises:
        ValueError: naming the argument, on bad shapes, dtypes, NaN/inf features, mismatched
            lengths or fewer than 2 train classes.
    """
    from sklearn.svm import LinearSVC

    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    est = LinearSVC(C=C, random_state=0, max_iter=max_iter)
    return _run_probe(est, "svm", train_feats, train_labels, test_feats, test_labels, standardize)


def logistic_probe(
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    C: float = 1.0,
    standardize: bool = False,
    max_iter: int = 5000,
) -> dict[str, Any]:
    """Logistic-regression probe: ``LogisticRegression(solver="lbfgs", random_state=0)``.

    Args and Returns as :func:`svm_probe` (``probe`` is "logistic"); ``max_iter`` is the lbfgs
    iteration cap.
    """
    from sklearn.linear_model import LogisticRegression

    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    est = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=0)
    return _run_probe(
        est, "logistic", train_feats, train_labels, test_feats, test_labels, standardize
    )
