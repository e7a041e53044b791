"""A write that fails (disk full, file too large, I/O error): exit status 1 and one line naming
the file, no traceback, no segfault, no temporary file left; finished files stay and resume."""

from __future__ import annotations

import errno
import os
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from crfold import io as crfold_io
from crfold.data import HDF5PointClouds
from data_prep import cli, output
from data_prep.npz import convert_npz

from .builders import build_folder

REPO = Path(__file__).resolve().parents[2]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _npz(path: Path, n_train: int, n_test: int, p: int = 256) -> Path:
    """Random clouds: ``train`` and ``test`` splits of ``(n, p, 3)`` float32 (incompressible)."""
    rng = np.random.default_rng(0)
    np.savez(
        path,
        train_points=rng.normal(size=(n_train, p, 3)).astype(np.float32),
        train_labels=rng.integers(0, 2, n_train),
        test_points=rng.normal(size=(n_test, p, 3)).astype(np.float32),
        test_labels=rng.integers(0, 2, n_test),
    )
    return path


def _temporaries(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if ".tmp" in p.name]


class _DiskFullFile:
    """A binary file that takes ``room`` bytes, then fails as on a full disk (a partial write)."""

    def __init__(self, f, room: int):
        self._f, self._room = f, room

    def write(self, data) -> int:
        data = memoryview(data).cast("B")
        self._f.write(data[: self._room])
        if len(data) > self._room:
            self._room = 0
            raise ENOSPC
        self._room -= len(data)
        return len(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def _fill_disk_at(monkeypatch, name_part: str, room: int = 1000) -> None:
    """Make the atomic writes (:func:`crfold.io.atomic_write`, which data_prep writes through)
    fail on files whose name contains ``name_part``, after ``room`` bytes."""
    real = crfold_io.atomic_write

    def full_disk_write(path, write):
        if name_part not in Path(path).name:
            return real(path, write)
        return real(path, lambda f: write(_DiskFullFile(f, room)))

    monkeypatch.setattr(crfold_io, "atomic_write", full_disk_write)


def test_write_error_is_one_line_naming_the_path_and_pickles():
    exc = output.WriteError.from_os_error("out/demo_train0.h5", ENOSPC)
    assert isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    assert str(exc) == "could not write out/demo_train0.h5: No space left on device (ENOSPC)"
    again = pickle.loads(pickle.dumps(exc))  # raised in a worker process, re-raised in the main
    assert type(again) is output.WriteError and str(again) == str(exc)


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "demo_train0.h5"
    pts, labels, names = np.zeros((2, 4, 3), np.float32), np.array([0, 1]), ["a", "b"]
    output.write_shard(path, pts, labels, names, ["x", "y"])
    before = path.read_bytes()
    _fill_disk_at(monkeypatch, ".h5")
    with pytest.raises(output.WriteError, match=f"could not write {path}: .*No space left"):
        output.write_shard(path, pts + 1, labels, names, ["x", "y"])
    assert path.read_bytes() == before and _temporaries(tmp_path) == []


def test_error_inside_h5py_is_a_write_error(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    path = tmp_path / "demo_train0.h5"
    with pytest.raises(output.WriteError, match=f"could not write {path}: .*Input/output"):
        output.write_shard(path, np.zeros((1, 4, 3), np.float32), np.array([0]), "a", ["x"])
    assert not path.exists() and _temporaries(tmp_path) == []


def test_npz_disk_full_exits_1_then_resumes(tmp_path, monkeypatch, capsys):
    npz = _npz(tmp_path / "clouds.npz", n_train=6, n_test=2, p=64)
    out = tmp_path / "o"
    args = ["npz", "--input", str(npz), "--out", str(out), "--shard-size", "3", "--quiet"]
    _fill_disk_at(monkeypatch, "clouds_train1.h5")  # the second shard: the first is finished
    assert cli.main(args) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"could not write {out / 'clouds_train1.h5'}: No space left" in err
    assert _temporaries(out) == [] and not (out / "clouds_train1.h5").exists()
    assert len(h5py.File(out / "clouds_train0.h5", "r")["data"]) == 3  # kept, readable

    monkeypatch.undo()  # space freed: the rerun converts only what is missing
    result = convert_npz(npz, out, shard_size=3, progress=False)
    assert result.exit_status == 0 and result.computed == 5
    clean = convert_npz(npz, tmp_path / "clean", shard_size=3, progress=False)
    for split in clean.splits:
        a, b = HDF5PointClouds(out, split), HDF5PointClouds(tmp_path / "clean", split)
        np.testing.assert_array_equal(a.points.numpy(), b.points.numpy())


def test_mesh_cache_disk_full_exits_1(tmp_path, monkeypatch, capsys):
    build_folder(tmp_path / "m", per_class=1)
    out = tmp_path / "o"
    _fill_disk_at(monkeypatch, ".npy", room=100)  # a per-model cloud in out/.cache
    args = ["folder", "--root", str(tmp_path / "m"), "--out", str(out), "--workers", "0"]
    assert cli.main(args + ["--quiet", "--num-points", "64", "--dense-factor", "4"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"could not write {out / '.cache'}" in err and "No space left on device" in err
    assert _temporaries(out) == []


@pytest.mark.skipif(sys.platform == "win32", reason="needs RLIMIT_FSIZE and SIGXFSZ")
def test_real_write_failure_in_subprocess_exits_1_without_segfault(tmp_path):
    """libhdf5 used to segfault (exit -11) on a failed write of its own; now it writes nothing."""
    import resource
    import signal

    limit = 64 << 10  # bytes per file: manifest, sidecars, the train shard fit; the test one not

    def file_size_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    npz = _npz(tmp_path / "clouds.npz", n_train=4, n_test=40)  # test shard ~120 KB
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "data_prep", "npz", "--input", str(npz), "--out", str(out)]
    proc = subprocess.run(
        cmd + ["--quiet"],
        cwd=REPO,
        preexec_fn=file_size_limit,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == cli.EXIT_ERROR, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"could not write {out / 'clouds_test0.h5'}: File too large (EFBIG)" in proc.stderr
    assert _temporaries(out) == [] and not (out / "clouds_test0.h5").exists()
    assert len(HDF5PointClouds(out, "train")) == 4  # the finished split is intact
