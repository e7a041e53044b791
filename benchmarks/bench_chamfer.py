"""Chamfer distance benchmark: crfold against torch.cdist+min, the pure-torch reference and peers.

Prints ONE table (GitHub markdown, or CSV with ``--csv``) with a row per (device, size,
implementation) and columns B, P1, P2, D, implementation, forward ms, forward+backward ms, pairs/s,
peak extra memory (MB). The crfold backend (``crfold.ops.backend()``) is printed above the table.

    python benchmarks/bench_chamfer.py                      # default sizes, CPU (+ CUDA if present)
    python benchmarks/bench_chamfer.py --sizes 16x2048x2025x3 --impls crfold,cdist --repeats 5

Implementations (squared Chamfer distance: mean over points, sum of directions, mean over batch):

* ``crfold``: :func:`crfold.ops.chamfer_distance`, whatever backend serves it (CPU, CUDA).
* ``torch.cdist+min``: dense ``(B, P1, P2)`` distance matrix, min in both directions (CPU, CUDA).
* ``reference``: :func:`crfold.ops.reference.knn_points_reference` in both directions (CPU).
* ``scipy cKDTree``: per cloud, a tree on y queried by x (``workers=-1``) and the reverse (CPU).
* when importable: ``Open3D`` (``open3d.core.nns.NearestNeighborSearch`` kNN, CPU),
  ``pytorch3d`` (``pytorch3d.loss.chamfer_distance``), ``KeOps`` (LazyTensor argmin, then a
  differentiable gather). cKDTree and Open3D have no backward ("-" in that column).

Measurement:

* Inputs: float32, uniform in the unit cube, seeded (the same clouds on every device).
* Times: ``time.perf_counter`` (``torch.cuda.synchronize`` around each call on CUDA), median of
  ``--repeats`` calls after one warm-up call; fewer (at least 1) once one more call would take the
  timed total past ``--budget`` seconds. pairs/s = B * P1 * P2 * 2 directions / forward s.
* Peak extra memory: on CUDA, ``torch.cuda.max_memory_allocated`` minus what was allocated once
  the inputs existed. On CPU, PyTorch's allocations are invisible to ``tracemalloc``, so each CPU
  row runs in a fresh process (this script with a hidden ``--cell`` option) and reports the growth
  of the RSS high-water mark: its value at the end minus its value right after the inputs were
  created, the mark first reset to the current RSS (``/proc/self/clear_refs``). The mark is
  ``VmHWM``, i.e. ``getrusage(RUSAGE_SELF).ru_maxrss`` without what ``ru_maxrss`` carries over
  from the parent across ``exec`` (which hides a child's peaks below the parent's RSS); without
  /proc it is ``ru_maxrss``. It is the peak over the forward and the forward+backward runs,
  includes the gradients, and counts touched pages, not bytes requested. Libraries are loaded
  (and kernels compiled) on a tiny problem before the baseline.
* Skips: a dense baseline whose float32 distance matrix would exceed 8 GB ("skipped (needs N GB)");
  an implementation whose single call would take longer than ``--max-seconds`` (default 30),
  estimated (for sizes above 2**26 pairs per direction) by a power law ``t ~ B * n ** a``,
  n = sqrt(P1 * P2), 1 <= a <= 2, fitted to B=1 calibration runs of growing n.

"""

from __future__ import annotations

import argparse
import math
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import _common as common
import torch

DEFAULT_SIZES = "16x2048x2025x3,32x1024x1024x3,1x100000x100000x3"
HEADER = ("B", "P1", "P2", "D", "implementation", "forward ms", "forward+backward ms")
HEADER += ("pairs/s", "peak extra memory (MB)")
DENSE_LIMIT_GB = 8.0
CHECK_PAIRS = 1 << 26  # sizes above this many pairs per direction are estimated before running
CALIBRATION_N0, CALIBRATION_SECONDS = 1024, 0.25  # calibration: n = 1024, 2048, ... up to ~0.25 s
Size = tuple[int, int, int, int]  # (B, P1, P2, D)


def make_clouds(
    B: int, P1: int, P2: int, D: int, device: torch.device | str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded float32 clouds uniform in the unit cube: x (B, P1, D), y (B, P2, D), no padding."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, P1, D, generator=g)  # (B, P1, D)
    y = torch.rand(B, P2, D, generator=g)  # (B, P2, D)
    return x.to(device), y.to(device)


# Each implementation maps x (B, P1, D), y (B, P2, D) to the scalar Chamfer distance (a 0-dim
# tensor when it supports backward, else a float).


def _crfold(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from crfold.ops import chamfer_distance

    return chamfer_distance(x, y)


def _cdist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, y)  # (B, P1, P2) Euclidean
    return (d.amin(dim=2).square().mean(dim=1) + d.amin(dim=1).square().mean(dim=1)).mean()


def _reference(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from crfold.ops.reference import knn_points_reference

    B, P1, P2 = x.shape[0], x.shape[1], y.shape[1]
    l1 = torch.full((B,), P1, dtype=torch.int64, device=x.device)  # (B,)
    l2 = torch.full((B,), P2, dtype=torch.int64, device=x.device)  # (B,)
    d_xy, _ = knn_points_reference(x, y, l1, l2, 1)  # (B, P1, 1)
    d_yx, _ = knn_points_reference(y, x, l2, l1, 1)  # (B, P2, 1)
    return (d_xy[..., 0].mean(dim=1) + d_yx[..., 0].mean(dim=1)).mean()


def _ckdtree(x: torch.Tensor, y: torch.Tensor) -> float:
    from scipy.spatial import cKDTree

    xs, ys = x.detach().cpu().numpy(), y.detach().cpu().numpy()
    total = 0.0
    for b in range(xs.shape[0]):
        for p, q in ((xs[b], ys[b]), (ys[b], xs[b])):
            d, _ = cKDTree(q).query(p, k=1, workers=-1)  # (P,) Euclidean
            total += float((d * d).mean())
    return total / xs.shape[0]


def _open3d(x: torch.Tensor, y: torch.Tensor) -> float:
    o3c = common.require("open3d.core", "pip install crfold[viz]")
    xs, ys = x.detach().cpu().numpy(), y.detach().cpu().numpy()
    total = 0.0
    for b in range(xs.shape[0]):
        for p, q in ((xs[b], ys[b]), (ys[b], xs[b])):
            nns = o3c.nns.NearestNeighborSearch(o3c.Tensor.from_numpy(q))
            nns.knn_index()
            _, d2 = nns.knn_search(o3c.Tensor.from_numpy(p), 1)  # (P, 1) squared distances
            total += float(d2.numpy().mean())
    return total / xs.shape[0]


def _pytorch3d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    loss = common.require("pytorch3d.loss", "build pytorch3d from source; PyPI has no Linux wheel")
    return loss.chamfer_distance(x, y)[0]


def _keops_direction(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Mean over p (B, P, D) of the squared distance to its nearest point of q (B, Q, D): (B,)."""
    keops = common.require("pykeops.torch", "pip install pykeops")
    p_i = keops.LazyTensor(p.detach()[:, :, None, :].contiguous())  # (B, P, 1, D)
    q_j = keops.LazyTensor(q.detach()[:, None, :, :].contiguous())  # (B, 1, Q, D)
    idx = ((p_i - q_j) ** 2).sum(-1).argmin(dim=2).long()  # (B, P, 1)
    nn = q.gather(1, idx.expand(-1, -1, q.shape[-1]))  # (B, P, D), differentiable in q
    return ((p - nn) ** 2).sum(-1).mean(dim=1)


def _keops(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (_keops_direction(x, y) + _keops_direction(y, x)).mean()


@dataclass(frozen=True)
class Impl:
    """One benchmarked implementation.

    Attributes:
        key: short name for ``--impls``.
        label: name printed in the table.
        fn: ``fn(x (B, P1, D), y (B, P2, D))`` -> scalar Chamfer distance.
        backward: whether ``fn`` returns a differentiable tensor (forward+backward is timed).
        devices: device types it runs on.
        dense: materialises the (B, P1, P2) distance matrix.
        module: optional dependency; the implementation is listed only when it imports.
    """

    key: str
    label: str
    fn: Callable[[torch.Tensor, torch.Tensor], object]
    backward: bool
    devices: tuple[str, ...]
    dense: bool = False
    module: str | None = None


IMPLS = {
    i.key: i
    for i in (
        Impl("crfold", "crfold", _crfold, True, ("cpu", "cuda")),
        Impl("cdist", "torch.cdist+min", _cdist, True, ("cpu", "cuda"), dense=True),
        Impl("reference", "reference", _reference, True, ("cpu",)),
        Impl("ckdtree", "scipy cKDTree", _ckdtree, False, ("cpu",), module="scipy.spatial"),
        Impl("open3d", "Open3D", _open3d, False, ("cpu",), module="open3d.core"),
        Impl("pytorch3d", "pytorch3d", _pytorch3d, True, ("cpu", "cuda"), module="pytorch3d.loss"),
        Impl("keops", "KeOps", _keops, True, ("cpu", "cuda"), module="pykeops.torch"),
    )
}


def measure_cell(impl: Impl, size: Size, device: str, repeats: int, budget: float) -> dict:
    """Time and measure one (implementation, size, device) in the current process.

    Returns:
        ``{"forward_s": float, "fb_s": float | None, "mem_mb": float}``.
    """
    B, P1, P2, D = size
    dev = torch.device(device)
    impl.fn(*make_clouds(1, 16, 16, D, dev, seed=1))  # load libraries, compile, start threads
    x, y = make_clouds(B, P1, P2, D, dev)
    meter = common.PeakMemory(dev)
    fwd = common.median_seconds(lambda: impl.fn(x, y), dev, repeats, budget=budget)
    fb = None
    if impl.backward:
        xg, yg = x.detach().requires_grad_(), y.detach().requires_grad_()

        def step() -> None:
            xg.grad = yg.grad = None
            impl.fn(xg, yg).backward()

        fb = common.median_seconds(step, dev, repeats, budget=budget)
    return {"forward_s": fwd, "fb_s": fb, "mem_mb": meter.extra_mb()}


def _forward_seconds(impl: Impl, n: int, D: int, dev: torch.device, warmup: int) -> float:
    x, y = make_clouds(1, n, n, D, dev, seed=2)
    t = common.median_seconds(lambda: impl.fn(x, y), dev, 3, warmup, budget=CALIBRATION_SECONDS)
    return max(t, 1e-9)


def estimate_call_seconds(impl: Impl, size: Size, device: str, cache: dict) -> float:
    """Estimated seconds of one call (forward+backward where supported) at ``size``.

    Times the forward on B=1 clouds of n = 1024, 2048, ... points (until a call takes
    ``CALIBRATION_SECONDS`` or n reaches ``sqrt(P1 * P2)``), fits ``t = c * n ** a`` to the last
    two points (1 <= a <= 2: a tree is ~1, brute force 2), scales by B, and doubles it for the
    backward.
    """
    B, P1, P2, D = size
    n_target = math.sqrt(P1 * P2)
    key = (impl.key, device, D, int(n_target))
    if key not in cache:
        dev, n = torch.device(device), CALIBRATION_N0
        points = [(n, _forward_seconds(impl, n, D, dev, warmup=1))]
        while len(points) < 2 or (points[-1][1] < CALIBRATION_SECONDS and 2 * n <= n_target):
            n *= 2
            points.append((n, _forward_seconds(impl, n, D, dev, warmup=0)))
        (n0, t0), (n1, t1) = points[-2:]
        cache[key] = (n1, t1, min(2.0, max(1.0, math.log(t1 / t0) / math.log(n1 / n0))))
    n1, t1, a = cache[key]
    return t1 * B * (n_target / n1) ** a * (2.0 if impl.backward else 1.0)


def skip_reason(impl: Impl, size: Size, device: str, max_seconds: float, cache: dict) -> str | None:
    """Why the cell should not run (``"skipped (...)"``), or None to run it."""
    B, P1, P2, _ = size
    if impl.dense:
        gb = B * P1 * P2 * 4 / 1e9  # float32 distance matrix
        if gb > DENSE_LIMIT_GB:
            return f"skipped (needs {gb:.0f} GB)"
    if B * P1 * P2 > CHECK_PAIRS:
        est = estimate_call_seconds(impl, size, device, cache)
        if est > max_seconds:
            return f"skipped (~{est:.0f} s per call)"
    return None


def _size_str(size: Size) -> str:
    return "x".join(str(v) for v in size)


def run_cell(impl: Impl, size: Size, device: str, args: argparse.Namespace) -> dict:
    """Measure one cell: CPU cells in a fresh process (for the RSS figure), CUDA cells here."""
    if device == "cpu":
        argv = [str(Path(__file__).resolve()), "--cell", impl.key, "--sizes", _size_str(size)]
        argv += ["--device", "cpu", "--repeats", str(args.repeats), "--budget", str(args.budget)]
        return common.run_isolated(argv, timeout=60 + 2 * (args.repeats + 1) * args.max_seconds)
    try:
        return measure_cell(impl, size, device, args.repeats, args.budget)
    finally:
        torch.cuda.empty_cache()  # the next cell starts from an empty cache, also after an OOM


def table_row(size: Size, label: str, result: dict | str) -> list[object]:
    """One table row from a measurement dict, or from a note such as ``"skipped (...)"``."""
    B, P1, P2, D = size
    if isinstance(result, str):
        return [B, P1, P2, D, label, result, "-", "-", "-"]
    fwd, ms = result["forward_s"], common.fmt_ms
    rate, mem = f"{2 * B * P1 * P2 / fwd:.2e}", f"{result['mem_mb']:.1f}"
    return [B, P1, P2, D, label, ms(fwd), ms(result["fb_s"]), rate, mem]


def parse_sizes(text: str) -> list[Size]:
    """``--sizes``: ``"16x2048x2025x3,1x10x20x8"`` -> ``[(16, 2048, 2025, 3), (1, 10, 20, 8)]``."""
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        try:
            values = tuple(int(p) for p in parts)
        except ValueError:
            values = ()
        if len(values) != 4 or min(values) < 1:
            raise argparse.ArgumentTypeError(
                f"--sizes expects comma-separated BxP1xP2xD with positive integers, got {item!r}"
            )
        sizes.append(values)
    return sizes


def parse_impls(text: str | None) -> list[Impl]:
    """Comma-separated keys or labels (case-insensitive); None means every importable one."""
    if text is None:
        return [i for i in IMPLS.values() if common.importable(i.module)]
    names = {k: i for i in IMPLS.values() for k in (i.key.lower(), i.label.lower())}
    chosen = []
    for name in (n.strip().lower() for n in text.split(",") if n.strip()):
        if name not in names:
            raise argparse.ArgumentTypeError(
                f"--impls: unknown implementation {name!r}; choose from {', '.join(IMPLS)}"
            )
        chosen.append(names[name])
    return chosen


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Time crfold's Chamfer distance against its peers and print one table."
    )
    p.add_argument("--sizes", type=parse_sizes, default=None,
                   help=f"comma-separated BxP1xP2xD (default: {DEFAULT_SIZES})")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3,
                   help="timed calls (median shown) after a warm-up (default: 3)")  # fmt: skip
    impls_help = f"comma-separated subset of {', '.join(IMPLS)} (default: all that import)"
    p.add_argument("--impls", default=None, help=impls_help)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto (default) = cpu, plus cuda when available")  # fmt: skip
    out = p.add_mutually_exclusive_group()
    out.add_argument("--markdown", dest="fmt", action="store_const", const="markdown",
                     help="print a markdown table (default)")  # fmt: skip
    out.add_argument("--csv", dest="fmt", action="store_const", const="csv", help="print CSV")
    p.set_defaults(fmt="markdown")
    p.add_argument("--max-seconds", type=float, default=30.0,
                   help="skip a cell whose one call would take longer (default: 30)")  # fmt: skip
    p.add_argument("--budget", type=float, default=5.0,
                   help="time fewer calls once they would take longer (default: 5 s)")  # fmt: skip
    p.add_argument("--cell", default=None, help=argparse.SUPPRESS)  # child process: one cell
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    args.sizes = args.sizes or parse_sizes(DEFAULT_SIZES)
    if args.cell is not None:  # child process: measure one cell and report it
        device = "cpu" if args.device == "auto" else args.device
        common.emit_result(
            measure_cell(IMPLS[args.cell], args.sizes[0], device, args.repeats, args.budget)
        )
        return 0
    try:
        impls = parse_impls(args.impls)
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    has_cuda = torch.cuda.is_available()
    if args.device == "cuda" and not has_cuda:
        parser.error("--device cuda: torch.cuda.is_available() is False")
    devices = {"auto": ["cpu"] + (["cuda"] if has_cuda else []), "cpu": ["cpu"]}.get(
        args.device, ["cuda"]
    )
    # The backend line below says which implementation serves crfold; no need to warn again.
    warnings.filterwarnings("ignore", message="crfold.ops: using the slow", category=RuntimeWarning)
    from crfold.ops import backend

    cache: dict = {}
    rows = []
    for device in devices:
        for size in args.sizes:
            for impl in impls:
                if device not in impl.devices:
                    continue
                label = impl.label + (" (cuda)" if device == "cuda" else "")
                if not common.importable(impl.module):
                    rows.append(table_row(size, label, f"skipped (no {impl.module})"))
                    continue
                try:
                    result = skip_reason(impl, size, device, args.max_seconds, cache)
                    result = result or run_cell(impl, size, device, args)
                except Exception as exc:  # noqa: BLE001 - one failing peer must not end the table
                    print(f"{label} at {_size_str(size)} failed: {exc}", file=sys.stderr)
                    if not isinstance(exc, common.IsolatedRunError):
                        traceback.print_exc(file=sys.stderr)
                    result = f"failed ({type(exc).__name__})"
                rows.append(table_row(size, label, result))
    gpu = f", CUDA: {torch.cuda.get_device_name()}" if "cuda" in devices else ""
    notes = [
        f"crfold backend: {backend()}",
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads{gpu}; float32 inputs "
        "uniform in the unit cube",
        f"times: median of {args.repeats} calls after 1 warm-up (fewer past {args.budget:g} s); "
        "pairs/s = B*P1*P2*2 / forward time",
        "peak extra memory: CPU = RSS high-water growth in a fresh process, "
        "CUDA = max_memory_allocated beyond the inputs",
    ]
    prefix = "# " if args.fmt == "csv" else ""
    print("\n".join(prefix + n for n in notes) + ("\n" if args.fmt == "markdown" else ""))
    print(common.format_table(HEADER, rows, args.fmt), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
