"""``python -m data_prep LAYOUT ...`` (same commands as ``crfold prepare``)."""

import sys

from .cli import main

sys.exit(main())
