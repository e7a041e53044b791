"""Deprecated: moved to :mod:`crfold.experiments` - the task-agnostic runner in
:mod:`crfold.experiments.runner`, the Table-9 spec in :mod:`crfold.experiments.table9`.

Re-exported here under the old names: ``run_experiment`` is
:func:`crfold.experiments.table9.run_table9` (same arguments); ``Run`` is
:class:`crfold.experiments.runner.PlannedRun` (now ``(run_dir, config, label)``), and
``run_config`` takes ``(config, overrides, variant, seed, run_dir)``."""

import warnings

from .experiments.runner import PlannedRun as Run  # noqa: F401
from .experiments.table9 import (  # noqa: F401
    Variant,
    plan_variants,
    run_config,
)
from .experiments.table9 import run_table9 as run_experiment  # noqa: F401

warnings.warn(
    "crfold.experiment is deprecated: import from crfold.experiments",
    DeprecationWarning,
    stacklevel=2,
)
