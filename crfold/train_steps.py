"""Deprecated: moved to :mod:`crfold.train.foldingnet` (the FoldingNet task). Re-exported here."""

from .train.foldingnet import compute_terms, foldingnet_chamfer, validate  # noqa: F401
