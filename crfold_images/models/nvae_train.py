"""Deprecated: ``python -m crfold_images.models.nvae_train ARGS`` is ``crfold nvae train ARGS``.

The old trainer (``Trainer``, ``run``, ``ckpt_last.pt``, ``results.json``) is gone: NVAE is the
run engine's ``nvae`` task (:mod:`crfold_images.nvae.task`). Resume with ``--resume --run-dir``.
"""

import sys
import warnings

from crfold_images.nvae.cli import main
from crfold_images.nvae.task import learning_rate

__all__ = ["learning_rate", "main"]

if __name__ == "__main__":
    warnings.warn(
        "python -m crfold_images.models.nvae_train is deprecated: use crfold nvae train",
        DeprecationWarning,
        stacklevel=1,
    )
    sys.exit(main())
