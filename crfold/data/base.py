"""The in-memory dataset base class and the checks every reader shares.

:class:`PointCloudSet` holds labelled clouds in memory and subsamples them per index with a seed.
The readers build on it and on the metadata checks here: :mod:`crfold.data.hdf5` (the published
HDF5 layouts), :mod:`crfold.data.npz` (the shared ModelNet40 npz) and
:mod:`crfold.data.synthetic` (the procedural set). This module imports none of them; the factory
that picks one, :func:`crfold.data.datasets.open_dataset`, imports them all.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test", "trainval")
# fmt: off
MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser",
                      "monitor", "night_stand", "sofa", "table", "toilet")
# fmt: on
DEFAULT_MAX_BYTES = 16 * 2**30  # refuse to allocate more than this for one dataset


class PointCloudSet(Dataset):
    """In-memory labelled point clouds with seeded per-sample subsampling.

    Args:
        points: (N, P, 3) float32 clouds, all with P points (no padding).
        labels: (N,) int64 class indices in [0, len(classes)).
        classes: class names, index = label.
        num_points: points returned per sample; None (or P) returns all P in stored order.
        seed: subsampling seed; sample i always gets the same subset for a given seed.
        up_axis: "y" or "z", the up direction of the stored clouds.
    """

    def __init__(
        self,
        points: torch.Tensor,
        labels: torch.Tensor,
        classes: Sequence[str],
        num_points: int | None = None,
        seed: int = 0,
        up_axis: str = "y",
    ) -> None:
        if points.ndim != 3 or points.shape[-1] != 3 or points.dtype != torch.float32:
            raise ValueError(f"points: expected (N, P, 3) float32, got {tuple(points.shape)}")
        if labels.shape != points.shape[:1] or labels.dtype != torch.int64:
            raise ValueError(f"labels: expected ({len(points)},) int64, got {tuple(labels.shape)}")
        if num_points is not None:
            num_points = check_int("num_points", num_points, 1, points.shape[1])
        seed = check_int("seed", seed)
        if up_axis not in ("y", "z"):
            raise ValueError(f"up_axis: expected 'y' or 'z', got {up_axis!r}")
        self.points = points  # (N, P, 3) float32
        self.labels = labels  # (N,) int64
        self.classes = list(classes)
        self.num_points = num_points
        self.seed = seed
        self.up_axis = up_axis

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return self.points.shape[0]

    def subsample_index(self, index: int) -> torch.Tensor:
        """(num_points,) int64 distinct point indices of sample ``index`` (seeded, no repeats)."""
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + index) % 2**64)
        return torch.randperm(self.points.shape[1], generator=g)[: self.num_points]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Returns (points (num_points, 3) float32, a copy; label int)."""
        i = operator.index(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} samples")
        i %= len(self)
        cloud = self.points[i]  # (P, 3)
        if self.num_points is not None and self.num_points < cloud.shape[0]:
            return cloud[self.subsample_index(i)], int(self.labels[i])
        return cloud.clone(), int(self.labels[i])

    def subset(self, indices: torch.Tensor) -> PointCloudSet:
        """The samples at ``indices`` (1-D int64) as a new set (classes, num_points, seed, up kept).

        Subsampling stays seeded by the position in the new set.
        """
        indices = torch.as_tensor(indices, dtype=torch.int64)
        return PointCloudSet(
            self.points[indices], self.labels[indices], self.classes, self.num_points, self.seed,
            self.up_axis,
        )  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(samples={len(self)}, points={self.points.shape[1]}, "
            f"num_points={self.num_points}, classes={self.num_classes}, up={self.up_axis!r})"
        )


def check_int(name: str, value, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int if it is an integer (not bool) in [low, high]; else a ValueError."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or (low is not None and value < low)
        or (high is not None and value > high)
    ):
        raise ValueError(f"{name}: expected an int in [{low}, {high}], got {value!r}")
    return int(value)


def normalize_unit_sphere(points: torch.Tensor) -> torch.Tensor:
    """Centres every cloud on its mean and scales it into the unit ball, in place.

    Args:
        points: (N, P, 3) float tensor; a degenerate cloud (all points equal) is only centred.

    Returns:
        The same tensor, (N, P, 3).
    """
    for chunk in points.split(4096):  # bounded temporaries
        chunk -= chunk.mean(dim=1, keepdim=True)
        radius = chunk.norm(dim=-1).amax(dim=1)  # (n,)
        chunk /= torch.where(radius > 0, radius, torch.ones_like(radius))[:, None, None]
    return points


def _first_nonfinite(points: torch.Tensor) -> int | None:
    """Index of the first sample of (n, P, 3) holding a NaN/inf, or None."""
    bad = (~torch.isfinite(points)).flatten(1).any(dim=1)  # (n,)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def _check_label_meta(shape: tuple, dtype: np.dtype, n: int, where: str) -> None:
    """Checks label metadata before reading: (n,) or (n, 1), an integer dtype."""
    if tuple(shape) not in ((n,), (n, 1)):
        raise ValueError(f"{where}: labels length mismatch, shape {shape} for {n} samples")
    if dtype.kind not in "iu":
        raise ValueError(f"{where}: labels dtype {dtype}, expected an integer dtype")


def _to_labels(labels: np.ndarray, where: str) -> torch.Tensor:
    """(n,) or (n, 1) integer labels, checked >= 0 -> (n,) int64 tensor."""
    labels = labels.reshape(-1).astype(np.int64)
    negative = np.flatnonzero(labels < 0)
    if negative.size:
        raise ValueError(f"{where}: sample {negative[0]} has negative label {labels[negative[0]]}")
    return torch.from_numpy(labels)


def _check_points_meta(shape: tuple, dtype: np.dtype, where: str) -> None:
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{where}: points shape {shape}, expected (N, P, 3)")
    if dtype.kind != "f":
        raise ValueError(f"{where}: points dtype {dtype}, expected a float dtype")
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(f"{where}: holds no samples (shape {shape})")


def _check_budget(n: int, p: int, max_bytes: int, where: str) -> None:
    if n * p * 3 * 4 > max_bytes:
        raise ValueError(f"{where}: {n} x {p} x 3 float32 exceeds max_bytes={max_bytes}")


def change_up_axis(points: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Rotates clouds from ``src``-up to ``dst``-up ("y"/"z") about the x axis, in place.

    z-up -> y-up is (x, y, z) -> (x, z, -y) (-90 degrees about x, +z goes to +y); y-up -> z-up
    is its inverse (x, y, z) -> (x, -z, y). Both are proper rotations (det +1).

    Args:
        points: (..., 3) float tensor.

    Returns:
        The same tensor, (..., 3).
    """
    if src not in ("y", "z") or dst not in ("y", "z"):
        raise ValueError(f"src/dst: expected 'y' or 'z', got {src!r}/{dst!r}")
    if src != dst:
        y, z = points[..., 1].clone(), points[..., 2].clone()
        points[..., 1], points[..., 2] = (z, -y) if dst == "y" else (-z, y)
    return points


def stratified_holdout(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits sample indices into (kept, held out): ``fraction`` of every class held out.

    Per class of n samples, ``round(fraction * n)`` are held out (at least 1 when n >= 2, never
    all of them), chosen by a permutation seeded with ``seed``; so the split depends on the
    labels and the seed only, and every class is in both parts when it has 2 samples or more.

    Args:
        labels: (N,) int64 class indices.
        fraction: in (0, 1).
        seed: seed of the choice.

    Returns:
        ``(kept, held_out)``: sorted 1-D int64 index tensors that partition ``range(N)``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction: expected a number in (0, 1), got {fraction}")
    g = torch.Generator().manual_seed(int(seed))
    held = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        n = members.numel()
        k = min(max(round(fraction * n), 1 if n >= 2 else 0), n - 1)
        held.append(members[torch.randperm(n, generator=g)[:k]])
    out = torch.zeros(labels.shape[0], dtype=torch.bool)
    if held:
        out[torch.cat(held)] = True
    return torch.nonzero(~out).flatten(), torch.nonzero(out).flatten()
