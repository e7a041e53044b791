"""crfold.data.synthetic: the embedded procedural dataset."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from scipy import stats

from crfold.data import SYNTHETIC_CLASSES, SyntheticShapes, make_synthetic, sample_shapes

N, P = 40, 512  # shapes and points per class for the surface checks


def raw(kind: str, seed: int = 0, n: int = N, p: int = P):
    return sample_shapes(kind, n, p, np.random.default_rng(seed))


def seg_dist(q: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points q (..., 2) to segments a-b (..., 2)."""
    ab = b - a
    t = np.clip(((q - a) * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    return np.linalg.norm(q - a - t[..., None] * ab, axis=-1)


def residual(kind: str, x: np.ndarray, prm: dict) -> np.ndarray:
    """(n, p) distance-like residual to the analytic surface: 0 on the surface."""
    px, py, pz = x[..., 0], x[..., 1], x[..., 2]
    rho = np.hypot(px, pz)
    col = {k: (v[:, None] if v.ndim == 1 else v) for k, v in prm.items()}
    if kind == "sphere":
        return np.abs(np.linalg.norm(x, axis=-1) - 1)
    if kind == "ellipsoid":
        return np.abs(((x / prm["semi_axes"][:, None]) ** 2).sum(-1) - 1)
    if kind == "torus":
        return np.abs(np.hypot(rho - col["major_radius"], py) - col["minor_radius"])
    if kind == "box":
        return np.abs(np.abs(x / prm["half_extents"][:, None]).max(-1) - 1)
    if kind == "octahedron":
        return np.abs(np.abs(x / prm["semi_axes"][:, None]).sum(-1) - 1)
    if kind == "cylinder":
        r, h = col["radius"], col["half_height"]
        side = np.abs(rho - r) + np.maximum(np.abs(py) - h, 0)
        cap = np.abs(np.abs(py) - h) + np.maximum(rho - r, 0)
        return np.minimum(side, cap)
    if kind == "cone":
        r, h = col["radius"], col["height"]
        lateral = np.abs(rho - r * (1 - py / h)) + np.maximum(-py, 0) + np.maximum(py - h, 0)
        base = np.abs(py) + np.maximum(rho - r, 0)
        return np.minimum(lateral, base)
    if kind == "capsule":
        r, h = col["radius"], col["half_length"]
        axis_dist = np.hypot(rho, np.maximum(np.abs(py) - h, 0))  # distance to the segment
        return np.abs(axis_dist - r)
    if kind == "pyramid":
        a, b = prm["half_widths"][:, 0:1], prm["half_widths"][:, 1:2]
        level = np.maximum(np.abs(px) / a, np.abs(pz) / b)
        side = np.abs(level - (1 - py / col["height"]))
        base = np.abs(py) + np.maximum(level - 1, 0)
        return np.minimum(side, base)
    if kind == "prism":
        tri, half = prm["triangle_xz"], col["half_length"]  # (n, 3, 2), (n, 1)
        q = x[..., [0, 2]][:, :, None]  # (n, p, 1, 2)
        edges = seg_dist(q, tri[:, None], np.roll(tri, -1, axis=1)[:, None]).min(-1)
        side = edges + np.maximum(np.abs(py) - half, 0)
        d = np.roll(tri, -1, axis=1)[:, None] - tri[:, None]  # (n, 1, 3, 2) edge vectors
        v = q - tri[:, None]
        cross = d[..., 0] * v[..., 1] - d[..., 1] * v[..., 0]  # (n, p, 3)
        inside = (cross >= -1e-12).all(-1) | (cross <= 1e-12).all(-1)
        cap = np.abs(np.abs(py) - half) + ~inside
        return np.minimum(side, cap)
    raise AssertionError(kind)


def test_classes():
    assert len(SYNTHETIC_CLASSES) >= 8
    required = {"box", "sphere", "cylinder", "cone", "torus", "capsule", "ellipsoid", "pyramid"}
    assert required <= set(SYNTHETIC_CLASSES)
    with pytest.raises(ValueError, match="kind"):
        raw("klein_bottle")


@pytest.mark.parametrize("kind", SYNTHETIC_CLASSES)
def test_points_lie_on_the_analytic_surface(kind):
    x, prm = raw(kind)
    assert x.shape == (N, P, 3) and x.dtype == np.float64 and np.isfinite(x).all()
    assert residual(kind, x, prm).max() < 1e-9
    y, _ = raw(kind, seed=1)
    assert not np.allclose(x, y)
    spread = np.ptp(x, axis=1).std(0)  # random proportions: extents vary across shapes
    assert kind == "sphere" or spread.max() > 0.05


def test_area_weighting():
    x, prm = raw("sphere", n=4, p=4000)  # Archimedes: y is uniform on [-1, 1]
    assert stats.kstest(x[..., 1].ravel(), stats.uniform(-1, 2).cdf).pvalue > 1e-3
    x, prm = raw("cylinder", n=200, p=2000)
    r, h = prm["radius"], prm["half_height"]
    on_caps = (np.abs(np.abs(x[..., 1]) - h[:, None]) < 1e-12).mean(1)
    np.testing.assert_allclose(on_caps, r / (r + 2 * h), atol=0.04)
    x, prm = raw("cone", n=100, p=2000)
    t = 1 - x[..., 1] / prm["height"][:, None]  # slant fraction from the apex, density 2t
    lateral = x[..., 1] > 1e-12
    assert stats.kstest(t[lateral] ** 2, "uniform").pvalue > 1e-3
    x, prm = raw("torus", n=100, p=2000)
    cos_theta = (np.hypot(x[..., 0], x[..., 2]) - 1) / prm["minor_radius"][:, None]
    deviation = cos_theta.mean(1) - prm["minor_radius"] / 2  # E[cos] = r / 2R; 0 if unweighted
    assert np.abs(deviation).max() < 0.08 and abs(deviation.mean()) < 0.01
    x, prm = raw("pyramid", n=200, p=2000)
    a, b, h = prm["half_widths"][:, 0], prm["half_widths"][:, 1], prm["height"]
    base, sides = 4 * a * b, 2 * a * np.hypot(b, h) + 2 * b * np.hypot(a, h)
    on_base = (np.abs(x[..., 1]) < 1e-12).mean(1)
    np.testing.assert_allclose(on_base, base / (base + sides), atol=0.04)
    on_base = np.abs(x[..., 1]) < 1e-12  # uniform within the base's two triangles
    for coord in (x[..., 0] / a[:, None], x[..., 2] / b[:, None]):
        assert stats.kstest(coord[on_base], stats.uniform(-1, 2).cdf).pvalue > 1e-3
    x, prm = raw("box", n=200, p=3000)
    e = prm["half_extents"]
    on_y = (np.abs(np.abs(x[..., 1]) - e[:, 1:2]) < 1e-12).mean(1)
    pairs = e[:, 0] * e[:, 1] + e[:, 1] * e[:, 2] + e[:, 0] * e[:, 2]
    np.testing.assert_allclose(on_y, e[:, 0] * e[:, 2] / pairs, atol=0.04)


def test_ellipsoid_rejection_matches_area():
    """The fraction of points with |y|/b > 1/2 equals that area fraction (numeric quadrature)."""
    pts, prm = raw("ellipsoid", seed=3, n=4, p=20_000)
    u = np.random.default_rng(9).standard_normal((400_000, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)  # sphere points, weighted by the area element
    for i, (a, b, c) in enumerate(prm["semi_axes"]):
        w = np.sqrt((b * c * u[:, 0]) ** 2 + (a * c * u[:, 1]) ** 2 + (a * b * u[:, 2]) ** 2)
        expected = (w * (np.abs(u[:, 1]) > 0.5)).sum() / w.sum()
        naive = (np.abs(u[:, 1]) > 0.5).mean()  # what unweighted sphere mapping would give
        got = (np.abs(pts[i, :, 1]) / b > 0.5).mean()
        assert abs(got - expected) < 0.015, (got, expected, naive)


def test_make_synthetic_deterministic_balanced_normalized():
    pts, labels, classes = make_synthetic(6, 128, seed=5)
    assert pts.shape == (60, 128, 3) and pts.dtype == np.float32 and labels.dtype == np.int64
    assert classes == list(SYNTHETIC_CLASSES)
    assert np.bincount(labels).tolist() == [6] * len(classes)
    assert labels[:10].tolist() != sorted(labels[:10].tolist())  # shuffled order
    again = make_synthetic(6, 128, seed=5)
    np.testing.assert_array_equal(pts, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert not np.allclose(pts, make_synthetic(6, 128, seed=6)[0])
    np.testing.assert_allclose(np.linalg.norm(pts, axis=-1).max(1), 1, atol=1e-6)
    assert np.abs(pts.mean(1)).max() < 1e-5
    counts = [3, 0, 1, 0, 0, 0, 0, 0, 0, 2]
    assert np.bincount(make_synthetic(counts, 16, 0)[1], minlength=10).tolist() == counts


def test_rotation_about_up_axis():
    plain, _, _ = make_synthetic(2, 64, seed=1)
    turned, _, _ = make_synthetic(2, 64, seed=1, rotate=True)
    np.testing.assert_allclose(turned[..., 1], plain[..., 1], atol=1e-6)  # y is kept
    norms = np.linalg.norm(turned, axis=-1), np.linalg.norm(plain, axis=-1)
    np.testing.assert_allclose(*norms, atol=1e-5)
    assert np.abs(turned[..., 0] - plain[..., 0]).max() > 0.1


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"num_per_class": -1}, "num_per_class"),
        ({"num_per_class": [1, 2]}, "num_per_class"),
        ({"num_per_class": 0}, "num_per_class"),
        ({"num_per_class": 1, "num_points": 0}, "num_points"),
        ({"num_per_class": 1, "seed": -3}, "seed"),
        ({"num_per_class": 1.5}, "num_per_class"),
    ],
)
def test_make_synthetic_rejects_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_synthetic(**kwargs)


def test_dataset_interface_and_splits():
    train = SyntheticShapes("train", num_shapes=25, num_points=64, seed=2)
    test = SyntheticShapes("test", num_shapes=25, num_points=64, seed=2)
    assert len(train) == 25 and train.num_classes == len(SYNTHETIC_CLASSES)
    assert train.up_axis == "y" and train.points.dtype == torch.float32
    counts = train.labels.bincount(minlength=train.num_classes)
    assert counts.max() - counts.min() <= 1
    assert not torch.allclose(train.points, test.points)
    assert torch.equal(train.points, SyntheticShapes("train", 25, 64, seed=2).points)
    x, y = train[0]
    assert x.shape == (64, 3) and y == int(train.labels[0])
    xb, yb = next(iter(torch.utils.data.DataLoader(train, batch_size=8)))
    assert xb.shape == (8, 64, 3) and yb.shape == (8,)
    with pytest.raises(ValueError, match="split"):
        SyntheticShapes("holdout")
    with pytest.raises(ValueError, match="num_shapes"):
        SyntheticShapes(num_shapes=0)


def test_default_size_generates_quickly():
    start = time.perf_counter()
    ds = SyntheticShapes("train")  # 2,000 shapes x 1,024 points
    elapsed = time.perf_counter() - start
    assert ds.points.shape == (2000, 1024, 3) and torch.isfinite(ds.points).all()
    assert elapsed < 30, f"generation took {elapsed:.1f} s"  # ~1-2 s on one core
