"""``crfold view`` and ``crfold render`` (registered through the ``crfold.commands`` entry points).

``crfold view RUN`` opens the interactive viewer (also ``python -m viz.interpolate RUN``);
``crfold render RUN --pairs A:B C:D --steps 5 --out fig.png`` writes the Figure-2 grid.
Neither imports Open3D before it runs, so ``crfold --help`` works without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

from .source import SHAPE_SPEC_HELP


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the description's line breaks."""


def _error(command: str, exc: BaseException) -> int:
    print(f"crfold {command}: error: {exc}", file=sys.stderr)
    return 2


def _add_source_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run directory written by crfold train")
    p.add_argument("--which", choices=("best", "last"), default="best", help="checkpoint to use")
    p.add_argument("--data", default=None, help="dataset spec instead of the run's own data")
    p.add_argument(
        "--split", default=None, help="split to pick shapes from (None: the run's validation split)"
    )
    p.add_argument(
        "--num-points",
        type=int,
        default=None,
        help="points per input cloud (None: the run's num_points)",
    )
    p.add_argument("--slerp", action="store_true", help="spherical instead of linear interpolation")
    p.add_argument(
        "--grid-size",
        type=int,
        default=None,
        help="decode density: grid side G (G² points; None: the run's grid_size)",
    )
    p.add_argument("--elev", type=float, default=20.0, help="camera elevation, degrees")
    p.add_argument("--azim", type=float, default=-60.0, help="camera azimuth, degrees")
    p.add_argument("--device", default="cpu", help="device of the model (cpu, cuda, cuda:N)")


def add_view_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``crfold view`` / ``python -m viz.interpolate`` (sets ``func``)."""
    _add_source_arguments(p)
    p.add_argument("--a", default="0", help="first shape (index, class or class@rank)")
    p.add_argument("--b", default="1", help="second shape (index, class or class@rank)")
    p.add_argument("--t", type=float, default=0.5, help="initial t in [0, 1]")
    p.add_argument("--no-inputs", action="store_true", help="hide the input clouds at start")
    p.add_argument("--steps", type=int, default=7, help="decoded clouds in an exported strip")
    p.add_argument("--out-dir", default=".", help="folder of the saved PNG / PLY / strip files")
    p.add_argument("--size", default="1280x720", help="window size WIDTHxHEIGHT")
    p.add_argument("--point-size", type=float, default=4.0, help="point diameter, pixels")
    p.add_argument(
        "--screenshot",
        metavar="PNG",
        default=None,
        help="open, save a screenshot of the whole window to PNG, and exit (e.g. under xvfb-run)",
    )
    p.set_defaults(func=run_view)
    return p


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size: expected WIDTHxHEIGHT, e.g. 1280x720, got {text!r}") from None
    if w < 64 or h < 64:
        raise ValueError(f"--size: expected at least 64x64, got {text!r}")
    return w, h


def run_view(args: argparse.Namespace) -> int:
    """Opens the viewer (blocks until its window closes; with --screenshot, saves and exits)."""
    from .session import InterpolationSession
    from .source import load_source

    if (
        sys.platform.startswith("linux")
        and args.screenshot is None
        and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    ):
        hint = "run it under `xvfb-run -a crfold view ... --screenshot PNG`, or use `crfold render`"
        return _error("view", RuntimeError(f"no display ({hint})"))
    try:
        size = _parse_size(args.size)
        if args.steps < 2:
            raise ValueError(f"--steps: expected an int >= 2, got {args.steps}")
        source = load_source(
            args.run, args.which, args.data, args.split, args.num_points, args.device
        )
        method = "slerp" if args.slerp else "lerp"
        session = InterpolationSession(source, args.a, args.b, args.t, method, args.grid_size)
        from .viewer import InterpolationViewer

        viewer = InterpolationViewer(
            session,
            args.out_dir,
            args.steps,
            not args.no_inputs,
            *size,
            args.point_size,
            args.elev,
            args.azim,
        )
    except (ValueError, FileNotFoundError, ImportError) as exc:
        return _error("view", exc)
    if args.screenshot is not None:
        viewer.pump(seconds=1.0)
        path = viewer.save_window_screenshot(args.screenshot)
        viewer.close()
        print(f"wrote {path}")
        return 0
    viewer.run()
    return 0


def add_render_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``crfold render`` (sets ``func``)."""
    _add_source_arguments(p)
    p.add_argument(
        "--pairs", nargs="+", required=True, metavar="A:B", help="shape pairs, one figure row each"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=5,
        help="decoded clouds per row, t = 0 .. 1 (the inputs add a column at each end)",
    )
    p.add_argument("--out", required=True, metavar="PNG", help="output image")
    p.add_argument("--cell-size", type=int, default=256, help="side of each cell, pixels")
    p.add_argument(
        "--point-size",
        type=float,
        default=None,
        help="point diameter, pixels (None: 3 px per 256 px of cell)",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "open3d", "matplotlib"),
        default="auto",
        help="auto: Open3D offscreen, matplotlib if Open3D cannot render",
    )
    p.add_argument("--no-labels", action="store_true", help="no captions in the cells")
    p.set_defaults(func=run_render)
    return p


def _image_format(out: Path) -> str:
    """PIL's format name for the extension of ``out``; ValueError for an unknown one."""
    from PIL import Image

    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"--out: expected an image file name (.png, .jpg, ...), got {out}")
    return fmt


def run_render(args: argparse.Namespace) -> int:
    """Renders the interpolation grid to ``args.out``.

    Before computing anything it checks that ``--out``'s folder can take the file and takes the
    run's lock (:func:`crfold.eval.output.reading_run`: a run another process writes fails at
    once, naming it); the image is written atomically.
    """
    from crfold.eval.output import reading_run
    from crfold.io import atomic_write, check_writable

    from .interp import interpolation_row
    from .render import render_figure
    from .source import load_source, parse_pair

    out = Path(args.out)
    try:
        if args.steps < 2:
            raise ValueError(f"--steps: expected an int >= 2, got {args.steps}")
        fmt = _image_format(out)
        with reading_run(args.run, "crfold render", f"{args.which}.pt"):
            check_writable(out.parent, out.name)
            source = load_source(
                args.run, args.which, args.data, args.split, args.num_points, args.device
            )
            pairs = [parse_pair(p, source.dataset) for p in args.pairs]
            rows, grid = [], None
            for a, b in pairs:
                row, grid = interpolation_row(
                    source.model,
                    source.cloud(a),
                    source.cloud(b),
                    args.steps,
                    "slerp" if args.slerp else "lerp",
                    args.grid_size,
                    (source.title(a), source.title(b)),
                )
                rows.append(row)
            result = render_figure(
                rows,
                grid,
                source.up_axis,
                args.cell_size,
                args.elev,
                args.azim,
                args.point_size,
                args.backend,
                not args.no_labels,
                on_fallback=lambda m: print(f"crfold render: {m}", file=sys.stderr),
            )
            atomic_write(out, lambda f: result.image.save(f, format=fmt))
    except (ValueError, ImportError, RuntimeError, OSError) as exc:  # RunLockedError, WriteError
        return _error("render", exc)
    w, h = result.image.size
    print(f"wrote {out} ({w}x{h}, {len(rows)} pairs x {args.steps} steps, {result.backend})")
    return 0


def register_view(subparsers) -> None:
    """Adds ``crfold view`` (entry point ``view = "viz.cli:register_view"``)."""
    p = subparsers.add_parser(
        "view",
        help="interactive latent-interpolation viewer (Open3D GUI)",
        description=textwrap.fill(
            "Open an Open3D window on a run: the decoded cloud (coloured by its 2-D grid "
            "coordinate) between the two input clouds, a slider t that decodes "
            "z = (1 - t) z_A + t z_B live, slerp, shape pickers, decode density, and buttons "
            f"that save PNG / PLY / a rendered strip. {SHAPE_SPEC_HELP}. Needs a display "
            "(xvfb-run on a headless machine) and Open3D (pip install crfold[viz]).",
            100,
        ),
        formatter_class=_HelpFormatter,
    )
    add_view_arguments(p)


def register_render(subparsers) -> None:
    """Adds ``crfold render`` (entry point ``render = "viz.cli:register_render"``)."""
    p = subparsers.add_parser(
        "render",
        help="render an interpolation figure (rows = pairs, columns = steps)",
        description=textwrap.fill(
            "Render the paper's Figure-2 grid offscreen: one row per pair A:B, the input A, "
            "STEPS decoded clouds at t = 0 .. 1 and the input B, all with the same camera. "
            f"{SHAPE_SPEC_HELP}. Uses Open3D's OffscreenRenderer (no display needed); when "
            "Open3D cannot render, matplotlib draws the figure and a message says so.",
            100,
        ),
        formatter_class=_HelpFormatter,
    )
    add_render_arguments(p)
