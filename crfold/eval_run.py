"""Deprecated: moved to :mod:`crfold.eval.run` (:func:`evaluate_run`) and
:mod:`crfold.eval.consistency` (the held-out transforms). Re-exported here under the old names."""

from .eval.consistency import (  # noqa: F401
    DEFAULT_SEED,
    FAMILIES,
    consistency_families,
    consistency_metrics,
    family_seed,
)
from .eval.run import DATA_KEYS, EVAL_FILE, evaluate_run  # noqa: F401
