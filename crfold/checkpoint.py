"""Deprecated: moved to :mod:`crfold.io` (atomic writes, checkpoints, locks). Re-exported here."""

import warnings

from .io import (  # noqa: F401
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)

warnings.warn(
    "crfold.checkpoint is deprecated: import from crfold.io", DeprecationWarning, stacklevel=2
)
