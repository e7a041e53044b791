"""``python -m crfold_images.nvae ARGS`` is ``crfold nvae train ARGS``."""

import sys

from crfold_images.nvae.cli import main

sys.exit(main())
