"""Public batched kNN: validation, autograd and dispatch to the compiled op.

The compiled primitive is registered by the C++ extension as ``torch.ops.crfold.knn_forward`` /
``knn_backward`` (``TORCH_LIBRARY``); this module adds its fake kernels and autograd formula with
``torch.library`` so that ``torch.compile(..., fullgraph=True)`` traces through it.
"""

from __future__ import annotations

import functools
import os
import warnings
from typing import NamedTuple

import torch
from torch._subclasses.fake_tensor import is_fake

from . import _ext, reference
from .layouts import as_padded

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_K_CUDA = 128
MAX_D_CUDA = 16
MAX_K = 2**31 - 1  # the kernels count neighbours in 32-bit ints


class KNN(NamedTuple):
    """Result of :func:`knn_points`.

    Attributes:
        dists: (B, P1, K) squared L2 (``norm=2``) or L1 (``norm=1``) distances, ascending; 0
            where padded.
        idx: (B, P1, K) int64 indices into ``p2``; -1 where padded.
        knn: (B, P1, K, D) the neighbours' coordinates (zeros where padded), or None.
    """

    dists: torch.Tensor
    idx: torch.Tensor
    knn: torch.Tensor | None


_registered = False
_warned = False


def _register_autograd() -> None:
    """Attach fake kernels and the backward formula to the C++-defined ops (once)."""
    global _registered
    if _registered:
        return

    @torch.library.register_fake("crfold::knn_forward")
    def _knn_forward_fake(p1, p2, lengths1, lengths2, K, norm=2):
        B, P1, _ = p1.shape
        return p1.new_empty((B, P1, K)), p1.new_empty((B, P1, K), dtype=torch.int64)

    @torch.library.register_fake("crfold::knn_backward")
    def _knn_backward_fake(grad_dists, p1, p2, lengths1, lengths2, idx, deterministic, norm=2):
        return torch.empty_like(p1), torch.empty_like(p2)

    def setup_context(ctx, inputs, output):
        p1, p2, lengths1, lengths2 = inputs[:4]
        _, idx = output
        ctx.save_for_backward(p1, p2, lengths1, lengths2, idx)
        ctx.mark_non_differentiable(idx)
        ctx.norm = inputs[5] if len(inputs) > 5 else 2  # torch fills the schema default norm=2

    def backward(ctx, grad_dists, _grad_idx):
        p1, p2, lengths1, lengths2, idx = ctx.saved_tensors
        deterministic = torch.are_deterministic_algorithms_enabled()
        g1, g2 = torch.ops.crfold.knn_backward(
            grad_dists.contiguous(), p1, p2, lengths1, lengths2, idx, deterministic, ctx.norm
        )
        return g1, g2, None, None, None, None

    torch.library.register_autograd("crfold::knn_forward", backward, setup_context=setup_context)
    _registered = True


def _compiled_for(device_type: str) -> bool:
    """Whether the compiled op serves tensors on ``device_type`` (builds it on first call)."""
    global _warned
    ok = _ext.load()
    if ok:
        _register_autograd()
        # "meta": the fake kernels serve meta tensors on any build.
        if device_type in ("cpu", "meta") or (device_type == "cuda" and _ext.with_cuda):
            return True
    if not _warned:
        why = _ext.build_error or f"the extension was built without {device_type}"
        warnings.warn(
            f"crfold.ops: using the slow pure-torch reference ops ({why})",
            RuntimeWarning,
            stacklevel=3,
        )
        _warned = True
    return False


# What torch.compiler.assume_constant_result(_compiled_for) does (dynamo evaluates the function
# once at trace time), set directly because importing torch._dynamo for the decorator costs
# seconds on every `import crfold.ops`; tests/ops/test_compile.py checks that tracing works.
_compiled_for._dynamo_marked_constant = True


def backend() -> str:
    """Name the implementation that serves :func:`knn_points` and :func:`chamfer_distance`.

    Returns:
        ``"compiled-cpu"`` or ``"compiled-cpu+cuda"`` when the C++ extension is loaded,
        otherwise ``"reference (<why the extension is unavailable>)"``.
    """
    if _ext.load():
        _register_autograd()
        return "compiled-cpu+cuda" if _ext.with_cuda else "compiled-cpu"
    return f"reference ({_ext.build_error})"


def is_symbolic(t: torch.Tensor) -> bool:
    """Whether ``t`` has a shape but no values (a meta or fake tensor): value checks skip it.

    False while ``torch.compile`` traces (the compiled code runs on real values, and the value
    checks test ``torch.compiler.is_compiling()`` themselves).
    """
    if torch.compiler.is_compiling():
        return False
    return t.is_meta or is_fake(t)


CGROUP_MEMORY_MAX = "/sys/fs/cgroup/memory.max"  # this process's cgroup v2 limit, or "max"


@functools.cache
def _host_memory() -> int | None:
    """Bytes of memory this process may use: physical memory, capped by a cgroup v2 limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None
    try:
        with open(CGROUP_MEMORY_MAX) as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def memory_limit(device: torch.device) -> int | None:
    """Bytes that one op's outputs on ``device`` can never exceed, None where unknown: the
    host's memory (CPU) or the GPU's total memory (CUDA)."""
    if device.type == "cpu":
        return _host_memory()
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops compute (and Chamfer reduces) in: float32 for float16/bfloat16 inputs,
    the input dtype otherwise; results are cast back to the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def check_norm(norm) -> None:
    """ValueError unless ``norm`` is the int 1 (L1 distance) or 2 (L2, squared by kNN)."""
    if isinstance(norm, bool) or not isinstance(norm, int) or norm not in reference.NORMS:
        raise ValueError(f"norm must be 1 (L1) or 2 (L2), got {norm!r}")


def _check_output_size(p1: torch.Tensor, P2: int, K: int, return_nn: bool) -> None:
    """ValueError when the (B, P1, K) outputs cannot fit in the device's memory at all.

    Runs in eager mode before anything is allocated; skipped for meta and fake tensors (nothing
    is allocated, and a fake CUDA tensor may exist on a host without a GPU) and under
    ``torch.compile``.
    """
    if is_symbolic(p1) or torch.compiler.is_compiling():
        return
    B, P1, D = p1.shape
    n = B * P1 * K
    if n == 0:
        return
    limit = memory_limit(p1.device)
    if limit is None:
        return
    compute = compute_dtype(p1.dtype).itemsize
    per = compute + 8  # dists in the compute dtype + int64 idx
    if compute != p1.element_size():
        per += p1.element_size()  # dists cast back to the input dtype
    if return_nn:
        per += D * p1.element_size()  # knn (B, P1, K, D)
    need = n * per
    if need <= limit:
        return
    what = "dists + idx + knn" if return_nn else "dists + idx"
    msg = (
        f"the kNN outputs ({what}) for B*P1*K = {B}*{P1}*{K} neighbours would need "
        f"{need / 2**30:.1f} GiB, more than the {limit / 2**30:.1f} GiB of {p1.device.type} "
        "memory: lower K or split the batch"
    )
    if K > P2:
        msg += f" (K={K} > P2={P2}: at most {P2} neighbours exist, the rest is padding)"
    raise ValueError(msg)


def _check_overflow(dists: torch.Tensor, names, norm: int) -> None:
    """ValueError when a distance of finite inputs overflowed to inf in its dtype."""
    if dists.numel() == 0 or is_symbolic(dists) or torch.compiler.is_compiling():
        return
    if not bool(dists.amax() == float("inf")):  # dists >= 0, never NaN for finite inputs
        return
    b, i, _ = (int(v) for v in torch.isinf(dists).nonzero()[0])
    what = "L1 distance"
    if norm == 2:  # ranked squared: they overflow even where the caller wants their square root
        what = "squared L2 distance (what kNN computes, also for chamfer_distance(squared=False))"
    raise ValueError(
        f"the {what} from {names[0]}[{b}, {i}] to a point of {names[1]} overflows "
        f"{dists.dtype} (largest finite value {torch.finfo(dists.dtype).max:.3g}): the inputs "
        "are finite but too far apart for their dtype; center and scale the clouds (distances "
        f"scale with them){wider_dtype_hint(dists.dtype)}"
    )


def wider_dtype_hint(dtype: torch.dtype) -> str:
    """``", or pass float32 points"``-style advice for a result that overflowed ``dtype``."""
    if dtype in (torch.float16, torch.bfloat16):
        return ", or pass float32 points"
    return ", or pass float64 points" if dtype == torch.float32 else ""


def _check_lengths(name: str, lengths, B: int, P: int, device) -> torch.Tensor:
    if lengths is None:
        return torch.full((B,), P, dtype=torch.int64, device=device)
    if not isinstance(lengths, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape ({B},), got {type(lengths)}")
    if lengths.shape != (B,):
        raise ValueError(f"{name} must have shape ({B},), got {tuple(lengths.shape)}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {lengths.dtype}")
    lengths = lengths.to(device=device, dtype=torch.int64)
    if not torch.compiler.is_compiling() and lengths.numel() > 0 and not is_symbolic(lengths):
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 0 or hi > P:
            raise ValueError(f"{name} must lie in [0, {P}], got values in [{lo}, {hi}]")
    return lengths.contiguous()


def _check_finite(name: str, p: torch.Tensor, lengths: torch.Tensor) -> None:
    """Eager-mode NaN/inf check of the valid (unpadded) points; raises ValueError."""
    if torch.compiler.is_compiling() or p.numel() == 0 or is_symbolic(p):
        return
    bad = ~torch.isfinite(p).all(dim=-1)  # (B, P)
    valid = torch.arange(p.shape[1], device=p.device)[None, :] < lengths[:, None]
    bad &= valid
    if bool(bad.any()):
        b, i = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{name} has a non-finite (NaN or inf) point at batch {b}, index {i}")


def validate_clouds(p1, p2, name1: str = "p1", name2: str = "p2") -> None:
    """Check two padded clouds: rank 3, matching batch and D, a float dtype, same device."""
    for name, p in ((name1, p1), (name2, p2)):
        if not isinstance(p, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (B, P, D), got {type(p)}")
        if p.dim() != 3:
            raise ValueError(f"{name} must have shape (B, P, D), got {tuple(p.shape)}")
        if p.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name} must be float16/bfloat16/float32/float64, got {p.dtype}")
        if p.shape[2] < 1:
            raise ValueError(f"{name} must have D >= 1 coordinates, got shape {tuple(p.shape)}")
    if p1.shape[0] != p2.shape[0]:
        raise ValueError(f"{name1} and {name2} batch sizes differ: {p1.shape[0]} vs {p2.shape[0]}")
    if p1.shape[2] != p2.shape[2]:
        raise ValueError(f"{name1} and {name2} dimensions D differ: {p1.shape[2]} vs {p2.shape[2]}")
    if p1.dtype != p2.dtype:
        raise ValueError(f"{name1} and {name2} dtypes differ: {p1.dtype} vs {p2.dtype}")
    if p1.device != p2.device:
        raise ValueError(f"{name1} and {name2} devices differ: {p1.device} vs {p2.device}")


def knn_points(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    *,
    K: int = 1,
    norm: int = 2,
    return_nn: bool = False,
) -> KNN:
    """K nearest neighbours in ``p2`` of every point of ``p1``, batched, with autograd.

    Args:
        p1: (B, P1, D) query clouds; float16/bfloat16 (computed in float32), float32, float64.
            A pytorch3d ``Pointclouds`` (its padded points and lengths; normals, if any, play no
            part in kNN) or a PyG ``Data``/``Batch`` is accepted too.
        p2: (B, P2, D) target clouds, same dtype and device as ``p1`` (or a ``Pointclouds``).
        lengths1: (B,) integer, valid points per query cloud (default P1). Points past the length
            are padding (they may hold anything, NaN included): their outputs are ``dist 0``,
            ``idx -1``.
        lengths2: (B,) integer, valid points per target cloud (default P2); padding is ignored.
        K: keyword-only, number of neighbours, ``K >= 1`` (at most 128 on CUDA, where D is at
            most 16). When a cloud has fewer than K valid targets, the missing slots are
            ``dist 0``, ``idx -1``.
        norm: keyword-only, the distance: 2 (default) the squared Euclidean distance
            ``sum (x - y)**2``, 1 the L1 distance ``sum |x - y|``. The L1 gradient is
            ``sign(x - y)`` with ``sign(0) = 0`` (the subgradient of ``torch.abs``).
        return_nn: keyword-only, also return the neighbours' coordinates.

    Returns:
        :class:`KNN` with ``dists`` (B, P1, K) squared L2 (or L1) in the input dtype, ascending,
        ties broken by the lowest index; ``idx`` (B, P1, K) int64; ``knn`` (B, P1, K, D) or None.
        ``dists`` and ``knn`` are differentiable with respect to ``p1`` and ``p2``.

    Meta and fake tensors (``FakeTensorMode``) get correctly shaped outputs; the checks that
    read values (lengths range, NaN, overflow) skip them.

    Raises:
        TypeError: ``K`` or ``return_nn`` passed positionally.
        ValueError: on a wrong rank, mismatched batch/D/dtype/device, an integer dtype, lengths
            out of range, ``K < 1``, ``K >= 2**31``, outputs (B·P1·K neighbours) larger than the
            device's memory (checked before allocating), NaN/inf in a valid point, or a squared
            distance that overflows to inf in the output dtype although the inputs are finite
            (the value checks run in eager mode; under ``torch.compile`` the CPU kernel still
            checks NaN/inf, the CUDA kernel does not, and overflow is not checked).
    """
    return knn_points_named(p1, p2, lengths1, lengths2, K=K, norm=norm, return_nn=return_nn)


def knn_points_named(
    p1,
    p2,
    lengths1,
    lengths2,
    *,
    K=1,
    norm=2,
    return_nn=False,
    names=("p1", "p2", "lengths1", "lengths2"),
) -> KNN:
    """:func:`knn_points` whose error messages use the caller's argument ``names``."""
    p1, lengths1 = as_padded(p1, lengths1, name=names[0])
    p2, lengths2 = as_padded(p2, lengths2, name=names[1])
    validate_clouds(p1, p2, names[0], names[1])
    if isinstance(K, bool) or not isinstance(K, int) or K < 1:
        raise ValueError(f"K must be an int >= 1, got {K!r}")
    check_norm(norm)
    if K > MAX_K:
        raise ValueError(f"K must be <= 2**31 - 1 (the kernels count neighbours in int32), got {K}")
    B, P1, D = p1.shape
    P2 = p2.shape[1]
    _check_output_size(p1, P2, K, return_nn)
    lengths1 = _check_lengths(names[2], lengths1, B, P1, p1.device)
    lengths2 = _check_lengths(names[3], lengths2, B, P2, p1.device)
    compute = compute_dtype(p1.dtype)
    a = p1.to(compute).contiguous()
    b = p2.to(compute).contiguous()
    device = p1.device.type
    if device == "cuda" and K > MAX_K_CUDA:
        raise ValueError(f"K must be <= {MAX_K_CUDA} on CUDA, got {K}")
    if device == "cuda" and D > MAX_D_CUDA:
        raise ValueError(f"D must be <= {MAX_D_CUDA} on CUDA, got {D}")
    compiled = _compiled_for(device)
    if compiled and device == "cpu":
        # The CPU kernel checks the valid points itself, in its single pass over them; the
        # separate isfinite pass would cost more than the kNN on small clouds (16 of the 22
        # parallel regions of a Chamfer forward + backward). On a failure it runs to name the
        # caller's argument.
        try:
            dists, idx = torch.ops.crfold.knn_forward(a, b, lengths1, lengths2, K, norm)
        except ValueError as exc:
            if "non-finite" in str(exc):
                _check_finite(names[0], a, lengths1)
                _check_finite(names[1], b, lengths2)
            raise
    elif compiled:
        _check_finite(names[0], a, lengths1)
        _check_finite(names[1], b, lengths2)
        dists, idx = torch.ops.crfold.knn_forward(a, b, lengths1, lengths2, K, norm)
    elif is_symbolic(a) or is_symbolic(b):  # the reference reads values: shapes only
        idx = torch.full((B, P1, K), -1, dtype=torch.int64, device=a.device)
        dists = reference.knn_dists_from_indices(a, b, idx, norm)
    else:
        _check_finite(names[0], a, lengths1)
        _check_finite(names[1], b, lengths2)
        dists, idx = reference.knn_points_reference(a, b, lengths1, lengths2, K, norm)
    dists = dists.to(p1.dtype)
    _check_overflow(dists, names, norm)
    nn = reference.gather_points(p2, idx) if return_nn else None
    return KNN(dists, idx, nn)


def knn_gather(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``points[b, idx[b, i, k]]`` as (B, P1, K, D), zeros where ``idx == -1``."""
    return reference.gather_points(points, idx)
