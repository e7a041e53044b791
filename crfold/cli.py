"""The ``crfold`` command (also ``python -m crfold``).

Subcommands of this package are registered here; other packages (``data_prep``, ``viz``) add
theirs through the entry-point group ``crfold.commands``: each entry point names a callable
``register(subparsers)`` that adds one subparser and sets ``func`` (a callable taking the parsed
``argparse.Namespace`` and returning an exit status). ``crfold`` never imports those packages
directly, so it works when they (or their optional dependencies) are absent.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from importlib.metadata import entry_points

from . import __version__

ENTRY_POINT_GROUP = "crfold.commands"


def _cmd_backend(args: argparse.Namespace) -> int:
    from .ops import backend

    print(backend())
    return 0


def _register_builtin(sub) -> None:
    p = sub.add_parser("backend", help="build (if needed) the kNN extension and print the backend")
    p.set_defaults(func=_cmd_backend)


def _register_plugins(sub) -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            register = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break `crfold`
            warnings.warn(f"crfold: subcommand '{ep.name}' unavailable: {exc}", stacklevel=2)
            continue
        register(sub)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crfold",
        description="Consistency-regularized VAEs for point clouds.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"crfold {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _register_builtin(sub)
    _register_plugins(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
