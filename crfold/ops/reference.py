"""Pure-torch reference of every op in :mod:`crfold.ops`.

Tests compare the compiled kernels to these functions, and :func:`crfold.ops.knn_points` falls
back to them (with a one-time warning) when the extension cannot be built. They follow exactly the
same conventions: squared L2 (``norm=2``) or L1 (``norm=1``) distances summed over coordinates in
order ``0..D-1``, ascending order, ties broken by the lowest target index, padded outputs
``dist = 0`` and ``idx = -1``; the L1 gradient is ``sign(x - y)`` with ``sign(0) = 0`` (the
subgradient of ``torch.abs``).

Memory is bounded by processing queries in chunks, so the reference never materialises the full
``(B, P1, P2)`` distance matrix.
"""

from __future__ import annotations

import torch

_CHUNK_PAIRS = 1 << 24  # pairs of (query, target) held at once per chunk
NORMS = (1, 2)


def pair_dists(diff: torch.Tensor, norm: int = 2) -> torch.Tensor:
    """Distances from coordinate differences ``diff`` (..., D): ``sum diff**2`` (norm 2, squared
    L2) or ``sum |diff|`` (norm 1, L1) over the last dimension."""
    if norm == 1:
        return diff.abs().sum(-1)
    return (diff**2).sum(-1)


def knn_indices_reference(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor,
    lengths2: torch.Tensor,
    K: int,
    norm: int = 2,
) -> torch.Tensor:
    """Indices of the K nearest neighbours by brute force (no gradient).

    Args:
        p1: (B, P1, D) queries, float32 or float64.
        p2: (B, P2, D) targets, same dtype.
        lengths1: (B,) int64, valid queries per cloud.
        lengths2: (B,) int64, valid targets per cloud.
        K: number of neighbours.
        norm: 2 (squared L2) or 1 (L1).

    Returns:
        (B, P1, K) int64; -1 where the query is padding or fewer than K targets exist.
    """
    B, P1, _ = p1.shape
    P2 = p2.shape[1]
    idx = torch.full((B, P1, K), -1, dtype=torch.int64, device=p1.device)
    if P1 == 0 or P2 == 0 or K == 0:
        return idx
    chunk = max(1, _CHUNK_PAIRS // max(P2, 1))
    cols = torch.arange(P2, device=p1.device)
    with torch.no_grad():
        for b in range(B):
            n1, n2 = int(lengths1[b]), int(lengths2[b])
            if n1 == 0 or n2 == 0:
                continue
            k = min(K, n2)
            for s in range(0, n1, chunk):
                q = p1[b, s : min(n1, s + chunk)]  # (C, D)
                # Same arithmetic as the kernels: sum of squared (or absolute) differences, no
                # matmul.
                d = pair_dists(q[:, None, :] - p2[b, None, :n2, :], norm)  # (C, n2)
                if k == 1:
                    # argmin returns the first minimal index: lowest-index ties.
                    nn = d.argmin(dim=1, keepdim=True)
                else:
                    nn = torch.sort(d, dim=1, stable=True).indices[:, :k]
                idx[b, s : s + q.shape[0], :k] = cols[:n2][nn]
    return idx


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather ``points[b, idx[b, i, k]]`` with zeros where ``idx == -1``.

    Args:
        points: (B, P2, D).
        idx: (B, P1, K) int64, -1 for padding.

    Returns:
        (B, P1, K, D), differentiable with respect to ``points``.
    """
    B, P1, K = idx.shape
    D = points.shape[-1]
    valid = idx >= 0
    flat = idx.clamp_min(0).reshape(B, P1 * K, 1).expand(B, P1 * K, D)
    if points.shape[1] == 0:
        return points.new_zeros(B, P1, K, D)
    out = points.gather(1, flat).reshape(B, P1, K, D)
    # where, not a product: padding may hold NaN, which must not leak into the result.
    return torch.where(valid.unsqueeze(-1), out, torch.zeros_like(out))


def knn_dists_from_indices(
    p1: torch.Tensor, p2: torch.Tensor, idx: torch.Tensor, norm: int = 2
) -> torch.Tensor:
    """Distances ``||p1[b, i] - p2[b, idx[b, i, k]]||^2`` (norm 2) or ``||...||_1`` (norm 1), 0
    where ``idx == -1``.

    Differentiable with respect to both clouds; the gradient at padded entries is 0, and the L1
    gradient is ``sign(p1 - p2)`` with ``sign(0) = 0``.

    Returns:
        (B, P1, K) with the dtype of ``p1``.
    """
    nn = gather_points(p2, idx)  # (B, P1, K, D)
    valid = (idx >= 0).unsqueeze(-1)
    # Mask the difference before squaring: a NaN padded query gives 0 and a 0 gradient.
    diff = torch.where(valid, p1.unsqueeze(2) - nn, torch.zeros_like(nn))
    return pair_dists(diff, norm)


def knn_points_reference(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor,
    lengths2: torch.Tensor,
    K: int,
    norm: int = 2,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of the compiled forward: ``(dists, idx)``, both (B, P1, K); ``norm`` 2 (squared
    L2) or 1 (L1).

    ``dists`` is differentiable with respect to ``p1`` and ``p2`` through plain torch autograd.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be 1 or 2, got {norm!r}")
    idx = knn_indices_reference(p1, p2, lengths1, lengths2, K, norm)
    return knn_dists_from_indices(p1, p2, idx, norm), idx


def chamfer_distance_reference(
    x: torch.Tensor,
    y: torch.Tensor,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-point squared nearest-neighbour distances in both directions (dense, unreduced).

    A deliberately naive implementation over the full distance matrix, for tests of small clouds.

    Returns:
        ``(d_xy (B, P1), d_yx (B, P2))`` with 0 at padded points.
    """
    B, P1, _ = x.shape
    P2 = y.shape[1]
    lx = torch.full((B,), P1, dtype=torch.int64) if x_lengths is None else x_lengths.cpu()
    ly = torch.full((B,), P2, dtype=torch.int64) if y_lengths is None else y_lengths.cpu()
    d = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)  # (B, P1, P2)
    mx = torch.arange(P1)[None, :] < lx[:, None]  # (B, P1)
    my = torch.arange(P2)[None, :] < ly[:, None]  # (B, P2)
    big = torch.finfo(d.dtype).max
    d = d.masked_fill(~(mx[:, :, None] & my[:, None, :]).to(d.device), big)
    d_xy = d.min(dim=2).values if P2 else x.new_zeros(B, P1)
    d_yx = d.min(dim=1).values if P1 else y.new_zeros(B, P2)
    d_xy = torch.where((mx & (ly > 0)[:, None]).to(d.device), d_xy, torch.zeros_like(d_xy))
    d_yx = torch.where((my & (lx > 0)[:, None]).to(d.device), d_yx, torch.zeros_like(d_yx))
    return d_xy, d_yx


def graph_max_pool_reference(features: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """Reference of the compiled graph max-pool: the channel-wise max over each point and its
    neighbours, the gradient going to the first maximal candidate (the point itself first).

    Args:
        features: (B, N, C) float features.
        neighbours: (B, N, k) int64 indices into dim 1, in [0, N) (no padding).

    Returns:
        (B, N, C) in the dtype of ``features``, differentiable with respect to it.
    """
    # Each channel's winner is found without autograd (argmax returns the first maximal index,
    # NaN counting as the largest), then only the winners are gathered, so the backward is an
    # O(B N C) scatter instead of the O(B N k C) one of a differentiable gather + amax.
    B, N, _ = features.shape
    with torch.no_grad():
        own = torch.arange(N, device=features.device).view(1, N, 1).expand(B, N, 1)
        cand = torch.cat([own, neighbours], dim=2)  # (B, N, k + 1)
        batch = torch.arange(B, device=features.device).view(-1, 1, 1)
        arg = features.detach()[batch, cand].argmax(dim=2)  # (B, N, C) into k + 1
        win = cand.gather(2, arg)  # (B, N, C) winning point per channel
    return features.gather(1, win)


def global_max_pool_reference(features: torch.Tensor) -> torch.Tensor:
    """Reference of the compiled global max-pool: (B, N, C) -> (B, C), the gradient going to the
    first maximal point of each (cloud, channel) (NaN counting as the largest)."""
    with torch.no_grad():
        win = features.detach().argmax(dim=1, keepdim=True)  # (B, 1, C) first maximal point
    return features.gather(1, win).squeeze(1)
