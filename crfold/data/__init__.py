"""Point-cloud datasets: published HDF5 layouts, the shared ModelNet40 npz, procedural shapes.

Modules, each importing only those before it: :mod:`~crfold.data.base` (the in-memory
:class:`PointCloudSet` and shared checks), the readers :mod:`~crfold.data.hdf5`,
:mod:`~crfold.data.npz` and :mod:`~crfold.data.synthetic`, and :mod:`~crfold.data.datasets`
(:func:`open_dataset`, which picks a reader).
"""

from .base import MODELNET10_CLASSES, PointCloudSet, normalize_unit_sphere, stratified_holdout
from .datasets import open_dataset
from .hdf5 import HDF5PointClouds
from .npz import ModelNet40NPZ
from .synthetic import SYNTHETIC_CLASSES, SyntheticShapes, make_synthetic, sample_shapes

__all__ = [
    "MODELNET10_CLASSES",
    "SYNTHETIC_CLASSES",
    "HDF5PointClouds",
    "ModelNet40NPZ",
    "PointCloudSet",
    "SyntheticShapes",
    "make_synthetic",
    "normalize_unit_sphere",
    "open_dataset",
    "sample_shapes",
    "stratified_holdout",
]
