"""Mesh -> point cloud: area-weighted surface sampling, farthest-point sampling, normalization.

Randomness is seeded per model from the global seed and the model's relative path
(:func:`model_seed`), so a model's points do not depend on which worker processed it, in which
order, or whether the run was interrupted and resumed.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crfold.data import normalize_unit_sphere

from .meshes import MeshError, load_mesh

AXES = ("none", "z-up-to-y-up")


@dataclass(frozen=True)
class SamplingParams:
    """How each mesh becomes a cloud (all of it is recorded in the output's manifest).

    Attributes:
        num_points: points per cloud after farthest-point sampling.
        dense_factor: the surface is first sampled with ``dense_factor * num_points`` points.
        seed: global seed; each model's generator is seeded from it and the model's path.
        min_faces: meshes with fewer triangles are rejected.
        axis: ``"none"`` or ``"z-up-to-y-up"`` (``(x, y, z) -> (x, z, -y)``), applied last.
    """

    num_points: int = 2048
    dense_factor: int = 10
    seed: int = 0
    min_faces: int = 4
    axis: str = "none"

    def __post_init__(self) -> None:
        if self.num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {self.num_points}")
        if self.dense_factor < 1:
            raise ValueError(f"dense_factor must be >= 1, got {self.dense_factor}")
        if self.min_faces < 1:
            raise ValueError(f"min_faces must be >= 1, got {self.min_faces}")
        if self.axis not in AXES:
            raise ValueError(f"axis must be one of {AXES}, got {self.axis!r}")


@contextmanager
def torch_threads(n: int):
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous count.

    FPS is thousands of small ops; intra-op threads only add contention (10x slower measured on
    a busy 2-core machine), so conversions run single-threaded and parallelize over processes.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def model_seed(seed: int, key: str) -> int:
    """A 63-bit seed derived from the global ``seed`` and a model key (its relative path)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator
) -> np.ndarray:
    """Sample points uniformly by area on a triangle mesh.

    Args:
        vertices: ``(V, 3)`` float64, finite.
        faces: ``(F, 3)`` int64 indices into ``vertices``.
        count: number of points to draw.
        rng: the generator all randomness comes from.

    Returns:
        ``(count, 3)`` float64 points on the surface.

    Raises:
        MeshError: the total area is zero (relative to the bounding box), so nothing to sample.
    """
    tri = vertices[faces]  # (F, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cdf = np.cumsum(area)  # (F,)
    total = float(cdf[-1])
    diag = float(np.linalg.norm(np.ptp(vertices[faces.ravel()], axis=0)))
    if not np.isfinite(total) or total <= 1e-12 * diag**2 or diag == 0.0:
        raise MeshError(f"zero surface area (area {total:.3g}, bounding-box diagonal {diag:.3g})")
    face = np.searchsorted(cdf, rng.random(count) * total, side="right")  # (count,)
    face = np.minimum(face, len(faces) - 1)
    u, v = rng.random((2, count))
    su = np.sqrt(u)
    w = np.stack([1.0 - su, su * (1.0 - v), su * v], axis=1)  # (count, 3) barycentric
    return np.einsum("nk,nkd->nd", w, tri[face])


def farthest_point_sample(
    points: torch.Tensor, num_samples: int, start: torch.Tensor | None = None
) -> torch.Tensor:
    """Farthest-point sampling, batched: ``num_samples`` steps, each vectorized over points.

    Args:
        points: ``(B, M, D)`` float tensor, no padding.
        num_samples: how many indices to pick per cloud, ``1 <= num_samples <= M``.
        start: ``(B,)`` int64 index of the first pick per cloud; default 0.

    Returns:
        ``(B, num_samples)`` int64 indices into dim 1 of ``points``, distinct, in pick order.
        Ties pick the lowest index.
    """
    if points.ndim != 3:
        raise ValueError(f"points must be (B, M, D), got shape {tuple(points.shape)}")
    b, m, _ = points.shape
    if not 1 <= num_samples <= m:
        raise ValueError(f"num_samples must be in [1, {m}] (points per cloud), got {num_samples}")
    if start is None:
        start = torch.zeros(b, dtype=torch.int64, device=points.device)
    elif start.shape != (b,) or bool(((start < 0) | (start >= m)).any()):
        raise ValueError(f"start must be ({b},) int64 indices in [0, {m}), got {start}")
    coords = points.transpose(1, 2).contiguous()  # (B, D, M): each op runs over contiguous M
    batch = torch.arange(b, device=points.device)
    idx = torch.empty(b, num_samples, dtype=torch.int64, device=points.device)
    dist = torch.full((b, m), float("inf"), dtype=points.dtype, device=points.device)  # (B, M)
    far = start.to(torch.int64)
    for i in range(num_samples):
        idx[:, i] = far
        d = (coords - coords[batch, :, far].unsqueeze(-1)).square_().sum(1)  # (B, M)
        torch.minimum(dist, d, out=dist)
        dist[batch, far] = -1.0  # never picked again, even among duplicate points
        far = dist.argmax(dim=1)
    return idx


def apply_axis(points: np.ndarray, axis: str) -> np.ndarray:
    """Re-orient ``(..., 3)`` points: ``"z-up-to-y-up"`` maps ``(x, y, z) -> (x, z, -y)``."""
    if axis == "none":
        return points
    if axis == "z-up-to-y-up":
        return np.stack([points[..., 0], points[..., 2], -points[..., 1]], axis=-1)
    raise ValueError(f"axis must be one of {AXES}, got {axis!r}")


def mesh_to_points(path: str | Path, key: str, params: SamplingParams) -> np.ndarray:
    """Load one mesh and turn it into a normalized cloud.

    Args:
        path: the mesh file.
        key: the model's stable identity (its path relative to the collection root); seeds it.
        params: sampling parameters.

    Returns:
        ``(params.num_points, 3)`` float32, centred on its mean, max norm 1.

    Raises:
        MeshError: the mesh is unreadable, empty, degenerate or non-finite.
    """
    vertices, faces = load_mesh(path, min_faces=params.min_faces)
    rng = np.random.default_rng(model_seed(params.seed, key))
    dense = sample_surface(vertices, faces, params.num_points * params.dense_factor, rng)
    start = torch.tensor([int(rng.integers(len(dense)))])
    idx = farthest_point_sample(torch.from_numpy(dense)[None], params.num_points, start)[0]
    cloud = torch.from_numpy(dense[idx.numpy()])[None]  # (1, P, 3) float64
    normalize_unit_sphere(cloud)  # in place: centred on the mean, max norm 1
    return apply_axis(cloud[0].numpy(), params.axis).astype(np.float32)
