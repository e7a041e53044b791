"""Point-cloud datasets: published HDF5 layouts, the shared ModelNet40 npz, procedural shapes."""

from .datasets import MODELNET10_CLASSES, PointCloudSet, normalize_unit_sphere, open_dataset
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
]
