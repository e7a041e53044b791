"""Builds (just in time, cached) and loads the compiled extension (kNN, graph max-pool) once.

The extension is compiled with ``torch.utils.cpp_extension.load`` on first use and cached as
``$CRFOLD_CACHE/knn_<key>/crfold_knn.so`` (``crfold_knn_cuda.so`` with the CUDA kernels;
``$CRFOLD_CACHE`` defaults to ``~/.cache/crfold``). The key hashes what the library depends on:
the contents of ``csrc/`` and the lists of sources compiled, the torch and Python versions, the
compiler named by ``$CXX`` (its name and the first line of its ``--version``), the compiler flags,
the CPU's flags (for ``-march=native``) and CPU/CUDA. A CUDA build adds the nvcc flags, CUDA's
version as torch sees it (``torch.version.cuda``), ``$CUDA_HOME`` and its ``nvcc --version``,
and the GPU architectures it is built for: ``$TORCH_CUDA_ARCH_LIST``, or, when that is unset or
``native`` (torch then builds for the visible GPUs only), the visible GPUs' compute
capabilities, so a cache shared by machines with other GPUs (an NFS home) never hands an sm_90
build to an A100. The only path in the key is ``$CUDA_HOME``. A cached library is loaded with
``torch.ops.load_library`` without running ninja, so every checkout and venv of the same sources,
torch, compiler and flags shares one build (ninja would rebuild whenever the source or torch
paths differ from those written in its ``build.ninja``). The CPU key is computed at every
process's first load and costs about 5 ms on a busy 2-core machine (hashing ``csrc/`` about 1 ms,
the one subprocess, ``$CXX --version``, the rest; it runs once per process and torch.cuda is
never queried). Nothing is compiled at ``pip install`` time, so installing never fails and never
needs a torch in an isolated build environment.

Builds may be killed and may race:

- a builder holds an exclusive ``flock`` on ``<key dir>/build.flock``; a second process says that
  it waits, then loads what the first built. The kernel releases a flock when its holder dies,
  so a killed build never blocks the next one.
- each build runs in a fresh ``<key dir>/build-*`` folder (torch's own ``lock`` file lives
  there), and its library is moved into the key dir by an atomic ``os.replace``. The next build
  removes the folders of killed builds and says so in one line.

A build says so on stderr ("building the kNN extension (about 30 s) ..."), once.

``load()`` never raises: when the build fails (no compiler, no headers, no ninja) or anything
else goes wrong (no home folder for the cache, an unreadable ``$CRFOLD_CACHE``), the reason is
kept in :data:`build_error` and :mod:`crfold.ops` serves the pure-torch reference with a one-time
warning. ``python -m crfold.ops.build`` builds eagerly and prints the reason on failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch

CSRC = Path(__file__).parent / "csrc"
CPU_SOURCES = ["knn_cpu.cpp", "kdtree_cpu.cpp", "pool_cpu.cpp", "bindings.cpp"]
CUDA_SOURCES = [
    "knn_cuda.cu",
    "knn_cuda_glue.cpp",
    "pool_cuda.cu",
    "pool_cuda_glue.cpp",
]
CUDA_CFLAGS = ("-O3", "--fmad=false", "-DWITH_CUDA")
LDFLAGS = ("-fopenmp",)  # tuples: torch appends its own flags to the lists it is given
# Part of the key: a key dir holds a finished library, a build.flock and build-* folders. Key
# dirs of the earlier layout (torch building in place, its lock in the key dir) are never reused.
_LAYOUT = b"crfold cache layout 2"

_lock = threading.Lock()
_loaded: bool | None = None
build_error: str | None = None
with_cuda: bool = False
library: Path | None = None  # the loaded library, once load() succeeded


def _want_cuda() -> bool:
    if os.environ.get("CRFOLD_NO_CUDA", "0") == "1":
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and torch.cuda.is_available() and CUDA_HOME is not None


def _cflags(cuda: bool) -> list[str]:
    flags = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-fopenmp"]
    # The extension is built on the machine that runs it, so it may use that CPU's vector units;
    # CRFOLD_NATIVE=0 builds portable code (e.g. for a cache shared by different CPUs).
    if os.environ.get("CRFOLD_NATIVE", "1") != "0" and platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags + (["-DWITH_CUDA"] if cuda else [])


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


@functools.cache
def _tool_version(*command: str) -> str:
    """The output of ``command`` (e.g. ``c++ --version``), run once per process; an error text
    when it cannot run (the build then fails and says why)."""
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{command[0]}: {type(exc).__name__}"
    return (run.stdout or run.stderr).strip()


def _cuda_archs() -> str:
    """What torch builds CUDA code for: ``$TORCH_CUDA_ARCH_LIST``, or, unset or ``native``, the
    sorted compute capabilities of the visible GPUs (what torch then compiles for)."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if archs and archs != "native":
        return archs
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return "visible " + " ".join(f"{major}.{minor}" for major, minor in sorted(caps))


def _cuda_signature() -> str:
    """torch's CUDA version, the nvcc that builds (``$CUDA_HOME`` and all of its ``--version``:
    the first line is the same for every release) and the target architectures."""
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = _tool_version(str(Path(CUDA_HOME or "", "bin", "nvcc")), "--version")
    return f"cuda {torch.version.cuda} {CUDA_HOME} {nvcc} {_cuda_archs()}"


def library_path(cuda: bool) -> Path:
    """``$CRFOLD_CACHE/knn_<key>/crfold_knn[_cuda].so``: where this build lives once built."""
    h = hashlib.sha256(_LAYOUT)
    for src in sorted(p for p in CSRC.rglob("*") if p.is_file()):
        h.update(src.relative_to(CSRC).as_posix().encode())
        h.update(src.read_bytes())
    h.update(" ".join(CPU_SOURCES + (CUDA_SOURCES if cuda else [])).encode())
    h.update(f"{torch.__version__} {torch.version.git_version}".encode())
    h.update(sys.implementation.cache_tag.encode())  # the library links libtorch_python
    cxx = os.environ.get("CXX", "c++")  # what torch.utils.cpp_extension compiles with
    cxx_version = _tool_version(cxx, "--version").partition("\n")[0]  # clang's next: paths
    h.update(f"{cxx} {cxx_version}".encode())
    h.update(" ".join(_cflags(cuda) + list(LDFLAGS)).encode())
    h.update(_cpu_signature().encode())
    if cuda:
        h.update(" ".join(CUDA_CFLAGS).encode())
        h.update(_cuda_signature().encode())
    root = Path(os.environ.get("CRFOLD_CACHE") or Path.home() / ".cache" / "crfold")
    name = "crfold_knn_cuda" if cuda else "crfold_knn"
    return root / f"knn_{h.hexdigest()[:16]}" / f"{name}.so"


def _say(message: str) -> None:
    print(f"crfold: {message}", file=sys.stderr, flush=True)


def _missing_tools(cuda: bool) -> list[str]:
    from torch.utils.cpp_extension import CUDA_HOME, is_ninja_available

    missing = []
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        missing.append(f"a C++ compiler ('{cxx}' not on PATH; install g++)")
    if not is_ninja_available():
        missing.append("ninja (pip install ninja)")
    inc = Path(torch.__file__).parent / "include" / "torch" / "extension.h"
    if not inc.exists():
        missing.append(f"torch C++ headers ({inc} is absent)")
    nvcc = Path(CUDA_HOME or "", "bin", "nvcc")
    if cuda and not nvcc.exists():
        missing.append(f"nvcc ({nvcc} is absent)")
    return missing


@contextlib.contextmanager
def _build_lock(key_dir: Path) -> Iterator[None]:
    """Hold the exclusive flock of ``key_dir``, saying so when another process holds it."""
    import fcntl  # POSIX only: elsewhere the ImportError becomes build_error

    fd = os.open(key_dir / "build.flock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f"waiting for another process's build of the kNN extension in {key_dir} ...")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _remove_interrupted_builds(key_dir: Path) -> None:
    """Delete the ``build-*`` folders of killed builds; the caller holds the build lock, so no
    live build owns one."""
    leftovers = sorted(key_dir.glob("build-*"))
    for folder in leftovers:
        shutil.rmtree(folder, ignore_errors=True)  # a killed build's orphaned compiler may linger
    if leftovers:
        names = ", ".join(folder.name for folder in leftovers)
        _say(f"removed the remains of an interrupted build in {key_dir} ({names})")


def _compile(lib: Path, cuda: bool, verbose: bool) -> None:
    """Compile ``lib`` in a fresh folder beside it, then move it into place atomically. torch
    loads the library (from that folder) as it builds it."""
    from torch.utils.cpp_extension import load as cpp_load

    what = "with its CUDA kernels (a few minutes)" if cuda else "(about 30 s)"
    _say(f"building the kNN extension {what} in {lib.parent} ...")
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=lib.parent))
    try:
        cpp_load(
            name=lib.stem,
            sources=[str(CSRC / n) for n in CPU_SOURCES + (CUDA_SOURCES if cuda else [])],
            extra_cflags=_cflags(cuda),
            extra_cuda_cflags=list(CUDA_CFLAGS),
            extra_ldflags=list(LDFLAGS),
            build_directory=str(tmp),
            is_python_module=False,
            verbose=verbose,
        )
        # torch names it crfold_knn_v1.so etc. if this process built it before with other flags
        built = next(tmp.glob(f"{lib.stem}*.so"))
        os.replace(built, lib)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_or_build(lib: Path, cuda: bool, verbose: bool) -> str | None:
    """Load the cached library ``lib``, building it first when absent; the error text, else
    None."""
    if not lib.exists():
        missing = _missing_tools(cuda)
        if missing:
            return "cannot build the kNN extension, missing: " + "; ".join(missing)
        try:
            lib.parent.mkdir(parents=True, exist_ok=True)
            with _build_lock(lib.parent):
                _remove_interrupted_builds(lib.parent)
                if not lib.exists():  # else another process built it while this one waited
                    _compile(lib, cuda, verbose)
                    return None
        except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
            return f"building the kNN extension in {lib.parent} failed: {exc}"
    try:
        torch.ops.load_library(str(lib))
    except Exception as exc:  # noqa: BLE001
        return f"loading {lib} failed (delete that folder to rebuild it): {exc}"
    return None


def load(verbose: bool = False) -> bool:
    """Build (if needed) and load the extension; return whether it is available."""
    global _loaded, build_error, with_cuda, library
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        if os.environ.get("CRFOLD_FORCE_REFERENCE", "0") == "1":
            build_error = "CRFOLD_FORCE_REFERENCE=1 is set"
            _loaded = False
            return False
        cuda, lib = False, None
        try:  # anything (no home folder, an unreadable cache) means "fall back", never a raise
            cuda = _want_cuda()
            lib = library_path(cuda)
            error = _load_or_build(lib, cuda, verbose)
            if cuda and error is not None:  # the CPU kernels still serve CPU tensors
                cuda, lib = False, library_path(cuda=False)
                cuda_error, error = error, _load_or_build(lib, cuda, verbose)
                build_error = f"CUDA kernels unavailable: {cuda_error}" if error is None else error
            else:
                build_error = error
        except Exception as exc:  # noqa: BLE001
            where = f" ({lib})" if lib is not None else ""
            error = build_error = f"loading the kNN extension{where} failed: {exc!r}"
        _loaded = error is None
        with_cuda = cuda and _loaded
        library = lib if _loaded else None
        return _loaded
