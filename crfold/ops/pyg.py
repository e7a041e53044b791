"""PyTorch Geometric's kNN graphs (``knn_graph``, ``knn``) computed by crfold's kNN.

:func:`knn_graph` / :func:`knn` return PyG's ``edge_index`` from :func:`crfold.ops.knn_points`
(PyG 2.8's own need ``pyg-lib`` or ``torch-cluster``, which PyPI lacks). The flat layout they
take (``pos`` (N, D), sorted ``batch`` (N,)) is read into padded batches by
:func:`crfold.ops.layouts.from_pyg`, re-exported here. torch_geometric is never imported:
``Data``/``Batch`` objects are duck-typed. The public names are re-exported by
:mod:`crfold.ops.interop`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .knn import knn_points
from .layouts import (
    _check_batch,
    _check_int,
    _check_nodes,
    _exclusive_cumsum,
    _num_clouds,
    from_pyg,
)

__all__ = ["FLOWS", "from_pyg", "knn", "knn_graph"]

FLOWS = ("source_to_target", "target_to_source")


def _drop_self(idx: torch.Tensor) -> torch.Tensor:
    """(B, P, K) knn_points(x, x) indices -> (B, P, K - 1) without each query's own index.

    The self match is removed wherever it sits (an exact duplicate with a lower index sorts
    before it); when K earlier duplicates crowd it out, the last column is dropped instead, so
    each row is the first K - 1 of the *other* points by (distance, index). -1 padding stays.
    """
    P, K = idx.shape[1], idx.shape[2]
    is_self = idx == torch.arange(P, device=idx.device).view(1, P, 1)  # (B, P, K)
    drop = torch.where(is_self.any(-1), is_self.to(torch.int64).argmax(-1), K - 1)  # (B, P)
    cols = torch.arange(K - 1, device=idx.device).view(1, 1, K - 1)
    cols = cols + (cols >= drop.unsqueeze(-1)).to(torch.int64)  # (B, P, K-1)
    return idx.gather(-1, cols)


def _edges(idx: torch.Tensor, q_start: torch.Tensor, t_start: torch.Tensor):
    """Valid entries of padded kNN indices (B, Pq, K) as flat (query, target) node ids (E,)."""
    B, Pq, K = idx.shape
    valid = idx >= 0  # (B, Pq, K); padded queries are all -1
    query = q_start[:, None] + torch.arange(Pq, device=idx.device)[None, :]  # (B, Pq)
    query = query[:, :, None].expand(B, Pq, K)
    return query[valid], (idx + t_start[:, None, None])[valid]  # (E,), (E,)


@torch.no_grad()
def knn_graph(
    pos: torch.Tensor,
    k: int,
    batch: torch.Tensor | None = None,
    loop: bool = False,
    flow: str = "source_to_target",
    cosine: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """The k-nearest-neighbour graph of PyG's ``torch_geometric.nn.knn_graph``, on crfold's kNN.

    Each node is linked to its ``k`` nearest nodes of the same cloud (fewer when the cloud is
    smaller). With ``flow="source_to_target"`` (PyG's default, for message passing into the
    centre) ``edge_index[0]`` holds the neighbour j (source) and ``edge_index[1]`` the centre i
    (target); ``"target_to_source"`` swaps the rows. Edges are ordered by centre, then by
    (distance, neighbour index). With ``loop=False`` the centre itself is never among its
    neighbours, even among exact duplicates: every node gets exactly ``min(k, n - 1)``
    neighbours (torch-cluster may give a node k + 1 edges, or fewer than k, when duplicates
    hide its self match; crfold does not).

    Args:
        pos: (N, D) float node positions (a 1-D (N,) tensor is taken as (N, 1)).
        k: neighbours per node, >= 1.
        batch: (N,) integer cloud id per node, sorted (non-decreasing); None: one cloud.
        loop: include the node itself among its k nearest (distance 0).
        flow: ``"source_to_target"`` or ``"target_to_source"``.
        cosine: rank by cosine distance (Euclidean distance of the L2-normalized positions).
        batch_size: number of clouds B; default max id + 1.

    Returns:
        edge_index (2, E) int64 on the device of ``pos``, E = sum over nodes of min(k, n - 1)
        (``min(k, n)`` with ``loop``), n being the size of the node's cloud.

    Raises:
        ValueError: invalid ``pos``, ``batch``, ``k``, ``flow`` or ``batch_size``.
    """
    _check_int("k", k, 1)
    if flow not in FLOWS:
        raise ValueError(f"flow must be one of {FLOWS}, got {flow!r}")
    pos = _check_nodes("pos", pos)
    if cosine:
        pos = F.normalize(pos, dim=-1)
    padded, lengths = from_pyg(pos, batch, batch_size=batch_size)  # (B, P, D), (B,)
    P = padded.shape[1]
    if P == 0 or (P == 1 and not loop):
        return torch.empty(2, 0, dtype=torch.int64, device=pos.device)
    K = min(k if loop else k + 1, P)
    idx = knn_points(padded, padded, lengths, lengths, K=K).idx  # (B, P, K)
    if not loop:
        idx = _drop_self(idx)  # (B, P, min(k, P - 1))
    start = _exclusive_cumsum(lengths)  # (B,)
    centre, neighbour = _edges(idx, start, start)
    if flow == "source_to_target":
        return torch.stack([neighbour, centre])
    return torch.stack([centre, neighbour])


@torch.no_grad()
def knn(
    x: torch.Tensor,
    y: torch.Tensor,
    k: int,
    batch_x: torch.Tensor | None = None,
    batch_y: torch.Tensor | None = None,
    cosine: bool = False,
    batch_size: int | None = None,
) -> torch.Tensor:
    """For each node of ``y``, its ``k`` nearest nodes of ``x`` in the same cloud (PyG's ``knn``).

    Args:
        x: (N, D) float positions searched (1-D taken as (N, 1)).
        y: (M, D) float query positions, same D, dtype and device as ``x``.
        k: neighbours per query, >= 1 (fewer when the query's cloud in ``x`` is smaller).
        batch_x: (N,) integer sorted cloud ids of ``x``; None: all in cloud 0.
        batch_y: (M,) integer sorted cloud ids of ``y``; None: all in cloud 0.
        cosine: rank by cosine distance (Euclidean distance of the L2-normalized positions).
        batch_size: number of clouds B; default the largest id in either batch + 1.

    Returns:
        (2, E) int64: row 0 indexes ``y`` (the query), row 1 indexes ``x`` (its neighbour);
        ordered by query, then by (distance, index into ``x``).

    Raises:
        ValueError: invalid positions or batch vectors, mismatched D/dtype/device, bad ``k``.
    """
    _check_int("k", k, 1)
    x, y = _check_nodes("x", x), _check_nodes("y", y)
    if x.shape[1] != y.shape[1] or x.dtype != y.dtype or x.device != y.device:
        raise ValueError(
            f"x and y must share D, dtype and device, got {tuple(x.shape)} {x.dtype} {x.device}"
            f" and {tuple(y.shape)} {y.dtype} {y.device}"
        )
    bx = None if batch_x is None else _check_batch("batch_x", batch_x, x.shape[0], x.device)
    by = None if batch_y is None else _check_batch("batch_y", batch_y, y.shape[0], y.device)
    B = _num_clouds([bx, by], batch_size)
    if cosine:
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    px, lx = from_pyg(x, bx, batch_size=B)  # (B, Px, D), (B,)
    py, ly = from_pyg(y, by, batch_size=B)  # (B, Py, D), (B,)
    if px.shape[1] == 0 or py.shape[1] == 0:
        return torch.empty(2, 0, dtype=torch.int64, device=x.device)
    idx = knn_points(py, px, ly, lx, K=min(k, px.shape[1])).idx  # (B, Py, K)
    query, neighbour = _edges(idx, _exclusive_cumsum(ly), _exclusive_cumsum(lx))
    return torch.stack([query, neighbour])
