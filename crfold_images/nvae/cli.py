"""``crfold nvae train``: the ``nvae`` task of ``crfold train`` (entry point ``crfold.commands``),
and ``crfold nvae table``: NVAE, NVAE + Aug and CR-NVAE over seeds (:mod:`.table`).

    crfold nvae train --config configs/nvae_tiny_cpu.yaml mode=cr     # = crfold train task=nvae
    crfold nvae train --resume --run-dir DIR                           # continue a run
    crfold nvae table --config configs/nvae_table_cpu.yaml --seeds 3 --jobs 2 --out DIR

``python -m crfold_images.nvae ARGS`` (and the deprecated ``python -m
crfold_images.models.nvae_train ARGS``) is ``crfold nvae train ARGS``.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "register"]


def register(sub) -> None:
    """Adds ``crfold nvae`` with its subcommands ``train`` and ``table``."""
    from crfold.cli import add_train_parser

    p = sub.add_parser("nvae", help="NVAE / CR-NVAE on images (crfold nvae train --help)")
    nvae_sub = p.add_subparsers(dest="nvae_command", metavar="SUBCOMMAND", required=True)
    add_train_parser(
        nvae_sub, "train", "nvae",
        "train NVAE (mode=base), NVAE + Aug (mode=aug) or CR-NVAE (mode=cr) from a config",
    )  # fmt: skip
    from crfold_images.nvae.table import __doc__ as table_doc
    from crfold_images.nvae.table import add_arguments

    t = nvae_sub.add_parser(
        "table",
        help="NVAE, NVAE + Aug and CR-NVAE over seeds -> <out>/nvae_table.md",
        description=table_doc.split("\n\n")[0].replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_arguments(t)
    t.set_defaults(func=_cmd_table)


def _cmd_table(args) -> int:
    from crfold_images.nvae.table import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    """``crfold nvae train ARGS`` with ``argv`` (default: the command line) as ARGS."""
    from crfold.cli import main as crfold_main

    return crfold_main(["nvae", "train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
