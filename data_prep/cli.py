"""``crfold prepare LAYOUT ...`` and ``python -m data_prep LAYOUT ...``.

Exit status: 0 all inputs converted; 3 output written but some inputs were bad (listed with
reasons in ``OUT/report.json``); 2 bad arguments or an output folder made with other parameters;
1 a run that could not finish (a worker died, another run holds the folder, or a file could not
be written: disk full, quota, no permission, read-only or I/O error; finished files are kept and
no temporary file is left, so a rerun resumes); 130 interrupted. Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import sys

from .output import WriteError
from .pipeline import default_workers
from .sampling import AXES

_FMT = argparse.ArgumentDefaultsHelpFormatter
EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder (created; resumed if it exists)")
    p.add_argument(
        "--name",
        default=None,
        help="shard prefix <name>_train0.h5; None: the root folder's (file's) name",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="global seed (per-model seeds derive from it)"
    )
    p.add_argument("--axis", choices=AXES, default="none", help="z-up-to-y-up: (x,y,z)->(x,z,-y)")
    p.add_argument("--shard-size", type=int, default=2048, help="samples per .h5 shard")
    p.add_argument("--overwrite", action="store_true", help="replace an output made differently")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_mesh_args(p: argparse.ArgumentParser, name: str | None, axis: str = "none") -> None:
    p.add_argument("--root", required=True, help="the collection's top folder")
    _add_output_args(p)
    p.set_defaults(name=name, axis=axis)
    p.add_argument("--num-points", type=int, default=2048, help="points per cloud")
    p.add_argument(
        "--dense-factor",
        type=int,
        default=10,
        help="sample dense_factor*num_points surface points, then FPS to num_points",
    )
    p.add_argument("--min-faces", type=int, default=4, help="meshes with fewer faces are skipped")
    p.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        help="worker processes (0: run in this process)",
    )
    p.add_argument(
        "--clean-cache",
        action="store_true",
        help="delete OUT/.cache/*.npy (per-model clouds) after a complete run",
    )


def _ratios_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--ratios",
        default="0.7,0.1,0.2",
        help=f"train,val,test fractions of each class, split by a hash of the {what}",
    )


def _mesh_kwargs(args: argparse.Namespace) -> dict:
    sampling = {
        "num_points": args.num_points,
        "dense_factor": args.dense_factor,
        "seed": args.seed,
        "min_faces": args.min_faces,
        "axis": args.axis,
    }
    return {
        "name": args.name,
        "sampling": sampling,
        "workers": args.workers,
        "shard_size": args.shard_size,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
        "keep_cache": not args.clean_cache,
    }


def _error(args: argparse.Namespace, message) -> None:
    """Print ``data_prep LAYOUT: error: MESSAGE`` as one line on stderr."""
    text = " ".join(str(message).splitlines())  # libhdf5 messages span lines
    print(f"data_prep {args.layout}: error: {text}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from . import prepare
    from .npz import convert_npz

    try:
        if args.layout == "shapenet":
            result = prepare.prepare_shapenet(
                args.root,
                args.out,
                split_file=args.split_file,
                taxonomy=args.taxonomy,
                ratios=args.ratios,
                **_mesh_kwargs(args),
            )
        elif args.layout == "modelnet":
            result = prepare.prepare_modelnet(args.root, args.out, **_mesh_kwargs(args))
        elif args.layout == "folder":
            result = prepare.prepare_folder(
                args.root, args.out, ratios=args.ratios, **_mesh_kwargs(args)
            )
        else:
            result = convert_npz(
                args.input,
                args.out,
                name=args.name,
                axis=args.axis,
                num_points=args.num_points,
                normalize=not args.no_normalize,
                seed=args.seed,
                shard_size=args.shard_size,
                overwrite=args.overwrite,
                progress=not args.quiet,
            )
    except ValueError as exc:
        _error(args, exc)
        return EXIT_USAGE
    except WriteError as exc:  # "could not write PATH: No space left on device (ENOSPC)"
        _error(args, f"{exc}; finished files are kept, rerun to resume")
        return EXIT_ERROR
    except (OSError, RuntimeError) as exc:  # an OSError's str() names its file
        _error(args, exc)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(f"data_prep {args.layout}: interrupted; rerun to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(result.summary())
    return result.exit_status


def _layout_parser(sub, name: str, text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, formatter_class=_FMT, help=text, description=f"Input: {text}.")


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Add the ``shapenet``, ``modelnet``, ``folder`` and ``npz`` subcommands to ``parser``."""
    sub = parser.add_subparsers(dest="layout", metavar="LAYOUT")
    parser.set_defaults(func=lambda args: parser.print_help() or EXIT_USAGE)

    p = _layout_parser(
        sub, "shapenet", "ShapeNetCore.v2: <synset>/<model>/models/model_normalized.obj"
    )
    _add_mesh_args(p, "shapenetcorev2")
    p.add_argument("--split-file", default=None, help="official split CSV (all.csv)")
    p.add_argument(
        "--taxonomy",
        default=None,
        help="taxonomy.json (synsetId -> name); default ROOT/taxonomy.json if present, "
        "else the folder names are the class names",
    )
    _ratios_arg(p, "model id (without --split-file)")

    p = _layout_parser(
        sub, "modelnet", "ModelNet10/40: <class>/{train,test}/*.off (official split)"
    )
    _add_mesh_args(p, None, axis="z-up-to-y-up")  # raw ModelNet is z-up; published HDF5 y-up

    p = _layout_parser(sub, "folder", "any <class>/**/*.{obj,off,ply,stl,glb} collection")
    _add_mesh_args(p, None)
    _ratios_arg(p, "file path")

    p = _layout_parser(
        sub, "npz", "point-cloud arrays: <split>_points (N,P,3), <split>_labels, classes"
    )
    p.add_argument("--input", required=True, help="the .npz file")
    _add_output_args(p)
    p.add_argument(
        "--num-points",
        type=int,
        default=None,
        help="farthest-point subsample to this many points; None keeps all",
    )
    p.add_argument("--no-normalize", action="store_true", help="keep coordinates as stored")
    for p in sub.choices.values():
        p.set_defaults(func=_run)


def register(subparsers) -> None:
    """Entry point of ``crfold.commands``: add ``prepare`` to the ``crfold`` command."""
    p = subparsers.add_parser(
        "prepare",
        help="raw meshes or point-cloud arrays -> the HDF5 point-cloud layout",
        description="Convert a collection into <name>_{train,val,test}K.h5 shards (resumable).",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=_FMT,
    )
    add_commands(p)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m data_prep``."""
    parser = argparse.ArgumentParser(
        prog="python -m data_prep",
        description="Convert a collection into <name>_{train,val,test}K.h5 shards (resumable).",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=_FMT,
    )
    add_commands(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``python -m data_prep`` with ``argv``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))
