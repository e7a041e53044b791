"""Deprecated: moved to :mod:`crfold.train.foldingnet` (the FoldingNet task). Re-exported here."""

import warnings

from .train.foldingnet import compute_terms, foldingnet_chamfer, validate  # noqa: F401

warnings.warn(
    "crfold.train_steps is deprecated: import from crfold.train.foldingnet",
    DeprecationWarning,
    stacklevel=2,
)
