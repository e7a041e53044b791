"""Files of long jobs: atomic writes, safe checkpoints, run-directory locks, readable errors.

Every long job (training, evaluation, data preparation, reports) writes through this module:

* Every file is written to a temporary name in its destination folder, flushed and fsynced, then
  renamed over the destination (``os.replace``, atomic on POSIX and Windows): a killed job leaves
  either the old file or the new one, never a half-written file that a reader would trust. A
  failed write (disk full, permission) raises :class:`WriteError`, one line naming the path.
* Every file gets one permission rule: ``0o666`` masked by the process's umask (the rule of
  ``open()``), also the checkpoints that ``mkstemp`` would create ``0600``.
* :class:`RunLock` makes one process the only writer of a run directory (``fcntl.flock`` on
  ``<run_dir>/.lock``, released by the kernel when the process dies, so a killed run never leaves
  a stale lock); a second writer gets :class:`RunLockedError` naming the holder.
* Checkpoints are loaded with ``torch.load(..., weights_only=True)``: a checkpoint from elsewhere
  cannot run code. So a checkpoint holds only tensors and plain containers (dict, list, tuple,
  str, int, float, bool, None): configs as plain dicts, RNG states as tensors, no numpy objects
  or dataclasses (:func:`get_rng_state` / :func:`set_rng_state` follow that rule).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "LOCK_FILE",
    "RunLock",
    "RunLockedError",
    "WriteError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "get_rng_state",
    "check_writable",
    "load_checkpoint",
    "read_yaml",
    "save_checkpoint",
    "set_rng_state",
    "writing",
]

LOCK_FILE = ".lock"


class WriteError(OSError):
    """A file could not be written (disk full, quota, read-only, permission, I/O error).

    An :class:`OSError` whose ``filename`` is the destination (not a temporary file) and whose
    ``errno``/``strerror`` are those of the failed call; ``str()`` is one line::

        could not write runs/a/last.pt: No space left on device (ENOSPC)

    Make it with :meth:`from_os_error`. It pickles like any OSError (so it crosses from a worker
    process unchanged) and callers that handle OSError still do.
    """

    @classmethod
    def from_os_error(cls, path: str | Path, exc: OSError) -> WriteError:
        """The :class:`WriteError` of ``exc``, raised while writing ``path``."""
        return cls(exc.errno, exc.strerror or str(exc), str(path))

    def __str__(self) -> str:
        code = errno.errorcode.get(self.errno or 0, "")
        return f"could not write {self.filename}: {self.strerror}" + (f" ({code})" if code else "")


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Raises an OSError of the block as a :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError.from_os_error(path, exc) from exc


def _file_mode() -> int:
    """0o666 masked by the current umask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting it back at once
    os.umask(mask)
    return 0o666 & ~mask


def _fsync_dir(folder: Path) -> None:
    """Makes a rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Writes a file atomically: ``write(f)`` fills a temporary file that then replaces ``path``.

    The temporary file lies in the destination folder (so the rename never crosses file
    systems); it is flushed and fsynced before the rename, and removed if ``write`` raises, in
    which case an existing ``path`` is left untouched.

    Args:
        path: destination; its parent folder is created if needed.
        write: callable receiving the open binary file object.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise WriteError.from_os_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _file_mode())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError.from_os_error(path, exc) from exc
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Atomically writes ``data`` to ``path``."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically writes ``text`` (UTF-8) to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """Atomically writes ``obj`` as JSON (NaN/inf as ``NaN``/``Infinity``, as Python's json).

    Raises:
        ValueError: ``obj`` is not JSON-serializable (nothing is written then).
    """
    try:
        text = json.dumps(obj, indent=indent, sort_keys=False, allow_nan=True) + "\n"
    except TypeError as exc:
        raise ValueError(f"obj: not JSON-serializable for {path}: {exc}") from exc
    return atomic_write_text(path, text)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Saves ``state`` with ``torch.save``, atomically (tmp file, fsync, rename).

    Args:
        path: destination ``.pt`` file; a previous file there stays intact if saving fails.
        state: tensors and plain containers only (dict/list/tuple/str/int/float/bool/None), so
            that :func:`load_checkpoint` can read it with ``weights_only=True``.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: ``state`` is not a dict.
    """
    if not isinstance(state, dict):
        raise ValueError(f"state: expected a dict, got {type(state).__name__}")
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """Loads a checkpoint with ``torch.load(..., weights_only=True)``.

    Args:
        path: a file written by :func:`save_checkpoint`.
        map_location: where tensors go (default "cpu").

    Returns:
        The state dict.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a ``torch.save`` archive (truncated, random bytes, another
            format), holds objects other than tensors and plain containers (it is refused, never
            unpickled), or does not hold a dict; one line naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such checkpoint {path}")
    with open(path, "rb"):  # an unreadable file (EACCES) fails here, as itself
        pass
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive since torch 1.6
        raise ValueError(f"{path}: not a checkpoint (not a torch.save archive: truncated or "
                         "another format)")  # fmt: skip
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused - it holds objects other than tensors and plain containers, and "
            f"checkpoints are loaded with weights_only=True ({str(exc).splitlines()[0]})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways inside torch
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ValueError(
            f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})"
        ) from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a checkpoint dict, got {type(state).__name__}")
    return state


def get_rng_state() -> dict[str, Any]:
    """The global RNG states (torch CPU and CUDA, Python ``random``, numpy) as tensors and ints.

    Returns:
        A dict safe for ``weights_only`` loading: ``torch`` (ByteTensor), ``cuda`` (list of
        ByteTensor, one per device; empty without CUDA), ``python`` (int64 tensor of the
        Mersenne Twister state + version and gauss_next), ``numpy`` (uint32 keys as int64 tensor,
        pos, has_gauss, cached_gaussian).
    """
    version, internal, gauss_next = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores the global RNG states saved by :func:`get_rng_state`.

    CUDA states are restored only when as many devices are visible as were saved.
    """
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    py = state["python"]
    internal = tuple(int(v) for v in py["internal"].cpu().tolist())
    random.setstate((py["version"], internal, py["gauss_next"]))
    npy = state["numpy"]
    keys = npy["keys"].cpu().numpy().astype(np.uint32)
    legacy = (npy["name"], keys, npy["pos"], npy["has_gauss"], npy["cached_gaussian"])
    np.random.set_state(legacy)  # noqa: NPY002 - the global state is what is being restored


# --------------------------------------------------------------------------- config files
def read_yaml(path: str | Path) -> Any:
    """The YAML (or, for ``.json``, JSON) document in ``path``.

    Raises:
        FileNotFoundError: no such file (named).
        ValueError: malformed YAML / JSON, one line naming the file, line and problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    import yaml

    text = path.read_text()
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML ({where}{problem})") from exc


# --------------------------------------------------------------------------- run directories
class RunLockedError(RuntimeError):
    """Another process holds the run directory's lock."""


def check_writable(folder: str | Path, what: str) -> None:
    """Raises :class:`WriteError` unless a file can be created in ``folder`` (made if absent).

    ``what`` names the file the caller will write, for the message. Called *before* a long
    computation whose result would otherwise be lost to a read-only folder.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise WriteError.from_os_error(folder / what, exc) from exc


class RunLock:
    """Exclusive lock of a run directory: one writer (train, resume, eval, probe, render) at once.

    ``fcntl.flock`` on ``<run_dir>/.lock``; the file records the holder (pid, host, command, time)
    for the error message of the next process. The kernel drops the lock when the holder exits or
    is killed, so there are no stale locks. Re-entrant within one process (nested commands, e.g.
    an experiment that trains then evaluates in-process): a nested acquire is a no-op.

    >>> with RunLock("runs/a", "crfold train"):   # doctest: +SKIP
    ...     ...
    """

    _held: dict[str, list[int]] = {}  # resolved path -> [open fd, nesting depth], this process

    def __init__(self, run_dir: str | Path, command: str = ""):
        self.run_dir = Path(run_dir)
        self.command = command or " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:])
        self._key = ""

    def acquire(self) -> RunLock:
        import fcntl

        key = str(self.run_dir.resolve())
        if key in RunLock._held:
            RunLock._held[key][1] += 1
            self._key = key
            return self
        path = self.run_dir / LOCK_FILE
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, _file_mode())
        except OSError as exc:
            raise WriteError.from_os_error(path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir}: in use by {holder}; wait for it to finish or stop it "
                "(one writer per run directory)"
            ) from None
        except OSError as exc:  # e.g. ENOLCK on a file system without locks
            os.close(fd)
            raise WriteError.from_os_error(path, exc) from exc
        info = (f"pid {os.getpid()} on {socket.gethostname()} ({self.command}) since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')}")  # fmt: skip
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, info.encode(), 0)
        except OSError as exc:
            os.close(fd)  # closing drops the flock
            raise WriteError.from_os_error(path, exc) from exc
        RunLock._held[key] = [fd, 1]
        self._key = key
        return self

    def release(self) -> None:
        """Drops this hold; the file lock goes with the last hold of the directory (any order)."""
        key, self._key = self._key, ""
        if not key or key not in RunLock._held:
            return
        entry = RunLock._held[key]
        entry[1] -= 1
        if entry[1] <= 0:
            del RunLock._held[key]
            os.close(entry[0])  # closing drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
