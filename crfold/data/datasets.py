"""Opens any point-cloud dataset by name or path: :func:`open_dataset`.

The base class and shared checks live in :mod:`crfold.data.base`, the readers in
:mod:`crfold.data.hdf5`, :mod:`crfold.data.npz` and :mod:`crfold.data.synthetic`; this module
imports them (never the reverse) and re-exports the base names it always offered, so
``from crfold.data.datasets import PointCloudSet`` keeps working.
"""

from __future__ import annotations

from pathlib import Path

from .base import (
    DEFAULT_MAX_BYTES,
    MODELNET10_CLASSES,
    SPLITS,
    PointCloudSet,
    change_up_axis,
    check_int,
    normalize_unit_sphere,
)
from .hdf5 import HDF5PointClouds
from .npz import ModelNet40NPZ
from .synthetic import SyntheticShapes

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MODELNET10_CLASSES",
    "SPLITS",
    "HDF5PointClouds",
    "ModelNet40NPZ",
    "PointCloudSet",
    "SyntheticShapes",
    "change_up_axis",
    "check_int",
    "normalize_unit_sphere",
    "open_dataset",
]


def open_dataset(
    spec: str | Path,
    split: str = "train",
    num_points: int | None = None,
    seed: int = 0,
    **kwargs,
) -> PointCloudSet:
    """Opens a dataset by name or path (what the training CLI calls).

    Args:
        spec: "synthetic" (the embedded procedural set, :class:`SyntheticShapes`), a path to an
            ``.npz`` (:class:`ModelNet40NPZ`) or a folder of HDF5 shards (:class:`HDF5PointClouds`).
        split: the split to read.
        num_points: points per sample (for "synthetic": points generated, default 1024).
        seed: subsampling seed (for "synthetic": generation seed).
        **kwargs: passed to the dataset class (e.g. ``to_up="y"``, ``normalize=True``).
    """
    if str(spec) == "synthetic":
        n = 1024 if num_points is None else num_points
        return SyntheticShapes(split=split, num_points=n, seed=seed, **kwargs)
    path = Path(spec).expanduser()
    if path.is_dir():
        return HDF5PointClouds(path, split, num_points, seed, **kwargs)
    if path.is_file() and path.suffix == ".npz":
        return ModelNet40NPZ(path, split, num_points, seed, **kwargs)
    if not path.exists():
        raise FileNotFoundError(f"spec: {spec!r} is not 'synthetic' and no such file or folder")
    raise ValueError(f"spec: expected 'synthetic', an .npz or a folder of .h5 shards: {spec!r}")
