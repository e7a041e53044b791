"""The output folder: HDF5 shards, their JSON sidecars, class names, manifest, report.

Layout (the one :mod:`crfold.data` reads, same as ``shapenetcorev2_hdf5_2048``)::

    <name>_train0.h5            data (N, P, 3) float32, label (N, 1) int64, gzip
    <name>_train0_id2name.json  class name per sample
    <name>_train0_id2file.json  source path per sample, relative to the input root
    <name>_train1.h5 ...        one shard per ``shard_size`` samples; same for _val and _test
    shape_names.txt             one class name per line; line i is label i
    manifest.json               the parameters that produced the folder
    report.json                 counts, shards, skipped inputs with reasons

Every file is written to a temporary name in the same folder and renamed into place, so a killed
run never leaves a partial file under a final name. A write that fails (disk full, quota, no
permission, read-only or I/O error) deletes its temporary file and raises :class:`WriteError`
naming the final path; files finished before it stay valid, so a rerun resumes.

HDF5 shards are built in memory and written with plain file I/O: libhdf5 defers its writes to
``close`` and, when one of them fails (``ENOSPC``), is left with half-closed objects that it
dereferences again at the next close or at interpreter exit (a segfault, measured with HDF5
2.0.0 / h5py 3.16). Keeping libhdf5 away from the disk when writing makes every write error an
ordinary, recoverable :class:`OSError`.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from crfold import io as crfold_io
from crfold.io import WriteError as WriteError  # re-exported: data_prep.output.WriteError
from crfold.io import writing

MANIFEST = "manifest.json"
REPORT = "report.json"
SHAPE_NAMES = "shape_names.txt"
CACHE = ".cache"
_TMP = ".tmp-"  # temporaries of earlier versions: <name>.tmp-<pid>


class ManifestMismatch(ValueError):
    """The output folder was made with other parameters (and ``overwrite`` was not given)."""


def atomic_write_bytes(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file and :func:`os.replace`.

    Raises:
        WriteError: the write failed; the temporary file is deleted and ``path`` is unchanged.
    """
    crfold_io.atomic_write_bytes(path, data)


def atomic_write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1) + "\n").encode())


def remove_temporaries(folder: Path) -> None:
    """Delete temporary files left by a killed run (``*.tmp-<pid>``) in ``folder``."""
    if folder.is_dir():
        for p in folder.iterdir():
            ours = p.name.startswith(".") and p.name.endswith(".tmp")  # crfold.io.atomic_write's
            if (_TMP in p.name or ours) and p.is_file():
                p.unlink(missing_ok=True)


def lock_output(out: Path):
    """Create ``out`` and take an exclusive lock on it for this process (released when the
    returned file object is closed).

    Raises:
        RuntimeError: another run holds the lock.
        WriteError: ``out`` cannot be created or written.
    """
    with writing(out / ".lock"):
        out.mkdir(parents=True, exist_ok=True)
        f = open(out / ".lock", "a")  # kept open for the run's lifetime
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # Windows: no fcntl, so no lock; do not run two jobs on one folder
        pass
    except OSError:
        f.close()
        raise RuntimeError(f"another data_prep run is writing {str(out)!r}") from None
    return f


def check_name(name: str) -> str:
    """Validate a dataset name (the shard file prefix) and return it.

    Raises:
        ValueError: not ``[A-Za-z0-9_.-]+``, or it contains ``train``/``val``/``test`` (readers
            find splits by those words in file names).
    """
    if not name or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"name must match [A-Za-z0-9_.-]+, got {name!r}")
    if any(s in name.lower() for s in ("train", "val", "test")):
        raise ValueError(f"name must not contain 'train', 'val' or 'test', got {name!r}")
    return name


def shard_name(name: str, split: str, index: int) -> str:
    """``<name>_<split><index>.h5``."""
    return f"{name}_{split}{index}.h5"


def _sidecars(path: Path) -> tuple[Path, Path]:
    stem = path.name[: -len(".h5")]
    return path.with_name(f"{stem}_id2name.json"), path.with_name(f"{stem}_id2file.json")


def prepare_output(out: Path, params: dict, overwrite: bool) -> None:
    """Create ``out``, check its manifest against ``params``, write the manifest.

    Args:
        out: output folder (created if absent).
        params: JSON-able parameters of this run; include everything that changes the output.
        overwrite: if the folder holds another run's output, delete that output (only files of
            this layout: shards and sidecars of the old name, names, manifest, report, cache).

    Raises:
        ManifestMismatch: the folder's manifest differs from ``params`` and ``overwrite`` is False.
        WriteError: the manifest could not be written.
    """
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    remove_temporaries(out)
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            old = {"unreadable": str(manifest)}
        if old != params:
            if not overwrite:
                keys = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
                diff = ", ".join(f"{k}: {old.get(k)!r} -> {params.get(k)!r}" for k in keys)
                raise ManifestMismatch(
                    f"output {str(out)!r} was made with other parameters ({diff}); use another "
                    "folder or pass --overwrite to replace it"
                )
            clear_output(out, str(old.get("name", "")))
    elif any(out.glob("*.h5")) and not overwrite:
        raise ManifestMismatch(f"output {str(out)!r} holds .h5 files but no {MANIFEST}")
    atomic_write_json(manifest, params)


def clear_output(out: Path, name: str) -> None:
    """Delete one run's output files (named ``name``) from ``out``; other files are kept."""
    if name:
        for p in out.glob(f"{name}_*"):
            if p.is_file() and p.name.endswith((".h5", "_id2name.json", "_id2file.json")):
                p.unlink()
    for fname in (MANIFEST, REPORT, SHAPE_NAMES):
        (out / fname).unlink(missing_ok=True)
    shutil.rmtree(out / CACHE, ignore_errors=True)


def write_shape_names(out: Path, classes: Sequence[str]) -> None:
    """``shape_names.txt``: one class name per line, line i = label i."""
    for c in classes:
        if not c or "\n" in c:
            raise ValueError(f"class names must be non-empty single lines, got {c!r}")
    atomic_write_bytes(out / SHAPE_NAMES, "".join(f"{c}\n" for c in classes).encode())


def shard_complete(
    path: Path, names: Sequence[str], files: Sequence[str], digest: str = ""
) -> bool:
    """True if ``path`` and its sidecars exist and hold exactly these samples (and ``digest``)."""
    import h5py

    id2name, id2file = _sidecars(path)
    if not (path.is_file() and id2name.is_file() and id2file.is_file()):
        return False
    try:
        if json.loads(id2file.read_text()) != list(files):
            return False
        if json.loads(id2name.read_text()) != list(names):
            return False
        with h5py.File(path, "r") as f:
            if f.attrs.get("source_digest", "") != digest:
                return False
            return f["data"].shape[0] == len(files) and f["label"].shape == (len(files), 1)
    except (OSError, ValueError, KeyError):
        return False


def write_shard(
    path: Path,
    points: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    files: Sequence[str],
    digest: str = "",
) -> None:
    """Write one shard and its sidecars, each atomically (sidecars first, the .h5 last).

    The HDF5 file is built in memory and then written by :func:`atomic_write_bytes` (see the
    module docstring for why libhdf5 never writes to the disk itself).

    Args:
        path: ``<name>_<split><k>.h5``.
        points: ``(N, P, 3)`` float32.
        labels: ``(N,)`` int64 class indices (stored as ``(N, 1)``).
        names: ``N`` class names (``id2name``).
        files: ``N`` source paths (``id2file``).
        digest: identifies the exact inputs (stored as the attribute ``source_digest``), so a
            shard built from since-edited inputs is not mistaken for a finished one.

    Raises:
        ValueError: arrays of the wrong shape or dtype.
        WriteError: a file could not be written; no temporary file is left, and a shard already
            at ``path`` is unchanged.
    """
    import h5py

    n = len(points)
    if points.ndim != 3 or points.shape[2] != 3 or points.dtype != np.float32:
        raise ValueError(f"points must be (N, P, 3) float32, got {points.shape} {points.dtype}")
    if labels.shape != (n,) or len(names) != n or len(files) != n:
        raise ValueError(f"labels (N,), names and files must all have N={n} entries")
    id2name, id2file = _sidecars(path)
    atomic_write_json(id2name, list(names))
    atomic_write_json(id2file, list(files))
    chunk = (max(1, min(n, max(1, (1 << 20) // max(1, points[0].nbytes)))),) + points.shape[1:]
    image = io.BytesIO()  # the whole .h5 file; libhdf5 writes only to this buffer
    with writing(path), h5py.File(image, "w") as f:
        f.create_dataset("data", data=points, compression="gzip", compression_opts=4, chunks=chunk)
        f.create_dataset("label", data=labels.astype(np.int64).reshape(n, 1), compression="gzip")
        f.attrs["source_digest"] = digest
    with image.getbuffer() as view:
        atomic_write_bytes(path, view)


def remove_stale_shards(out: Path, name: str, split: str, keep: int) -> None:
    """Delete ``<name>_<split><k>.h5`` (and sidecars) for ``k >= keep`` (left by older runs)."""
    for p in out.glob(f"{name}_{split}*.h5"):
        suffix = p.name[len(f"{name}_{split}") : -len(".h5")]
        if suffix.isdigit() and int(suffix) >= keep:
            for q in (p, *_sidecars(p)):
                q.unlink(missing_ok=True)


def write_split(
    out: Path,
    name: str,
    split: str,
    files: Sequence[str],
    labels: Sequence[int],
    classes: Sequence[str],
    load_points,
    shard_size: int,
    digests: Sequence[str] | None = None,
) -> list[str]:
    """Write one split as shards of at most ``shard_size`` samples, skipping finished ones.

    Args:
        out: the output folder.
        name: dataset name (file prefix).
        split: ``"train"``, ``"val"`` or ``"test"``.
        files: source path of each sample, in output order.
        labels: class index of each sample.
        classes: class names (index = label).
        load_points: ``load_points(start, stop) -> (stop - start, P, 3) float32`` for the
            samples ``files[start:stop]``; only called for shards that must be (re)written.
        shard_size: samples per shard.
        digests: optional per-sample input fingerprints (e.g. cache keys); a shard is kept only
            if the hash of its samples' digests matches the one it was written with.

    Returns:
        The shard file names, in order.
    """
    shards = []
    for k, start in enumerate(range(0, len(files), shard_size)):
        stop = min(start + shard_size, len(files))
        path = out / shard_name(name, split, k)
        names = [classes[i] for i in labels[start:stop]]
        digest = ""
        if digests is not None:
            digest = hashlib.sha256("\n".join(digests[start:stop]).encode()).hexdigest()
        if not shard_complete(path, names, files[start:stop], digest):
            lab = np.asarray(labels[start:stop], dtype=np.int64)
            write_shard(path, load_points(start, stop), lab, names, files[start:stop], digest)
        shards.append(path.name)
    remove_stale_shards(out, name, split, len(shards))
    return shards
