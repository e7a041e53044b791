"""``crfold images``: the image-VAE task's commands (entry point ``crfold.commands``: images).

* ``crfold images train [--config FILE] [--resume] [--run-dir DIR] KEY=VALUE ...`` is
  ``crfold train task=images ...`` (its ``--help`` lists the keys of :class:`ImageConfig`);
* ``crfold images tables table1 ... [--jobs N]`` trains and reports the paper's Tables 1-6
  (:mod:`crfold_images.experiments`, a spec on the experiment runner
  :mod:`crfold.experiments.runner`; ``python -m crfold_images.experiments`` is the same command).
"""

from __future__ import annotations

import argparse
import textwrap

__all__ = ["register"]


def _cmd_tables(args: argparse.Namespace) -> int:
    from crfold_images.experiments import run_command

    return run_command(args)


def register(sub) -> None:
    """Adds ``crfold images`` (subcommands ``train`` and ``tables``) to the crfold parser."""
    from crfold.cli import add_train_parser
    from crfold_images.experiments import DESCRIPTION, add_table_arguments

    p = sub.add_parser(
        "images",
        help="image VAEs (VAE, IWAE, beta-VAE): train one run, or the paper's tables",
        description="Image VAEs (VAE, IWAE, beta-VAE) with consistency regularization.",
    )
    images_sub = p.add_subparsers(dest="images_command", metavar="COMMAND", required=True)
    add_train_parser(
        images_sub, "train", "images",
        "train an image VAE (= crfold train task=images): VAE, IWAE, beta-VAE; base|aug|cr|triplet",
    )  # fmt: skip
    t = images_sub.add_parser(
        "tables",
        help="the paper's image tables 1-6 over seeds -> <out>/<table>.md",
        description=textwrap.fill(
            DESCRIPTION + " Each table trains its grid of cells x seeds into resumable run "
            "directories (finished runs are skipped on rerun), evaluates them and writes "
            "OUT/<table>.md, .json and plots. Same as python -m crfold_images.experiments.",
            100,
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_table_arguments(t)
    t.set_defaults(func=_cmd_tables)
