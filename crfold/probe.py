"""Deprecated: moved to :mod:`crfold.eval.probe` (the linear probes). Re-exported here."""

from .eval.probe import logistic_probe, svm_probe  # noqa: F401

__all__ = ["logistic_probe", "svm_probe"]

import warnings

warnings.warn(
    "crfold.probe is deprecated: import from crfold.eval.probe", DeprecationWarning, stacklevel=2
)
