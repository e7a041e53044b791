"""Deprecated: moved to :mod:`crfold.eval.run` (:func:`evaluate_run`) and
:mod:`crfold.eval.consistency` (the held-out transforms). Re-exported here under the old names."""

import warnings

from .eval.consistency import (  # noqa: F401
    DEFAULT_SEED,
    FAMILIES,
    consistency_families,
    consistency_metrics,
    family_seed,
)
from .eval.run import DATA_KEYS, EVAL_FILE, evaluate_run  # noqa: F401

warnings.warn(
    "crfold.eval_run is deprecated: import from crfold.eval.run", DeprecationWarning, stacklevel=2
)
