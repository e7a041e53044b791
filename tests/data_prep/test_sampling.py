"""data_prep.sampling: FPS, area-weighted surface sampling, normalization, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from data_prep.meshes import MeshError
from data_prep.sampling import (
    SamplingParams,
    apply_axis,
    farthest_point_sample,
    mesh_to_points,
    model_seed,
    sample_surface,
)

from .builders import BAD_OFF, write


def _fps_reference(points: torch.Tensor, n: int, start: int) -> list[int]:
    picked = [start]
    for _ in range(n - 1):
        d = torch.cdist(points, points[picked]).min(dim=1).values  # (M,)
        picked.append(int(d.argmax()))
    return picked


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_matches_greedy_reference(dtype):
    g = torch.Generator().manual_seed(0)
    points = torch.randn(3, 300, 3, generator=g, dtype=dtype)
    start = torch.tensor([0, 17, 299])
    idx = farthest_point_sample(points, 40, start)
    assert idx.shape == (3, 40) and idx.dtype == torch.int64
    for b in range(3):
        assert idx[b].tolist() == _fps_reference(points[b], 40, int(start[b]))
        assert len(set(idx[b].tolist())) == 40


def test_fps_all_points_and_duplicates():
    points = torch.zeros(1, 5, 3)  # all ties: lowest index first, then the rest in order
    assert farthest_point_sample(points, 5).tolist() == [[0, 1, 2, 3, 4]]
    points = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 0, 0], [5, 0, 0]]])
    assert farthest_point_sample(points, 4).tolist() == [[0, 3, 1, 2]]


def test_fps_rejects_bad_arguments():
    with pytest.raises(ValueError, match="points"):
        farthest_point_sample(torch.zeros(5, 3), 2)
    with pytest.raises(ValueError, match="num_samples"):
        farthest_point_sample(torch.zeros(1, 5, 3), 6)
    with pytest.raises(ValueError, match="start"):
        farthest_point_sample(torch.zeros(2, 5, 3), 2, torch.tensor([0, 5]))


def test_surface_sampling_is_area_weighted_and_on_the_surface():
    # two triangles in z=0 (area 0.5) and z=1 (area 1.5): 1/4 of the points on the first
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 1, 1.0]])
    faces = np.array([[0, 1, 2], [3, 4, 5]])
    pts = sample_surface(vertices, faces, 40000, np.random.default_rng(0))
    assert pts.shape == (40000, 3)
    low = pts[:, 2] == 0
    assert low.mean() == pytest.approx(0.25, abs=0.01)
    assert np.all(pts[:, :2] >= -1e-12)
    assert np.all(pts[low, 0] + pts[low, 1] <= 1 + 1e-9)  # inside the first triangle
    assert np.all(pts[~low, 0] / 3 + pts[~low, 1] <= 1 + 1e-9)
    # uniform inside a triangle: mean of the first triangle's points is its centroid
    np.testing.assert_allclose(pts[low, :2].mean(0), [1 / 3, 1 / 3], atol=0.01)


def test_zero_area_is_rejected():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [2, 0, 0.0]])
    with pytest.raises(MeshError, match="zero surface area"):
        sample_surface(vertices, np.array([[0, 1, 2]] * 4), 10, np.random.default_rng(0))


def test_axis():
    p = np.array([[1.0, 2.0, 3.0]])
    assert apply_axis(p, "z-up-to-y-up").tolist() == [[1.0, 3.0, -2.0]]
    assert apply_axis(p, "none") is p
    with pytest.raises(ValueError, match="axis"):
        apply_axis(p, "x-up")


def test_sampling_params_validate():
    for bad in ({"num_points": 0}, {"dense_factor": 0}, {"min_faces": 0}, {"axis": "up"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


def test_mesh_to_points_seeded_per_model(tmp_path):
    path = write(tmp_path / "s.obj", trimesh.creation.icosphere(subdivisions=2))
    params = SamplingParams(num_points=128, dense_factor=4, seed=3)
    a = mesh_to_points(path, "cls/s.obj", params)
    assert a.shape == (128, 3) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1).max(), 1, rtol=1e-6)
    np.testing.assert_allclose(a.mean(0), 0, atol=1e-6)
    np.testing.assert_array_equal(a, mesh_to_points(path, "cls/s.obj", params))
    assert not np.array_equal(a, mesh_to_points(path, "cls/other.obj", params))
    params2 = SamplingParams(num_points=128, dense_factor=4, seed=4)
    assert not np.array_equal(a, mesh_to_points(path, "cls/s.obj", params2))
    assert model_seed(0, "a") != model_seed(1, "a") and 0 <= model_seed(0, "a") < 2**63
    up = mesh_to_points(path, "cls/s.obj", SamplingParams(128, 4, 3, axis="z-up-to-y-up"))
    np.testing.assert_allclose(up, apply_axis(a, "z-up-to-y-up"), atol=1e-6)


def test_mesh_to_points_zero_area_file(tmp_path):
    data, reason = BAD_OFF["zero_area.off"]
    with pytest.raises(MeshError, match=reason):
        mesh_to_points(write(tmp_path / "z.off", data), "z.off", SamplingParams(16, 2))
