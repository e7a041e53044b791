"""The build cache of the compiled extension (``crfold/ops/_ext.py``).

The fast tests check the cache key (what reaches it, without building) and that ``load()`` never
raises. The slow ones run crfold in subprocesses on one temporary ``$CRFOLD_CACHE`` (CPU build
only), so the module compiles the extension once more (the first slow test, about a minute on 2
cores) and the others reuse that build. Nothing here depends on timing but generous timeouts,
which turn a hang into a failure.
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
import torch
import torch.utils.cpp_extension

from crfold.ops import _ext, backend, knn_points
from crfold.ops import knn as knn_module

from ..conftest import REPO

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


# ---------------------------------------------------------------------------- the cache key


def _tool(where: Path, name: str, version: str) -> Path:
    """An executable ``where/name`` that prints ``version`` (a stand-in compiler or nvcc)."""
    where.mkdir(parents=True, exist_ok=True)
    tool = where / name
    tool.write_text(f"#!/bin/sh\necho '{version}'\n")
    tool.chmod(0o755)
    return tool


@pytest.fixture
def key_env(monkeypatch, tmp_path):
    """A cache in ``tmp_path``, no CXX/TORCH_CUDA_ARCH_LIST from the caller, and one visible
    stand-in GPU of capability ``caps[0]`` with CUDA 12.8 and a stand-in nvcc (nothing runs)."""
    monkeypatch.setenv("CRFOLD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    caps = [(9, 0)]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(caps))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: caps[i])
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    cuda_home = tmp_path / "cuda-12.8"
    _tool(cuda_home / "bin", "nvcc", "Cuda compilation tools, release 12.8, V12.8.93")
    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", str(cuda_home))
    return caps


def test_the_cuda_key_covers_the_gpus_cuda_and_nvcc(key_env, monkeypatch, tmp_path):
    caps = key_env
    h100 = _ext.library_path(cuda=True)
    assert h100.name == "crfold_knn_cuda.so" and h100.parent.parent == tmp_path / "cache"
    assert _ext.library_path(cuda=True) == h100  # deterministic
    # Unset TORCH_CUDA_ARCH_LIST: torch builds for the visible GPUs only, so an sm_90 build
    # must not be found by an A100 (sm_80) sharing the cache, nor by a machine with both.
    caps[:] = [(8, 0)]
    a100 = _ext.library_path(cuda=True)
    caps[:] = [(9, 0), (8, 0), (9, 0)]
    both = _ext.library_path(cuda=True)
    assert len({h100, a100, both}) == 3
    caps[:] = [(8, 0), (9, 0)]  # the same set of archs, in another order
    assert _ext.library_path(cuda=True) == both
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "native")  # torch reads "native" as unset
    assert _ext.library_path(cuda=True) == both
    # An explicit arch list decides alone: the visible GPUs no longer matter.
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    listed = _ext.library_path(cuda=True)
    caps[:] = [(7, 5)]
    assert _ext.library_path(cuda=True) == listed and listed not in (h100, a100, both)
    # torch's CUDA version, the nvcc (its location and its version) and the CUDA sources.
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    assert _ext.library_path(cuda=True) != listed
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    other = tmp_path / "cuda-other"
    _tool(other / "bin", "nvcc", "Cuda compilation tools, release 12.8, V12.8.93")
    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", str(other))
    moved = _ext.library_path(cuda=True)
    assert moved != listed
    newer = tmp_path / "cuda-newer"
    _tool(newer / "bin", "nvcc", "Cuda compilation tools, release 12.9, V12.9.41")
    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", str(newer))
    assert _ext.library_path(cuda=True) not in (listed, moved)
    monkeypatch.setattr(torch.utils.cpp_extension, "CUDA_HOME", str(other))
    monkeypatch.setattr(_ext, "CUDA_SOURCES", _ext.CUDA_SOURCES[:-1])
    assert _ext.library_path(cuda=True) != moved


def test_the_cpu_key_covers_the_compiler_and_the_source_list(key_env, monkeypatch, tmp_path):
    cpu = _ext.library_path(cuda=False)
    assert cpu.name == "crfold_knn.so"
    # None of the CUDA inputs reach the CPU key, and it never asks torch.cuda.
    key_env[:] = [(8, 0)]
    monkeypatch.setattr(torch.version, "cuda", "13.0")

    def no_cuda(*args):
        raise AssertionError("the CPU key queried torch.cuda")

    monkeypatch.setattr(torch.cuda, "device_count", no_cuda)
    assert _ext.library_path(cuda=False) == cpu
    # The compiler named by CXX: its name, and its version under one name.
    monkeypatch.setenv("CXX", str(_tool(tmp_path / "a", "c++", "fake-c++ 1.0")))
    one = _ext.library_path(cuda=False)
    monkeypatch.setenv("CXX", str(_tool(tmp_path / "b", "c++", "fake-c++ 2.0")))
    two = _ext.library_path(cuda=False)
    monkeypatch.setenv("CXX", str(tmp_path / "missing-c++"))  # cannot run: still a key
    missing = _ext.library_path(cuda=False)
    assert len({cpu, one, two, missing}) == 4
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(_ext, "CPU_SOURCES", _ext.CPU_SOURCES[:-1])
    assert _ext.library_path(cuda=False) != cpu


def test_the_cpu_key_runs_the_compiler_once_per_process(key_env, monkeypatch):
    """Computed on every start: ``$CXX --version`` runs once (functools.cache), then the key is
    hashing only (about 1 ms for the sources)."""
    first = _ext.library_path(cuda=False)

    def no_subprocess(*args, **kwargs):
        raise AssertionError("the key ran a subprocess again")

    monkeypatch.setattr(_ext.subprocess, "run", no_subprocess)
    assert _ext.library_path(cuda=False) == first


# ---------------------------------------------------------------------------- load never raises


@pytest.fixture
def fresh_load(monkeypatch):
    """``_ext`` as before its first load(); this process's loaded state comes back afterwards
    (monkeypatch restores every attribute it set), and the fallback warning may fire again."""
    for name in ("build_error", "with_cuda", "library"):
        monkeypatch.setattr(_ext, name, getattr(_ext, name))
    monkeypatch.setattr(_ext, "_loaded", None)
    monkeypatch.setattr(knn_module, "_warned", False)


def _raise(exc: Exception):
    def fail(*args, **kwargs):
        raise exc

    return fail


@pytest.mark.parametrize(
    "where, what",
    [
        ("home", "Could not determine home directory"),  # no CRFOLD_CACHE, no home folder
        ("library_path", "a subdirectory of csrc"),
        ("_load_or_build", "Permission denied: the cache"),  # an unreadable CRFOLD_CACHE
    ],
)
def test_load_never_raises_and_the_reference_serves(fresh_load, monkeypatch, where, what):
    if where == "home":
        monkeypatch.delenv("CRFOLD_CACHE", raising=False)
        monkeypatch.setattr(_ext.Path, "home", _raise(RuntimeError(what)))
    elif where == "library_path":
        monkeypatch.setattr(_ext, "library_path", _raise(IsADirectoryError(what)))
    else:
        monkeypatch.setattr(_ext, "_load_or_build", _raise(PermissionError(what)))
    assert _ext.load() is False
    assert what in _ext.build_error and _ext.library is None and not _ext.with_cuda
    assert backend() == f"reference ({_ext.build_error})"
    x = torch.rand(1, 5, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="pure-torch reference"):
        dists = knn_points(x, x).dists
    assert float(dists.abs().max()) == 0.0


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
