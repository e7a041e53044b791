"""Point-cloud datasets: published HDF5 layouts, the shared ModelNet40 npz, procedural shapes."""

from .datasets import (
    MODELNET10_CLASSES,
    HDF5PointClouds,
    ModelNet40NPZ,
    PointCloudSet,
    normalize_unit_sphere,
    open_dataset,
)
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
