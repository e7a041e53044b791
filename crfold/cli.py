"""The ``crfold`` command (also ``python -m crfold``).

Subcommands of this package are registered here; other packages (``data_prep``, ``viz``) add
theirs through the entry-point group ``crfold.commands``: each entry point names a callable
``register(subparsers)`` that adds one subparser and sets ``func`` (a callable taking the parsed
``argparse.Namespace`` and returning an exit status). ``crfold`` never imports those packages
directly, so it works when they (or their optional dependencies) are absent.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
import warnings
from importlib.metadata import entry_points
from pathlib import Path

from . import __version__

ENTRY_POINT_GROUP = "crfold.commands"


def _cmd_backend(args: argparse.Namespace) -> int:
    from .ops import backend

    print(backend())
    return 0


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the epilog's line breaks (the list of config keys)."""


def _error(command: str, exc: BaseException) -> int:
    print(f"crfold {command}: error: {exc}", file=sys.stderr)
    return 2


# Errors a command reports in one line (exit 2): bad input, a busy run directory, and files that
# could not be written (crfold.io.WriteError, an OSError: disk full, read-only, permission).
def _user_errors() -> tuple[type[BaseException], ...]:
    from .io import RunLockedError, WriteError

    return (ValueError, FileNotFoundError, FileExistsError, RunLockedError, WriteError,
            PermissionError, FloatingPointError)  # fmt: skip


def resolve_train_config(args: argparse.Namespace, task: str | None = None):
    """The config of ``crfold train``: defaults (or, with --resume, the run's saved config),
    then --config, then key=value overrides, then --run-dir. ``task`` (the ``crfold images
    train`` / ``crfold nvae train`` aliases) is an override of the ``task`` key."""
    from .config import load_config, load_saved_config
    from .train import CONFIG_FILE

    overrides = list(args.overrides)
    if task is not None:
        overrides.insert(0, f"task={task}")
    if args.run_dir is not None:
        overrides.append(f"run_dir={args.run_dir}")
    base = None
    if args.resume:  # the run's own config is the base: find its directory without a config class
        from .config import parse_override
        from .io import read_yaml

        run_dir = dict(parse_override(o) for o in overrides).get("run_dir")
        if run_dir is None and args.config is not None:
            run_dir = (read_yaml(args.config) or {}).get("run_dir")
        if not run_dir:
            raise ValueError("--resume: name the run to continue with --run-dir DIR")
        saved = Path(run_dir) / CONFIG_FILE
        if saved.is_file():
            base = load_saved_config(saved)
    return load_config(args.config, overrides, base=base)


def _cmd_train(args: argparse.Namespace) -> int:
    task = getattr(args, "task", None)
    try:
        cfg = resolve_train_config(args, task)
    except _user_errors() as exc:
        return _error("train", exc)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
        return 0
    from .train import train

    try:
        summary = train(cfg, resume=args.resume, quiet=args.quiet, evaluate=not args.no_eval)
    except FloatingPointError as exc:  # the run diverged: not an input error
        print(f"crfold train: error: {exc}", file=sys.stderr)
        return 1
    except _user_errors() as exc:
        return _error("train", exc)
    if summary["status"] == "interrupted":
        return 128 + int(summary["signal"] or 0)
    return 0


def add_train_parser(sub, name: str, task: str | None, help: str) -> argparse.ArgumentParser:  # noqa: A002
    """The ``train`` subparser (``crfold train``; ``task`` set: the ``crfold images|nvae train``
    aliases, whose --help lists that task's keys)."""
    from .config import RunConfig, config_class

    cls = config_class(task or "foldingnet")
    others = "" if task else (
        " Other tasks: `crfold images train --help` (VAE, IWAE, beta-VAE on images) and "
        "`crfold nvae train --help` list their keys."
    )  # fmt: skip
    p = sub.add_parser(
        name,
        help=help,
        description=textwrap.fill(
            "Train a model with the run engine. The config is the defaults, then --config FILE (a "
            "YAML mapping of the keys below; its `task` key picks the task), then KEY=VALUE "
            "overrides. With --resume the run's saved config.yaml replaces the defaults, and a "
            "change to any key not marked [may change on --resume] is refused. Under torchrun "
            "(python -m torch.distributed.run --nproc_per_node N -m crfold train ...) FoldingNet "
            "trains with DDP. SIGINT/SIGTERM finish the current step, save last.pt and exit with "
            "status 128 + the signal number. One process at a time may write a run directory."
            + others,
            100,
        ),
        epilog=f"config keys of task {cls.TASK!r} (KEY=VALUE; lists as a,b or [a,b]; none for an "
        "optional key):\n" + cls.describe(),
        formatter_class=_HelpFormatter,
    )
    assert issubclass(cls, RunConfig)
    p.add_argument("--config", metavar="FILE", default=None, help="YAML file of config overrides")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last.pt (its saved config is the base)",
    )
    p.add_argument(
        "--run-dir", metavar="DIR", default=None, help="run directory (overrides run_dir)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument(
        "--no-eval", action="store_true", help="skip the task's evaluation after training"
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    p.set_defaults(func=_cmd_train, task=task)
    return p


def _cmd_probe(args: argparse.Namespace) -> int:
    from .eval.consistency import DEFAULT_SEED
    from .eval.encode import checkpoint_path
    from .eval.format import format_probe
    from .eval.output import run_output
    from .eval.run import PROBE_FILE, probe_run
    from .io import atomic_write_json

    try:
        # The run is claimed before anything is computed: checkpoint, writable folder, lock.
        ckpt = checkpoint_path(args.run, args.which).name
        with run_output(args.run, PROBE_FILE, "crfold probe", ckpt) as path:
            res = probe_run(
                args.run,
                C=args.C,
                standardize=args.standardize,
                which=args.which,
                batch_size=args.batch_size,
                device=args.device,
                write=False,
                progress=not args.quiet,
                seed=DEFAULT_SEED if args.seed is None else args.seed,
            )
            print(format_probe(res, args.run), flush=True)  # the result first, then the file
            atomic_write_json(path, res)
    except _user_errors() as exc:
        return _error("probe", exc)
    print(f"  wrote {path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from .eval.consistency import DEFAULT_SEED
    from .eval.encode import checkpoint_path
    from .eval.format import format_eval
    from .eval.output import run_output
    from .eval.run import EVAL_FILE, evaluate_run
    from .io import atomic_write_json

    try:
        ckpt = checkpoint_path(args.run, args.which).name
        with run_output(args.run, EVAL_FILE, "crfold eval", ckpt) as path:
            res = evaluate_run(
                args.run,
                data=args.data,
                overrides=args.overrides,
                which=args.which,
                families=tuple(args.families.split(",")),
                seed=DEFAULT_SEED if args.seed is None else args.seed,
                mi_batch_size=args.mi_batch_size,
                batch_size=args.batch_size,
                device=args.device,
                write=False,
                progress=not args.quiet,
            )
            print(format_eval(res), flush=True)  # the result first, then the file
            atomic_write_json(path, res)
    except _user_errors() as exc:
        return _error("eval", exc)
    print(f"  wrote {path}")
    return 0


def _register_builtin(sub) -> None:
    p = sub.add_parser("backend", help="build (if needed) the kNN extension and print the backend")
    p.set_defaults(func=_cmd_backend)

    add_train_parser(
        sub, "train", None, "train a model (FoldingNet by default; task=images|nvae) from a config"
    )

    p = sub.add_parser(
        "probe",
        help="linear-SVM and logistic probes on a run's codes (raw and standardized)",
        description=textwrap.fill(
            "Encode the run's train and test splits (posterior means, eval mode, no "
            "augmentation), fit LinearSVC(C, random_state=0) and a logistic regression on the "
            "train codes, score them on the test codes, under both protocols: raw codes "
            "(FoldingNet's) and standardized codes (StandardScaler fit on the train codes). Also "
            "the SVM on the test shapes under random rotations about the up axis (rotated test), "
            "and fit on rotated train shapes too (rotated train+test). Prints them and writes "
            "RUN/probe.json. The run is checked first (checkpoint, writable folder, no other "
            "writer), so a read-only or busy run fails at once. --which best is refused for a "
            "run that selected best.pt on its probe split (val_split == probe_split).",
            100,
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run directory written by crfold train")
    p.add_argument(
        "--C", type=float, default=None, help="inverse regularization (None: the run's probe_C)"
    )
    p.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="which protocol is the headline, printed first and at the top of probe.json (both "
        "are computed; None: the run's probe_standardize)",
    )
    p.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="checkpoint to use (best: selected on the run's val_split)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="seed of the probe rotations (None: 1234)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="clouds per forward pass")
    p.add_argument("--device", default="cpu", help="device that encodes (cpu, cuda, cuda:N)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser(
        "eval",
        help="every metric of a run (Chamfer, probes, MI, AU, latent consistency) -> eval.json",
        description=textwrap.fill(
            "Evaluate a run on its probe split: Chamfer in both conventions, linear SVM and "
            "logistic probes (fit on the train split) on raw codes (FoldingNet's protocol) and "
            "standardized codes (StandardScaler fit on train; the run's probe_standardize only "
            "picks which is printed first), the SVM on test shapes under random rotations about "
            "the up axis (train codes as usual, and train shapes rotated too), mutual "
            "information, active units, and the latent consistency under held-out rotations, "
            "translations, scalings and jitter. Prints them and writes RUN/eval.json (the run is "
            "checked first: checkpoint, writable folder, no other writer). --data and --set "
            "KEY=VALUE (data keys only) evaluate on other data; a relative --data path is looked "
            "up under $CRFOLD_DATA when it does not exist from the working directory. --which "
            "best is refused for a run that selected best.pt on its probe split (val_split == "
            "probe_split: older runs); use --which last there.",
            100,
        ),
        formatter_class=_HelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run directory written by crfold train")
    p.add_argument(
        "--data",
        default=None,
        help="evaluate on this .npz / HDF5 folder / synthetic (relative: also under $CRFOLD_DATA)",
    )
    p.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="checkpoint to use (best: selected on the run's val_split)",
    )
    p.add_argument(
        "--families",
        default="rotation,translation,scale,jitter",
        help="transform families of the consistency metric",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="seed of the held-out transforms and probe rotations (None: 1234)",
    )
    p.add_argument(
        "--mi-batch-size", type=int, default=None, help="MI minibatch (None: the whole split)"
    )
    p.add_argument("--batch-size", type=int, default=64, help="clouds per forward pass")
    p.add_argument("--device", default="cpu", help="device that runs the model")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a data key (repeatable), e.g. --set to_up=y",
    )
    p.set_defaults(func=_cmd_eval)

    _register_experiment(sub)


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _command_line(args: argparse.Namespace) -> str:
    """The ``crfold experiment table9`` command that reproduces ``args`` (for the report)."""
    parts = ["crfold experiment table9"]
    parts += [f"--config {shlex.quote(args.config)}"] if args.config else []
    parts += [f"--seeds {args.seeds}", f"--out {shlex.quote(args.out)}", f"--modes {args.modes}"]
    parts += [f"--first-seed {args.first_seed}"] if args.first_seed else []
    parts += [f"--lams {args.lams}"] if args.lams else []
    parts += [f"--variant {shlex.quote(v)}" for v in args.variant]
    parts += ["--ablation"] if args.ablation else []
    parts += [] if args.untrained else ["--no-untrained"]
    parts += [f"--which {args.which}"] if args.which != "best" else []
    parts += [f"--name {args.name}"] if args.name != "report" else []
    return " ".join([*parts, f"--jobs {args.jobs}"]) + "".join(
        f" {shlex.quote(o)}" for o in args.overrides
    )


def _cmd_table9(args: argparse.Namespace) -> int:
    from .experiments.runner import exit_status
    from .experiments.table9 import normalize_modes, parse_variant, plan_variants, run_table9

    command = "crfold experiment table9"

    def experiment() -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DeprecationWarning)
            modes = normalize_modes([m.strip() for m in args.modes.split(",") if m.strip()])
        for w in caught:  # old mode names: say so, and quote the new ones in the report
            print(f"{command}: warning: {w.message}", file=sys.stderr)
        args.modes = ",".join(modes)
        variants = plan_variants(
            modes,
            lams=_floats(args.lams) if args.lams else None,
            ablation=args.ablation,
            untrained=args.untrained,
            extra=[parse_variant(v) for v in args.variant],
        )
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        if not args.name or any(c in args.name for c in "/\\ "):
            raise ValueError(f"--name: expected a file name without spaces, got {args.name!r}")
        report = run_table9(
            args.out, args.config, args.overrides, variants, seeds, args.jobs, args.which,
            report=args.name, quiet=args.quiet, command=_command_line(args),
        )  # fmt: skip
        print(f"wrote {report}")
        return 0

    return exit_status(command, experiment)


def _register_experiment(sub) -> None:
    """Adds ``crfold experiment table9``."""
    p = sub.add_parser("experiment", help="multi-seed experiments with a report (table9)")
    exp = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    t = exp.add_parser(
        "table9",
        help="FoldingNet-VAE + Aug vs CR-FoldingNet (and more) over seeds -> report.md",
        description=textwrap.fill(
            "Train each variant for each seed with the same config, data and budget, evaluate "
            "every run (crfold eval: Chamfer, SVM/logistic probes on raw and standardized codes, "
            "rotated-test probes, MI, AU, latent consistency) and write OUT/report.md with mean "
            "+- std tables, Welch tests of every row against the untrained row (standardized) and "
            "of cr against aug, and plots. The untrained row (one training step) is always there "
            "unless --no-untrained. Rerun to resume. Each run directory has one writer at a time: "
            "a run another process is training is reported with its holder.",
            100,
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--config", metavar="FILE", default=None, help="YAML config of every run")
    t.add_argument("--out", default="runs/table9", help="experiment directory")
    t.add_argument("--seeds", type=int, default=3, help="seeds per variant")
    t.add_argument("--first-seed", type=int, default=0, help="seeds are first..first+seeds-1")
    t.add_argument(
        "--modes",
        default="aug,cr",
        help="rows, from ae,base,aug,cr (aug: FoldingNet-VAE + Aug; old names vae, vae+aug map)",
    )
    t.add_argument("--lams", default=None, help="Table-4 lambda sweep of cr, e.g. 0,0.01,0.1,1")
    t.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=V,...",
        help="a row of its own (repeatable), e.g. 'cr default:recon=gaussian,beta=1,lam=0.1'",
    )
    t.add_argument(
        "--ablation", action="store_true", help="Table-5 rows: one augmentation family at a time"
    )
    t.add_argument(
        "--untrained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the untrained row: a 1-step encoder, the random-features reference of every claim "
        "that training helps (--no-untrained drops it)",
    )
    t.add_argument("--jobs", type=int, default=1, help="runs at the same time")
    t.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="checkpoint evaluated (best: selected on the holdout of train, val_split=holdout)",
    )
    t.add_argument("--name", default="report", help="report name: OUT/NAME.md (plots NAME_*.png)")
    t.add_argument("--quiet", action="store_true", help="no progress lines")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, all runs")
    t.set_defaults(func=_cmd_table9)


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
    # Python hides DeprecationWarnings outside __main__: show the ones users must act on.
    warnings.filterwarnings(
        "default", message=r".*is the old name of mode", category=DeprecationWarning
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:  # any command: one line, never a traceback, for these
        return _error(args.command or "", exc)


if __name__ == "__main__":
    sys.exit(main())
