"""The old module paths of the NVAE code (``crfold_images.models.nvae*``), kept as aliases."""

from __future__ import annotations

import importlib
import sys
import warnings


def alias(old: str, new: str) -> None:
    """Makes module ``old`` the module ``new`` (the same object), with a DeprecationWarning."""
    warnings.warn(f"{old} moved to {new}", DeprecationWarning, stacklevel=3)
    sys.modules[old] = importlib.import_module(new)
