"""Parity with pytorch3d.ops.knn_points and pytorch3d.loss.chamfer_distance, when installed.

PyPI has no Linux build of pytorch3d, so it is never a dependency; users who built it get these
checks. Inputs are random floats (no ties: the two libraries may order exact ties differently)
and every cloud has at least K valid targets (pytorch3d's padding values differ from ours).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip(
    "pytorch3d", reason="pytorch3d is not installed (no Linux wheel on PyPI; build it to compare)"
)
from pytorch3d.loss import chamfer_distance as p3d_chamfer_distance  # noqa: E402
from pytorch3d.ops import knn_points as p3d_knn_points  # noqa: E402

from crfold.ops import chamfer_distance, knn_points  # noqa: E402

from .conftest import make_clouds  # noqa: E402


def _case(device, seed=0):
    x, y = make_clouds(3, 120, 90, 3, dtype=torch.float32, device=device, seed=seed)
    xl = torch.tensor([120, 64, 9], device=device)
    yl = torch.tensor([90, 33, 8], device=device)
    return x, y, xl, yl


@pytest.mark.parametrize("K", [1, 5, 8])
def test_knn_points_matches_pytorch3d(K, devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=K)
        ours = knn_points(x, y, xl, yl, K=K, return_nn=True)
        theirs = p3d_knn_points(x, y, xl, yl, K=K, return_nn=True, return_sorted=True)
        for b in range(3):
            n = int(xl[b])  # pytorch3d leaves padded queries unspecified: compare valid ones
            assert torch.equal(ours.idx[b, :n], theirs.idx[b, :n])
            torch.testing.assert_close(ours.dists[b, :n], theirs.dists[b, :n])
            torch.testing.assert_close(ours.knn[b, :n], theirs.knn[b, :n])


def test_knn_gradients_match_pytorch3d(devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=10)
        w = torch.rand(3, 120, 4, generator=torch.Generator().manual_seed(0)).to(device)
        w[1, 64:] = 0  # padded queries: pytorch3d's outputs there are unspecified
        w[2, 9:] = 0
        grads = []
        for fn in (knn_points, p3d_knn_points):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            d = fn(a, b, xl, yl, K=4).dists
            grads.append(torch.autograd.grad((d * w).sum(), (a, b)))
        for ours, theirs in zip(*grads):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("point_reduction", "batch_reduction", "weighted"),
    [("mean", "mean", False), ("mean", "mean", True), ("sum", "sum", False)],
)
def test_chamfer_distance_matches_pytorch3d(point_reduction, batch_reduction, weighted, devices):
    for device in devices:
        x, y, xl, yl = _case(device, seed=20)
        w = torch.tensor([0.5, 2.0, 1.0], device=device) if weighted else None
        results = []
        for fn in (chamfer_distance, p3d_chamfer_distance):
            a, b = x.clone().requires_grad_(), y.clone().requires_grad_()
            out = fn(
                a,
                b,
                x_lengths=xl,
                y_lengths=yl,
                point_reduction=point_reduction,
                batch_reduction=batch_reduction,
                weights=w,
            )
            loss = out[0] if isinstance(out, tuple) else out  # pytorch3d: (loss, loss_normals)
            results.append((loss, *torch.autograd.grad(loss, (a, b))))
        for ours, theirs in zip(*results):
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
