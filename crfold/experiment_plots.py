"""Deprecated: moved to :mod:`crfold.experiments.plots` (which now takes ``(title, run_dir)``
pairs). Re-exported here."""

from .experiments.plots import plot_curves, plot_figure1, plot_reconstructions  # noqa: F401
