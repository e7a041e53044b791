"""Claiming a run directory before a long computation on it: fail at once, not after minutes.

``crfold eval`` and ``crfold probe`` write a file into the run directory, ``crfold render`` reads
the run and writes elsewhere. Before computing anything they check, in this order:

1. the checkpoint they read exists (``FileNotFoundError``; nothing is created for a mistyped
   path);
2. the folder they write can take a file (:func:`crfold.io.check_writable`: a one-line
   :class:`crfold.io.WriteError` naming the file, e.g. for a read-only finished run);
3. no other process writes the run (:class:`crfold.io.RunLock` on the run directory, held until
   the result is written: :class:`crfold.io.RunLockedError` naming the holder, e.g. a
   ``crfold train`` still running).

>>> with run_output("runs/x", "eval.json", "crfold eval", "best.pt") as path:   # doctest: +SKIP
...     result = compute()                # minutes
...     print(result); atomic_write_json(path, result)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..io import RunLock, WriteError, check_writable

__all__ = ["reading_run", "require_run", "run_output"]


def require_run(run_dir: str | Path, checkpoint: str | None = None) -> Path:
    """``run_dir`` as a Path; FileNotFoundError unless it (and ``<run_dir>/<checkpoint>``) exists."""
    run_dir = Path(run_dir)
    if checkpoint is not None:
        path = run_dir / checkpoint
        if not path.is_file():
            raise FileNotFoundError(f"path: no such checkpoint {path}")
    elif not run_dir.is_dir():
        raise FileNotFoundError(f"run: no such run directory {run_dir}")
    return run_dir


@contextmanager
def run_output(
    run_dir: str | Path, filename: str, command: str, checkpoint: str | None = None
) -> Iterator[Path]:
    """Holds the run's lock while the caller computes and writes ``<run_dir>/<filename>``.

    Args:
        run_dir: the run directory.
        filename: the file that will be written into it (named by a write error).
        command: who holds the lock (shown to a second writer), e.g. "crfold eval".
        checkpoint: a file that must exist in ``run_dir`` (e.g. "best.pt"); None: the folder.

    Yields:
        ``<run_dir>/<filename>``.

    Raises:
        FileNotFoundError: no such run / checkpoint.
        WriteError: the run directory cannot take a file.
        RunLockedError: another process holds the run's lock.
    """
    run_dir = require_run(run_dir, checkpoint)
    check_writable(run_dir, filename)
    with RunLock(run_dir, command):
        yield run_dir / filename


@contextmanager
def reading_run(run_dir: str | Path, command: str, checkpoint: str | None = None) -> Iterator[Path]:
    """Holds the run's lock while the caller reads the run (and writes its output elsewhere).

    A run directory this process cannot write (a read-only copy or archive: its lock file cannot
    be created or opened for writing) is read without the lock, since a read needs no write
    access; a run whose lock another process holds raises :class:`crfold.io.RunLockedError`.

    Yields:
        the run directory as a Path.
    """
    run_dir = require_run(run_dir, checkpoint)
    lock: RunLock | None = RunLock(run_dir, command)
    try:
        lock.acquire()
    except WriteError:
        lock = None
    try:
        yield run_dir
    finally:
        if lock is not None:
            lock.release()
