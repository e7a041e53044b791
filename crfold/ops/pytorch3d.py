"""A PyTorch3D drop-in: ``knn_points``, ``knn_gather`` and ``chamfer_distance`` with PyTorch3D's
signatures, argument order, defaults, return types and padding, on crfold's compiled kNN.

>>> # from pytorch3d.ops import knn_points, knn_gather
>>> # from pytorch3d.loss import chamfer_distance
>>> from crfold.ops.pytorch3d import chamfer_distance, knn_gather, knn_points

What matches PyTorch3D (``pytorch3d.ops.knn``, ``pytorch3d.loss.chamfer``, v0.7.x):

* ``knn_points(p1, p2, lengths1=None, lengths2=None, norm=2, K=1, version=-1, return_nn=False,
  return_sorted=True)`` returns the namedtuple ``_KNN(dists, idx, knn)``: ``dists`` squared L2
  (``norm=2``) or L1 (``norm=1``) distances, ``idx`` int64. Padding as PyTorch3D: where a
  cloud of ``p2`` has fewer than K points, and for padded queries of ``p1``, ``dists`` is 0 and
  ``idx`` is **0** (crfold's own :func:`crfold.ops.knn_points` says -1); ``knn`` is
  ``knn_gather(p2, idx, lengths2)``, so it is 0 in the slots ``k >= lengths2[b]`` and, at a padded
  query, ``p2[b, 0]`` in the others (what PyTorch3D returns there).
* ``knn_gather(x, idx, lengths=None)``: ``x[b, idx[b, l, k]]`` as (N, L, K, U), 0 where
  ``k >= lengths[b]``.
* ``chamfer_distance(x, y, x_lengths=None, y_lengths=None, x_normals=None, y_normals=None,
  weights=None, batch_reduction="mean", point_reduction="mean", norm=2,
  single_directional=False, abs_cosine=True)`` returns ``(loss, loss_normals)``: per-point terms
  are the squared L2 (or L1) distance to the nearest neighbour and, with both normals, ``1 -
  |cos|`` (``abs_cosine=True``) or ``1 - cos`` between a point's normal and its neighbour's; both
  are multiplied by ``weights[b]`` and are 0 at padded points. ``point_reduction`` is ``"mean"``
  (over each cloud's valid points, an empty cloud giving 0), ``"sum"``, ``"max"`` (the largest
  term of each cloud, then the larger of the two directions: a Hausdorff distance; no normals) or
  None (the per-point terms: a tuple ``(x terms (N, P1), y terms (N, P2))``, or the (N, P1) x
  terms alone when ``single_directional``); otherwise the two directions are summed.
  ``batch_reduction`` is ``"mean"`` (divided by N, or by ``weights.sum()`` when weights are given
  and not all 0), ``"sum"`` or None. ``loss_normals`` is None unless both clouds have normals.
  A ``Pointclouds`` (duck-typed: ``points_padded()``, ``num_points_per_cloud()``,
  ``normals_padded()``) gives its own points, lengths and normals, and the ``*_lengths`` and
  ``*_normals`` arguments of that cloud are then ignored, as in PyTorch3D.

Where it differs from PyTorch3D (deliberately, or because PyTorch3D's behaviour is a crash):

* NaN or inf in a valid point raises ``ValueError`` naming the argument, the cloud and the point
  (PyTorch3D propagates NaN). So do finite inputs whose result overflows its dtype, in both
  functions alike, naming the dtype and suggesting a wider one: float16 points 300 apart (a
  squared distance of 270,000 > 65,504) raise in ``knn_points`` (its ``dists``) and in
  ``chamfer_distance`` (computed in float32, its loss cast back to float16), never returning
  inf; float32 points about 1.8e19 apart (squared distance > 3.4e38) likewise. So do all invalid
  arguments (PyTorch3D raises ``RuntimeError``,
  ``IndexError`` or ``AssertionError`` for some, e.g. normals of a ``Pointclouds`` together with
  ``point_reduction="max"``, which is an ``AssertionError`` there).
* float16 and bfloat16 (computed and reduced in float32, returned in the input dtype) and float64
  are accepted on CPU and CUDA, forward and backward; PyTorch3D's backward is float32 only.
* Ties are broken by the lowest index and results are always sorted ascending:
  ``return_sorted=False`` is accepted and returns them sorted, which is one valid unsorted
  order. ``version`` (PyTorch3D's choice of CUDA kernel) is accepted and ignored.
* The L1 gradient is ``sign(x - y)`` with ``sign(0) = 0`` (the subgradient of ``torch.abs``, and
  what PyTorch3D's own naive reference gives). PyTorch3D's compiled kernels are believed to
  return +1 or -1 there instead (a ``x > y`` sign test; not verified against their source here);
  the two differ only where a coordinate of a point equals its neighbour's.
* The CPU backward is deterministic and multi-threaded; on CUDA it is deterministic under
  ``torch.use_deterministic_algorithms(True)``. On CUDA, K <= 128 and D <= 16 (ValueError
  beyond); PyTorch3D has a slower kernel for any K and D.
* All-zero ``weights``: the loss is 0 as in PyTorch3D, but ``loss_normals`` stays None without
  normals (PyTorch3D returns a zero tensor), ``point_reduction=None`` gives zero terms of shapes
  (N, P1) and (N, P2) (PyTorch3D: (N, N)), and the gradient is 0 for both clouds.
* ``point_reduction="max"`` of a batch with P1 = 0 gives 0 (PyTorch3D raises on the empty max);
  ``knn_gather`` with M = 0 gives zeros (PyTorch3D: an index error). ``knn_points`` also takes a
  ``Pointclouds`` (normals, if any, play no part in kNN) or a PyG ``Data``/``Batch`` for
  ``p1``/``p2`` (its points and lengths; then ``lengths1``/``lengths2`` must be None).
* Indices given to ``knn_gather`` must lie in ``[0, M)`` (``ValueError``; PyTorch3D leaves it to
  ``torch.gather``).
"""

from __future__ import annotations

from collections import namedtuple

import torch
import torch.nn.functional as F

from .chamfer import check_result, check_weights
from .knn import (
    _check_lengths,
    check_norm,
    compute_dtype,
    is_symbolic,
    knn_points_named,
    validate_clouds,
)
from .layouts import _is_pointclouds, as_padded, from_pytorch3d

__all__ = ["chamfer_distance", "knn_gather", "knn_points"]

# PyTorch3D's result type: a namedtuple named "KNN" with the fields (dists, idx, knn).
_KNN = namedtuple("KNN", "dists idx knn")

_BATCH_REDUCTIONS = ("mean", "sum", None)
_POINT_REDUCTIONS = ("mean", "sum", "max", None)


def knn_points(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    norm: int = 2,
    K: int = 1,
    version: int = -1,
    return_nn: bool = False,
    return_sorted: bool = True,
) -> _KNN:
    """K nearest neighbours in ``p2`` of every point of ``p1``, as ``pytorch3d.ops.knn_points``.

    Args:
        p1: (N, P1, D) query clouds, float16/bfloat16/float32/float64.
        p2: (N, P2, D) target clouds, same dtype and device.
        lengths1: (N,) integer in [0, P1], valid points of each ``p1`` cloud (default P1).
        lengths2: (N,) integer in [0, P2], valid points of each ``p2`` cloud (default P2).
        norm: 2 (squared L2 distances) or 1 (L1 distances).
        K: number of neighbours (>= 1).
        version: PyTorch3D's CUDA kernel choice; accepted and ignored.
        return_nn: also return the neighbours' coordinates.
        return_sorted: accepted; the result is always sorted ascending (a valid unsorted order).

    Returns:
        ``_KNN(dists, idx, knn)``: ``dists`` (N, P1, K) in the input dtype, ascending (ties by
        the lowest index); ``idx`` (N, P1, K) int64; ``knn`` (N, P1, K, D) from
        :func:`knn_gather` or None. Where ``p2[b]`` has fewer than K points and at padded
        queries: ``dists`` 0 and ``idx`` 0. ``dists`` and ``knn`` are differentiable.

    Raises:
        ValueError: invalid shapes, dtypes, lengths, ``K`` or ``norm``, NaN/inf in a valid
            point, or finite points whose distance overflows the input dtype (eager mode; e.g.
            float16 points 300 apart: pass float32 points).
    """
    del version, return_sorted  # every result is sorted; there is one kernel per device
    check_norm(norm)
    p1, lengths1 = as_padded(p1, lengths1, name="p1")  # a Pointclouds' normals play no part
    p2, lengths2 = as_padded(p2, lengths2, name="p2")
    validate_clouds(p1, p2)
    lengths2 = _check_lengths("lengths2", lengths2, p2.shape[0], p2.shape[1], p2.device)
    out = knn_points_named(p1, p2, lengths1, lengths2, K=K, norm=norm)
    idx = out.idx.clamp_min(0)  # PyTorch3D pads idx with 0 where crfold says -1
    knn = knn_gather(p2, idx, lengths2) if return_nn else None
    return _KNN(dists=out.dists, idx=idx, knn=knn)


def knn_gather(
    x: torch.Tensor, idx: torch.Tensor, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """Gather ``x[n, idx[n, l, k]]``, as ``pytorch3d.ops.knn_gather``.

    Args:
        x: (N, M, U) features (any dtype).
        idx: (N, L, K) integer indices in [0, M), e.g. :func:`knn_points`'s ``idx``.
        lengths: (N,) integer valid points of each ``x`` cloud (default M).

    Returns:
        (N, L, K, U) in the dtype of ``x``: ``x_out[n, l, k] = x[n, idx[n, l, k]]``, and 0 where
        ``k >= lengths[n]`` (slots past the number of neighbours a cloud has). Differentiable
        with respect to ``x``.

    Raises:
        ValueError: wrong ranks, batch sizes or devices, non-integer ``idx``, or an index outside
            [0, M).
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a tensor of shape (N, M, U), got {got}")
    if not isinstance(idx, torch.Tensor) or idx.dim() != 3:
        got = tuple(idx.shape) if isinstance(idx, torch.Tensor) else type(idx).__name__
        raise ValueError(f"idx must be a tensor of shape (N, L, K), got {got}")
    if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
        raise ValueError(f"idx must be an integer tensor, got {idx.dtype}")
    N, M, U = x.shape
    _, L, K = idx.shape
    if idx.shape[0] != N:
        raise ValueError(f"x and idx must have the same batch size, got {N} and {idx.shape[0]}")
    if idx.device != x.device:
        raise ValueError(f"x and idx must be on one device, got {x.device} and {idx.device}")
    lengths = _check_lengths("lengths", lengths, N, M, x.device)
    idx = idx.long()
    if M == 0:
        return x.new_zeros(N, L, K, U)
    if idx.numel() and not torch.compiler.is_compiling() and not is_symbolic(idx):
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= M:
            raise ValueError(f"idx must lie in [0, M={M}), got values in [{lo}, {hi}]")
    out = x.gather(1, idx.reshape(N, L * K, 1).expand(N, L * K, U)).reshape(N, L, K, U)
    past = torch.arange(K, device=x.device)[None, :] >= lengths[:, None]  # (N, K)
    # where, not a product: the slots past a cloud's length may hold NaN, which must not leak.
    return torch.where(past[:, None, :, None], torch.zeros_like(out), out)


def _cloud(points, lengths, normals, name: str):
    """``(padded (N, P, D), lengths (N,) int64, normals (N, P, Dn) or None)`` of a chamfer input,
    as PyTorch3D reads it: a ``Pointclouds`` brings its own lengths and normals (the arguments
    are ignored then), a tensor keeps the given ones."""
    if _is_pointclouds(points):
        padded, lengths = from_pytorch3d(points)
        get = getattr(points, "normals_padded", None)
        normals = get() if callable(get) else None
        return padded, lengths, normals
    if not isinstance(points, torch.Tensor):
        raise ValueError(
            f"{name} must be a pytorch3d Pointclouds or a torch.Tensor of shape (N, P, D), got "
            f"{type(points).__name__}"
        )
    if points.dim() != 3:
        raise ValueError(f"{name} must have shape (N, P, D), got {tuple(points.shape)}")
    N, P, _ = points.shape
    lengths = _check_lengths(f"{name}_lengths", lengths, N, P, points.device)
    return points, lengths, normals


def _check_normals(name: str, normals, points: torch.Tensor) -> None:
    if normals is None:
        return
    if not isinstance(normals, torch.Tensor) or normals.dim() != 3:
        got = tuple(normals.shape) if isinstance(normals, torch.Tensor) else type(normals)
        raise ValueError(f"{name} must be a tensor of shape (N, P, D), got {got}")
    if normals.shape[:2] != points.shape[:2]:
        raise ValueError(
            f"{name} must have the batch and point sizes of its cloud, {tuple(points.shape[:2])}, "
            f"got {tuple(normals.shape)}"
        )
    if not normals.is_floating_point():
        raise ValueError(f"{name} must be a float tensor, got {normals.dtype}")
    if normals.device != points.device:
        raise ValueError(f"{name} must be on {points.device}, got {normals.device}")


def _one_direction(x, y, x_lengths, y_lengths, x_normals, y_normals, options, names):
    """Terms of the direction x -> y, reduced over points unless ``point_reduction`` is None:
    ``(distance terms, normal terms or None)``, each (N,) or (N, P1). ``options`` is
    ``(weights, point_reduction, norm, abs_cosine)``."""
    weights, point_reduction, norm, abs_cosine = options
    N, P1, _ = x.shape
    nn = knn_points_named(x, y, x_lengths, y_lengths, K=1, norm=norm, names=names)
    cham = nn.dists[..., 0]  # (N, P1), 0 at padded points and where y[b] is empty
    valid = torch.arange(P1, device=x.device)[None, :] < x_lengths[:, None]  # (N, P1)
    if weights is not None:
        cham = cham * weights[:, None]
    cham_n = None
    if x_normals is not None and y_normals is not None:
        near = knn_gather(y_normals, nn.idx.clamp_min(0), y_lengths)[..., 0, :]  # (N, P1, Dn)
        # A point whose y cloud is empty meets a zero normal: cosine 0, term 1 (as PyTorch3D).
        cos = F.cosine_similarity(x_normals, near, dim=2, eps=1e-6)  # (N, P1)
        cham_n = 1 - (cos.abs() if abs_cosine else cos)
        cham_n = torch.where(valid, cham_n, torch.zeros_like(cham_n))
        if weights is not None:
            cham_n = cham_n * weights[:, None]
    if point_reduction == "max":
        cham = cham.max(dim=1).values if P1 else cham.new_zeros(N)  # (N,)
    elif point_reduction is not None:
        cham = cham.sum(dim=1)  # (N,)
        cham_n = None if cham_n is None else cham_n.sum(dim=1)
        if point_reduction == "mean":
            count = x_lengths.clamp(min=1).to(cham.dtype)
            cham = cham / count
            cham_n = None if cham_n is None else cham_n / count
    return cham, cham_n


def chamfer_distance(
    x,
    y,
    x_lengths=None,
    y_lengths=None,
    x_normals=None,
    y_normals=None,
    weights=None,
    batch_reduction: str | None = "mean",
    point_reduction: str | None = "mean",
    norm: int = 2,
    single_directional: bool = False,
    abs_cosine: bool = True,
):
    """Chamfer distance between two batches of clouds, as ``pytorch3d.loss.chamfer_distance``.

    Args:
        x: (N, P1, D) float tensor or a pytorch3d ``Pointclouds`` (its points, lengths and
            normals; ``x_lengths`` and ``x_normals`` are then ignored).
        y: (N, P2, D) float tensor or a ``Pointclouds``, same dtype and device as ``x``.
        x_lengths: (N,) integer in [0, P1], valid points of each ``x`` cloud (default P1).
        y_lengths: (N,) integer in [0, P2] (default P2).
        x_normals: (N, P1, Dn) normals of ``x``; the normal term needs both clouds' normals.
        y_normals: (N, P2, Dn) normals of ``y``.
        weights: (N,) non-negative per-cloud weights multiplying every term of a cloud.
        batch_reduction: ``"mean"`` | ``"sum"`` | None.
        point_reduction: ``"mean"`` | ``"sum"`` | ``"max"`` | None. ``"max"`` takes each
            direction's largest term and then the larger direction; it takes no normals.
        norm: 2 (squared L2 distances) or 1 (L1 distances).
        single_directional: only the x -> y direction.
        abs_cosine: normal term ``1 - |cos|`` (True: orientation ignored) or ``1 - cos``.

    Returns:
        ``(loss, loss_normals)``. With a point reduction each is () after a batch reduction,
        else (N,); ``loss_normals`` is None without both normals (and with ``"max"``). With
        ``point_reduction=None``: ``loss`` is ``(cham_x (N, P1), cham_y (N, P2))``, or
        ``cham_x`` alone when ``single_directional``, and ``loss_normals`` likewise or None;
        padded points hold 0. Outputs are in the dtype of ``x`` (half precision reduced in
        float32).

    Raises:
        ValueError: invalid reductions, ``norm``, shapes, lengths, weights or normals, normals
            with ``point_reduction="max"``, NaN/inf in a valid point, or finite inputs whose
            squared distances (in float32 for float16/bfloat16 inputs) or loss (in the dtype of
            ``x``) overflow (eager mode; e.g. float16 points 300 apart: pass float32 points).
    """
    if batch_reduction not in _BATCH_REDUCTIONS:
        raise ValueError(f"batch_reduction must be 'mean', 'sum' or None, got {batch_reduction!r}")
    if point_reduction not in _POINT_REDUCTIONS:
        raise ValueError(
            f"point_reduction must be 'mean', 'sum', 'max' or None, got {point_reduction!r}"
        )
    if point_reduction is None and batch_reduction is not None:
        raise ValueError("batch_reduction must be None if point_reduction is None")
    check_norm(norm)
    if point_reduction == "max" and (x_normals is not None or y_normals is not None):
        raise ValueError('x_normals and y_normals must be None if point_reduction is "max"')
    x, x_lengths, x_normals = _cloud(x, x_lengths, x_normals, "x")
    y, y_lengths, y_normals = _cloud(y, y_lengths, y_normals, "y")
    validate_clouds(x, y, "x", "y")
    _check_normals("x_normals", x_normals, x)
    _check_normals("y_normals", y_normals, y)
    with_normals = x_normals is not None and y_normals is not None
    if with_normals and x_normals.shape[2] != y_normals.shape[2]:
        raise ValueError(
            f"x_normals and y_normals must have the same size D, got {x_normals.shape[2]} and "
            f"{y_normals.shape[2]}"
        )
    if point_reduction == "max" and with_normals:
        raise ValueError(
            'x and y carry normals (Pointclouds), which point_reduction="max" cannot use'
        )
    out_dtype = x.dtype
    compute = compute_dtype(x.dtype)
    x, y = x.to(compute), y.to(compute)
    if with_normals:
        x_normals, y_normals = x_normals.to(compute), y_normals.to(compute)
    else:
        x_normals = y_normals = None
    N = x.shape[0]
    weights = check_weights(weights, N, x.device, compute)

    options = (weights, point_reduction, norm, abs_cosine)
    names_xy = ("x", "y", "x_lengths", "y_lengths")
    cham_x, cham_nx = _one_direction(
        x, y, x_lengths, y_lengths, x_normals, y_normals, options, names_xy
    )
    if single_directional:
        loss, loss_normals = cham_x, cham_nx
    else:
        names_yx = ("y", "x", "y_lengths", "x_lengths")
        cham_y, cham_ny = _one_direction(
            y, x, y_lengths, x_lengths, y_normals, x_normals, options, names_yx
        )
        if point_reduction == "max":
            loss, loss_normals = torch.maximum(cham_x, cham_y), None
        elif point_reduction is not None:
            loss = cham_x + cham_y
            loss_normals = None if cham_nx is None else cham_nx + cham_ny
        else:
            loss = (cham_x, cham_y)
            loss_normals = None if cham_nx is None else (cham_nx, cham_ny)

    if batch_reduction is not None:
        loss = loss.sum()
        loss_normals = None if loss_normals is None else loss_normals.sum()
        if batch_reduction == "mean":
            if weights is None:
                div = loss.new_tensor(float(max(N, 1)))
            else:  # all-zero weights: divide by 1 (the weighted sum is 0)
                total = weights.sum()
                div = torch.where(total > 0, total, torch.ones_like(total))
            loss = loss / div
            loss_normals = None if loss_normals is None else loss_normals / div
    return _cast(loss, out_dtype), _cast(loss_normals, out_dtype)


def _cast(value, dtype: torch.dtype):
    """``value`` (None, a tensor or a tuple of tensors) in ``dtype``; ValueError when a finite
    result overflows it (e.g. float16 points 300 apart: a squared distance of 270,000)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(check_result(v, dtype) for v in value)
    return check_result(value, dtype)
