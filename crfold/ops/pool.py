"""The max-pools of FoldingNet's encoder as compiled ops: validation, autograd and dispatch.

* :func:`graph_max_pool`: the channel-wise max over each point and its kNN graph neighbours;
* :func:`global_max_pool`: the channel-wise max over all points of a cloud.

Both send the gradient to one winner per output element (the first maximal candidate), which is
what makes their backward an O(output) scatter instead of the masks and sums of ``amax``'s. The
C++ extension registers ``torch.ops.crfold.{graph,global}_max_pool_{forward,backward}``
(``TORCH_LIBRARY``, CPU and CUDA kernels); this module adds their fake kernels and autograd
formulas with ``torch.library``, so ``torch.compile(..., fullgraph=True)`` traces through them,
and falls back to the pure-torch twins in :mod:`crfold.ops.reference` when the extension is
absent.
"""

from __future__ import annotations

import torch

from . import reference
from .knn import _compiled_for

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_registered = False


def _register_autograd() -> None:
    """Attach the fake kernels and the backward formula to the C++-defined ops (once)."""
    global _registered
    if _registered:
        return

    @torch.library.register_fake("crfold::graph_max_pool_forward")
    def _forward_fake(features, neighbours):
        return torch.empty_like(features), features.new_empty(features.shape, dtype=torch.int32)

    @torch.library.register_fake("crfold::graph_max_pool_backward")
    def _backward_fake(grad_out, winners, num_points, deterministic):
        return torch.empty_like(grad_out)

    def setup_context(ctx, inputs, output):
        features, _ = inputs
        _, winners = output
        ctx.save_for_backward(winners)
        ctx.num_points = features.shape[1]
        ctx.mark_non_differentiable(winners)

    def backward(ctx, grad_out, _grad_winners):
        (winners,) = ctx.saved_tensors
        deterministic = torch.are_deterministic_algorithms_enabled()
        grad = torch.ops.crfold.graph_max_pool_backward(
            grad_out.contiguous(), winners, ctx.num_points, deterministic
        )
        return grad, None

    torch.library.register_autograd(
        "crfold::graph_max_pool_forward", backward, setup_context=setup_context
    )

    @torch.library.register_fake("crfold::global_max_pool_forward")
    def _global_forward_fake(features):
        B, _, C = features.shape
        return features.new_empty((B, C)), features.new_empty((B, C), dtype=torch.int32)

    @torch.library.register_fake("crfold::global_max_pool_backward")
    def _global_backward_fake(grad_out, winners, num_points):
        B, C = grad_out.shape
        return grad_out.new_empty((B, num_points, C))

    def global_setup_context(ctx, inputs, output):
        (features,) = inputs
        _, winners = output
        ctx.save_for_backward(winners)
        ctx.num_points = features.shape[1]
        ctx.mark_non_differentiable(winners)

    def global_backward(ctx, grad_out, _grad_winners):
        (winners,) = ctx.saved_tensors
        return torch.ops.crfold.global_max_pool_backward(
            grad_out.contiguous(), winners, ctx.num_points
        )

    torch.library.register_autograd(
        "crfold::global_max_pool_forward", global_backward, setup_context=global_setup_context
    )
    _registered = True


# Evaluated once at trace time by dynamo (as torch.compiler.assume_constant_result would do).
_register_autograd._dynamo_marked_constant = True


def _check(features, neighbours) -> torch.Tensor:
    """Validate the arguments; returns ``neighbours`` as int64."""
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f"features must be a tensor of shape (B, N, C), got {got}")
    if features.dtype not in FLOAT_DTYPES:
        raise ValueError(f"features must be float16/bfloat16/float32/float64, got {features.dtype}")
    B, N, _ = features.shape
    if not isinstance(neighbours, torch.Tensor) or neighbours.dim() != 3:
        got = tuple(neighbours.shape) if isinstance(neighbours, torch.Tensor) else type(neighbours)
        raise ValueError(f"neighbours must be a tensor of shape ({B}, {N}, k), got {got}")
    if tuple(neighbours.shape[:2]) != (B, N):
        raise ValueError(
            f"neighbours must have shape ({B}, {N}, k) to match features "
            f"{tuple(features.shape)}, got {tuple(neighbours.shape)}"
        )
    if (
        neighbours.dtype.is_floating_point
        or neighbours.dtype.is_complex
        or neighbours.dtype == torch.bool
    ):
        raise ValueError(f"neighbours must be an integer tensor, got {neighbours.dtype}")
    if neighbours.device != features.device:
        raise ValueError(
            f"features and neighbours devices differ: {features.device} vs {neighbours.device}"
        )
    neighbours = neighbours.to(torch.int64)
    if (
        not torch.compiler.is_compiling()
        and neighbours.numel() > 0
        and features.device.type != "meta"
    ):
        lo, hi = (int(v) for v in torch.aminmax(neighbours))
        if lo < 0 or hi >= N:
            raise ValueError(
                f"neighbours must lie in [0, {N}) (N = {N}), got values in [{lo}, {hi}]"
            )
    return neighbours


def graph_max_pool(features: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Channel-wise max over each point itself and its neighbours (FoldingNet's graph max-pool).

    ``out[b, i, c] = max(features[b, i, c], max_j features[b, neighbours[b, i, j], c])``. The
    gradient goes only to the winner of each (point, channel): the first maximal candidate in the
    order (the point itself, neighbours[..., 0], neighbours[..., 1], ...); NaN counts as the
    largest value. The CPU backward is deterministic; the CUDA backward uses atomics unless
    ``torch.use_deterministic_algorithms(True)``.

    Args:
        features: (B, N, C) float16/bfloat16/float32/float64 (any strides).
        neighbours: (B, N, k) integer indices into dim 1 of ``features``, in [0, N), no padding.

    Returns:
        (B, N, C) in the dtype of ``features``, differentiable with respect to ``features``.

    Raises:
        ValueError: on a wrong shape, dtype or device, or an index out of range (checked in eager
            mode; under ``torch.compile`` the CPU kernel still checks, the CUDA kernel skips
            out-of-range indices).
    """
    neighbours = _check(features, neighbours)
    if _compiled_for(features.device.type):
        _register_autograd()
        out, _ = torch.ops.crfold.graph_max_pool_forward(
            features.contiguous(), neighbours.contiguous()
        )
        return out
    return reference.graph_max_pool_reference(features, neighbours)


def global_max_pool(features: torch.Tensor, return_indices: bool = False):
    """Channel-wise max over all points of each cloud (FoldingNet's pool before its last MLP).

    The values equal ``features.amax(dim=1)``; the gradient goes to one point per (cloud, channel),
    the first maximal one (NaN counting as the largest), as ``torch.max(dim=1)`` and FoldingNet's
    reference code do, instead of being split among ties as ``amax`` does. Deterministic on
    every device.

    Args:
        features: (B, N, C) float16/bfloat16/float32/float64 (any strides), N >= 1.
        return_indices: also return the winning point of each (cloud, channel).

    Returns:
        (B, C) in the dtype of ``features``, differentiable with respect to it; with
        ``return_indices``, a tuple ``(values, indices (B, C) int64)``.

    Raises:
        ValueError: on a wrong rank or dtype, or N = 0.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features)
        raise ValueError(f"features must be a tensor of shape (B, N, C), got {got}")
    if features.dtype not in FLOAT_DTYPES:
        raise ValueError(f"features must be float16/bfloat16/float32/float64, got {features.dtype}")
    if features.shape[1] < 1:
        raise ValueError(f"features must have N >= 1 points, got shape {tuple(features.shape)}")
    if _compiled_for(features.device.type):
        _register_autograd()
        out, win = torch.ops.crfold.global_max_pool_forward(features.contiguous())
        return (out, win.to(torch.int64)) if return_indices else out
    out = reference.global_max_pool_reference(features)
    if not return_indices:
        return out
    return out, features.detach().argmax(dim=1)
