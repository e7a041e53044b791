"""The build cache of the compiled extension (``crfold/ops/_ext.py``), in fresh processes.

Every test runs crfold in subprocesses on one temporary ``$CRFOLD_CACHE`` (CPU build only), so
the module compiles the extension once more (the first test, about a minute on 2 cores) and the
others reuse that build. Nothing here depends on timing but generous timeouts, which turn a hang
into a failure.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest

from crfold.ops import _ext

from ..conftest import REPO

pytestmark = pytest.mark.slow

TIMEOUT = 600  # s, for anything that may build; a hang fails the test after it
BUILDING = "building the kNN extension"
# Loads the extension from whichever crfold the working directory holds, runs the kNN op on it.
PROBE = (
    "import torch, crfold, crfold.ops as ops\n"
    "x = torch.rand(1, 5, 3, dtype=torch.float64)\n"
    "dists = ops.knn_points(x, x).dists  # (1, 5, 1): each point is its own nearest neighbour\n"
    "print(crfold.__file__, ops.backend(), float(dists.abs().max()))\n"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The ``$CRFOLD_CACHE`` of this module's subprocesses; skips where nothing can be built."""
    missing = _ext._missing_tools(cuda=False)
    if missing:
        pytest.skip("cannot build the extension here, missing: " + "; ".join(missing))
    return tmp_path_factory.mktemp("crfold_cache")


def _library(cache: Path) -> Path:
    with mock.patch.dict(os.environ, CRFOLD_CACHE=str(cache)):
        return _ext.library_path(cuda=False)


def _env(cache: Path, root: Path) -> dict[str, str]:
    """Environment of a subprocess that imports crfold from ``root`` and caches in ``cache``."""
    env = {k: v for k, v in os.environ.items() if k != "CRFOLD_FORCE_REFERENCE"}
    return env | {
        "CRFOLD_CACHE": str(cache),
        "CRFOLD_NO_CUDA": "1",
        "PYTHONPATH": str(root),
        "OMP_NUM_THREADS": "1",
    }


@contextmanager
def _started(cache: Path, root: Path, log: Path) -> Iterator[subprocess.Popen]:
    """The probe running from checkout ``root`` in its own process group, output into ``log``;
    the group (Python, ninja, the compilers) is killed on exit if the probe still runs."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE], cwd=root, env=_env(cache, root),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _probe(cache: Path, root: Path = REPO, python: str = sys.executable) -> str:
    """Output of the probe run from checkout ``root`` by ``python``; asserts that the compiled op
    served."""
    run = subprocess.run(
        [python, "-c", PROBE], cwd=root, env=_env(cache, root),
        capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    module, backend, dist = run.stdout.split()
    assert Path(module).is_relative_to(root), out  # that checkout's crfold, not the installed one
    assert backend == "compiled-cpu" and float(dist) == 0.0, out
    return out


def _wait_for(condition: Callable[[], object], proc: subprocess.Popen, log: Path) -> object:
    """Poll ``condition`` until it is truthy; fails if ``proc`` ends first or after TIMEOUT."""
    deadline = time.monotonic() + TIMEOUT
    while not (value := condition()):
        assert proc.poll() is None, f"the process ended early:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()}"
        time.sleep(0.2)
    return value


def _ensure_built(cache: Path) -> Path:
    """The cached library, built by ``python -m crfold.ops.build`` when absent."""
    lib = _library(cache)
    if not lib.exists():
        run = subprocess.run(
            [sys.executable, "-m", "crfold.ops.build"], cwd=REPO, env=_env(cache, REPO),
            capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
        assert run.returncode == 0 and "compiled-cpu" in run.stdout, run.stdout + run.stderr
    assert lib.exists()
    return lib


def test_a_killed_build_is_cleaned_up_and_rebuilt(cache):
    lib = _library(cache)
    lib.unlink(missing_ok=True)
    log = cache / "killed.log"
    with _started(cache, REPO, log) as proc:  # killed with ninja and the compilers on exit
        ninja = _wait_for(lambda: next(lib.parent.glob("build-*/build.ninja"), None), proc, log)
        time.sleep(2)  # the compilers start
    left = ninja.parent
    assert (left / "lock").exists() and not lib.exists()  # torch's baton, as a killed build left it

    out = _probe(cache)  # a fresh process: no hang, one line about the remains, then a build
    lines = out.splitlines()
    assert sum("removed the remains of an interrupted build" in ln for ln in lines) == 1, out
    assert left.name in out
    assert sum(BUILDING in ln for ln in lines) == 1, out
    assert lib.exists() and not list(lib.parent.glob("build-*"))


def test_checkouts_in_other_folders_share_the_build(cache, tmp_path):
    """Two copies of the sources in other folders load the build without running ninja (which
    rebuilt the extension whenever the source paths in build.ninja changed)."""
    lib = _ensure_built(cache)
    before = lib.stat()
    for name in ("a", "b"):
        root = tmp_path / name
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(REPO / "crfold", root / "crfold", ignore=ignore)
        assert BUILDING not in _probe(cache, root)
    after = lib.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert sorted(p.name for p in lib.parent.iterdir()) == sorted([lib.name, "build.flock"])


def _venv(where: Path) -> str:
    """A new venv at ``where`` (no pip) that sees this environment's packages through a .pth
    file; its python."""
    import site
    import venv

    venv.EnvBuilder(with_pip=False, symlinks=True).create(where)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(purelib, "parent_env.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return str(python)


def test_two_venvs_share_the_build(cache, tmp_path):
    """Two venvs (other prefixes, other interpreter paths) running the same sources with the same
    torch load one build: nothing path-dependent reaches the key."""
    lib = _ensure_built(cache)
    before = lib.stat()
    for name in ("venv_a", "venv_b"):
        out = _probe(cache, REPO, _venv(tmp_path / name))
        assert BUILDING not in out, out
    after = lib.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_process_waiting_for_another_build_says_so(cache):
    """While another process holds the build lock, a loader says it waits, then loads what that
    process left (here: the library put back while the lock is held) without building."""
    lib = _ensure_built(cache)
    aside = lib.with_name("aside")
    log = cache / "waiting.log"
    os.replace(lib, aside)
    try:
        fd = os.open(lib.parent / "build.flock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with _started(cache, REPO, log) as proc:
            try:
                _wait_for(lambda: "waiting for another process" in log.read_text(), proc, log)
                os.replace(aside, lib)  # "the other build" finishes
            finally:
                os.close(fd)  # releases the lock
            assert proc.wait(timeout=TIMEOUT) == 0, log.read_text()
    finally:
        if aside.exists():
            os.replace(aside, lib)
    out = log.read_text()
    assert "compiled-cpu" in out and BUILDING not in out, out
