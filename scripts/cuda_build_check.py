"""``make cuda-build``: compile and link the whole extension against a CUDA build of torch, no GPU.

CI's ``make cuda-check`` compiles the kernels alone (the ``.cu`` files include no torch header);
this script builds what ``crfold/ops/_ext.py`` builds on a GPU machine: every ``csrc/*.cu`` with
nvcc and every ``csrc/*.cpp`` (CPU kernels, bindings, ``*_cuda_glue.cpp``) with g++, with
``-DWITH_CUDA`` and the flags ``torch.utils.cpp_extension`` uses, then links one shared library
against the wheel's ``libc10``/``libc10_cuda``/``libtorch_cpu``/``libtorch_cuda`` and CUDA's
``libcudart`` with ``-Wl,--no-undefined``, and checks that every ``m.impl`` of a
``TORCH_LIBRARY_IMPL(..., CUDA, m)`` block is in it. New sources are picked up by the glob.

torch is never imported: the headers and libraries come from the CUDA wheel itself, unpacked
(``torch/include``, ``torch/lib``, ``torch/version.py``) beside it. The wheel is
``$CRFOLD_CUDA_WHEEL`` (a ``.whl`` file, or a folder holding one; default
``~/.cache/crfold/cuda-torch``); when no CUDA wheel is there, ``pip download`` fetches
``torch==2.13.0`` from PyPI without its dependencies (about 530 MB; the nvidia-* libraries it
needs at run time are not fetched, so nothing here can run). Outputs go to ``build/cuda-build``.
Nothing runs on a GPU. Usage::

    python scripts/cuda_build_check.py [--wheel PATH] [--torch-version 2.13.0] [--jobs N]
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CSRC = REPO / "crfold" / "ops" / "csrc"
OUT = REPO / "build" / "cuda-build"
DEFAULT_WHEEL_DIR = Path.home() / ".cache" / "crfold" / "cuda-torch"
ARCHS = ("80", "90")  # sm_80 (A100) and sm_90 (H100), as `make cuda-check`
LIB_NAME = "crfold_knn_cuda"  # the name crfold/ops/_ext.py gives the CUDA build
# Members of the wheel the build needs: headers, shared libraries to link, the version file.
UNPACK = re.compile(r"torch/(include/.*|lib/lib[^/]*\.so[.0-9]*|version\.py)")


def _run(cmd: list[str], env: dict[str, str] | None = None) -> str:
    """Runs ``cmd``; exits with its output when it fails, returns stdout + stderr otherwise."""
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode == 0:
        return res.stdout + res.stderr
    hint = ""
    if re.search(r"fatal error: (cublas\w*|cusparse|cusolver\w*)\.h: No such file", res.stderr):
        hint = (
            "hint: ATen/cuda/CUDAContext.h includes the cuBLAS/cuSPARSE/cuSOLVER headers, which a "
            "minimal (pip-installed) CUDA toolkit lacks; glue that needs only the current stream "
            "includes <c10/cuda/CUDAStream.h> instead (as knn_cuda_glue.cpp does)\n"
        )
    sys.exit(f"cuda-build: failed:\n{' '.join(cmd)}\n{res.stdout}{res.stderr}{hint}")


def _is_cuda_wheel(path: Path) -> bool:
    return path.name.startswith("torch-") and "+cpu" not in path.name


def _find_wheel(spec: Path, version: str) -> Path:
    """The CUDA torch wheel at ``spec`` (a file, or a folder it is downloaded into when absent)."""
    if spec.suffix == ".whl":
        if not spec.is_file():
            sys.exit(f"cuda-build: {spec} does not exist")
        return spec
    found = sorted(p for p in spec.glob(f"torch-{version}*.whl") if _is_cuda_wheel(p))
    if found:
        return found[-1]
    print(f"cuda-build: no CUDA torch {version} wheel in {spec}; downloading it from PyPI")
    spec.mkdir(parents=True, exist_ok=True)
    # The machines' pip config points at a local folder holding the CPU wheel: bypass it.
    env = {k: v for k, v in os.environ.items() if k not in ("PIP_FIND_LINKS", "PIP_CONSTRAINT")}
    _run(
        [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--only-binary",
         ":all:", "--index-url", "https://pypi.org/simple", f"torch=={version}", "-d", str(spec)],
        env=env,
    )  # fmt: skip
    found = sorted(p for p in spec.glob(f"torch-{version}*.whl") if _is_cuda_wheel(p))
    if not found:
        sys.exit(f"cuda-build: pip left no CUDA torch {version} wheel in {spec}")
    return found[-1]


def _unpack(wheel: Path) -> tuple[Path, str, str]:
    """Unpacks what the build needs beside the wheel; returns (torch dir, version, CUDA version)."""
    root = wheel.with_suffix("")  # torch-2.13.0-cp311-...-x86_64/
    done = root / ".unpacked"
    if not done.exists():
        print(f"cuda-build: unpacking headers and libraries of {wheel.name} into {root}")
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(root, [n for n in zf.namelist() if UNPACK.fullmatch(n)])
        done.touch()
    values = {}
    for node in ast.parse((root / "torch" / "version.py").read_text()).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Constant):
            target = node.targets[0] if isinstance(node, ast.Assign) else node.target
            values[getattr(target, "id", "")] = node.value.value
    if not values.get("cuda"):
        sys.exit(f"cuda-build: {wheel.name} is not a CUDA build of torch (torch.version.cuda None)")
    if not (root / "torch" / "include" / "c10" / "cuda").is_dir():
        sys.exit(f"cuda-build: {wheel.name} has no c10/cuda headers")
    return root / "torch", values["__version__"], values["cuda"]


def _cxx11_abi(torch_dir: Path) -> int:
    """1 when the wheel's libc10 was built with the C++11 std::string ABI (its symbols say so)."""
    syms = _run(["nm", "-D", "--defined-only", str(torch_dir / "lib" / "libc10.so")])
    return int("__cxx11" in syms)


def _cuda_home(nvcc: str) -> Path:
    """CUDA_HOME, else the toolkit nvcc belongs to (as torch finds it), else /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    which = shutil.which(nvcc)
    if which:
        candidates.append(str(Path(which).resolve().parents[1]))
    candidates.append("/usr/local/cuda")
    for c in candidates:
        if c and (Path(c) / "include" / "cuda_runtime.h").is_file():
            return Path(c)
    sys.exit("cuda-build: no CUDA toolkit with include/cuda_runtime.h; set CUDA_HOME")


def _cuda_impls(glue: list[Path]) -> list[str]:
    """The functions the glue registers for the CUDA dispatch key (``m.impl("op", &fn)``)."""
    names = []
    for src in glue:
        for block in re.findall(
            r"TORCH_LIBRARY_IMPL\(\s*\w+\s*,\s*CUDA\s*,.*?\n\}", src.read_text(), re.S
        ):
            names += re.findall(r"m\.impl\(\s*\"\w+\"\s*,\s*&?([\w:]+)", block)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--wheel",
        type=Path,
        default=Path(os.environ.get("CRFOLD_CUDA_WHEEL", DEFAULT_WHEEL_DIR)),
        help="CUDA torch wheel, or a folder holding one (downloaded there when absent) "
        "(default: $CRFOLD_CUDA_WHEEL or %(default)s)",
    )
    ap.add_argument(
        "--torch-version", default="2.13.0", help="torch to fetch (default: %(default)s)"
    )
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel compiles")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    wheel = _find_wheel(args.wheel.expanduser(), args.torch_version)
    torch_dir, torch_version, torch_cuda = _unpack(wheel)
    nvcc = os.environ.get("NVCC", "nvcc")
    cuda_home = _cuda_home(nvcc)
    nvcc_version = re.findall(r"release ([\d.]+), (V[\d.]+)", _run([nvcc, "--version"]))[0]
    abi = _cxx11_abi(torch_dir)
    print(
        f"cuda-build: torch {torch_version} (CUDA {torch_cuda}, C++11 ABI {abi}) from {wheel}\n"
        f"cuda-build: nvcc {nvcc_version[1]} (CUDA {nvcc_version[0]}), toolkit {cuda_home}"
    )
    if torch_cuda.split(".")[0] != nvcc_version[0].split(".")[0]:
        print(f"cuda-build: warning: the wheel is CUDA {torch_cuda}, nvcc is {nvcc_version[0]}")

    # Flags of torch.utils.cpp_extension (torch 2.13, a CUDA build on Linux) plus _ext.py's own.
    inc = torch_dir / "include"
    includes = [inc, inc / "torch" / "csrc" / "api" / "include", cuda_home / "include"]
    includes.append(Path(sysconfig.get_path("include", scheme="posix_prefix")))
    common = [f"-DTORCH_EXTENSION_NAME={LIB_NAME}", "-DTORCH_API_INCLUDE_EXTENSION_H"]
    common += [f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-DWITH_CUDA", "-std=c++20"]
    common += [f for d in includes for f in ("-isystem", str(d))]
    cxx = [os.environ.get("CXX", "g++"), *common, "-fPIC", "-O3", "-fno-math-errno"]
    cxx += ["-ffp-contract=off", "-fopenmp"]
    cu = [nvcc, *common, "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__"]
    cu += ["-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
    cu += ["--expt-relaxed-constexpr", "-Xcompiler", "-fPIC", "-O3", "--fmad=false"]
    cu += [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]

    sources = sorted(CSRC.glob("*.cu")) + sorted(CSRC.glob("*.cpp"))
    OUT.mkdir(parents=True, exist_ok=True)
    jobs = []
    for src in sources:
        obj = OUT / f"{src.name}.o"  # knn_cuda.cu.o: a .cu and a .cpp may share a stem
        jobs.append([*(cu if src.suffix == ".cu" else cxx), "-c", str(src), "-o", str(obj)])

    def compile_one(cmd: list[str]) -> str:
        t = time.perf_counter()
        log = _run(cmd)
        name = Path(cmd[-3]).name
        return f"  {name:<28} {time.perf_counter() - t:6.1f} s" + (f"\n{log}" if log else "")

    print(f"cuda-build: compiling {len(sources)} sources ({args.jobs} at a time)")
    with ThreadPoolExecutor(args.jobs) as pool:
        for line in pool.map(compile_one, jobs):
            print(line, flush=True)

    lib = OUT / f"{LIB_NAME}.so"
    tlib = torch_dir / "lib"
    clib = cuda_home / "lib64" if (cuda_home / "lib64").is_dir() else cuda_home / "lib"
    # --no-undefined: every symbol the objects use must come from a library named here. The
    # libraries torch_cuda needs at run time (cuBLAS, cuDNN, NCCL, ...) are not installed; the
    # linker is told not to chase them (they are only needed when torch itself is loaded).
    link = [cxx[0], "-shared", *(str(j[-1]) for j in jobs), "-o", str(lib), "-fopenmp"]
    link += ["-Wl,--no-undefined", "-Wl,--allow-shlib-undefined", f"-L{tlib}", f"-L{clib}"]
    link += ["-lc10", "-lc10_cuda", "-ltorch_cpu", "-ltorch_cuda", "-ltorch", "-lcudart"]
    log = _run(link)
    if log:
        print(log)

    # The registrations made it in, and the kernels were compiled for every architecture.
    syms = _run(["nm", "-C", str(lib)])
    impls = _cuda_impls(sorted(CSRC.glob("*_cuda_glue.cpp")))
    missing = [f for f in impls if f.split("::")[-1] + "(" not in syms]
    if not impls or missing:
        sys.exit(f"cuda-build: CUDA kernels absent from {lib.name}: {missing or 'no m.impl found'}")
    fatbin = _run(["readelf", "-S", "-W", str(lib)])
    if ".nv_fatbin" not in fatbin:
        sys.exit(f"cuda-build: {lib.name} has no .nv_fatbin section (no device code)")
    needed = re.findall(r"\(NEEDED\).*\[(.+)\]", _run(["readelf", "-d", "-W", str(lib)]))
    undefined = _run(["nm", "-D", "--undefined-only", str(lib)]).count("\n")
    print(
        f"cuda-build: {lib.relative_to(REPO)}: {len(impls)} CUDA kernels registered "
        f"({', '.join(i.split('::')[-1] for i in impls)}), device code in .nv_fatbin\n"
        f"cuda-build: {undefined} undefined dynamic symbols, each found at link time in: "
        f"{' '.join(needed)}\n"
        f"cuda-build: OK in {time.perf_counter() - t0:.1f} s (compile and link only; nothing ran)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
