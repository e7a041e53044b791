"""Deprecated: moved to :mod:`crfold.eval` - loading and encoding in :mod:`crfold.eval.encode`,
the Chamfer in :mod:`crfold.eval.reconstruction`, :func:`probe_run` in :mod:`crfold.eval.run`.
Everything is re-exported here under its old name."""

import warnings

from .eval.encode import (  # noqa: F401
    encode_dataset,
    encode_posteriors,
    load_run,
    load_run_state,
    open_split,
)
from .eval.reconstruction import reconstruction_metrics  # noqa: F401
from .eval.run import PROBE_FILE, probe_run  # noqa: F401

warnings.warn(
    "crfold.evaluate is deprecated: import from crfold.eval", DeprecationWarning, stacklevel=2
)
