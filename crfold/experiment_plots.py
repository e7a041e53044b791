"""Deprecated: moved to :mod:`crfold.experiments.plots` (which now takes ``(title, run_dir)``
pairs). Re-exported here."""

import warnings

from .experiments.plots import plot_curves, plot_figure1, plot_reconstructions  # noqa: F401

warnings.warn(
    "crfold.experiment_plots is deprecated: import from crfold.experiments.plots",
    DeprecationWarning,
    stacklevel=2,
)
