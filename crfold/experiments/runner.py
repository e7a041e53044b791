"""The experiment runner: train and evaluate a plan of runs, ``jobs`` at a time, resumably.

A plan is a list of :class:`PlannedRun`: a run directory and the resolved config it trains with
(any task: FoldingNet, the image VAEs, NVAE). :func:`run_plan`

1. checks every run before anything trains: a run directory whose saved ``config.yaml`` differs
   from the planned config in a key that changes what it computes is an error (ValueError naming
   the keys), never silently reused (keys in ``ignore``, :data:`RUNTIME_KEYS` by default, may
   differ; keys in ``extend``, e.g. ``epochs``, may grow: the run is then continued);
2. trains each run that is not finished as a child process
   ``python -m crfold train --config <planned config> --run-dir <run> --quiet`` (with
   ``--resume`` when the run has a ``last.pt``), output appended to ``<run>.log`` beside the run
   directory;
3. evaluates each run whose ``eval.json`` is not current (:class:`EvalCommand`: a ``crfold``
   command such as ``crfold eval``; :class:`EngineEval`: the task's own evaluation, which the
   engine runs when training ends; None: no evaluation).

Rerunning the same plan resumes: finished runs with a current ``eval.json`` are reused, partial
ones continue from ``last.pt``. Every child takes the run directory's lock
(:class:`crfold.io.RunLock`), so two experiments (or an experiment and a ``crfold train``) never
write one run at once; the runner checks the lock before starting a child and reports a busy run
with its holder (:class:`crfold.io.RunLockedError`). SIGINT/SIGTERM are passed to the children
(each saves ``last.pt``) and the runner raises KeyboardInterrupt once they have exited.

The runner imports no task module: a spec builds the plan and reads the results
(:func:`crfold.experiments.report.load_results`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..config import RunConfig, load_saved_config
from ..io import RunLock, RunLockedError
from ..train.engine import CONFIG_FILE, EVAL_FILE, SUMMARY_FILE, evaluation_config

__all__ = [
    "FINISHED",
    "RUNTIME_KEYS",
    "EngineEval",
    "EvalCommand",
    "Evaluation",
    "PlannedRun",
    "config_differences",
    "exit_status",
    "run_plan",
    "train_state",
]

# Keys that do not change what a run computes: saved and planned configs may differ in them.
RUNTIME_KEYS = ("run_dir", "num_threads", "num_workers", "device", "checkpoint_every")
FINISHED = ("completed", "max_steps")  # summary.json statuses of a run that needs no training
LOCK_HOLDER = "crfold experiment"


@dataclass(frozen=True)
class PlannedRun:
    """One training run of a plan.

    Attributes:
        run_dir: the run directory (created by the child ``crfold train``).
        config: the resolved config it trains with (any task's :class:`crfold.config.RunConfig`;
            its ``run_dir`` is set to ``run_dir`` by the runner).
        label: the report row the run belongs to (free text; the runner only prints it).
    """

    run_dir: Path
    config: RunConfig = field(compare=False)
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_dir", Path(self.run_dir))

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def log(self) -> Path:
        """``<run_dir>.log``: the output of the run's child processes."""
        return self.run_dir.parent / f"{self.run_dir.name}.log"

    def planned_config(self) -> RunConfig:
        """:attr:`config` with ``run_dir`` set to :attr:`run_dir`."""
        return self.config.replace(run_dir=str(self.run_dir))


class Evaluation(Protocol):
    """How the runner brings a run's ``eval.json`` up to date after training."""

    def is_current(self, run_dir: Path, planned: RunConfig | None = None) -> bool:
        """Whether ``<run_dir>/eval.json`` is of the current checkpoint, with these settings
        (and, where the evaluation records its config, of the ``planned`` one)."""
        ...

    def argv(self, run_dir: Path) -> list[str] | None:
        """The ``crfold`` arguments that write it; None: resume training (the engine evaluates)."""
        ...


def _eval_newer_than(run_dir: Path, checkpoint: str) -> dict[str, Any] | None:
    """The run's eval.json if it is at least as new as ``checkpoint``, else None."""
    path, ckpt = run_dir / EVAL_FILE, run_dir / checkpoint
    if not path.is_file() or not ckpt.is_file() or path.stat().st_mtime < ckpt.stat().st_mtime:
        return None
    try:
        loaded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return loaded if isinstance(loaded, dict) else None


@dataclass(frozen=True)
class EvalCommand:
    """Evaluation by a ``crfold`` command that writes ``<run>/eval.json``.

    Attributes:
        args: the command's arguments after ``python -m crfold``; ``"{run}"`` is replaced by the
            run directory, e.g. ``("eval", "{run}", "--which", "last", "--quiet")``.
        checkpoint: the file evaluated: an ``eval.json`` older than it is stale.
        settings: what the ``"settings"`` entry of a current ``eval.json`` equals (None: not
            checked), so that an eval.json computed with other options is recomputed.
    """

    args: tuple[str, ...]
    checkpoint: str = "last.pt"
    settings: Mapping[str, Any] | None = None

    def is_current(self, run_dir: Path, planned: RunConfig | None = None) -> bool:
        loaded = _eval_newer_than(run_dir, self.checkpoint)
        if loaded is None:
            return False
        return self.settings is None or loaded.get("settings") == dict(self.settings)

    def argv(self, run_dir: Path) -> list[str]:
        return [a.replace("{run}", str(run_dir)) for a in self.args]


@dataclass(frozen=True)
class EngineEval:
    """The task's own evaluation (:meth:`crfold.train.Task.evaluate`), run by the engine when
    training ends. A finished run without a current ``eval.json`` is resumed (``crfold train
    --resume``: nothing left to train, so the engine only evaluates)."""

    checkpoint: str = "last.pt"

    def is_current(self, run_dir: Path, planned: RunConfig | None = None) -> bool:
        """Current: newer than the checkpoint and, given ``planned``, computed under its
        evaluation settings (the engine records its config in eval.json), so that a table
        never mixes runs evaluated differently."""
        loaded = _eval_newer_than(run_dir, self.checkpoint)
        if loaded is None:
            return False
        if planned is None:
            return True
        return evaluation_config(loaded.get("config") or {}) == evaluation_config(planned.to_dict())

    def argv(self, run_dir: Path) -> None:
        return None


# --------------------------------------------------------------------------- run states
def config_differences(
    saved: RunConfig, planned: RunConfig, ignore: Sequence[str] = RUNTIME_KEYS
) -> list[str]:
    """The keys (outside ``ignore``) whose values differ between two configs."""
    a, b = saved.to_dict(), planned.to_dict()
    return [k for k in dict.fromkeys([*a, *b]) if k not in ignore and a.get(k) != b.get(k)]


def _grows(old: Any, new: Any) -> bool:
    """Whether ``new`` is at least ``old`` (None: unlimited, as ``max_steps``)."""
    if new is None:
        return True
    if old is None:
        return False
    return new >= old


def train_state(
    run: PlannedRun, ignore: Sequence[str] = RUNTIME_KEYS, extend: Sequence[str] = ()
) -> str:
    """What the run needs: "done" (finished), "partial" (resume it) or "new" (train it).

    Raises:
        ValueError: the run directory was trained with another config (keys named), or with a
            larger value of an ``extend`` key than planned.
    """
    saved_path = run.run_dir / CONFIG_FILE
    summary_path = run.run_dir / SUMMARY_FILE
    grow = False
    if saved_path.is_file():
        saved = load_saved_config(saved_path)
        diff = config_differences(saved, run.planned_config(), ignore)
        fixed = [k for k in diff if k not in extend]
        if fixed:
            raise ValueError(
                f"{run.run_dir}: trained with a different config (keys {', '.join(fixed)}); "
                "delete the run or choose another --out"
            )
        shrunk = [k for k in diff if not _grows(getattr(saved, k), getattr(run.config, k))]
        if shrunk:
            raise ValueError(
                f"{run.run_dir}: already trained with more {', '.join(shrunk)} than planned; "
                "delete the run or plan at least as many"
            )
        grow = bool(diff)
    finished = False
    if summary_path.is_file():
        try:
            finished = json.loads(summary_path.read_text()).get("status") in FINISHED
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            finished = False
    if finished and not grow:
        return "done"
    return "partial" if (run.run_dir / "last.pt").is_file() else "new"


# --------------------------------------------------------------------------- children
class _Children:
    """The running child processes; a signal terminates them (each saves last.pt)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stopped: int | None = None

    def run(self, cmd: list[str], log: Path) -> int:
        """Runs ``cmd`` to the end, its output appended to ``log``."""
        with self.lock:
            if self.stopped is not None:
                return 128 + self.stopped
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as f:
                f.write(f"\n$ {' '.join(cmd)}\n")
                f.flush()
                proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
            self.procs.add(proc)
        try:
            return proc.wait()
        finally:
            with self.lock:
                self.procs.discard(proc)

    def stop(self, signum: int, _frame: Any = None) -> None:
        with self.lock:
            self.stopped = signum
            for proc in self.procs:
                proc.send_signal(signal.SIGTERM)


def _last_line(log: Path) -> str:
    """The last non-empty line of a log (its error message, for a child that failed)."""
    try:
        with log.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _failure(what: str, run: PlannedRun, rc: int) -> RuntimeError:
    line = _last_line(run.log)
    text = f"{what} {run.run_dir} exited with {rc}" + (f" ({line})" if line else "")
    text += f"; see {run.log}"
    return RunLockedError(text) if "in use by" in line else RuntimeError(text)


def _check_free(run: PlannedRun) -> None:
    """RunLockedError (naming the holder) if another process holds the run's lock now."""
    with RunLock(run.run_dir, LOCK_HOLDER):
        pass


class _Runner:
    def __init__(self, evaluation, ignore, extend, say) -> None:
        self.evaluation, self.ignore, self.extend, self.say = evaluation, ignore, extend, say
        self.kids = _Children()
        self.py = [sys.executable, "-m", "crfold"]

    def _train(self, run: PlannedRun, resume: bool) -> None:
        fd, tmp = tempfile.mkstemp(prefix="crfold-plan-", suffix=".yaml")
        os.close(fd)
        try:
            run.planned_config().save(tmp)
            cmd = [*self.py, "train", "--config", tmp, "--run-dir", str(run.run_dir), "--quiet"]
            rc = self.kids.run([*cmd, *(["--resume"] if resume else [])], run.log)
        finally:
            Path(tmp).unlink(missing_ok=True)
        if rc != 0 and self.kids.stopped is None:
            raise _failure("training", run, rc)

    def do(self, run: PlannedRun) -> None:
        """Trains (or resumes) and evaluates one run in child processes."""
        if self.kids.stopped is not None:  # stopped: start nothing, announce nothing
            return
        _check_free(run)
        state = train_state(run, self.ignore, self.extend)
        if state != "done":
            self.say(f"{'resume' if state == 'partial' else 'train'} {run.run_dir}")
            self._train(run, resume=state == "partial")
        if self.evaluation is None or self.kids.stopped is not None:
            return
        if self.evaluation.is_current(run.run_dir, run.config):
            return
        self.say(f"eval {run.run_dir}")
        argv = self.evaluation.argv(run.run_dir)
        if argv is None:
            self._train(run, resume=True)
        else:
            rc = self.kids.run([*self.py, *argv], run.log)
            if rc != 0 and self.kids.stopped is None:
                raise _failure("evaluating", run, rc)
        if self.kids.stopped is None and not self.evaluation.is_current(run.run_dir, run.config):
            raise RuntimeError(f"{run.run_dir}: no current {EVAL_FILE} after evaluation")


def _stamp_say(quiet: bool) -> Callable[[str], None]:
    lock = threading.Lock()  # runs report from several threads: one whole line at a time

    def say(text: str) -> None:
        if not quiet:
            with lock:
                sys.stdout.write(f"[{time.strftime('%H:%M:%S')}] {text}\n")
                sys.stdout.flush()

    return say


def run_plan(
    runs: Sequence[PlannedRun],
    *,
    jobs: int = 1,
    evaluation: Evaluation | None = None,
    ignore: Sequence[str] = RUNTIME_KEYS,
    extend: Sequence[str] = (),
    quiet: bool = False,
    say: Callable[[str], None] | None = None,
) -> None:
    """Trains and evaluates every run of the plan (see the module docstring).

    Args:
        runs: the plan; run directories must be distinct.
        jobs: runs in progress at the same time (one child process each).
        evaluation: how ``eval.json`` is made (:class:`EvalCommand`, :class:`EngineEval`) or
            None (no evaluation step).
        ignore: config keys in which a saved run may differ from the plan (runtime settings).
        extend: config keys whose planned value may exceed the saved run's (e.g. ``epochs``):
            the finished run is continued with ``--resume`` (the keys must be ones ``--resume``
            may change, the config's ``RESUMABLE``).
        quiet: no progress lines.
        say: where progress lines go (default: stdout with a time stamp).

    Raises:
        ValueError: a bad option, or a run trained with another config (before anything trains).
        RunLockedError: runs another process was writing (each named with its holder); the
            other runs still ran.
        RuntimeError: runs whose training or evaluation failed (the others still ran; rerun to
            resume).
        KeyboardInterrupt: stopped by SIGINT/SIGTERM after the children saved their state.
    """
    if jobs < 1:
        raise ValueError(f"jobs: expected an int >= 1, got {jobs}")
    if not runs:
        raise ValueError("runs: expected at least one run in the plan")
    dirs = [r.run_dir.resolve() for r in runs]
    dupes = sorted({str(d) for d in dirs if dirs.count(d) > 1})
    if dupes:
        raise ValueError(f"runs: run directories planned twice: {', '.join(dupes)}")
    for run in runs:  # every config (and every stale run) is checked before anything trains
        train_state(run, ignore, extend)
    runner = _Runner(evaluation, tuple(ignore), tuple(extend), say or _stamp_say(quiet))
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread
        previous = {s: signal.signal(s, runner.kids.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    errors: list[Exception] = []
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for fut in [pool.submit(runner.do, r) for r in runs]:
                try:
                    fut.result()
                except Exception as exc:  # noqa: BLE001 - report every run's failure at the end
                    errors.append(exc)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if runner.kids.stopped is not None:
        raise KeyboardInterrupt(
            f"stopped by signal {runner.kids.stopped}; rerun the command to resume"
        )
    if errors:
        text = "; ".join(
            str(e) if isinstance(e, (RuntimeError, ValueError)) else f"{type(e).__name__}: {e}"
            for e in errors
        )
        if all(isinstance(e, RunLockedError) for e in errors):
            raise RunLockedError(text)
        raise RuntimeError(text)


def exit_status(name: str, experiment: Callable[[], int]) -> int:
    """Runs an experiment command (a callable returning its exit status) with the runner's
    errors as one line on stderr and the commands' exit statuses: 2 for a bad option, a run with
    another config or one in use; 1 for a failed run; 130 when a signal stopped it (the runs
    resumable)."""
    try:
        return experiment()
    except (ValueError, FileNotFoundError, RunLockedError) as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 130
