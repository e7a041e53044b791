"""Batch layouts of point clouds and the conversion of foreign batches into crfold's padded one.

Two layouts of a batch of point clouds meet in :mod:`crfold.ops`:

* **padded** (crfold, PyTorch3D): ``padded`` (B, P, D) with ``lengths`` (B,) int64; the points
  of cloud ``b`` are ``padded[b, :lengths[b]]``, the rest is padding (zeros when made here).
* **flat** (PyTorch Geometric): ``pos`` (N, D) with ``batch`` (N,) int64, sorted (non-decreasing)
  as ``torch_geometric.data.Batch`` stores it; the points of cloud ``b`` are ``pos[batch == b]``.

:func:`from_pyg` / :func:`to_pyg` convert between them without a Python loop over clouds,
:func:`from_pytorch3d` reads a PyTorch3D ``Pointclouds``, and :func:`as_padded` lets any function
that takes a padded batch (:func:`crfold.ops.knn_points`, :func:`crfold.ops.chamfer_distance`)
also take a ``Pointclouds`` or a PyG ``Data``/``Batch``. Neither library is imported: their
objects are duck-typed. This module imports nothing else of :mod:`crfold.ops`, so the ops can
import it and :mod:`crfold.ops.pyg` / :mod:`crfold.ops.interop` can build on both; the public
names are re-exported by :mod:`crfold.ops.interop`.
"""

from __future__ import annotations

import torch

__all__ = ["as_padded", "from_pyg", "from_pytorch3d", "to_pyg"]


def _is_pointclouds(obj: object) -> bool:
    """Duck test for a ``pytorch3d.structures.Pointclouds``."""
    return callable(getattr(obj, "points_padded", None)) and callable(
        getattr(obj, "num_points_per_cloud", None)
    )


def _has_normals(obj: object) -> bool:
    """Whether a (duck-typed) ``Pointclouds`` carries normals (``normals_padded()`` not None);
    :func:`crfold.ops.chamfer_distance` refuses those."""
    normals_padded = getattr(obj, "normals_padded", None)
    return callable(normals_padded) and normals_padded() is not None


def _is_pyg(obj: object) -> bool:
    """Duck test for a ``torch_geometric`` ``Data``/``Batch`` holding positions in ``.pos``."""
    return not isinstance(obj, torch.Tensor) and isinstance(getattr(obj, "pos", None), torch.Tensor)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def _check_nodes(name: str, x) -> torch.Tensor:
    """A flat (N, D) float node matrix; a 1-D (N,) tensor is taken as (N, 1), as PyG does."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (N, D), got {type(x).__name__}")
    if x.dim() == 1:
        x = x.view(-1, 1)
    if x.dim() != 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with D >= 1, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def _check_batch(name: str, batch, n: int, device) -> torch.Tensor:
    """A (n,) int64 sorted, non-negative batch vector on ``device``."""
    if not isinstance(batch, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape ({n},), got {type(batch)}")
    if batch.shape != (n,):
        raise ValueError(
            f"{name} must have shape ({n},) (one entry per node), got {tuple(batch.shape)}"
        )
    if batch.is_floating_point() or batch.is_complex() or batch.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor, got {batch.dtype}")
    batch = batch.to(device=device, dtype=torch.int64)
    if n > 0:
        if int(batch.min()) < 0:
            raise ValueError(f"{name} must be non-negative, got min {int(batch.min())}")
        if bool((batch[1:] < batch[:-1]).any()):
            raise ValueError(
                f"{name} must be sorted (non-decreasing), as torch_geometric's Batch is"
            )
    return batch


def _num_clouds(batches: list[torch.Tensor | None], batch_size: int | None) -> int:
    """B: ``batch_size`` when given (checked against the batch vectors), else max id + 1."""
    top = max((int(b.max()) + 1 for b in batches if b is not None and b.numel()), default=1)
    if batch_size is None:
        return top
    _check_int("batch_size", batch_size, 1)
    if top > batch_size:
        raise ValueError(f"batch_size is {batch_size} but the batch vector holds id {top - 1}")
    return batch_size


def _exclusive_cumsum(counts: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B,) start offset of each cloud in the flat layout."""
    return torch.cumsum(counts, 0) - counts


def from_pyg(
    pos, batch=None, max_points: int | None = None, *, batch_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat PyG layout -> padded batch, vectorized (no loop over clouds), differentiable in pos.

    Args:
        pos: (N, D) float node positions, or a torch_geometric ``Data``/``Batch`` (anything with
            a ``.pos`` tensor; its ``.batch`` and ``.num_graphs`` are used when present, and then
            ``batch`` must be None).
        batch: (N,) integer cloud id of every node, sorted (non-decreasing); None: one cloud.
        max_points: P, the padded size; default the largest cloud. Must hold every cloud.
        batch_size: B, the number of clouds (trailing clouds may be empty); default max id + 1.

    Returns:
        ``padded`` (B, P, D) dtype/device of ``pos``, zeros past each cloud's length, and
        ``lengths`` (B,) int64: cloud ``b`` is ``pos[batch == b]`` in its original order.

    Raises:
        ValueError: a non-(N, D) or integer ``pos``; a ``batch`` of the wrong shape or dtype,
            negative or unsorted; ``max_points`` smaller than a cloud; ids past ``batch_size``.
    """
    if _is_pyg(pos):
        if batch is not None:
            raise ValueError("batch must be None when pos is a torch_geometric Data/Batch")
        data, pos = pos, pos.pos
        batch = getattr(data, "batch", None)
        if batch_size is None and batch is not None:
            batch_size = getattr(data, "num_graphs", None)
    pos = _check_nodes("pos", pos)
    n, d = pos.shape
    if batch is None:
        batch = torch.zeros(n, dtype=torch.int64, device=pos.device)
    batch = _check_batch("batch", batch, n, pos.device)
    B = _num_clouds([batch], batch_size)
    counts = torch.bincount(batch, minlength=B)  # (B,)
    largest = int(counts.max()) if B else 0
    if max_points is None:
        P = largest
    else:
        P = _check_int("max_points", max_points, 0)
        if P < largest:
            raise ValueError(f"max_points is {P} but a cloud holds {largest} points")
    local = torch.arange(n, device=pos.device) - _exclusive_cumsum(counts)[batch]  # (N,)
    padded = pos.new_zeros(B, P, d).index_put((batch, local), pos)  # (B, P, D)
    return padded, counts


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


def from_pytorch3d(pointclouds) -> tuple[torch.Tensor, torch.Tensor]:
    """A PyTorch3D ``Pointclouds`` -> ``(padded (B, P, D), lengths (B,) int64)``.

    Duck-typed: any object with ``points_padded()`` and ``num_points_per_cloud()`` works, so
    pytorch3d need not be installed. ``Pointclouds`` pads with zeros; its autograd graph is kept.
    Only the points are read: normals and features are left out, so this is also the explicit
    way to pass the points of a ``Pointclouds`` with normals to :func:`crfold.ops.chamfer_distance`
    (which refuses the ``Pointclouds`` itself).

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


def as_padded(x, lengths: torch.Tensor | None = None, *, name: str = "x"):
    """Normalize a batch argument to ``(padded, lengths)`` for functions taking padded clouds.

    * a ``torch.Tensor`` (or anything unrecognized) is returned unchanged with ``lengths``, so
      the caller's own validation reports a bad argument under its own name;
    * a PyTorch3D ``Pointclouds`` (duck-typed) becomes :func:`from_pytorch3d`'s pair, its points
      only (normals play no part in kNN; :func:`crfold.ops.chamfer_distance` refuses a
      ``Pointclouds`` with normals itself, before calling this);
    * a torch_geometric ``Data``/``Batch`` (a ``.pos`` tensor) becomes :func:`from_pyg`'s pair.

    Args:
        x: (B, P, D) tensor, ``Pointclouds``, or PyG ``Data``/``Batch``.
        lengths: (B,) lengths for a tensor ``x``; must be None for the other two (they carry
            their own lengths).
        name: the argument's name, for error messages.

    Returns:
        ``(padded (B, P, D), lengths (B,) int64 or the given lengths)``.

    Raises:
        ValueError: ``lengths`` given with a ``Pointclouds``/``Data``.
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
