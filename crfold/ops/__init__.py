"""Batched kNN, Chamfer distance and FoldingNet's graph max-pool on compiled primitives (C++ CPU
kernels, CUDA kernels).

>>> from crfold.ops import knn_points, chamfer_distance, graph_max_pool, backend

Modules, each importing only those listed before it: ``_ext`` (builds and loads the extension),
``reference`` (pure-torch twins), ``layouts`` (padded/flat layouts, ``Pointclouds``/PyG input),
``knn``, ``chamfer`` and ``pool`` (the ops), ``pyg`` (PyG's kNN graphs on ``knn``),
``interop`` (conversions to the peers' own objects; re-exports ``layouts`` and ``pyg``) and
``pytorch3d`` (a drop-in for PyTorch3D's ``knn_points`` / ``knn_gather`` / ``chamfer_distance``,
its signatures and padding, on ``knn``).
"""

from .chamfer import chamfer_distance, safe_sqrt
from .knn import KNN, backend, knn_gather, knn_points
from .pool import global_max_pool, graph_max_pool

__all__ = [
    "KNN",
    "backend",
    "chamfer_distance",
    "global_max_pool",
    "graph_max_pool",
    "knn_gather",
    "knn_points",
    "safe_sqrt",
]
