"""Chamfer distance: plain torch on top of :func:`crfold.ops.knn_points` (K = 1).

Conventions (docs/design.md#chamfer): per-point terms are squared L2 distances to the nearest
neighbour (or their square root with ``squared=False``; L1 distances with ``norm=1``);
``point_reduction`` reduces over the valid points of each cloud; ``direction_reduction`` combines
the two directions (by default PyTorch3D's rule: the sum, or the larger one when
``point_reduction="max"``; ``"max"`` with a point mean is FoldingNet's metric);
``batch_reduction`` reduces over clouds. Empty clouds contribute 0 and never produce NaN.

The weights check and the overflow check of the result are shared with the PyTorch3D drop-in
(:mod:`crfold.ops.pytorch3d`).
"""

from __future__ import annotations

import torch

from .knn import (
    check_norm,
    compute_dtype,
    is_symbolic,
    knn_points_named,
    validate_clouds,
    wider_dtype_hint,
)
from .layouts import _has_normals, _is_pointclouds, as_padded

POINT_REDUCTIONS = ("mean", "sum", "max", None)
BATCH_REDUCTIONS = ("mean", "sum", None)
DIRECTION_REDUCTIONS = ("sum", "max", "mean", None)


def safe_sqrt(d: torch.Tensor) -> torch.Tensor:
    """``sqrt(d)`` for ``d >= 0`` whose gradient is 0 (not inf/NaN) where ``d == 0``."""
    pos = d > 0
    return torch.where(
        pos, torch.sqrt(torch.where(pos, d, torch.ones_like(d))), torch.zeros_like(d)
    )


def _reduce_points(d: torch.Tensor, lengths: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce (B, P) per-point terms (0 at padding, all >= 0) to (B,) over the valid points."""
    if how == "sum":
        return d.sum(dim=1)
    if how == "max":
        # Terms are >= 0 and padding is 0, so the max over all entries is the max over valid ones
        # (and 0 for an empty cloud). The gradient goes to one point, the first maximal one
        # (argmax returns the first), as PyTorch3D's max(1) does; amax would split it among ties.
        if d.shape[1] == 0:
            return d.new_zeros(d.shape[0])
        win = d.detach().argmax(dim=1, keepdim=True)  # (B, 1)
        return d.gather(1, win).squeeze(1)
    return d.sum(dim=1) / lengths.clamp_min(1).to(d.dtype)


def check_weights(weights, B: int, device: torch.device, dtype: torch.dtype):
    """``weights`` checked to be (B,) finite non-negative floats, returned on ``device`` in
    ``dtype``; None stays None. The value check skips meta/fake tensors and ``torch.compile``."""
    if weights is None:
        return None
    if not isinstance(weights, torch.Tensor) or weights.shape != (B,):
        got = tuple(weights.shape) if isinstance(weights, torch.Tensor) else type(weights).__name__
        raise ValueError(f"weights must be a tensor of shape ({B},), got {got}")
    if not weights.is_floating_point():
        raise ValueError(f"weights must be a float tensor, got {weights.dtype}")
    if (
        not torch.compiler.is_compiling()
        and not is_symbolic(weights)
        and not bool((torch.isfinite(weights) & (weights >= 0)).all())
    ):
        raise ValueError("weights must be finite and non-negative")
    return weights.to(device=device, dtype=dtype)


def check_result(c: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """``c`` (computed in :func:`~crfold.ops.knn.compute_dtype`) cast to ``out_dtype``;
    ValueError if a finite result overflowed to inf, in the computation or in the cast."""
    out = c.to(out_dtype)
    if out.numel() == 0 or is_symbolic(out) or torch.compiler.is_compiling():
        return out
    if bool(torch.isinf(out).any()):
        raise ValueError(
            f"the Chamfer distance overflows {out_dtype} (largest finite value "
            f"{torch.finfo(out_dtype).max:.3g}) although x and y are finite: center and scale the "
            "clouds (squared distances scale with the square of the coordinates)"
            f"{wider_dtype_hint(out_dtype)}"
        )
    return out


def _reject_normals(cloud, name: str) -> None:
    """ValueError for a ``Pointclouds`` with normals: this Chamfer distance would drop them where
    PyTorch3D's adds a normal term (kNN takes such clouds: normals play no part in it)."""
    if _is_pointclouds(cloud) and _has_normals(cloud):
        raise ValueError(
            f"{name} is a pytorch3d Pointclouds with normals, which crfold.ops.chamfer_distance "
            "does not use (PyTorch3D's chamfer_distance would add a normal term): pass its "
            f"points alone, crfold.ops.interop.from_pytorch3d({name}), or use "
            "crfold.ops.pytorch3d.chamfer_distance, which follows PyTorch3D with normals"
        )


def chamfer_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    *,
    squared: bool = True,
    norm: int = 2,
    point_reduction: str | None = "mean",
    batch_reduction: str | None = "mean",
    direction_reduction: str | None = None,
    single_directional: bool = False,
    weights: torch.Tensor | None = None,
):
    """Chamfer distance between two batches of (possibly ragged) point clouds.

    Args:
        x: (B, P1, D) clouds; float16/bfloat16/float32/float64. A pytorch3d ``Pointclouds``
            (its padded points and lengths; one with normals is a ValueError) or a PyG
            ``Data``/``Batch`` is accepted too.
        y: (B, P2, D) clouds, same dtype/device (or a ``Pointclouds``/``Data``).
        x_lengths: (B,) int, valid points of each ``x`` cloud (default P1).
        y_lengths: (B,) int, valid points of each ``y`` cloud (default P2).
        squared: per-point term is the squared distance (True) or the distance (False; gradient
            0 at coincident points). Applies to ``norm=2`` only.
        norm: 2 (default): L2 distances (squared unless ``squared=False``); 1: L1 distances
            ``sum |x - y|`` (nearest neighbour in L1; gradient ``sign(x - y)``, 0 at 0), with
            ``squared`` left True (``squared=False`` with ``norm=1`` is a ValueError).
        point_reduction: ``"mean"`` | ``"sum"`` | ``"max"`` over the valid points of each cloud,
            or None to return the per-point terms. The gradient of ``"max"`` goes to one point,
            the first (lowest index) of the tied largest terms, as in PyTorch3D.
        batch_reduction: ``"mean"`` | ``"sum"`` | None over the batch (weighted mean
            ``sum(w c) / sum(w)`` when ``weights`` is given).
        direction_reduction: ``"sum"`` | ``"max"`` | ``"mean"`` of the two directional terms;
            None (default) follows PyTorch3D: ``"max"`` when ``point_reduction="max"`` (a
            symmetric Hausdorff-style distance), else ``"sum"``. A tie of the two directions
            under ``"max"`` splits the gradient equally (``torch.maximum``, as in PyTorch3D).
        single_directional: only the x -> y direction.
        weights: (B,) non-negative per-cloud weights.

    Returns:
        With a point reduction: a tensor, () after a batch reduction, else (B,).
        With ``point_reduction=None``: a tuple ``(cham_x (B, P1), cham_y (B, P2) or None)`` of
        per-point terms (weighted by ``weights``), 0 at padding; ``batch_reduction`` must be None.

    Raises:
        ValueError: invalid arguments (named), a ``Pointclouds`` with normals, NaN/inf in a valid
            point, or, in eager mode, finite inputs whose computation overflows: a squared L2
            distance (computed by kNN also for ``squared=False``, so float32 points about 1.8e19
            apart raise although their distance fits) or L1 distance in the compute dtype
            (float32 for float16/bfloat16 inputs), or the result in the output dtype (a point
            sum, or the mean, which divides that sum).
    """
    if point_reduction not in POINT_REDUCTIONS:
        raise ValueError(
            f"point_reduction must be one of {POINT_REDUCTIONS}, got {point_reduction!r}"
        )
    if batch_reduction not in BATCH_REDUCTIONS:
        raise ValueError(
            f"batch_reduction must be one of {BATCH_REDUCTIONS}, got {batch_reduction!r}"
        )
    if direction_reduction not in DIRECTION_REDUCTIONS:
        raise ValueError(
            f"direction_reduction must be one of {DIRECTION_REDUCTIONS}, "
            f"got {direction_reduction!r}"
        )
    if point_reduction is None and batch_reduction is not None:
        raise ValueError("batch_reduction must be None when point_reduction is None")
    check_norm(norm)
    if norm == 1 and not squared:
        raise ValueError(
            "squared=False takes the square root of squared L2 distances; with norm=1 the terms "
            "are L1 distances already: leave squared=True"
        )
    if direction_reduction is None:  # PyTorch3D's rule
        direction_reduction = "max" if point_reduction == "max" else "sum"
    _reject_normals(x, "x")
    _reject_normals(y, "y")
    x, x_lengths = as_padded(x, x_lengths, name="x")
    y, y_lengths = as_padded(y, y_lengths, name="y")
    validate_clouds(x, y, "x", "y")
    out_dtype = x.dtype
    compute = compute_dtype(x.dtype)  # reduce in float32 too for half inputs, cast at the end
    x, y = x.to(compute), y.to(compute)
    B, P1, _ = x.shape
    P2 = y.shape[1]
    weights = check_weights(weights, B, x.device, compute)

    names = ("x", "y", "x_lengths", "y_lengths")
    d_x = knn_points_named(x, y, x_lengths, y_lengths, K=1, norm=norm, names=names).dists[..., 0]
    d_y = None
    if not single_directional:
        names_yx = ("y", "x", "y_lengths", "x_lengths")
        d_y = knn_points_named(y, x, y_lengths, x_lengths, K=1, norm=norm, names=names_yx)
        d_y = d_y.dists[..., 0]  # (B, P2)
    if not squared:
        d_x = safe_sqrt(d_x)
        d_y = None if d_y is None else safe_sqrt(d_y)

    if point_reduction is None:
        if weights is not None:
            w = weights[:, None]
            d_x = d_x * w
            d_y = None if d_y is None else d_y * w
        return check_result(d_x, out_dtype), None if d_y is None else check_result(d_y, out_dtype)

    xl = torch.full((B,), P1, device=x.device) if x_lengths is None else x_lengths.to(x.device)
    yl = torch.full((B,), P2, device=x.device) if y_lengths is None else y_lengths.to(x.device)
    c = _reduce_points(d_x, xl, point_reduction)  # (B,)
    if d_y is not None:
        c_y = _reduce_points(d_y, yl, point_reduction)
        if direction_reduction == "sum":
            c = c + c_y
        elif direction_reduction == "max":
            c = torch.maximum(c, c_y)
        else:
            c = 0.5 * (c + c_y)

    if weights is not None:
        c = c * weights
    if batch_reduction == "sum":
        c = c.sum()
    elif batch_reduction == "mean":
        if weights is None:
            c = c.sum() / max(B, 1)
        else:
            total = weights.sum()
            c = torch.where(total > 0, c.sum() / torch.where(total > 0, total, 1), c.sum() * 0)
    return check_result(c, out_dtype)
