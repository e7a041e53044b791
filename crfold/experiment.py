"""``crfold experiment table9``: the paper's Table 9 on your data, with seeds, plots and resume.

    crfold experiment table9 --config configs/table9_modelnet10.yaml --seeds 3 --jobs 2 \\
        --out results/table9_modelnet10

trains every variant (by default FoldingNet-VAE + Aug and CR-FoldingNet; ``--modes`` adds AE
and the plain VAE; ``--lams`` the Table-4 lambda sweep; ``--ablation`` the Table-5 augmentation
ablation) for each seed with the same config, data and budget, evaluates each run
(:func:`crfold.eval_run.evaluate_run`, in ``eval.json``) and writes ``report.md`` with the
mean +- std table and the plots (:mod:`crfold.experiment_report`). Several reports can share an
experiment directory (``--name``): e.g. a lambda sweep that reuses the Table-9 runs.

Layout: ``<out>/runs/<variant>/seed<s>/`` (a ``crfold train`` run directory) and
``<out>/runs/<variant>/seed<s>.log``. Rerunning the command resumes: a finished run (its
``summary.json``) is reused, a partial one (``last.pt``) continues with ``crfold train
--resume``, and ``eval.json`` is recomputed only when missing or older than the checkpoint. A
finished run whose saved config differs from what the command would train is an error, never
silently reused; an eval.json computed with other settings is recomputed. Runs are child
processes (``--jobs`` at a time) holding a lock (``<run>.lock``), so two commands never train
one run at once; SIGINT/SIGTERM stop them cleanly (each saves ``last.pt``) before the command
exits.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig, load_config, load_saved_config

__all__ = ["Run", "Variant", "plan_variants", "run_config", "run_experiment"]

# Keys that do not change what a run computes: saved and wanted configs may differ in them.
RUNTIME_KEYS = ("run_dir", "num_threads", "num_workers", "device", "checkpoint_every")
FINISHED = ("completed", "max_steps")
# Table-5 ablation: one augmentation family at a time (the others off).
_OFF = {
    "rotate": "aug_rotate=none",
    "translate": "aug_translate=0",
    "scale": "aug_scale=none",
    "jitter": "aug_jitter_sigma=0",
}
_ON = {
    "rotate": "aug_rotate=up",
    "translate": "aug_translate=0.2",
    "scale": "aug_scale=[0.667,1.5]",
    "jitter": "aug_jitter_sigma=0.01",
}


@dataclass(frozen=True)
class Variant:
    """One row of the table: a name and the config overrides that make it."""

    name: str
    overrides: tuple[str, ...]

    @property
    def slug(self) -> str:
        """The directory name: ``vae+aug`` -> ``vae-aug``, ``cr lam=1`` -> ``cr_lam1``."""
        out = self.name.replace("+", "-").replace(" ", "_").replace("=", "").replace("/", "-")
        return "".join(c for c in out if c.isalnum() or c in "-_.")


@dataclass(frozen=True)
class Run:
    """One training run of the experiment."""

    variant: Variant
    seed: int
    run_dir: Path

    @property
    def log(self) -> Path:
        return self.run_dir.parent / f"{self.run_dir.name}.log"


def plan_variants(
    modes: list[str],
    lams: list[float] | None = None,
    ablation: bool = False,
    untrained: bool = False,
) -> list[Variant]:
    """The rows: one per mode, then the lambda sweep (cr), the ablation, the untrained reference.

    Args:
        modes: training modes, e.g. ["vae+aug", "cr"] (Table 9), optionally "ae", "vae".
        lams: CR weights for a Table-4 sweep (lam=0 is vae+aug, which is added if absent).
        ablation: add Table-5 rows: vae+aug and cr with one augmentation family at a time.
        untrained: add an encoder trained for one step (random features reference).
    """
    variants = [Variant(m, (f"mode={m}",)) for m in modes]
    for lam in lams or []:
        if float(lam) == 0.0:
            if "vae+aug" not in modes:
                variants.append(Variant("vae+aug", ("mode=vae+aug",)))
            continue
        variants.append(Variant(f"cr lam={lam:g}", ("mode=cr", f"lam={lam:g}")))
    if ablation:
        for mode in ("vae+aug", "cr"):
            for fam in _ON:
                only = tuple(_ON[f] if f == fam else _OFF[f] for f in _ON)
                variants.append(Variant(f"{mode} {fam} only", (f"mode={mode}", *only)))
    if untrained:
        variants.append(Variant("untrained", ("mode=cr", "max_steps=1")))
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"modes/lams: variants listed twice: {dupes}")
    return variants


def run_config(config: str | None, overrides: list[str], run: Run) -> TrainConfig:
    """The config a run trains with: the YAML, the user's overrides, the variant's, the seed."""
    extra = [*overrides, *run.variant.overrides, f"seed={run.seed}", f"run_dir={run.run_dir}"]
    return load_config(config, extra)


def _differences(saved: TrainConfig, wanted: TrainConfig) -> list[str]:
    a, b = saved.to_dict(), wanted.to_dict()
    return [k for k in a if k not in RUNTIME_KEYS and a[k] != b.get(k)]


class _Children:
    """The running child processes; a signal terminates them (each saves last.pt)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: set[subprocess.Popen] = set()
        self.stopped: int | None = None

    def run(self, cmd: list[str], log: Path, lock_fd: int) -> int:
        """Runs ``cmd`` to the end (output appended to ``log``), passing it the run's lock."""
        with self.lock:
            if self.stopped is not None:
                return 128 + self.stopped
            with log.open("a") as f:
                proc = subprocess.Popen(
                    cmd, stdout=f, stderr=subprocess.STDOUT, pass_fds=(lock_fd,)
                )
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


def _train_state(run: Run, wanted: TrainConfig) -> str:
    """ "done", "partial" or "new"; ValueError if a finished run has another config."""
    summary = run.run_dir / "summary.json"
    saved = run.run_dir / "config.yaml"
    if saved.is_file():
        diff = _differences(load_saved_config(saved), wanted)
        if diff:
            raise ValueError(
                f"{run.run_dir}: trained with a different config (keys {', '.join(diff)}); "
                "delete the run or choose another --out"
            )
    if summary.is_file() and json.loads(summary.read_text()).get("status") in FINISHED:
        return "done"
    return "partial" if (run.run_dir / "last.pt").is_file() else "new"


def _eval_current(run: Run, which: str) -> bool:
    """Whether the run's eval.json is of its current checkpoint, with the experiment's settings."""
    from .eval_run import DEFAULT_SEED, FAMILIES

    path = run.run_dir / "eval.json"
    ckpt = run.run_dir / f"{which}.pt"
    if not path.is_file() or path.stat().st_mtime < ckpt.stat().st_mtime:
        return False
    try:
        settings = json.loads(path.read_text()).get("settings")
    except json.JSONDecodeError:
        return False
    wanted = {"which": which, "data": None, "overrides": [], "families": list(FAMILIES),
              "seed": DEFAULT_SEED, "mi_batch_size": None}  # fmt: skip
    return settings == wanted


@contextmanager
def _locked(run: Run) -> Iterator[int]:
    """An exclusive lock on the run (``<run>.lock``), also held by the children it starts, so
    that two experiments (or an orphaned child) never train one run directory at once."""
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(run.run_dir.parent / f"{run.run_dir.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{run.run_dir}: another process is training or evaluating this run"
            ) from None
        yield fd
    finally:
        os.close(fd)


def _do_run(
    run: Run, config: str | None, overrides: list[str], which: str, kids: _Children, say
) -> None:
    """Trains (or resumes) and evaluates one run in child processes, holding its lock."""
    with _locked(run) as fd:
        wanted = run_config(config, overrides, run)
        state = _train_state(run, wanted)
        py = [sys.executable, "-m", "crfold"]
        if state != "done":
            say(f"{'resume' if state == 'partial' else 'train'} {run.run_dir}")
            cmd = [*py, "train", "--run-dir", str(run.run_dir), "--quiet"]
            if config is not None:
                cmd += ["--config", config]
            cmd += ["--resume"] if state == "partial" else []
            cmd += [*overrides, *run.variant.overrides, f"seed={run.seed}"]
            rc = kids.run(cmd, run.log, fd)
            if rc != 0:
                raise RuntimeError(f"training {run.run_dir} exited with {rc}; see {run.log}")
        if not _eval_current(run, which):
            say(f"eval {run.run_dir}")
            cmd = [*py, "eval", str(run.run_dir), "--which", which, "--quiet"]
            rc = kids.run(cmd, run.log, fd)
            if rc != 0:
                raise RuntimeError(f"evaluating {run.run_dir} exited with {rc}; see {run.log}")


def run_experiment(
    out: str | Path,
    config: str | None,
    overrides: list[str],
    variants: list[Variant],
    seeds: list[int],
    jobs: int = 1,
    which: str = "last",
    report: str | None = "report",
    quiet: bool = False,
    command: str = "crfold experiment table9",
) -> Path | None:
    """Trains and evaluates every (variant, seed) run, then writes the report.

    Args:
        out: the experiment directory.
        config: the YAML config every run starts from (None: the defaults).
        overrides: ``key=value`` changes applied to every run.
        variants: the rows (:func:`plan_variants`).
        seeds: one run per seed and variant.
        jobs: runs trained at the same time (child processes).
        which: checkpoint evaluated ("last": no model selection on the test split).
        report: write ``<out>/<report>.md`` and its plots at the end (None: no report).
        quiet: no progress lines.
        command: the command line quoted in the report.

    Returns:
        The path of the report (None without ``report``).

    Raises:
        ValueError: a bad option or a finished run with another config.
        RuntimeError: a run failed (the others still ran; rerun to resume).
        KeyboardInterrupt: stopped by SIGINT/SIGTERM after the children saved their state.
    """
    if jobs < 1:
        raise ValueError(f"jobs: expected an int >= 1, got {jobs}")
    if not seeds or not variants:
        raise ValueError("seeds and variants: expected at least one of each")
    out = Path(out)
    runs = [Run(v, s, out / "runs" / v.slug / f"seed{s}") for v in variants for s in seeds]
    for run in runs:  # every config (and every stale run) is checked before anything trains
        _train_state(run, run_config(config, overrides, run))
    out.mkdir(parents=True, exist_ok=True)
    kids = _Children()

    def say(text: str) -> None:
        if not quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # signals reach the main thread
        previous = {s: signal.signal(s, kids.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    errors: list[str] = []
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(_do_run, r, config, overrides, which, kids, say) for r in runs]
            for fut in futures:
                try:
                    fut.result()
                except Exception as exc:  # noqa: BLE001 - report every run's failure at the end
                    errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if kids.stopped is not None:
        raise KeyboardInterrupt(f"stopped by signal {kids.stopped}; rerun the command to resume")
    if errors:
        raise RuntimeError("; ".join(errors))
    if report is None:
        return None
    from .experiment_report import write_report

    say("report")
    return write_report(
        out, runs, config=config, overrides=overrides, which=which, name=report, command=command
    )
