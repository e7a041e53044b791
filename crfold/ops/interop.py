"""Interop with PyTorch Geometric and PyTorch3D: layouts, kNN graphs, ``Pointclouds`` input.

Two layouts of a batch of point clouds meet here:

* **padded** (crfold, PyTorch3D): ``padded`` (B, P, D) with ``lengths`` (B,) int64; the points
  of cloud ``b`` are ``padded[b, :lengths[b]]``, the rest is padding (zeros when made here).
* **flat** (PyTorch Geometric): ``pos`` (N, D) with ``batch`` (N,) int64, sorted (non-decreasing)
  as ``torch_geometric.data.Batch`` stores it; the points of cloud ``b`` are ``pos[batch == b]``.

:func:`from_pyg` / :func:`to_pyg` convert between them without a Python loop over clouds, and
:func:`knn_graph` / :func:`knn` give PyG's ``edge_index`` from :func:`crfold.ops.knn_points`:
PyG 2.8's own ``knn_graph``/``knn`` need ``pyg-lib`` or ``torch-cluster``, which PyPI lacks.
:func:`as_padded` lets any function that takes a padded batch also take a PyTorch3D
``Pointclouds`` (or a PyG ``Data``/``Batch``). None of this imports torch_geometric or pytorch3d:
objects are duck-typed; only :func:`to_pyg_batch` and :func:`to_pytorch3d`, which build those
libraries' own objects, import them (and live here). The layout conversions live in
:mod:`crfold.ops.layouts`, the kNN graphs in :mod:`crfold.ops.pyg`; both are re-exported here.

>>> pos = torch.randn(10, 3); batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
>>> edge_index = knn_graph(pos, k=3, batch=batch)      # (2, 30): 3 sources per target
>>> padded, lengths = from_pyg(pos, batch)             # (2, 6, 3), tensor([4, 6])
"""

from __future__ import annotations

import torch

from .layouts import _check_lengths, as_padded, from_pyg, from_pytorch3d, to_pyg
from .pyg import knn, knn_graph

__all__ = [
    "as_padded",
    "from_pyg",
    "from_pytorch3d",
    "knn",
    "knn_graph",
    "to_pyg",
    "to_pyg_batch",
    "to_pytorch3d",
]

PYG_HINT = "pip install torch_geometric (an optional peer of crfold, not a dependency)"
PYTORCH3D_HINT = (
    "pytorch3d has no Linux wheel on PyPI; build it from source "
    "(https://github.com/facebookresearch/pytorch3d/blob/main/INSTALL.md)"
)


def to_pyg_batch(padded, lengths: torch.Tensor | None = None):
    """Padded batch -> ``torch_geometric.data.Batch`` of ``Data(pos=...)``, one per cloud.

    Args:
        padded: (B, P, D) float clouds (or a ``Pointclouds``); lengths: (B,) or None (all P).

    Returns:
        A ``Batch`` with ``pos`` (N, D), ``batch`` (N,) and ``num_graphs == B``.

    Raises:
        ImportError: torch_geometric is not installed (the message says how to install it).
    """
    try:
        from torch_geometric.data import Batch, Data
    except ImportError as exc:
        raise ImportError(f"to_pyg_batch needs torch_geometric: {PYG_HINT}") from exc
    padded, lengths = as_padded(padded, lengths, name="padded")
    pos, batch = to_pyg(padded, lengths)  # (N, D), (N,)
    counts = torch.bincount(batch, minlength=padded.shape[0])  # (B,)
    return Batch.from_data_list([Data(pos=p) for p in torch.split(pos, counts.tolist())])


def to_pytorch3d(padded, lengths: torch.Tensor | None = None):
    """Padded batch -> ``pytorch3d.structures.Pointclouds`` (gradients flow to ``padded``).

    Args:
        padded: (B, P, 3) float clouds; lengths: (B,) integer valid points or None (all P).

    Raises:
        ImportError: pytorch3d is not installed (the message says how to get it).
    """
    try:
        from pytorch3d.structures import Pointclouds
    except ImportError as exc:
        raise ImportError(f"to_pytorch3d needs pytorch3d: {PYTORCH3D_HINT}") from exc
    if not isinstance(padded, torch.Tensor) or padded.dim() != 3:
        raise ValueError(f"padded must be a (B, P, D) tensor, got {type(padded).__name__}")
    lengths = _check_lengths(lengths, padded.shape[0], padded.shape[1], padded.device)
    return Pointclouds(points=[padded[b, :n] for b, n in enumerate(lengths.tolist())])
