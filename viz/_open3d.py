"""The one place Open3D is imported (lazily), and the Open3D objects the viewer and renders share.

Open3D is optional (``pip install crfold[viz]``): nothing in ``viz`` imports it at module level.
"""

from __future__ import annotations

import numpy as np

EXTRA = "pip install crfold[viz]"


def require_open3d():
    """Imports and returns the ``open3d`` module.

    Raises:
        ImportError: Open3D is not installed, or cannot load its shared libraries (the message
            names the extra to install, and the system libraries it needs on Linux).
    """
    try:
        import open3d
    except (ImportError, OSError) as exc:  # OSError: a system library (libusb, ...) is missing
        raise ImportError(
            f"viz needs Open3D: install it with `{EXTRA}` (or `pip install open3d`; on a "
            f"headless Linux machine also `apt-get install libusb-1.0-0 libvulkan1 "
            f"mesa-vulkan-drivers`, and `xvfb` for the viewer). Import failed: {exc}"
        ) from exc
    return open3d


def point_cloud(points: np.ndarray, colors: np.ndarray):
    """An ``open3d.geometry.PointCloud`` of (N, 3) float points with (N, 3) colours in [0, 1]."""
    o3d = require_open3d()
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    cols = np.ascontiguousarray(colors, dtype=np.float64).reshape(-1, 3)
    if cols.shape != pts.shape:
        raise ValueError(f"colors: expected shape {pts.shape} like points, got {cols.shape}")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pcd.colors = o3d.utility.Vector3dVector(np.clip(cols, 0.0, 1.0))
    return pcd


def unlit_material(point_size: float):
    """A flat-colour point material (``defaultUnlit``) of ``point_size`` pixels."""
    rendering = require_open3d().visualization.rendering
    mat = rendering.MaterialRecord()
    mat.shader = "defaultUnlit"
    mat.point_size = float(point_size)
    return mat
