"""Deprecated: moved to :mod:`crfold.experiments.report` (tables, statistics),
:mod:`crfold.experiments.table9` (the Table-9 report) and :mod:`crfold.eval.format`
(:func:`format_eval`). Re-exported here under the old names."""

import warnings

from .eval.format import format_eval  # noqa: F401
from .experiments.table9 import CONSISTENCY, MAIN, REPRESENTATION, write_report  # noqa: F401

warnings.warn(
    "crfold.experiment_report is deprecated: import from crfold.experiments.report",
    DeprecationWarning,
    stacklevel=2,
)
