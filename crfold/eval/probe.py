"""Linear probes on frozen codes: the FoldingNet linear-SVM protocol and a logistic regression.

Fit on the posterior means mu(x) of the train split, score on the test split
(docs/design.md#probe). Both probes are deterministic (``random_state=0``). Two protocols
(:data:`PROTOCOLS`), reported side by side by ``crfold eval`` / ``crfold probe``:

* ``raw``: the codes as they are - FoldingNet's protocol;
* ``standardized``: a StandardScaler fit on the train codes only, applied to both splits.

They can disagree by tens of points: an untrained encoder's codes have variances ~1e-7, which
LinearSVC(C=1) cannot separate raw (chance) but separates well once standardized.

:func:`fit_probe` fits once and scores any number of test sets (the rotated-test probe reuses the
plain probe's fit); :func:`svm_probe` / :func:`logistic_probe` fit and score one. Also available
as ``crfold.metrics.svm_probe`` / ``crfold.metrics.logistic_probe`` (and, deprecated, from
``crfold.probe``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["PROBES", "PROTOCOLS", "FittedProbe", "fit_probe", "logistic_probe", "svm_probe"]

PROTOCOLS = ("raw", "standardized")  # raw: FoldingNet's; standardized: StandardScaler fit on train
PROBES = ("svm", "logistic")


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


@dataclass
class FittedProbe:
    """A probe fit on train codes (and its scaler, for the standardized protocol)."""

    kind: str
    estimator: Any
    scaler: Any
    n_train: int
    n_features: int

    @property
    def standardize(self) -> bool:
        return self.scaler is not None

    def score(self, test_feats: Any, test_labels: Any) -> dict[str, Any]:
        """Accuracy on a test set: the dict of :func:`svm_probe`."""
        x_te = _features(test_feats, "test_feats")  # (N_test, D)
        if x_te.shape[1] != self.n_features:
            raise ValueError(
                f"test_feats must have {self.n_features} columns like train_feats, "
                f"got {x_te.shape[1]}"
            )
        y_te = _labels(test_labels, "test_labels", x_te.shape[0])  # (N_test,)
        if self.scaler is not None:
            x_te = self.scaler.transform(x_te)
        pred = self.estimator.predict(x_te)  # (N_test,)
        correct = pred == y_te
        per_class = {int(c): float(correct[y_te == c].mean()) for c in np.unique(y_te)}
        max_iter = int(self.estimator.max_iter)
        return {
            "probe": self.kind,
            "accuracy": float(correct.mean()),
            "per_class_accuracy": per_class,
            "mean_class_accuracy": float(np.mean(list(per_class.values()))),
            "C": float(self.estimator.C),
            "standardize": self.standardize,
            "n_train": self.n_train,
            "n_test": int(x_te.shape[0]),
            "max_iter": max_iter,
            "converged": bool(np.max(self.estimator.n_iter_) < max_iter),
        }


def _estimator(kind: str, C: float, max_iter: int | None) -> Any:
    if C <= 0:
        raise ValueError(f"C must be > 0, got {C}")
    if kind == "svm":
        from sklearn.svm import LinearSVC

        return LinearSVC(C=C, random_state=0, max_iter=1000 if max_iter is None else max_iter)
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(
            C=C, solver="lbfgs", max_iter=5000 if max_iter is None else max_iter, random_state=0
        )
    raise ValueError(f"kind: expected one of {PROBES}, got {kind!r}")


def fit_probe(
    kind: str,
    train_feats: Any,
    train_labels: Any,
    C: float = 1.0,
    standardize: bool = False,
    max_iter: int | None = None,
) -> FittedProbe:
    """Fits a probe on train codes; :meth:`FittedProbe.score` scores it on any test set.

    Args:
        kind: "svm" (``LinearSVC(C, random_state=0)``) or "logistic"
            (``LogisticRegression(C, solver="lbfgs", random_state=0)``).
        train_feats, train_labels, C, standardize: as :func:`svm_probe`.
        max_iter: the solver's iteration cap; None: 1000 (svm), 5000 (logistic).
    """
    estimator = _estimator(kind, C, max_iter)
    x_tr = _features(train_feats, "train_feats")  # (N_train, D)
    y_tr = _labels(train_labels, "train_labels", x_tr.shape[0])  # (N_train,)
    if np.unique(y_tr).size < 2:
        raise ValueError("train_labels must contain at least 2 classes")
    scaler = None
    if standardize:
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x_tr)
        x_tr = scaler.transform(x_tr)
    estimator.fit(x_tr, y_tr)
    return FittedProbe(kind, estimator, scaler, int(x_tr.shape[0]), int(x_tr.shape[1]))


def _run_probe(
    kind: str,
    train_feats: Any,
    train_labels: Any,
    test_feats: Any,
    test_labels: Any,
    C: float,
    standardize: bool,
    max_iter: int,
) -> dict[str, Any]:
    """Validate, optionally standardize, fit on train, score on test."""
    _estimator(kind, C, max_iter)  # argument errors first
    x_tr = _features(train_feats, "train_feats")
    x_te = _features(test_feats, "test_feats")
    if x_te.shape[1] != x_tr.shape[1]:
        raise ValueError(
            f"test_feats must have {x_tr.shape[1]} columns like train_feats, got {x_te.shape[1]}"
        )
    _labels(train_labels, "train_labels", x_tr.shape[0])
    _labels(test_labels, "test_labels", x_te.shape[0])
    fitted = fit_probe(kind, x_tr, train_labels, C, standardize, max_iter)
    return fitted.score(x_te, test_labels)


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
    return _run_probe(
        "svm", train_feats, train_labels, test_feats, test_labels, C, standardize, max_iter
    )


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
    return _run_probe(
        "logistic", train_feats, train_labels, test_feats, test_labels, C, standardize, max_iter
    )
