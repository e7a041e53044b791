"""Input builders and independent brute-force oracles for the kNN / Chamfer tests.

The oracles share no code with :mod:`crfold.ops.reference`. :func:`brute_knn` builds the dense
distance matrix of each cloud pair and orders it with a stable sort (ties: lowest index first);
:func:`brute_chamfer` takes per-point minima and reduces them with explicit per-cloud loops.
Both compute in float64 unless told otherwise and run on the CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F

_CHUNK = 1 << 22  # (query, target) pairs per dense block in brute_knn


@contextlib.contextmanager
def deterministic_algorithms(flag: bool) -> Iterator[None]:
    """torch.use_deterministic_algorithms(flag) inside the block, restored after it."""
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(flag)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(old)


def make_clouds(
    B: int,
    P1: int,
    P2: int,
    D: int = 3,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    integer: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random padded batches of clouds.

    Args:
        B, P1, P2, D: batch size, points per cloud of ``p1`` and ``p2``, coordinates.
        dtype, device: of the returned tensors.
        seed: seed of the CPU generator that draws them.
        integer: draw integer coordinates in [-2, 2] (exact in every dtype: exact arithmetic,
            many exact ties and duplicates) instead of standard normal ones.

    Returns:
        ``p1`` (B, P1, D) and ``p2`` (B, P2, D), contiguous, no padding values of note.
    """
    g = torch.Generator().manual_seed(seed)

    def one(P: int) -> torch.Tensor:
        if integer:
            return torch.randint(-2, 3, (B, P, D), generator=g).to(dtype)
        return torch.randn(B, P, D, generator=g, dtype=torch.float64).to(dtype)

    return one(P1).to(device), one(P2).to(device)


def full_lengths(lengths: torch.Tensor | None, B: int, P: int) -> torch.Tensor:
    """``lengths`` as a CPU (B,) int64 tensor; all ``P`` when None."""
    if lengths is None:
        return torch.full((B,), P, dtype=torch.int64)
    return lengths.detach().to("cpu", torch.int64)


def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Dense squared distances (n1, n2) of a (n1, D) and b (n2, D), summed over coordinates in
    order 0..D-1 (the order the kernels use); differentiable."""
    d = torch.zeros(a.shape[0], b.shape[0], dtype=a.dtype, device=a.device)
    for k in range(a.shape[1]):
        d = d + (a[:, None, k] - b[None, :, k]) ** 2
    return d


def _smallest(d: torch.Tensor, k: int) -> torch.Tensor:
    """(n1, k) indices of the k smallest entries of each row of d (n1, n2), ascending, ties by
    the lowest index: the first k columns of a stable argsort."""
    if d.shape[1] <= 512 or k > 8:
        return torch.argsort(d, dim=1, stable=True)[:, :k]
    # Wide rows: k rounds of argmin (which returns the first minimum) give the same prefix as the
    # stable argsort, an order of magnitude faster.
    d = d.clone()
    out = []
    for _ in range(k):
        j = d.argmin(dim=1, keepdim=True)  # (n1, 1)
        out.append(j)
        d.scatter_(1, j, float("inf"))
    return torch.cat(out, dim=1)


@torch.no_grad()
def brute_knn(
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    K: int = 1,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """K nearest neighbours by a dense distance matrix and a stable sort.

    Args:
        p1: (B, P1, D) queries; p2: (B, P2, D) targets; any float dtype and device.
        lengths1, lengths2: (B,) valid points per cloud, or None for all.
        K: neighbours per query.
        dtype: dtype the distances are computed in (float64; float32 to reproduce the kernels'
            float32 arithmetic bit for bit).

    Returns:
        ``dists`` (B, P1, K) in ``dtype`` and ``idx`` (B, P1, K) int64, on the CPU; ``0`` / ``-1``
        for padded queries and for the slots past the number of valid targets.
    """
    p1 = p1.detach().to("cpu", dtype)
    p2 = p2.detach().to("cpu", dtype)
    B, P1, _ = p1.shape
    P2 = p2.shape[1]
    l1, l2 = full_lengths(lengths1, B, P1), full_lengths(lengths2, B, P2)
    dists = torch.zeros(B, P1, K, dtype=dtype)
    idx = torch.full((B, P1, K), -1, dtype=torch.int64)
    chunk = max(1, _CHUNK // max(P2, 1))
    for b in range(B):
        n1, n2 = int(l1[b]), int(l2[b])
        k = min(K, n2)
        if n1 == 0 or k == 0:
            continue
        for s in range(0, n1, chunk):
            e = min(n1, s + chunk)
            d = pairwise_sq_dists(p1[b, s:e], p2[b, :n2])  # (e - s, n2)
            order = _smallest(d, k)  # (e - s, k)
            idx[b, s:e, :k] = order
            dists[b, s:e, :k] = d.gather(1, order)
    return dists, idx


def check_knn(
    out,
    p1: torch.Tensor,
    p2: torch.Tensor,
    lengths1: torch.Tensor | None = None,
    lengths2: torch.Tensor | None = None,
    K: int = 1,
    *,
    exact_idx: bool = True,
    rtol: float = 1e-12,
    atol: float = 1e-12,
) -> None:
    """Assert that a :class:`crfold.ops.KNN` result agrees with :func:`brute_knn` in float64.

    With ``exact_idx`` the indices must equal the brute force's (float64 or integer-valued
    inputs). Without it (float32 inputs, where a near-tie may round either way) every row must
    hold distinct valid targets whose float64 distances equal the brute-force sorted distances.
    Padded entries must be exactly ``dist 0`` and ``idx -1`` in both cases.
    """
    B, P1 = p1.shape[:2]
    assert out.dists.shape == (B, P1, K) and out.idx.shape == (B, P1, K)
    assert out.dists.dtype == p1.dtype and out.idx.dtype == torch.int64
    assert out.dists.device == p1.device and out.idx.device == p1.device
    ref_d, ref_i = brute_knn(p1, p2, lengths1, lengths2, K)
    dists, idx = out.dists.detach().cpu().double(), out.idx.cpu()
    pad = ref_i < 0
    assert torch.equal(idx < 0, pad), "padding pattern (idx == -1) differs from the brute force"
    assert bool((dists[pad] == 0).all()), "padded entries must have dist exactly 0"
    torch.testing.assert_close(dists, ref_d, rtol=rtol, atol=atol)
    if exact_idx:
        assert torch.equal(idx, ref_i)
        return
    l2 = full_lengths(lengths2, B, p2.shape[1])
    assert bool((idx < l2[:, None, None]).all()), "an index points at a padded target"
    q = p1.detach().cpu().double()
    t = p2.detach().cpu().double()
    flat = idx.clamp_min(0).reshape(B, P1 * K, 1).expand(-1, -1, t.shape[2])
    nn = t.gather(1, flat) if t.shape[1] else torch.zeros(B, P1 * K, t.shape[2]).double()
    chosen = (
        ((q[:, :, None, :] - nn.reshape(B, P1, K, t.shape[2])) ** 2).sum(-1).masked_fill(pad, 0)
    )
    torch.testing.assert_close(chosen, ref_d, rtol=rtol, atol=atol)
    s = idx.sort(dim=-1).values
    assert not bool(((s[..., 1:] == s[..., :-1]) & (s[..., 1:] >= 0)).any()), "repeated index"


def _reduce_points(t: torch.Tensor, how: str) -> torch.Tensor:
    """() reduction of the n valid per-point terms t (n,); 0 for an empty cloud."""
    if how == "sum":
        return t.sum()
    if how == "max":  # the gradient to the first maximal term, as crfold and PyTorch3D do
        return t[t.detach().argmax()] if t.numel() else t.new_zeros(())
    return t.sum() / max(t.numel(), 1)


def brute_chamfer(
    x: torch.Tensor,
    y: torch.Tensor,
    x_lengths: torch.Tensor | None = None,
    y_lengths: torch.Tensor | None = None,
    *,
    squared: bool = True,
    point_reduction: str | None = "mean",
    batch_reduction: str | None = "mean",
    direction_reduction: str | None = None,
    single_directional: bool = False,
    weights: torch.Tensor | None = None,
):
    """Chamfer distance by its definition in float64 on the CPU, differentiable in x and y.

    ``direction_reduction=None`` is PyTorch3D's rule: the larger direction for
    ``point_reduction="max"``, else their sum.

    Per-point term: squared distance to the nearest valid point of the other cloud (its square
    root unless ``squared``); 0 for padded points and for points whose other cloud is empty.

    Returns:
        As :func:`crfold.ops.chamfer_distance`: () after a batch reduction, (B,) without one,
        or ``(terms_x (B, P1), terms_y (B, P2) or None)`` when ``point_reduction`` is None.
    """
    x = x.to("cpu", torch.float64)
    y = y.to("cpu", torch.float64)
    B, P1, _ = x.shape
    P2 = y.shape[1]
    lx, ly = full_lengths(x_lengths, B, P1), full_lengths(y_lengths, B, P2)
    w = None if weights is None else weights.detach().to("cpu", torch.float64)
    if direction_reduction is None:
        direction_reduction = "max" if point_reduction == "max" else "sum"
    terms_x, terms_y, per_cloud = [], [], []
    for b in range(B):
        nx, ny = int(lx[b]), int(ly[b])
        d = pairwise_sq_dists(x[b, :nx], y[b, :ny])  # (nx, ny)
        tx = d.min(dim=1).values if ny > 0 else x.new_zeros(nx)  # (nx,)
        ty = d.min(dim=0).values if nx > 0 else y.new_zeros(ny)  # (ny,)
        if not squared:
            tx, ty = tx.sqrt(), ty.sqrt()
        wb = 1.0 if w is None else w[b]
        terms_x.append(F.pad(tx, (0, P1 - nx)) * wb)
        terms_y.append(F.pad(ty, (0, P2 - ny)) * wb)
        if point_reduction is None:
            continue
        cx, cy = _reduce_points(tx, point_reduction), _reduce_points(ty, point_reduction)
        if single_directional:
            c = cx
        elif direction_reduction == "sum":
            c = cx + cy
        elif direction_reduction == "max":
            c = torch.maximum(cx, cy)
        else:
            c = (cx + cy) / 2
        per_cloud.append(c * wb)
    if point_reduction is None:
        tx = torch.stack(terms_x) if B else x.new_zeros(0, P1)
        ty = torch.stack(terms_y) if B else y.new_zeros(0, P2)
        return tx, (None if single_directional else ty)
    c = torch.stack(per_cloud) if B else x.new_zeros(0)  # (B,)
    if batch_reduction is None:
        return c
    if batch_reduction == "sum":
        return c.sum()
    total = float(w.sum()) if w is not None else float(B)
    return c.sum() / total if total > 0 else c.sum() * 0
