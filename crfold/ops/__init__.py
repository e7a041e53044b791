"""Batched kNN and Chamfer distance on a compiled primitive (C++ CPU kernel, CUDA kernel).

>>> from crfold.ops import knn_points, chamfer_distance, backend
"""

from .chamfer import chamfer_distance, safe_sqrt
from .knn import KNN, backend, knn_gather, knn_points

__all__ = ["KNN", "backend", "chamfer_distance", "knn_gather", "knn_points", "safe_sqrt"]
