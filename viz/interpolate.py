"""``python -m viz.interpolate RUN [options]``: the interactive viewer, as ``crfold view``.

See :mod:`viz.viewer` (the window) and :func:`viz.cli.add_view_arguments` (the options).
"""

from __future__ import annotations

import argparse
import sys

from .cli import _HelpFormatter, add_view_arguments


def main(argv: list[str] | None = None) -> int:
    """Parses ``argv`` (default ``sys.argv[1:]``) and runs the viewer; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m viz.interpolate",
        description="Interactive latent-interpolation viewer (the same as `crfold view`).",
        formatter_class=_HelpFormatter,
    )
    add_view_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
