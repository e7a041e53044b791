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
libraries' own objects, import them. :func:`from_pyg`, :func:`knn_graph` and :func:`knn` live in
:mod:`crfold.ops.pyg` and are re-exported here; this module holds the padded side.

>>> pos = torch.randn(10, 3); batch = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
>>> edge_index = knn_graph(pos, k=3, batch=batch)      # (2, 30): 3 sources per target
>>> padded, lengths = from_pyg(pos, batch)             # (2, 6, 3), tensor([4, 6])
"""

from __future__ import annotations

import torch

from .pyg import _is_pyg, from_pyg, knn, knn_graph

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


def _is_pointclouds(obj: object) -> bool:
    """Duck test for a ``pytorch3d.structures.Pointclouds``."""
    return callable(getattr(obj, "points_padded", None)) and callable(
        getattr(obj, "num_points_per_cloud", None)
    )


def _check_lengths(lengths, B: int, P: int, device) -> torch.Tensor:
    if lengths is None:
        return torch.full((B,), P, dtype=torch.int64, device=device)
    if not isinstance(lengths, torch.Tensor) or lengths.shape != (B,):
        got = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths)
        raise ValueError(f"lengths must be a ({B},) integer tensor, got {got}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor, got {lengths.dtype}")
    lengths = lengths.to(device=device, dtype=torch.int64)
    if B and (int(lengths.min()) < 0 or int(lengths.max()) > P):
        raise ValueError(f"lengths must lie in [0, P={P}], got {lengths.tolist()}")
    return lengths


def to_pyg(padded, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded batch -> flat PyG layout (the inverse of :func:`from_pyg`), differentiable.

    Args:
        padded: (B, P, D) float clouds, or a PyTorch3D ``Pointclouds`` (see :func:`as_padded`).
        lengths: (B,) integer valid points per cloud in [0, P]; None: all P.

    Returns:
        ``pos`` (N, D) with N = lengths.sum(), cloud after cloud in order, and ``batch`` (N,)
        int64 sorted cloud ids, both on the device of ``padded``.
    """
    padded, lengths = as_padded(padded, lengths, name="padded")
    if not isinstance(padded, torch.Tensor) or padded.dim() != 3:
        got = tuple(padded.shape) if isinstance(padded, torch.Tensor) else type(padded).__name__
        raise ValueError(f"padded must be a (B, P, D) tensor, got {got}")
    B, P, _ = padded.shape
    lengths = _check_lengths(lengths, B, P, padded.device)
    mask = torch.arange(P, device=padded.device)[None, :] < lengths[:, None]  # (B, P)
    batch = torch.repeat_interleave(torch.arange(B, device=padded.device), lengths)  # (N,)
    return padded[mask], batch  # (N, D), (N,)


def from_pytorch3d(pointclouds) -> tuple[torch.Tensor, torch.Tensor]:
    """A PyTorch3D ``Pointclouds`` -> ``(padded (B, P, D), lengths (B,) int64)``.

    Duck-typed: any object with ``points_padded()`` and ``num_points_per_cloud()`` works, so
    pytorch3d need not be installed. ``Pointclouds`` pads with zeros; its autograd graph is kept.

    Raises:
        ValueError: the object lacks the two methods or returns inconsistent shapes.
    """
    if not _is_pointclouds(pointclouds):
        raise ValueError(
            "pointclouds must be a pytorch3d Pointclouds (with points_padded() and "
            f"num_points_per_cloud()), got {type(pointclouds).__name__}"
        )
    padded = pointclouds.points_padded()  # (B, P, D)
    lengths = pointclouds.num_points_per_cloud()  # (B,)
    if not isinstance(padded, torch.Tensor) or padded.dim() != 3:
        raise ValueError(f"points_padded() must return a (B, P, D) tensor, got {type(padded)}")
    B, P, _ = padded.shape
    return padded, _check_lengths(lengths, B, P, padded.device)


def as_padded(x, lengths: torch.Tensor | None = None, *, name: str = "x"):
    """Normalize a batch argument to ``(padded, lengths)`` for functions taking padded clouds.

    * a ``torch.Tensor`` (or anything unrecognized) is returned unchanged with ``lengths``, so
      the caller's own validation reports a bad argument under its own name;
    * a PyTorch3D ``Pointclouds`` (duck-typed) becomes :func:`from_pytorch3d`'s pair;
    * a torch_geometric ``Data``/``Batch`` (a ``.pos`` tensor) becomes :func:`from_pyg`'s pair.

    Args:
        x: (B, P, D) tensor, ``Pointclouds``, or PyG ``Data``/``Batch``.
        lengths: (B,) lengths for a tensor ``x``; must be None for the other two (they carry
            their own lengths).
        name: the argument's name, for error messages.

    Returns:
        ``(padded (B, P, D), lengths (B,) int64 or the given lengths)``.
    """
    if isinstance(x, torch.Tensor):
        return x, lengths
    if _is_pointclouds(x) or _is_pyg(x):
        if lengths is not None:
            raise ValueError(
                f"the lengths of {name} must be None when {name} is a {type(x).__name__} "
                "(it carries its own lengths)"
            )
        return from_pytorch3d(x) if _is_pointclouds(x) else from_pyg(x)
    return x, lengths


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
