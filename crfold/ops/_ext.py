"""Builds (just in time, cached) and loads the compiled extension (kNN, graph max-pool) once.

The extension is compiled with ``torch.utils.cpp_extension.load`` on first use and cached under
``$CRFOLD_CACHE`` (default ``~/.cache/crfold``) in a folder keyed by the hash of the sources, the
torch version and the build flags, so a second process (or a second run of the test suite) loads
the cached library in milliseconds. Nothing is compiled at ``pip install`` time, so installing
never fails and never needs a torch in an isolated build environment.

``load()`` never raises: when the build fails (no compiler, no headers, no ninja), the reason is
kept in :data:`build_error` and :mod:`crfold.ops` serves the pure-torch reference with a one-time
warning. ``python -m crfold.ops.build`` builds eagerly and prints the reason on failure.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import threading
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

_lock = threading.Lock()
_loaded: bool | None = None
build_error: str | None = None
with_cuda: bool = False


def _want_cuda() -> bool:
    if os.environ.get("CRFOLD_NO_CUDA", "0") == "1":
        return False
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and torch.cuda.is_available() and CUDA_HOME is not None


def _cflags() -> list[str]:
    flags = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-fopenmp"]
    # The extension is built on the machine that runs it, so it may use that CPU's vector units;
    # CRFOLD_NATIVE=0 builds portable code (e.g. for a cache shared by different CPUs).
    if os.environ.get("CRFOLD_NATIVE", "1") != "0" and platform.machine() in ("x86_64", "AMD64"):
        flags.append("-march=native")
    return flags


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + flags


def _build_dir(sources: list[Path], cflags: list[str], cuda: bool) -> Path:
    h = hashlib.sha256()
    for src in sorted(CSRC.iterdir()):
        h.update(src.name.encode())
        h.update(src.read_bytes())
    h.update(torch.__version__.encode())
    h.update(" ".join(cflags).encode())
    h.update(_cpu_signature().encode())
    h.update(b"cuda" if cuda else b"cpu")
    root = Path(os.environ.get("CRFOLD_CACHE", Path.home() / ".cache" / "crfold"))
    d = root / f"knn_{h.hexdigest()[:16]}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _missing_tools(cuda: bool) -> list[str]:
    from torch.utils.cpp_extension import is_ninja_available

    missing = []
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        missing.append(f"a C++ compiler ('{cxx}' not on PATH; install g++)")
    if not is_ninja_available():
        missing.append("ninja (pip install ninja)")
    inc = Path(torch.__file__).parent / "include" / "torch" / "extension.h"
    if not inc.exists():
        missing.append(f"torch C++ headers ({inc} is absent)")
    return missing


def _nvcc_missing() -> str | None:
    from torch.utils.cpp_extension import CUDA_HOME

    nvcc = Path(CUDA_HOME or "", "bin", "nvcc")
    return None if nvcc.exists() else f"nvcc ({nvcc} is absent)"


def _build(cuda: bool, verbose: bool) -> str | None:
    """Compile (or load the cached) extension; the error text on failure, else None."""
    from torch.utils.cpp_extension import load as cpp_load

    names = CPU_SOURCES + (CUDA_SOURCES if cuda else [])
    sources = [CSRC / n for n in names]
    cflags = _cflags() + (["-DWITH_CUDA"] if cuda else [])
    build_dir = _build_dir(sources, cflags, cuda)
    try:
        cpp_load(
            name="crfold_knn_cuda" if cuda else "crfold_knn",
            sources=[str(src) for src in sources],
            extra_cflags=cflags,
            extra_cuda_cflags=["-O3", "--fmad=false", "-DWITH_CUDA"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
            is_python_module=False,
            verbose=verbose,
        )
    except Exception as exc:  # noqa: BLE001 - any build failure means "fall back"
        return f"building the kNN extension in {build_dir} failed: {exc}"
    return None


def load(verbose: bool = False) -> bool:
    """Build (if needed) and load the extension; return whether it is available."""
    global _loaded, build_error, with_cuda
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        if os.environ.get("CRFOLD_FORCE_REFERENCE", "0") == "1":
            build_error = "CRFOLD_FORCE_REFERENCE=1 is set"
            _loaded = False
            return False
        cuda = _want_cuda()
        missing = _missing_tools(cuda)
        if missing:
            build_error = "cannot build the kNN extension, missing: " + "; ".join(missing)
            _loaded = False
            return False
        cuda_error = _nvcc_missing() if cuda else None
        if cuda_error is None and cuda:
            cuda_error = _build(cuda=True, verbose=verbose)
        if cuda and cuda_error is not None:  # the CPU kernels still serve CPU tensors
            cuda = False
            cpu_error = _build(cuda=False, verbose=verbose)
            if cpu_error is not None:
                build_error = cpu_error
                _loaded = False
                return False
            build_error = f"CUDA kernels unavailable: {cuda_error}"
        elif not cuda:
            cpu_error = _build(cuda=False, verbose=verbose)
            if cpu_error is not None:
                build_error = cpu_error
                _loaded = False
                return False
        with_cuda = cuda
        _loaded = True
        return True
