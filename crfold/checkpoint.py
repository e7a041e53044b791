"""Atomic files and safe checkpoints, for every long job (training, data preparation, reports).

* Every file is written to a temporary name in its destination folder, flushed and fsynced, then
  renamed over the destination (``os.replace``, atomic on POSIX and Windows): a killed job leaves
  either the old file or the new one, never a half-written file that a reader would trust.
* Checkpoints are loaded with ``torch.load(..., weights_only=True)``: a checkpoint from elsewhere
  cannot run code. So a checkpoint holds only tensors and plain containers (dict, list, tuple,
  str, int, float, bool, None): configs as plain dicts, RNG states as tensors, no numpy objects
  or dataclasses (:func:`get_rng_state` / :func:`set_rng_state` follow that rule).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "get_rng_state",
    "load_checkpoint",
    "save_checkpoint",
    "set_rng_state",
]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
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
        ValueError: the file holds objects other than tensors and plain containers (it is
            refused, never unpickled), is not a checkpoint, or does not hold a dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no such checkpoint {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(
            f"{path}: refused - it holds objects other than tensors and plain containers, and "
            f"checkpoints are loaded with weights_only=True ({str(exc).splitlines()[0]})"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable checkpoint ({exc})") from exc
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
